package faults

import (
	"maps"
	"math/rand/v2"
	"slices"

	"github.com/tund/tund/stack/internal/wire"
)

// InboundLoss is the --loss-in rule: the chance of dropping each segment
// from the peer, by tund's port. A dropped segment crossed the wire but
// never reached the stack, so the tracer applies it before it traces
// anything: the segment is recorded as dropped and has no effect on the
// close (it acknowledged nothing, it closed nothing). Without the tracer
// the fault layer applies it.
type InboundLoss struct {
	def   Set
	ports map[uint16]Set
	stats *Stats
}

// NewInboundLoss returns the rule of def and ports, or nil where no port loses.
func NewInboundLoss(def Set, ports map[uint16]Set, stats *Stats) *InboundLoss {
	for _, f := range append([]Set{def}, slices.Collect(maps.Values(ports))...) {
		if f.LossIn > 0 {
			return &InboundLoss{def: def, ports: ports, stats: stats}
		}
	}
	return nil
}

// Drop decides, and counts, whether to drop a segment from the peer.
func (l *InboundLoss) Drop(f wire.Fields) bool {
	if p := For(&l.def, l.ports, f.Flow.LocalPort).LossIn; p > 0 && rand.Float64() < p {
		l.stats.add(LossIn)
		return true
	}
	return false
}
