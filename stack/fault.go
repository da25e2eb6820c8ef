package stack

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Fault names, as Segment.Fault and FaultStats name them.
const (
	// FaultDropFinalACK: tund's final ACK, the pure ACK of the peer's FIN
	// that tund sends after its own FIN went out, never reaches the wire.
	// The peer stays in LAST-ACK (or CLOSING) and retransmits its FIN,
	// which tund, in TIME-WAIT, acknowledges again (RFC 9293 §3.10.7.4).
	FaultDropFinalACK = "drop-final-ack"
	// FaultDropFIN: a FIN tund sends is lost; gVisor retransmits it after
	// its RTO.
	FaultDropFIN = "drop-fin"
	// FaultDelayFIN: every FIN tund sends goes out late.
	FaultDelayFIN = "delay-fin"
	// FaultNoFIN: tund's FINs never reach the wire. The peer sees what a
	// service that never closes (a CLOSE-WAIT leak) shows it: its own FIN
	// acknowledged, and then nothing, in FIN-WAIT-2 until its own timeout.
	FaultNoFIN = "no-fin"
	// FaultLossIn and FaultLossOut drop TCP segments at random, from the
	// peer to tund and from tund to the peer.
	FaultLossIn  = "loss-in"
	FaultLossOut = "loss-out"
)

// FaultNames lists the faults in the order metrics report them.
var FaultNames = []string{FaultDropFinalACK, FaultDropFIN, FaultDelayFIN, FaultNoFIN, FaultLossIn, FaultLossOut}

// Chance is how often a fault strikes: the first time in each connection
// (Once), or each time with probability P. The zero Chance never strikes.
type Chance struct {
	Once bool
	P    float64
}

// ParseChance parses "once", a probability such as 0.25, or a percentage
// such as 25%.
func ParseChance(s string) (Chance, error) {
	if s == "once" {
		return Chance{Once: true}, nil
	}
	p, err := ParseProbability(s)
	if err != nil || p == 0 {
		return Chance{}, fmt.Errorf("%q: want once, or a probability in (0, 1] such as 0.3 or 30%%", s)
	}
	return Chance{P: p}, nil
}

// ParseProbability parses a probability in [0, 1], such as 0.05 or 5%.
func ParseProbability(s string) (float64, error) {
	scale := 1.0
	if v, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = v, 100
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil || p < 0 || p/scale > 1 || p != p {
		return 0, fmt.Errorf("%q: want a probability in [0, 1] such as 0.05 or 5%%", s)
	}
	return p / scale, nil
}

// IsZero reports a Chance that never strikes.
func (c Chance) IsZero() bool { return !c.Once && c.P == 0 }

func (c Chance) String() string {
	if c.Once {
		return "once"
	}
	return strconv.FormatFloat(c.P, 'g', -1, 64)
}

// strikes reports whether the fault strikes now; struck says whether a
// once-fault already struck in this connection.
func (c Chance) strikes(struck bool) bool {
	if c.Once {
		return !struck
	}
	return c.P > 0 && rand.Float64() < c.P
}

// Faults are close-path faults that tund injects on its side of the wire,
// for testing how peers cope with a lost FIN, a lost final ACK or a peer
// that never closes. Drops and delays apply to the segments tund sends,
// beneath the FIN/ACK merge and above the close tracer, so the tracer
// records what the wire carries and notes what a fault took away.
type Faults struct {
	DropFinalACK Chance
	DropFIN      Chance
	DelayFIN     time.Duration
	NoFIN        bool
	// LossIn and LossOut are probabilities of dropping any TCP segment
	// from the peer and to the peer.
	LossIn, LossOut float64
}

// IsZero reports that no fault is set.
func (f Faults) IsZero() bool { return f == Faults{} }

// String lists the faults set, as service options spell them.
func (f Faults) String() string {
	var s []string
	if !f.DropFinalACK.IsZero() {
		s = append(s, FaultDropFinalACK+"="+f.DropFinalACK.String())
	}
	if !f.DropFIN.IsZero() {
		s = append(s, FaultDropFIN+"="+f.DropFIN.String())
	}
	if f.DelayFIN > 0 {
		s = append(s, FaultDelayFIN+"="+f.DelayFIN.String())
	}
	if f.NoFIN {
		s = append(s, FaultNoFIN)
	}
	if f.LossIn > 0 {
		s = append(s, FaultLossIn+"="+strconv.FormatFloat(f.LossIn, 'g', -1, 64))
	}
	if f.LossOut > 0 {
		s = append(s, FaultLossOut+"="+strconv.FormatFloat(f.LossOut, 'g', -1, 64))
	}
	return strings.Join(s, "/")
}

// follows reports faults that need to know, per connection, which FINs went
// out: the final ACK is only final after tund's FIN, and a once-fault
// strikes once per connection.
func (f Faults) follows() bool { return !f.DropFinalACK.IsZero() || f.DropFIN.Once }

// FaultStats counts the segments each fault dropped or delayed.
type FaultStats struct {
	counts [6]atomic.Uint64 // in FaultNames order
}

// Count returns how often the named fault struck.
func (s *FaultStats) Count(name string) uint64 {
	for i, n := range FaultNames {
		if n == name {
			return s.counts[i].Load()
		}
	}
	return 0
}

func (s *FaultStats) add(name string) {
	for i, n := range FaultNames {
		if n == name {
			s.counts[i].Add(1)
			return
		}
	}
}

// faultFlow is what the fault endpoint knows of one closing connection.
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

// faultEndpoint is a link endpoint, nested between the FIN/ACK merge and
// the close tracer, that injects Faults into the segments crossing it.
// It is in the chain only when some fault is set: otherwise tund pays
// nothing for it.
type faultEndpoint struct {
	nested.Endpoint

	def    Faults
	ports  map[uint16]Faults // per local port; fixed at start
	follow bool              // some fault needs the flow table
	// lossIn, when set, is applied here: only when tracing is off, since
	// the tracer applies it beneath itself (see lossIn).
	lossIn *lossIn

	pending   atomic.Int32 // len(flows), read without the lock
	mu        sync.Mutex
	flows     map[flow]*faultFlow
	lastSweep time.Time
	closed    bool

	tracer *tracer // nil when tracing is off
	stats  *FaultStats
}

// newFaultEndpoint returns the fault layer over child. in is the loss-in
// rule for it to apply (nil: none, or the tracer applies it); stats are
// shared with that rule.
func newFaultEndpoint(child stack.LinkEndpoint, def Faults, ports map[uint16]Faults, tr *tracer, in *lossIn, stats *FaultStats) *faultEndpoint {
	e := &faultEndpoint{def: def, ports: ports, flows: make(map[flow]*faultFlow), tracer: tr, lossIn: in, stats: stats}
	for _, f := range append([]Faults{def}, mapValues(ports)...) {
		e.follow = e.follow || f.follows()
	}
	e.Init(child, e)
	return e
}

// lossIn is the --loss-in rule: the chance of dropping each segment from
// the peer, by tund's port. A dropped segment crossed the wire but never
// reached the stack, so the tracer, which sits beneath the faults, applies
// it before it traces anything: the segment is recorded as dropped and has
// no effect on the close (it acknowledged nothing, it closed nothing).
type lossIn struct {
	def   Faults
	ports map[uint16]Faults
	stats *FaultStats
}

// newLossIn returns the rule of def and ports, or nil where no port loses.
func newLossIn(def Faults, ports map[uint16]Faults, stats *FaultStats) *lossIn {
	for _, f := range append([]Faults{def}, mapValues(ports)...) {
		if f.LossIn > 0 {
			return &lossIn{def: def, ports: ports, stats: stats}
		}
	}
	return nil
}

// drop decides, and counts, whether to drop a segment from the peer.
func (l *lossIn) drop(f tcpFields) bool {
	if p := faultsFor(&l.def, l.ports, f.flow.localPort).LossIn; p > 0 && rand.Float64() < p {
		l.stats.add(FaultLossIn)
		return true
	}
	return false
}

func mapValues[K comparable, V any](m map[K]V) []V {
	var v []V
	for _, x := range m {
		v = append(v, x)
	}
	return v
}

func (e *faultEndpoint) faultsFor(localPort uint16) *Faults {
	return faultsFor(&e.def, e.ports, localPort)
}

// faultsFor returns the faults of tund's port localPort: its own, or def.
func faultsFor(def *Faults, ports map[uint16]Faults, localPort uint16) *Faults {
	if f, ok := ports[localPort]; ok {
		return &f
	}
	return def
}

// DeliverNetworkPacket drops inbound segments for loss-in, and notes peer
// FINs that arrive after tund's: their ACK is the final ACK.
func (e *faultEndpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if e.follow || e.lossIn != nil {
		size := pkt.Data().Size()
		if b, ok := pkt.Data().PullUp(min(size, maxPeek)); ok {
			if f, ok := parseInbound(b, size); ok && !e.inbound(f) {
				return
			}
		}
	}
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// inbound reports whether to deliver a segment from the peer.
func (e *faultEndpoint) inbound(f tcpFields) bool {
	fa := e.faultsFor(f.flow.localPort)
	if e.lossIn != nil && e.lossIn.drop(f) {
		return false
	}
	if f.flags&header.TCPFlagRst != 0 && e.pending.Load() > 0 {
		e.mu.Lock()
		delete(e.flows, f.flow)
		e.pending.Store(int32(len(e.flows)))
		e.mu.Unlock()
		return true
	}
	if f.flags&header.TCPFlagFin == 0 || fa.DropFinalACK.IsZero() || e.pending.Load() == 0 {
		return true
	}
	e.mu.Lock()
	if ff := e.flows[f.flow]; ff != nil && ff.tundFIN && !ff.peerFIN {
		ff.peerFIN, ff.peerFINEnd = true, f.seq+uint32(f.payloadLen)+1
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

// WritePackets drops, delays or passes each segment tund sends.
func (e *faultEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var taken []bool
	for i, pkt := range pkts.AsSlice() {
		if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
			continue
		}
		f, ok := parseOutbound(pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice(), pkt.Data().Size())
		if !ok {
			continue
		}
		v, fault := e.outbound(f)
		if v == pass {
			continue
		}
		if taken == nil {
			taken = make([]bool, pkts.Len())
		}
		taken[i] = true
		e.stats.add(fault)
		e.tracer.faulted(f, tund, fault)
		if v == delay {
			e.delay(pkt, e.faultsFor(f.flow.localPort).DelayFIN)
		}
	}
	if taken == nil {
		return e.Endpoint.WritePackets(pkts)
	}
	return writeKept(&e.Endpoint, pkts, taken)
}

// outbound decides the fate of one segment tund sends, and the fault that
// decided it.
func (e *faultEndpoint) outbound(f tcpFields) (verdict, string) {
	fa := e.faultsFor(f.flow.localPort)
	if fa.LossOut > 0 && rand.Float64() < fa.LossOut {
		return drop, FaultLossOut
	}
	switch {
	case f.flags&header.TCPFlagRst != 0:
		if e.pending.Load() > 0 {
			e.mu.Lock()
			delete(e.flows, f.flow)
			e.pending.Store(int32(len(e.flows)))
			e.mu.Unlock()
		}
	case f.flags&header.TCPFlagFin != 0:
		struck := false
		if fa.follows() {
			e.mu.Lock()
			ff := e.flowLocked(f.flow)
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
			return drop, FaultNoFIN
		case fa.DropFIN.strikes(struck):
			return drop, FaultDropFIN
		case fa.DelayFIN > 0:
			return delay, FaultDelayFIN
		}
	case f.flags == header.TCPFlagAck && f.payloadLen == 0 && !fa.DropFinalACK.IsZero() && e.pending.Load() > 0:
		e.mu.Lock()
		defer e.mu.Unlock()
		ff := e.flows[f.flow]
		if ff == nil || !ff.peerFIN || f.ack != ff.peerFINEnd {
			return pass, ""
		}
		if fa.DropFinalACK.strikes(ff.ackStruck) {
			ff.ackStruck = true
			return drop, FaultDropFinalACK
		}
	}
	return pass, ""
}

// flowLocked returns the flow's entry, making one if there is room.
func (e *faultEndpoint) flowLocked(fl flow) *faultFlow {
	if ff := e.flows[fl]; ff != nil {
		return ff
	}
	now := time.Now()
	if now.Sub(e.lastSweep) > time.Second {
		e.lastSweep = now
		for k, ff := range e.flows {
			if now.After(ff.expires) {
				delete(e.flows, k)
			}
		}
	}
	if len(e.flows) >= maxTrackedFINs {
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
func (e *faultEndpoint) delay(pkt *stack.PacketBuffer, d time.Duration) {
	held := pkt.IncRef()
	time.AfterFunc(d, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.closed {
			held.DecRef()
			return
		}
		writeOne(&e.Endpoint, held)
	})
}

// Attach stops sending delayed segments when the stack detaches.
func (e *faultEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.shutdown()
	}
	e.Endpoint.Attach(d)
}

// Close stops sending delayed segments and closes the link below.
func (e *faultEndpoint) Close() {
	e.shutdown()
	e.Endpoint.Close()
}

func (e *faultEndpoint) shutdown() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
}

// Stats returns the fault counters.
func (e *faultEndpoint) Stats() *FaultStats { return e.stats }

// faulted notes in a close record what a fault did to a segment of it,
// marked, with no state change. tund's segment that a fault dropped or
// held is added when the stack sent it: the peer never saw it, or sees it
// later, when the tracer records it again as it crosses the wire. A peer's
// segment that loss-in dropped is added as it crossed the wire: tund's
// stack never saw it (the tracer applies loss-in before tracing). A FIN
// dropped or held before the close has a record starts one.
func (t *tracer) faulted(f tcpFields, from side, fault string) {
	if t == nil {
		return
	}
	if fault == FaultDropFinalACK {
		// Lost as surely as on the wire: the peer will send its FIN again.
		t.log.counters.finalACKLost.Add(1)
	}
	closing := f.flags&(header.TCPFlagFin|header.TCPFlagRst) != 0
	if !closing && t.open.Load() == 0 {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.closes[f.flow]
	if st == nil {
		if f.flags&header.TCPFlagFin == 0 || len(t.closes) >= maxOpenCloses {
			return
		}
		local, remote := f.flow.addrs()
		st = &closeState{rec: Close{Local: local, Remote: remote, Initiator: from.String(), Start: now}, sides: newCloseSides(now)}
		st.rec.Segments = st.segs[:0]
		st.deadline = now.Add(t.linger)
		t.closes[f.flow] = st
		t.open.Store(int32(len(t.closes)))
	}
	if fault == FaultDropFinalACK {
		st.rec.FinalACKLost = true
	}
	if from == peerSide && st.sides.noteTerm(f, from) {
		// loss-in kept it from the stack, but it crossed the wire.
		st.rec.Initiator = SideBoth
	}
	segs := st.rec.Segments
	if len(segs) >= maxCloseSegments {
		st.rec.Truncated = true
		return
	}
	st.rec.Segments = append(segs, Segment{At: now, From: from.String(), Flags: flagString(f.flags), Seq: f.seq, Ack: f.ack, Len: f.payloadLen, Fault: fault})
	st.rec.End = now
}

// Set sets the fault named key (FaultDropFIN, ...) from its textual value,
// as a service option or a flag spells it: a Chance for the drops, a
// duration for delay-fin, a probability for the losses, nothing (or true)
// for no-fin. known is false for a key that names no fault.
func (f *Faults) Set(key, value string) (known bool, err error) {
	switch key {
	case FaultDropFinalACK:
		f.DropFinalACK, err = ParseChance(value)
	case FaultDropFIN:
		f.DropFIN, err = ParseChance(value)
	case FaultDelayFIN:
		d, perr := time.ParseDuration(value)
		if perr != nil || d < 0 {
			err = fmt.Errorf("%q: want a duration such as 300ms", value)
		}
		f.DelayFIN = d
	case FaultNoFIN:
		switch value {
		case "", "true":
			f.NoFIN = true
		case "false":
			f.NoFIN = false
		default:
			err = fmt.Errorf("%q: takes no value", value)
		}
	case FaultLossIn:
		f.LossIn, err = ParseProbability(value)
	case FaultLossOut:
		f.LossOut, err = ParseProbability(value)
	default:
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("%s=%w", key, err)
	}
	return true, nil
}
