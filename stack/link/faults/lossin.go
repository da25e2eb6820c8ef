package faults

import (
	"math/rand/v2"

	"github.com/tund/tund/stack/internal/wire"
)

// InboundLoss is the --loss-in rule: the chance of dropping each segment
// from the peer, by tund's port. A dropped segment crossed the wire but
// never reached the stack, so the tracer applies it before it traces
// anything: the segment is recorded as dropped and has no effect on the
// close (it acknowledged nothing, it closed nothing). Without the tracer
// the fault layer applies it.
type InboundLoss struct {
	table *Table
	stats *Stats
}

// NewInboundLoss returns the rule of table's loss-in probabilities.
func NewInboundLoss(table *Table, stats *Stats) *InboundLoss {
	return &InboundLoss{table: table, stats: stats}
}

// Drop decides, and counts, whether to drop a segment from the peer.
func (l *InboundLoss) Drop(f wire.Fields) bool {
	b := l.table.load()
	if !b.lossIn {
		return false
	}
	if p := b.of(f.Flow.LocalPort).LossIn; p > 0 && rand.Float64() < p {
		l.stats.add(LossIn)
		return true
	}
	return false
}
