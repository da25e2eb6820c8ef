package closes

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/link/faults"
	"github.com/tund/tund/stack/tcpstate"
)

// closeSegmentsCap is the room a new record makes for its segments: a
// close takes three to five, so most records never grow their slice.
const closeSegmentsCap = 5

// maxCloseSegments bounds a record: a close takes four segments, and
// retransmissions a few more; past this the record notes the overflow.
const maxCloseSegments = 48

// DefaultLinger is how long a close that saw no segment waits before the
// tracer asks whether the stack still has its endpoint: while it does, the
// close is followed on; once it is gone, the close is finished as it ended.
const DefaultLinger = 10 * time.Second

// maxOpenCloses bounds the closes followed at once; past it new ones are
// not traced (and counted), so a flood cannot grow memory.
const maxOpenCloses = 1 << 16

// closeState follows one close as it happens.
type closeState struct {
	rec      Record
	sides    closeSides
	policy   bool // the service's half-close policy is ending it
	reopened bool // a FIN replayed in TIME-WAIT reopened it
	// finWait2Expired: the peer's FIN came after tund had forgotten the
	// connection in FIN-WAIT-2.
	finWait2Expired bool
	deadline        time.Time
	// segs is the room for the record's first segments, in the same
	// allocation: the record (filed, it keeps its closeState alive) grows
	// out of it only past closeSegmentsCap.
	segs [closeSegmentsCap]Segment
}

// endedClose is a close that ended without leaving tund in TIME-WAIT,
// remembered for lateWindow so that a FIN or RST still on its way (a RST
// crossing tund's, a retransmission in flight, tund's answer to it) is
// added to its record instead of starting a close of its own.
//
// A close that the other side could still cross (a reset before that side
// sent a FIN or RST: see leadSegment.crossedBy) is counted only once its initiator is
// final: when that side's first FIN or RST comes, or crossWindow after the
// close, so that the counter never has to go back.
type endedClose struct {
	id        uint64 // the filed record
	expires   int64  // monotonic nanoseconds (wire.MonoOf)
	countDue  int64  // when it is counted as it is; 0: counted
	kind      uint8  // index in kindNames
	initiator uint8  // index in initiators
	lead      leadSegment
	late      lateRetransmits
}

// lateRetransmits follows, after a close completed, the FINs sent again
// (a FIN crossing the ACK that acknowledged it, or sent again because that
// ACK was lost on the way), which its record takes, and the pure ACKs that
// answer a FIN sent again, before or after completion: ACKs sent again
// (Record.ACKRetransmits), as the wire counts them.
type lateRetransmits struct {
	fin      [2]uint32 // each side's FIN, where finSent has its bit
	finSent  uint8     // bit per side (1 << side)
	finAcked uint8     // bit per side whose FIN the other side acknowledged
	awaitACK uint8     // bit per side whose FIN sent again the other side has not answered
}

// finAgain reports whether f, a FIN of side s, is s's FIN sent again, and
// notes that the other side's ACK of it is due (t.lateACKs counts those).
func (t *Tracer) finAgain(l *lateRetransmits, f wire.Fields, s side) bool {
	if f.Flags&header.TCPFlagFin == 0 || f.Flags&header.TCPFlagRst != 0 || l.finSent&(1<<s) == 0 || f.Seq+uint32(f.PayloadLen) != l.fin[s] {
		return false
	}
	if l.awaitACK&(1<<s) == 0 {
		l.awaitACK |= 1 << s
		t.lateACKs.Add(1)
	}
	return true
}

// ackAgain reports whether f, a pure ACK of side s, answers a FIN the
// other side sent again (answers), and whether it is an ACK sent again:
// s had acknowledged that FIN before (again), as the wire counts it.
func (t *Tracer) ackAgain(l *lateRetransmits, f wire.Fields, s side) (answers, again bool) {
	o := s.other()
	if l.awaitACK&(1<<o) == 0 || f.Ack != l.fin[o]+1 {
		return false, false
	}
	l.awaitACK &^= 1 << o
	t.lateACKs.Add(-1)
	again = l.finAcked&(1<<o) != 0
	l.finAcked |= 1 << o
	return true, again
}

// forget gives back the ACKs l still awaited (its close is forgotten).
func (t *Tracer) forget(l *lateRetransmits) {
	for s := range 2 {
		if l.awaitACK&(1<<s) != 0 {
			t.lateACKs.Add(-1)
		}
	}
	l.awaitACK = 0
}

// lateOf takes over what a close that completed left due: the ACKs of the
// FINs sent again that the other side has not answered yet.
func (t *Tracer) lateOf(cs *closeSides) lateRetransmits {
	l := lateRetransmits{fin: cs.fin}
	for s := range 2 {
		if cs.finSent[s] {
			l.finSent |= 1 << s
		}
		if cs.finAcked[s] {
			l.finAcked |= 1 << s
		}
		if cs.awaitACK[s] {
			l.awaitACK |= 1 << s
			t.lateACKs.Add(1)
		}
	}
	return l
}

// lateWindow is how long a close that ended takes late segments: a few
// round trips and retransmission timeouts of a local path. crossWindow is
// how long a crossing FIN or RST may take to arrive: a round trip and the
// time tund takes to read a segment under load.
const (
	lateWindow  = 3 * time.Second
	crossWindow = 500 * time.Millisecond
)

// timeWait is a finished close whose tund side is in TIME-WAIT: enough to
// recognize a replayed FIN (the final ACK was lost) and reopen the record.
//
// It is kept by value and small (40 bytes, as many of key): with the
// compact TIME-WAIT, it is half of what a TIME-WAIT connection costs.
type timeWait struct {
	id             uint64          // the filed record
	since, expires int64           // monotonic nanoseconds (wire.MonoOf)
	late           lateRetransmits // both FINs, and the ACKs due
	kind           uint8           // index in kindNames
}

// Tracer is the layer (see package layer) that records every close as the
// wire sees it, counts what it sees, and files each finished record in the
// close log.
type Tracer struct {
	layer.Layer

	open    atomic.Int32 // len(closes), read without the lock
	waiting atomic.Int32 // len(timeWaits), read without the lock
	mu      sync.Mutex
	closes  map[wire.Flow]*closeState
	// timeWaits are the closes that left tund in TIME-WAIT, for 2 x MSL.
	timeWaits wire.FlowMap[timeWait]
	// ended are the other closes that ended, for lateWindow; due lists
	// those not yet counted, oldest first.
	ended  wire.FlowMap[endedClose]
	nEnded atomic.Int32 // ended.Len(), read without the lock
	// lateACKs counts the late FINs whose ACK is due (lateRetransmits,
	// timeWait.awaitACK): while there are any, pure ACKs take the lock.
	lateACKs  atomic.Int32
	due       []wire.Flow
	sweepAt   int
	linger    time.Duration       // how long a close with no segment is followed
	timeWait  atomic.Int64        // 2 x MSL, in nanoseconds (SetTimeWait)
	rstCloses atomic.Bool         // a RST ends TIME-WAIT (--time-wait-rst close)
	lossIn    *faults.InboundLoss // --loss-in, applied here, before tracing (nil: none)

	log *Log
	// stack tells whether an endpoint still exists.
	stack *stack.Stack
	stop  chan struct{}
}

// Config is what the tracer needs to know of the stack's settings.
type Config struct {
	// Linger is how long a close that saw no segment is followed before
	// the tracer asks whether the stack still has its endpoint (DefaultLinger).
	Linger time.Duration
	// TimeWait is 2 x MSL.
	TimeWait time.Duration
	// RSTCloses: a RST at RCV.NXT ends TIME-WAIT (--time-wait-rst close).
	RSTCloses bool
	// LossIn, if not nil, is the --loss-in rule, which the tracer applies
	// beneath itself: a dropped segment crossed the wire but never reached
	// the stack.
	LossIn *faults.InboundLoss
}

// NewTracer returns the tracer over child, filing records in log; s is the
// stack above (nil: a tracer tested alone).
func NewTracer(child stack.LinkEndpoint, c Config, log *Log, s *stack.Stack) *Tracer {
	t := &Tracer{
		closes: make(map[wire.Flow]*closeState), timeWaits: wire.NewFlowMap[timeWait](), ended: wire.NewFlowMap[endedClose](), sweepAt: 256,
		linger: c.Linger, lossIn: c.LossIn, log: log, stack: s, stop: make(chan struct{}),
	}
	t.SetTimeWait(c.TimeWait, c.RSTCloses)
	t.Init(child, t)
	go t.sweeper()
	return t
}

// SetTimeWait changes 2 x MSL and what a RST does in TIME-WAIT while the
// tracer runs, as the stack's own settings change: a close that leaves tund
// in TIME-WAIT from then on is followed for the new duration.
func (t *Tracer) SetTimeWait(d time.Duration, rstCloses bool) {
	t.timeWait.Store(int64(d))
	t.rstCloses.Store(rstCloses)
}

// sweeper finishes forgotten closes and ends TIME-WAITs every second or so,
// so that an unfinished close is reported even when no new close comes.
func (t *Tracer) sweeper() {
	tick := time.NewTicker(min(max(t.linger/4, time.Second), 5*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			if t.open.Load() > 0 || t.waiting.Load() > 0 || t.nEnded.Load() > 0 {
				t.Sweep(now)
			}
		}
	}
}

// Stop stops the sweeper; once is enough (Layer stops a rule once).
func (t *Tracer) Stop() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
}

// Watching: every segment, both ways.
func (t *Tracer) Watching(layer.Direction) bool { return true }

// Inbound traces a segment from the peer, or drops it for loss-in (it
// crossed the wire, and never reaches the stack).
func (t *Tracer) Inbound(f wire.Fields, _ []byte) bool {
	t.log.counters.segments[peerSide].Add(1)
	if t.lossIn != nil && t.lossIn.Drop(f) {
		t.faulted(f, peerSide, faults.LossIn)
		return false
	}
	t.segment(f, SidePeer)
	return true
}

// Outbound traces a segment tund sends.
func (t *Tracer) Outbound(f wire.Fields, pkt *stack.PacketBuffer) bool {
	t.log.counters.segments[tund].Add(1)
	if pkt.Retransmission {
		t.log.counters.retransmitted.Add(1)
	}
	t.segment(f, SideTund)
	return false
}

// segment follows one segment. Only segments of flows that are closing
// take the lock: the fast path is a flag test and an atomic load or two.
func (t *Tracer) segment(f wire.Fields, from string) {
	closing := f.Flags&(header.TCPFlagFin|header.TCPFlagRst) != 0
	if !closing && t.open.Load() == 0 {
		// A SYN may start a new incarnation of a flow: a peer's may end a
		// TIME-WAIT, and either side's ends a close that ended lately. So
		// SYNs take the lock (once each way per connection) while such
		// closes are remembered, and pure ACKs while a late FIN awaits its
		// ACK (rare); no other segment of a quiet flow does.
		lateACK := f.Flags == header.TCPFlagAck && f.PayloadLen == 0 && t.lateACKs.Load() > 0
		if !lateACK && (f.Flags&header.TCPFlagSyn == 0 || (from == SideTund || t.waiting.Load() == 0) && t.nEnded.Load() == 0) {
			return
		}
	}
	var reason string
	if f.Flags&header.TCPFlagRst != 0 {
		reason = t.resetReason(f, from)
	}
	var filed, amended *Record
	t.mu.Lock()
	st := t.closes[f.Flow]
	if f.Flags&header.TCPFlagSyn != 0 && t.ended.Len() > 0 {
		// A new incarnation: the close that ended takes no more segments.
		t.forgetEnded(f.Flow)
	}
	if st == nil && !closing && f.Flags == header.TCPFlagAck && f.PayloadLen == 0 && t.lateACKs.Load() > 0 {
		if rec := t.lateACKLocked(f, sideOf(from)); rec != nil {
			t.log.amend(rec)
		}
	}
	if st == nil && !closing && (from == SideTund || f.Flags&header.TCPFlagSyn == 0) {
		// A segment of a flow that is not closing, while others are: only
		// a peer's SYN can matter (it may end a TIME-WAIT).
		t.mu.Unlock()
		return
	}
	// The clock is read only for segments that are recorded: it costs as
	// much as the rest of the fast path.
	now := time.Now()
	if st == nil && from == SideTund && f.Flags&header.TCPFlagFin != 0 && t.timeWaits.Len() > 0 {
		if rec, handled := t.timeWaitFINAgain(f, now); handled {
			t.log.amend(rec)
			t.mu.Unlock()
			return
		}
	}
	if st == nil && from == SidePeer && t.timeWaits.Len() > 0 {
		var handled bool
		st, amended, handled = t.timeWaitSegment(f, now)
		if handled {
			if amended != nil {
				t.log.amend(amended)
			}
			t.mu.Unlock()
			return
		}
	}
	if st == nil && closing && t.ended.Len() > 0 {
		if rec, late := t.lateSegment(f, from, reason, now); late {
			if rec != nil {
				t.log.amend(rec)
			}
			t.mu.Unlock()
			return
		}
	}
	if reason != "" {
		if reason == ResetEstablished && st != nil {
			reason = ResetClosing
		}
		t.log.counters.countReset(sideOf(from), reason)
	}
	if st == nil {
		if !closing || f.Flags&header.TCPFlagSyn != 0 || reason == ResetRefused {
			t.mu.Unlock()
			return
		}
		if len(t.closes) >= t.sweepAt {
			t.sweepLocked(now)
		}
		if len(t.closes) >= maxOpenCloses {
			t.mu.Unlock()
			return
		}
		local, remote := f.Flow.Addrs()
		st = &closeState{rec: Record{Local: local, Remote: remote, Initiator: from, Start: now}, sides: newCloseSides(now)}
		st.rec.Segments = st.segs[:0]
		t.closes[f.Flow] = st
		t.open.Store(int32(len(t.closes)))
	}
	done := t.addLocked(st, f, sideOf(from), now)
	st.deadline = now.Add(t.linger)
	if done {
		delete(t.closes, f.Flow)
		t.open.Store(int32(len(t.closes)))
		if st.reopened {
			amended = &st.rec
		} else {
			st.rec.ID = t.log.newID()
			filed = &st.rec
		}
		// Filed under the lock: a late segment on another goroutine must
		// find the record (the lock order, tracer then log, is sweepLocked's).
		pending := filed != nil && t.ended.Len() < maxOpenCloses && st.canBeCrossed()
		switch {
		case pending:
			t.log.file(filed)
		case filed != nil:
			t.log.add(filed)
		case amended != nil:
			t.log.amend(amended)
		}
		if tw := time.Duration(t.timeWait.Load()); tw > 0 && st.sides.state[tund] == tcpstate.TimeWait && t.timeWaits.Len() < maxOpenCloses {
			// An earlier close of the 4-tuple is over: what it awaited is not.
			if old, ok := t.timeWaits.Get(f.Flow); ok {
				t.forget(&old.late)
			}
			t.forgetEnded(f.Flow)
			t.timeWaits.Set(f.Flow, timeWait{
				id: st.rec.ID, kind: uint8(max(indexOf(kindNames[:], st.rec.Kind), 0)), late: t.lateOf(&st.sides),
				since: wire.MonoOf(st.sides.since[tund]), expires: wire.MonoOf(now.Add(tw)),
			})
			t.waiting.Store(int32(t.timeWaits.Len()))
		} else if t.ended.Len() < maxOpenCloses {
			t.forgetEnded(f.Flow) // counts a close of an earlier incarnation
			e := endedClose{id: st.rec.ID, expires: wire.MonoOf(now.Add(lateWindow)), lead: st.sides.lead, late: t.lateOf(&st.sides)}
			if pending {
				e.countDue = wire.MonoOf(now.Add(crossWindow))
				e.kind = uint8(max(indexOf(kindNames[:], st.rec.Kind), 0))
				e.initiator = uint8(max(indexOf(initiators[:], st.rec.Initiator), 0))
				t.due = append(t.due, f.Flow)
			}
			t.ended.Set(f.Flow, e)
			t.nEnded.Store(int32(t.ended.Len()))
		}
	}
	t.mu.Unlock()
}

// canBeCrossed reports whether a FIN or RST of the side that did not send
// the close's first could still come and cross it (leadSegment.crossedBy):
// that side has sent neither yet.
func (st *closeState) canBeCrossed() bool {
	s := &st.sides
	return !s.crossed && !s.term[s.lead.from.other()]
}

// countEnded counts a close that waited for its initiator to be final.
func (t *Tracer) countEnded(e *endedClose) {
	if e.countDue != 0 {
		t.log.counters.countClose(kindNames[e.kind], initiators[e.initiator])
		e.countDue = 0
	}
}

// forgetEnded forgets the ended close of fl, if any, counting it first.
func (t *Tracer) forgetEnded(fl wire.Flow) {
	if e, ok := t.ended.Get(fl); ok {
		t.forget(&e.late)
		t.countEnded(&e)
		t.ended.Delete(fl)
		t.nEnded.Store(int32(t.ended.Len()))
	}
}

// CountDue counts the ended closes whose crossWindow is over: call it
// before reading the log's Stats.
func (t *Tracer) CountDue(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countDueLocked(now)
}

func (t *Tracer) countDueLocked(now time.Time) {
	n := 0
	for ; n < len(t.due); n++ {
		fl := t.due[n]
		e, ok := t.ended.Get(fl)
		if !ok || e.countDue == 0 {
			continue // counted when it was forgotten or decided
		}
		if wire.MonoOf(now) < e.countDue {
			break
		}
		t.countEnded(&e)
		t.ended.Set(fl, e)
	}
	t.due = t.due[n:]
}

// lateSegment takes a FIN or RST of a close that ended less than
// lateWindow ago: late reports that it did, and rec is that close's record
// with the segment added, to amend (nil when the log no longer keeps it: the
// segment is late all the same, not a close of its own). While the close
// waits for its initiator to be final, the other side's first FIN or RST
// decides it (leadSegment.crossedBy), and the close is counted.
func (t *Tracer) lateSegment(f wire.Fields, from string, reason string, now time.Time) (rec *Record, late bool) {
	e, ok := t.ended.Get(f.Flow)
	if !ok {
		return nil, false
	}
	if wire.MonoOf(now) > e.expires || f.Flags&header.TCPFlagSyn != 0 {
		t.forgetEnded(f.Flow)
		return nil, false
	}
	if reason != "" {
		t.log.counters.countReset(sideOf(from), reason)
	}
	if base := t.log.record(e.id); base != nil {
		c := *base
		c.Segments = append([]Segment(nil), base.Segments...)
		rec = &c
	}
	if wire.MonoOf(now) >= e.countDue && e.countDue != 0 {
		t.countEnded(&e) // its cross window is over: as it is
	}
	if e.countDue != 0 && sideOf(from) != e.lead.from {
		// The other side's first FIN or RST: the initiator is final.
		if e.lead.crossedBy(f) {
			e.initiator = uint8(indexOf(initiators[:], SideBoth))
			if rec != nil {
				rec.Initiator = SideBoth
			}
		}
		t.countEnded(&e)
	}
	if f.Flags&header.TCPFlagRst != 0 && e.late.awaitACK&(1<<sideOf(from).other()) != 0 {
		// The side that owed an ACK answered with a RST: none will come.
		e.late.awaitACK &^= 1 << sideOf(from).other()
		t.lateACKs.Add(-1)
	}
	if t.finAgain(&e.late, f, sideOf(from)) {
		t.log.counters.countRetransmit(sideOf(from), false)
		if rec != nil {
			rec.FINRetransmits++
		}
	}
	if rec != nil {
		addLate(rec, f, from, now)
	}
	t.ended.Set(f.Flow, e)
	return rec, true
}

// addLate adds a segment that came after its close completed to a copy of
// its record.
func addLate(rec *Record, f wire.Fields, from string, now time.Time) {
	if len(rec.Segments) < maxCloseSegments {
		rec.Segments = append(rec.Segments, Segment{At: now, From: from, Flags: tcpflag.String(uint8(f.Flags)), Seq: f.Seq, Ack: f.Ack, Len: f.PayloadLen})
	} else {
		rec.Truncated = true
	}
	rec.End = now
}

// lateACKLocked takes a pure ACK of side s that comes after its close
// completed and answers a FIN the other side sent again: it is added to the
// close's record, which it returns to amend (nil if the ACK answers no such
// FIN, or the log no longer keeps the record), and it is an ACK sent again
// if s had acknowledged that FIN before.
func (t *Tracer) lateACKLocked(f wire.Fields, s side) *Record {
	var (
		base    *Record
		again   bool
		fromTW  bool
		tw      timeWait
		answers bool
	)
	if e, ok := t.ended.Get(f.Flow); ok {
		if answers, again = t.ackAgain(&e.late, f, s); answers {
			t.ended.Set(f.Flow, e)
			base = t.log.record(e.id)
		}
	}
	if !answers {
		var ok bool
		if tw, ok = t.timeWaits.Get(f.Flow); !ok {
			return nil
		}
		if answers, again = t.ackAgain(&tw.late, f, s); !answers {
			return nil
		}
		t.timeWaits.Set(f.Flow, tw)
		fromTW = true
	}
	if again {
		t.log.counters.countRetransmit(s, true)
	}
	now := time.Now()
	var rec *Record
	switch {
	case fromTW:
		rec = t.filedRecord(f.Flow, tw, now)
	case base != nil:
		c := *base
		c.Segments = append([]Segment(nil), base.Segments...)
		rec = &c
	default:
		return nil // the log no longer keeps the record
	}
	if again {
		rec.ACKRetransmits++
	}
	addLate(rec, f, s.String(), now)
	return rec
}

// timeWaitFINAgain takes tund's FIN sent again after its close completed
// with tund in TIME-WAIT (it crossed the peer's ACK of it): counted, added
// to the close's record (returned, to amend), and the peer's ACK of it is
// then an ACK sent again. handled is false for any other segment.
func (t *Tracer) timeWaitFINAgain(f wire.Fields, now time.Time) (rec *Record, handled bool) {
	tw, ok := t.timeWaits.Get(f.Flow)
	if !ok || wire.MonoOf(now) > tw.expires || !t.finAgain(&tw.late, f, tund) {
		return nil, false
	}
	t.timeWaits.Set(f.Flow, tw)
	t.log.counters.countRetransmit(tund, false)
	rec = t.filedRecord(f.Flow, tw, now)
	rec.FINRetransmits++
	addLate(rec, f, SideTund, now)
	return rec, true
}

// resetReason tells why a RST crossed, from what the stack knows of its
// connection. It runs for RSTs only: they are rare, and the lookup takes
// the stack's demultiplexer lock.
func (t *Tracer) resetReason(f wire.Fields, from string) string {
	state, found := layer.Connection(t.stack, f.Flow)
	switch {
	case from == SideTund && found:
		return ResetAbort
	case from == SideTund && f.Flags&header.TCPFlagAck != 0 && f.Seq == 0:
		// gVisor answers a segment without ACK, i.e. a SYN, with seq 0.
		return ResetRefused
	case !found:
		return ResetNoConnection
	case state == tcp.StateSynSent:
		return ResetRefused
	}
	return ResetEstablished // or ResetClosing: the caller knows
}

// timeWaitSegment handles a peer's segment for a connection that left tund
// in TIME-WAIT. A replayed FIN reopens the record (st) until tund ACKs it
// again; a RST, which tund answers with nothing, is added to the filed
// record (amended); a SYN, or a RST that gVisor honours, ends TIME-WAIT.
// handled reports a segment that needs nothing more.
func (t *Tracer) timeWaitSegment(f wire.Fields, now time.Time) (st *closeState, amended *Record, handled bool) {
	tw, ok := t.timeWaits.Get(f.Flow)
	if !ok {
		return nil, nil, false
	}
	if wire.MonoOf(now) > tw.expires {
		// 2 x MSL ran out before the sweeper came by: the stack has
		// forgotten the connection, and so does the tracer.
		t.endTimeWaitLocked(f.Flow, tw, wire.TimeOf(tw.expires))
		return nil, nil, false
	}
	switch {
	case f.Flags&header.TCPFlagRst != 0:
		t.log.counters.countReset(peerSide, ResetTimeWait)
		rec := t.filedRecord(f.Flow, tw, now)
		seg := Segment{At: now, From: SidePeer, Flags: tcpflag.String(uint8(f.Flags)), Seq: f.Seq, Ack: f.Ack, Len: f.PayloadLen}
		// gVisor honours only a RST at RCV.NXT, and only when told to
		// (RFC 5961 §3.2, tund patch 0003); otherwise it is ignored
		// (RFC 1337).
		if t.rstCloses.Load() && f.Seq == tw.late.fin[peerSide]+1 {
			seg.TundState = tcpstate.Closed.String()
			t.endTimeWaitLocked(f.Flow, tw, now)
		}
		if len(rec.Segments) < maxCloseSegments {
			rec.Segments = append(rec.Segments, seg)
		} else {
			rec.Truncated = true
		}
		rec.End = now
		return nil, rec, true
	case f.Flags&header.TCPFlagSyn != 0:
		// A new incarnation of the connection (RFC 1122 §4.2.2.13).
		t.endTimeWaitLocked(f.Flow, tw, now)
		return nil, nil, false
	case f.Flags&header.TCPFlagFin != 0 && f.Seq+uint32(f.PayloadLen) == tw.late.fin[peerSide]:
		t.log.counters.finalACKLost.Add(1)
		t.forget(&tw.late) // the reopened close follows what is due
		t.timeWaits.Delete(f.Flow)
		t.waiting.Store(int32(t.timeWaits.Len()))
		st = &closeState{reopened: true, rec: *t.filedRecord(f.Flow, tw, now), sides: newCloseSides(now)}
		st.rec.FinalACKLost = true
		s := &st.sides
		s.state = [2]tcpstate.State{tcpstate.TimeWait, tcpstate.LastAck}
		s.since[tund] = wire.TimeOf(tw.since)
		s.fin = tw.late.fin
		s.finSent, s.finAcked = [2]bool{true, true}, [2]bool{true, true}
		t.closes[f.Flow] = st
		t.open.Store(int32(len(t.closes)))
		return st, nil, false
	}
	return nil, nil, true
}

// filedRecord returns a copy of the record that a TIME-WAIT entry refers
// to, to add to: the filed one is shared with readers and never changes.
// If the log no longer keeps it, the copy starts afresh.
func (t *Tracer) filedRecord(fl wire.Flow, tw timeWait, now time.Time) *Record {
	if base := t.log.record(tw.id); base != nil {
		c := *base
		c.Segments = append([]Segment(nil), base.Segments...)
		return &c
	}
	local, remote := fl.Addrs()
	return &Record{ID: tw.id, Local: local, Remote: remote, Initiator: SideTund, Kind: kindNames[tw.kind], Start: now}
}

// endTimeWaitLocked forgets a TIME-WAIT that ended, counting its time.
func (t *Tracer) endTimeWaitLocked(fl wire.Flow, tw timeWait, end time.Time) {
	t.log.counters.observe(tcpstate.TimeWait, end.Sub(wire.TimeOf(tw.since)))
	t.forget(&tw.late)
	t.timeWaits.Delete(fl)
	t.waiting.Store(int32(t.timeWaits.Len()))
}

// addLocked records a segment and reports whether the close is over: a
// RST, or both FINs acknowledged (for a reopened close, the FIN replayed in
// TIME-WAIT acknowledged again).
func (t *Tracer) addLocked(st *closeState, f wire.Fields, from side, now time.Time) bool {
	r := &st.rec
	r.End = now
	if from == peerSide && f.Flags&header.TCPFlagFin != 0 && st.sides.state[tund] == tcpstate.FinWait2 && !t.endpointExists(f.Flow) {
		// tund's FIN-WAIT-2 ran out before this FIN came: tund is CLOSED
		// and will not take it. When it ran out the wire does not say, so
		// the time is not counted.
		st.sides.state[tund] = tcpstate.Closed
		st.finWait2Expired = true
	}
	eff := st.sides.apply(f, from, now)
	if eff.crossed {
		r.Initiator = SideBoth
	}
	if eff.skippedCloseWait {
		// The FIN that the tracer saw arrive first had not reached from's
		// stack when it sent its own: from never was in CLOSE-WAIT.
		for i := len(r.Segments) - 1; i >= 0; i-- {
			s := &r.Segments[i]
			if s.From == from.other().String() && strings.Contains(s.Flags, "F") {
				if from == tund && s.TundState == tcpstate.CloseWait.String() {
					s.TundState = ""
				} else if from == peerSide && s.PeerState == tcpstate.CloseWait.String() {
					s.PeerState = ""
				}
				break
			}
		}
	}
	seg := Segment{At: now, From: from.String(), Flags: tcpflag.String(uint8(f.Flags)), Seq: f.Seq, Ack: f.Ack, Len: f.PayloadLen}
	for _, c := range eff.changes[:eff.n] {
		if c.side == tund {
			seg.TundState = c.to.String()
		} else {
			seg.PeerState = c.to.String()
		}
	}
	if len(r.Segments) < maxCloseSegments {
		r.Segments = append(r.Segments, seg)
	} else {
		r.Truncated = true
	}
	if eff.finRetx {
		r.FINRetransmits++
	}
	if eff.ackRetx {
		r.ACKRetransmits++
	}
	for _, c := range eff.changes[:eff.n] {
		if c.side == tund {
			t.log.counters.observe(c.from, now.Sub(c.since))
		}
	}
	if eff.finRetx {
		t.log.counters.countRetransmit(from, false)
	}
	if eff.ackRetx {
		t.log.counters.countRetransmit(from, true)
	}
	if f.Flags&header.TCPFlagRst != 0 {
		r.Kind, r.ResetBy = KindReset, from.String()
		if st.finWait2Expired {
			r.Kind = KindFinWait2Timeout
		}
		return true
	}
	if st.reopened {
		return from == tund && f.Flags&header.TCPFlagAck != 0 && wire.SeqGE(f.Ack, st.sides.fin[peerSide]+1)
	}
	if st.sides.finAcked[tund] && st.sides.finAcked[peerSide] {
		r.Kind = st.kind()
		return true
	}
	return false
}

// kind classifies a close whose FINs were both acknowledged.
func (st *closeState) kind() string {
	s := &st.sides
	switch {
	case st.policy:
		return KindHalfClosePolicy
	case s.crossed:
		return KindSimultaneous // both FINs: a RST would have made it a reset
	}
	// Four-way if the first FIN was acknowledged by a pure ACK of its own;
	// three-way if the acknowledgement rode on the second FIN (or on data
	// that preceded it). Read off the state, which saw every segment the
	// record may have had no room for.
	if s.carried[s.lead.from] {
		return KindThreeWay
	}
	return KindFourWay
}

// MarkPolicy notes that a service's half-close policy is ending the
// connection: its record will be of KindHalfClosePolicy.
func (t *Tracer) MarkPolicy(fl wire.Flow) {
	t.mu.Lock()
	if st := t.closes[fl]; st != nil {
		st.policy = true
	}
	t.mu.Unlock()
}

// Sweep does at now what the tracer's sweeper does every second or so (see
// sweepLocked); a test that plays with time calls it.
func (t *Tracer) Sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

// TimeWaits returns how many closes left tund in TIME-WAIT and are still
// remembered for a replayed FIN.
func (t *Tracer) TimeWaits() int { return int(t.waiting.Load()) }

// sweepLocked ends the TIME-WAITs whose 2 x MSL ran out and finishes the
// closes that saw no segment for the linger time and whose endpoint the
// stack has freed: a FIN-WAIT-2 that ran out, a FIN never acknowledged, a
// peer that vanished. A close whose endpoint lives on (a service that
// keeps its connection in CLOSE-WAIT) is followed on.
func (t *Tracer) sweepLocked(now time.Time) {
	t.timeWaits.All(func(fl wire.Flow, tw timeWait) bool {
		if wire.MonoOf(now) > tw.expires {
			t.endTimeWaitLocked(fl, tw, wire.TimeOf(tw.expires))
		}
		return true
	})
	t.countDueLocked(now)
	t.ended.All(func(fl wire.Flow, e endedClose) bool {
		if wire.MonoOf(now) > e.expires {
			t.forget(&e.late)
			t.countEnded(&e)
			t.ended.Delete(fl)
		}
		return true
	})
	t.nEnded.Store(int32(t.ended.Len()))
	var finished []*Record
	for fl, st := range t.closes {
		if !now.After(st.deadline) {
			continue
		}
		if t.endpointExists(fl) {
			st.deadline = now.Add(t.linger)
			continue
		}
		switch s := &st.sides; {
		case s.state[tund] == tcpstate.FinWait2 || st.finWait2Expired:
			st.rec.Kind = KindFinWait2Timeout
		case s.finSent[tund] && !s.finAcked[tund] && st.rec.FINRetransmits > 0:
			st.rec.Kind = KindRetransmitLimit
		default:
			st.rec.Kind = KindUnfinished
		}
		delete(t.closes, fl)
		if !st.reopened {
			st.rec.ID = t.log.newID()
			finished = append(finished, &st.rec)
		}
	}
	t.open.Store(int32(len(t.closes)))
	t.sweepAt = max(256, 2*len(t.closes))
	for _, c := range finished {
		t.log.add(c) // never blocks, takes only the log's lock
	}
}

func (t *Tracer) endpointExists(fl wire.Flow) bool {
	_, ok := layer.Connection(t.stack, fl)
	return ok
}

// Faulted notes a segment of tund's that a fault dropped or held (see
// faults.Observer).
func (t *Tracer) Faulted(f wire.Fields, fault string) { t.faulted(f, tund, fault) }

// faulted notes in a close record what a fault did to a segment of it,
// marked, with no state change. tund's segment that a fault dropped or
// held is added when the stack sent it: the peer never saw it, or sees it
// later, when the tracer records it again as it crosses the wire. A peer's
// segment that loss-in dropped is added as it crossed the wire: tund's
// stack never saw it (the tracer applies loss-in before tracing). A FIN
// dropped or held before the close has a record starts one.
func (t *Tracer) faulted(f wire.Fields, from side, fault string) {
	if t == nil {
		return
	}
	if fault == faults.DropFinalACK {
		// Lost as surely as on the wire: the peer will send its FIN again.
		t.log.counters.finalACKLost.Add(1)
	}
	closing := f.Flags&(header.TCPFlagFin|header.TCPFlagRst) != 0
	if !closing && t.open.Load() == 0 {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.closes[f.Flow]
	if st == nil {
		if f.Flags&header.TCPFlagFin == 0 || len(t.closes) >= maxOpenCloses {
			return
		}
		local, remote := f.Flow.Addrs()
		st = &closeState{rec: Record{Local: local, Remote: remote, Initiator: from.String(), Start: now}, sides: newCloseSides(now)}
		st.rec.Segments = st.segs[:0]
		st.deadline = now.Add(t.linger)
		t.closes[f.Flow] = st
		t.open.Store(int32(len(t.closes)))
	}
	if fault == faults.DropFinalACK {
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
	st.rec.Segments = append(segs, Segment{At: now, From: from.String(), Flags: tcpflag.String(uint8(f.Flags)), Seq: f.Seq, Ack: f.Ack, Len: f.PayloadLen, Fault: fault})
	st.rec.End = now
}
