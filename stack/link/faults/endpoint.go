package faults

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
)

// Observer is told of each segment of tund's that a fault dropped or held:
// the close tracer, which records it in the connection's close.
type Observer interface {
	Faulted(f wire.Fields, fault string)
}

// faultFlow is what the layer knows of one closing connection.
type faultFlow struct {
	tundFIN    bool   // tund's FIN went out (even if a fault then dropped it)
	peerFIN    bool   // the peer's FIN arrived after tund's: its ACK is the final one
	peerFINEnd uint32 // the ack that acknowledges the peer's FIN
	finStruck  bool   // drop-fin=once struck
	ackStruck  bool   // drop-final-ack=once struck
	expires    time.Time
}

// faultFlowLife bounds how long a connection's close is followed for its
// faults: far beyond any FIN retransmission schedule a test would wait for.
const faultFlowLife = 5 * time.Minute

// maxFlows bounds the connections followed at once; past it, once-faults
// and drop-final-ack skip new connections, so that a flood cannot grow
// memory.
const maxFlows = 1 << 16

// Endpoint is the layer (see package layer) that injects the faults into
// the segments crossing it. While no fault is set it watches nothing, so
// tund pays an atomic load per segment for it.
type Endpoint struct {
	layer.Layer

	table *Table
	// lossIn, when set, is applied here: only when tracing is off, since
	// the tracer applies it beneath itself (see InboundLoss).
	lossIn *InboundLoss

	pending atomic.Int32 // len(flows), read without the lock
	mu      sync.Mutex
	flows   map[wire.Flow]*faultFlow
	sweep   layer.Sweep
	closed  bool

	observer Observer // nil when tracing is off
	stats    *Stats
}

// New returns the fault layer over child, injecting the faults of table.
// in is the loss-in rule for it to apply (nil: the tracer applies it);
// stats are shared with that rule; obs, if not nil, is told of each segment
// a fault takes.
func New(child stack.LinkEndpoint, table *Table, obs Observer, in *InboundLoss, stats *Stats) *Endpoint {
	e := &Endpoint{table: table, flows: make(map[wire.Flow]*faultFlow), observer: obs, lossIn: in, stats: stats}
	e.Init(child, e)
	return e
}

// Table is the faults in force: one Set for every port, or a port's own.
// The fault layer and the loss-in rule read it for each segment; Set
// replaces it whole while they run.
type Table struct {
	p atomic.Pointer[byPort]
}

// NewTable returns the table of def for every port, or the port's own in
// ports.
func NewTable(def Set, ports map[uint16]Set) *Table {
	t := new(Table)
	t.Set(def, ports)
	return t
}

// Set replaces the faults. A segment that crosses the layer from then on
// meets the new ones; a once-fault that struck a connection already does
// not strike it again.
func (t *Table) Set(def Set, ports map[uint16]Set) {
	b := &byPort{def: def, ports: make(map[uint16]*Set, len(ports))}
	for port, f := range ports {
		b.ports[port] = &f
	}
	b.follow = b.anyOf(Set.follows)
	b.lossIn = b.anyOf(func(f Set) bool { return f.LossIn > 0 })
	b.any = b.anyOf(func(f Set) bool { return !f.IsZero() })
	t.p.Store(b)
}

func (t *Table) load() *byPort { return t.p.Load() }

// byPort is the faults of each of tund's ports: its own, or def. They are
// kept by pointer, so that the lookup a segment makes copies nothing, and
// never changed, only replaced.
type byPort struct {
	def    Set
	ports  map[uint16]*Set
	follow bool // some fault needs the flow table
	lossIn bool // some port loses segments from the peer
	any    bool // some fault is set
}

// of returns the faults of tund's port localPort.
func (b *byPort) of(localPort uint16) *Set {
	if f, ok := b.ports[localPort]; ok {
		return f
	}
	return &b.def
}

// anyOf reports whether some port's faults (def's included) satisfy p.
func (b *byPort) anyOf(p func(Set) bool) bool {
	if p(b.def) {
		return true
	}
	for _, f := range b.ports {
		if p(*f) {
			return true
		}
	}
	return false
}

func (e *Endpoint) faultsFor(localPort uint16) *Set { return e.table.load().of(localPort) }

// Watching: the peer's segments when loss-in is applied here or some
// fault follows closes; every segment tund sends while some fault is set.
func (e *Endpoint) Watching(dir layer.Direction) bool {
	b := e.table.load()
	if dir == layer.Out {
		return b.any
	}
	return b.follow || e.lossIn != nil && b.lossIn
}

// Inbound drops segments for loss-in, and notes peer FINs that arrive
// after tund's: their ACK is the final ACK.
func (e *Endpoint) Inbound(f wire.Fields, _ []byte) bool {
	fa := e.faultsFor(f.Flow.LocalPort)
	if e.lossIn != nil && e.lossIn.Drop(f) {
		return false
	}
	if f.Flags&header.TCPFlagRst != 0 && e.pending.Load() > 0 {
		e.mu.Lock()
		delete(e.flows, f.Flow)
		e.pending.Store(int32(len(e.flows)))
		e.mu.Unlock()
		return true
	}
	if f.Flags&header.TCPFlagFin == 0 || fa.DropFinalACK.IsZero() || e.pending.Load() == 0 {
		return true
	}
	e.mu.Lock()
	if ff := e.flows[f.Flow]; ff != nil && ff.tundFIN && !ff.peerFIN {
		ff.peerFIN, ff.peerFINEnd = true, f.Seq+uint32(f.PayloadLen)+1
	}
	e.mu.Unlock()
	return true
}

// verdict is what happens to one segment tund sends.
type verdict int

const (
	pass verdict = iota
	drop
	delay
)

// Outbound drops or delays a segment tund sends, or lets it pass, and
// counts and reports what a fault took.
func (e *Endpoint) Outbound(f wire.Fields, pkt *stack.PacketBuffer) bool {
	v, fault := e.verdict(f)
	if v == pass {
		return false
	}
	e.stats.add(fault)
	if e.observer != nil {
		e.observer.Faulted(f, fault)
	}
	if v == delay {
		e.delay(pkt, e.faultsFor(f.Flow.LocalPort).DelayFIN)
	}
	return true
}

// verdict decides the fate of one segment tund sends, and the fault that
// decided it.
func (e *Endpoint) verdict(f wire.Fields) (verdict, string) {
	fa := e.faultsFor(f.Flow.LocalPort)
	if fa.LossOut > 0 && rand.Float64() < fa.LossOut {
		return drop, LossOut
	}
	switch {
	case f.Flags&header.TCPFlagRst != 0:
		if e.pending.Load() > 0 {
			e.mu.Lock()
			delete(e.flows, f.Flow)
			e.pending.Store(int32(len(e.flows)))
			e.mu.Unlock()
		}
	case f.Flags&header.TCPFlagFin != 0:
		struck := false
		if fa.follows() {
			e.mu.Lock()
			ff := e.flowLocked(f.Flow)
			if ff != nil {
				ff.tundFIN = true
				struck = ff.finStruck
				if fa.DropFIN.Once && !struck {
					ff.finStruck = true
				}
			}
			e.mu.Unlock()
		}
		switch {
		case fa.NoFIN:
			return drop, NoFIN
		case fa.DropFIN.strikes(struck):
			return drop, DropFIN
		case fa.DelayFIN > 0:
			return delay, DelayFIN
		}
	case f.Flags == header.TCPFlagAck && f.PayloadLen == 0 && !fa.DropFinalACK.IsZero() && e.pending.Load() > 0:
		e.mu.Lock()
		defer e.mu.Unlock()
		ff := e.flows[f.Flow]
		if ff == nil || !ff.peerFIN || f.Ack != ff.peerFINEnd {
			return pass, ""
		}
		if fa.DropFinalACK.strikes(ff.ackStruck) {
			ff.ackStruck = true
			return drop, DropFinalACK
		}
	}
	return pass, ""
}

// flowLocked returns the flow's entry, making one if there is room.
func (e *Endpoint) flowLocked(fl wire.Flow) *faultFlow {
	if ff := e.flows[fl]; ff != nil {
		return ff
	}
	now := time.Now()
	if e.sweep.Due(now) {
		for k, ff := range e.flows {
			if now.After(ff.expires) {
				delete(e.flows, k)
			}
		}
	}
	if len(e.flows) >= maxFlows {
		return nil
	}
	ff := &faultFlow{expires: now.Add(faultFlowLife)}
	e.flows[fl] = ff
	e.pending.Store(int32(len(e.flows)))
	return ff
}

// delay sends a segment d from now. The later segments of its flow are not
// held back: a delayed FIN is overtaken by them, as on a path that
// reorders.
func (e *Endpoint) delay(pkt *stack.PacketBuffer, d time.Duration) {
	held := pkt.IncRef()
	time.AfterFunc(d, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.closed {
			held.DecRef()
			return
		}
		e.WriteOne(held)
	})
}

// Stop stops sending delayed segments.
func (e *Endpoint) Stop() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
}

// Stats returns the fault counters.
func (e *Endpoint) Stats() *Stats { return e.stats }
