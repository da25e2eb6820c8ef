package stack

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Close kinds, as Close.Kind reports them.
const (
	KindFourWay      = "four-way"     // FIN, ACK, FIN, ACK
	KindThreeWay     = "three-way"    // FIN, FIN|ACK, ACK (RFC 9293 §3.6): the first FIN's ACK rides on the second FIN or on data
	KindSimultaneous = "simultaneous" // both FINs sent before either arrived (CLOSING)
	KindReset        = "reset"        // ended by a RST
	// KindFinWait2Timeout: tund's FIN was acknowledged but the peer's FIN
	// did not come within the FIN-WAIT-2 timeout; tund forgot the
	// connection, and answers a late FIN with RST.
	KindFinWait2Timeout = "fin-wait2-timeout"
	// KindRetransmitLimit: tund gave up retransmitting its FIN, which the
	// peer never acknowledged.
	KindRetransmitLimit = "retransmission-limit"
	// KindHalfClosePolicy: the peer half-closed and the service's
	// half-close policy (close, or a time limit) ended the connection.
	KindHalfClosePolicy = "half-close-policy"
	KindUnfinished      = "unfinished" // forgotten before it completed
)

// Sides of a connection, as Segment.From and Close.Initiator name them.
// SideBoth is the initiator of a close whose two sides' first FINs or RSTs
// crossed: each left before the other arrived (for FINs, RFC 9293 §3.6's
// simultaneous close), so neither end started it, and neither end can tell
// which left first (leadSegment.crossedBy).
const (
	SideTund = "tund"
	SidePeer = "peer"
	SideBoth = "both"
)

// closeSegmentsCap is the room a new record makes for its segments: a
// close takes three to five, so most records never grow their slice.
const closeSegmentsCap = 5

// maxCloseSegments bounds a record: a close takes four segments, and
// retransmissions a few more; past this the record notes the overflow.
const maxCloseSegments = 48

// closeLinger is how long a close that saw no segment waits before the
// tracer asks whether the stack still has its endpoint: while it does, the
// close is followed on; once it is gone, the close is finished as it ended.
const closeLinger = 10 * time.Second

// maxOpenCloses bounds the closes followed at once; past it new ones are
// not traced (and counted), so a flood cannot grow memory.
const maxOpenCloses = 1 << 16

// Segment is one TCP segment of a close, as it crossed the TUN device.
type Segment struct {
	At    time.Time `json:"at"`
	From  string    `json:"from"` // "tund" or "peer"
	Flags string    `json:"flags"`
	Seq   uint32    `json:"seq"`
	Ack   uint32    `json:"ack"`
	Len   int       `json:"len"`
	// TundState and PeerState name the state a side entered with this
	// segment, if any (RFC 9293 §3.3.2), as the wire implies it.
	TundState string `json:"tund_state,omitempty"`
	PeerState string `json:"peer_state,omitempty"`
	// Fault names the fault (FaultDropFIN, ...) that dropped or delayed
	// the segment. A dropped segment of tund's never reached the wire; a
	// peer's dropped by loss-in crossed it but never reached the stack.
	Fault string `json:"fault,omitempty"`
}

// Close is the record of one connection's close, built from the segments
// on the wire: who closed first, how, and the segments from the first FIN
// or RST to the end.
type Close struct {
	// ID numbers the records in the order they finished; an amended
	// record keeps its ID.
	ID        uint64         `json:"id"`
	Local     netip.AddrPort `json:"local"`
	Remote    netip.AddrPort `json:"remote"`
	Initiator string         `json:"initiator"` // side that sent the first FIN or RST; both where the other side's crossed it (leadSegment.crossedBy)
	Kind      string         `json:"kind"`
	// ResetBy names the side that sent the RST that ended the close: for
	// KindReset, and for KindFinWait2Timeout when a late FIN drew one.
	ResetBy string `json:"reset_by,omitempty"`
	// FINRetransmits counts FINs sent again by either side.
	FINRetransmits int `json:"fin_retransmits"`
	// ACKRetransmits counts pure ACKs of a FIN that their sender had
	// acknowledged already (a dup ACK of a retransmitted FIN, the ACK of a
	// FIN replayed in TIME-WAIT).
	ACKRetransmits int `json:"ack_retransmits"`
	// FinalACKLost reports that the peer sent its FIN again while tund was
	// in TIME-WAIT: tund's final ACK did not reach it. tund ACKed it again
	// and restarted 2 x MSL (RFC 9293 §3.10.7.4); the segments are added to
	// the record, which is filed again.
	FinalACKLost bool      `json:"final_ack_lost,omitempty"`
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
	Segments     []Segment `json:"segments"`
	Truncated    bool      `json:"truncated,omitempty"`
}

// Duration is the time from the first FIN or RST to the last segment.
func (c *Close) Duration() time.Duration { return c.End.Sub(c.Start) }

// closeState follows one close as it happens.
type closeState struct {
	rec      Close
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
	expires   int64  // monotonic nanoseconds (monoOf)
	countDue  int64  // when it is counted as it is; 0: counted
	kind      uint8  // index in kindNames
	initiator uint8  // index in initiators
	lead      leadSegment
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
	id             uint64 // the filed record
	since, expires int64  // monotonic nanoseconds (monoOf)
	tundFIN        uint32
	peerFIN        uint32
	kind           uint8 // index in kindNames
}

// monoOf and timeOf convert between a time and the monotonic nanoseconds
// that compact entries keep.
func monoOf(t time.Time) int64  { return int64(t.Sub(monoStart)) }
func timeOf(ns int64) time.Time { return monoStart.Add(time.Duration(ns)) }

// tracer is a link endpoint, nested right above the device, that records
// every close as the wire sees it (beneath the FIN/ACK merge), counts what
// it sees, and files each finished record in the close log.
type tracer struct {
	nested.Endpoint

	open    atomic.Int32 // len(closes), read without the lock
	waiting atomic.Int32 // len(timeWaits), read without the lock
	mu      sync.Mutex
	closes  map[flow]*closeState
	// timeWaits are the closes that left tund in TIME-WAIT, for 2 x MSL.
	timeWaits flowMap[timeWait]
	// ended are the other closes that ended, for lateWindow; due lists
	// those not yet counted, oldest first.
	ended     flowMap[endedClose]
	nEnded    atomic.Int32 // ended.len(), read without the lock
	due       []flow
	sweepAt   int
	linger    time.Duration // how long a close with no segment is followed
	timeWait  time.Duration // 2 x MSL
	rstCloses bool          // a RST ends TIME-WAIT (--time-wait-rst close)
	lossIn    *lossIn       // --loss-in, applied here, before tracing (nil: none)

	log *closeLog
	// stack tells whether an endpoint still exists; set before the NIC is
	// created.
	stack *stack.Stack
	stop  chan struct{}
}

// traceConfig is what the tracer needs to know of the stack's settings.
type traceConfig struct {
	linger    time.Duration
	timeWait  time.Duration
	rstCloses bool
	lossIn    *lossIn
}

func newTracer(child stack.LinkEndpoint, c traceConfig, log *closeLog) *tracer {
	t := &tracer{
		closes: make(map[flow]*closeState), timeWaits: newFlowMap[timeWait](), ended: newFlowMap[endedClose](), sweepAt: 256,
		linger: c.linger, timeWait: c.timeWait, rstCloses: c.rstCloses, lossIn: c.lossIn, log: log, stop: make(chan struct{}),
	}
	t.Init(child, t)
	go t.sweeper()
	return t
}

// sweeper finishes forgotten closes and ends TIME-WAITs every second or so,
// so that an unfinished close is reported even when no new close comes.
func (t *tracer) sweeper() {
	tick := time.NewTicker(min(max(t.linger/4, time.Second), 5*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			if t.open.Load() > 0 || t.waiting.Load() > 0 || t.nEnded.Load() > 0 {
				t.mu.Lock()
				t.sweepLocked(now)
				t.mu.Unlock()
			}
		}
	}
}

// Close stops the sweeper and closes the device below.
func (t *tracer) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	t.Endpoint.Close()
}

// DeliverNetworkPacket traces a segment from the peer.
func (t *tracer) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	size := pkt.Data().Size()
	if b, ok := pkt.Data().PullUp(min(size, maxPeek)); ok {
		if f, ok := parseInbound(b, size); ok {
			t.log.counters.segments[peerSide].Add(1)
			if t.lossIn != nil && t.lossIn.drop(f) {
				t.faulted(f, peerSide, FaultLossIn)
				return // on the wire, never in the stack
			}
			t.segment(f, SidePeer)
		}
	}
	t.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// WritePackets traces the segments tund sends.
func (t *tracer) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
			continue
		}
		if f, ok := parseOutbound(pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice(), pkt.Data().Size()); ok {
			t.log.counters.segments[tund].Add(1)
			t.segment(f, SideTund)
		}
	}
	return t.Endpoint.WritePackets(pkts)
}

// segment follows one segment. Only segments of flows that are closing
// take the lock: the fast path is a flag test and an atomic load or two.
func (t *tracer) segment(f tcpFields, from string) {
	closing := f.flags&(header.TCPFlagFin|header.TCPFlagRst) != 0
	if !closing && t.open.Load() == 0 {
		// A SYN may start a new incarnation of a flow: a peer's may end a
		// TIME-WAIT, and either side's ends a close that ended lately. So
		// SYNs take the lock (once each way per connection) while such
		// closes are remembered; no other segment of a quiet flow does.
		if f.flags&header.TCPFlagSyn == 0 || (from == SideTund || t.waiting.Load() == 0) && t.nEnded.Load() == 0 {
			return
		}
	}
	var reason string
	if f.flags&header.TCPFlagRst != 0 {
		reason = t.resetReason(f, from)
	}
	var filed, amended *Close
	t.mu.Lock()
	st := t.closes[f.flow]
	if f.flags&header.TCPFlagSyn != 0 && t.ended.len() > 0 {
		// A new incarnation: the close that ended takes no more segments.
		t.forgetEnded(f.flow)
	}
	if st == nil && !closing && (from == SideTund || f.flags&header.TCPFlagSyn == 0) {
		// A segment of a flow that is not closing, while others are: only
		// a peer's SYN can matter (it may end a TIME-WAIT).
		t.mu.Unlock()
		return
	}
	// The clock is read only for segments that are recorded: it costs as
	// much as the rest of the fast path.
	now := time.Now()
	if st == nil && from == SidePeer && t.timeWaits.len() > 0 {
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
	if st == nil && closing && t.ended.len() > 0 {
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
		if !closing || f.flags&header.TCPFlagSyn != 0 || reason == ResetRefused {
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
		local, remote := f.flow.addrs()
		st = &closeState{rec: Close{Local: local, Remote: remote, Initiator: from, Start: now}, sides: newCloseSides(now)}
		st.rec.Segments = st.segs[:0]
		t.closes[f.flow] = st
		t.open.Store(int32(len(t.closes)))
	}
	done := t.addLocked(st, f, sideOf(from), now)
	st.deadline = now.Add(t.linger)
	if done {
		delete(t.closes, f.flow)
		t.open.Store(int32(len(t.closes)))
		if st.reopened {
			amended = &st.rec
		} else {
			st.rec.ID = t.log.newID()
			filed = &st.rec
		}
		// Filed under the lock: a late segment on another goroutine must
		// find the record (the lock order, tracer then log, is sweepLocked's).
		pending := filed != nil && t.ended.len() < maxOpenCloses && st.canBeCrossed()
		switch {
		case pending:
			t.log.file(filed)
		case filed != nil:
			t.log.add(filed)
		case amended != nil:
			t.log.amend(amended)
		}
		if t.timeWait > 0 && st.sides.state[tund] == stTimeWait && t.timeWaits.len() < maxOpenCloses {
			t.timeWaits.set(f.flow, timeWait{
				id: st.rec.ID, kind: uint8(max(indexOf(kindNames[:], st.rec.Kind), 0)), tundFIN: st.sides.fin[tund], peerFIN: st.sides.fin[peerSide],
				since: monoOf(st.sides.since[tund]), expires: monoOf(now.Add(t.timeWait)),
			})
			t.waiting.Store(int32(t.timeWaits.len()))
		} else if t.ended.len() < maxOpenCloses {
			t.forgetEnded(f.flow) // counts a close of an earlier incarnation
			e := endedClose{id: st.rec.ID, expires: monoOf(now.Add(lateWindow)), lead: st.sides.lead}
			if pending {
				e.countDue = monoOf(now.Add(crossWindow))
				e.kind = uint8(max(indexOf(kindNames[:], st.rec.Kind), 0))
				e.initiator = uint8(max(indexOf(initiators[:], st.rec.Initiator), 0))
				t.due = append(t.due, f.flow)
			}
			t.ended.set(f.flow, e)
			t.nEnded.Store(int32(t.ended.len()))
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
func (t *tracer) countEnded(e *endedClose) {
	if e.countDue != 0 {
		t.log.counters.countClose(kindNames[e.kind], initiators[e.initiator])
		e.countDue = 0
	}
}

// forgetEnded forgets the ended close of fl, if any, counting it first.
func (t *tracer) forgetEnded(fl flow) {
	if e, ok := t.ended.get(fl); ok {
		t.countEnded(&e)
		t.ended.delete(fl)
		t.nEnded.Store(int32(t.ended.len()))
	}
}

// countDue counts the ended closes whose crossWindow is over.
func (t *tracer) countDue(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countDueLocked(now)
}

func (t *tracer) countDueLocked(now time.Time) {
	n := 0
	for ; n < len(t.due); n++ {
		fl := t.due[n]
		e, ok := t.ended.get(fl)
		if !ok || e.countDue == 0 {
			continue // counted when it was forgotten or decided
		}
		if monoOf(now) < e.countDue {
			break
		}
		t.countEnded(&e)
		t.ended.set(fl, e)
	}
	t.due = t.due[n:]
}

// lateSegment takes a FIN or RST of a close that ended less than
// lateWindow ago: late reports that it did, and rec is that close's record
// with the segment added, to amend (nil when the log no longer keeps it: the
// segment is late all the same, not a close of its own). While the close
// waits for its initiator to be final, the other side's first FIN or RST
// decides it (leadSegment.crossedBy), and the close is counted.
func (t *tracer) lateSegment(f tcpFields, from string, reason string, now time.Time) (rec *Close, late bool) {
	e, ok := t.ended.get(f.flow)
	if !ok {
		return nil, false
	}
	if monoOf(now) > e.expires || f.flags&header.TCPFlagSyn != 0 {
		t.forgetEnded(f.flow)
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
	if monoOf(now) >= e.countDue && e.countDue != 0 {
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
	if rec != nil {
		if len(rec.Segments) < maxCloseSegments {
			rec.Segments = append(rec.Segments, Segment{At: now, From: from, Flags: flagString(f.flags), Seq: f.seq, Ack: f.ack, Len: f.payloadLen})
		} else {
			rec.Truncated = true
		}
		rec.End = now
	}
	t.ended.set(f.flow, e)
	return rec, true
}

// resetReason tells why a RST crossed, from what the stack knows of its
// connection. It runs for RSTs only: they are rare, and the lookup takes
// the stack's demultiplexer lock.
func (t *tracer) resetReason(f tcpFields, from string) string {
	state, found := t.connection(f.flow)
	switch {
	case from == SideTund && found:
		return ResetAbort
	case from == SideTund && f.flags&header.TCPFlagAck != 0 && f.seq == 0:
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
func (t *tracer) timeWaitSegment(f tcpFields, now time.Time) (st *closeState, amended *Close, handled bool) {
	tw, ok := t.timeWaits.get(f.flow)
	if !ok {
		return nil, nil, false
	}
	if monoOf(now) > tw.expires {
		// 2 x MSL ran out before the sweeper came by: the stack has
		// forgotten the connection, and so does the tracer.
		t.endTimeWaitLocked(f.flow, tw, timeOf(tw.expires))
		return nil, nil, false
	}
	switch {
	case f.flags&header.TCPFlagRst != 0:
		t.log.counters.countReset(peerSide, ResetTimeWait)
		rec := t.filedRecord(f.flow, tw, now)
		seg := Segment{At: now, From: SidePeer, Flags: flagString(f.flags), Seq: f.seq, Ack: f.ack, Len: f.payloadLen}
		// gVisor honours only a RST at RCV.NXT, and only when told to
		// (RFC 5961 §3.2, tund patch 0003); otherwise it is ignored
		// (RFC 1337).
		if t.rstCloses && f.seq == tw.peerFIN+1 {
			seg.TundState = stClosed.String()
			t.endTimeWaitLocked(f.flow, tw, now)
		}
		if len(rec.Segments) < maxCloseSegments {
			rec.Segments = append(rec.Segments, seg)
		} else {
			rec.Truncated = true
		}
		rec.End = now
		return nil, rec, true
	case f.flags&header.TCPFlagSyn != 0:
		// A new incarnation of the connection (RFC 1122 §4.2.2.13).
		t.endTimeWaitLocked(f.flow, tw, now)
		return nil, nil, false
	case f.flags&header.TCPFlagFin != 0 && f.seq+uint32(f.payloadLen) == tw.peerFIN:
		t.log.counters.finalACKLost.Add(1)
		t.timeWaits.delete(f.flow)
		t.waiting.Store(int32(t.timeWaits.len()))
		st = &closeState{reopened: true, rec: *t.filedRecord(f.flow, tw, now), sides: newCloseSides(now)}
		st.rec.FinalACKLost = true
		s := &st.sides
		s.state = [2]tcpState{stTimeWait, stLastAck}
		s.since[tund] = timeOf(tw.since)
		s.fin = [2]uint32{tw.tundFIN, tw.peerFIN}
		s.finSent, s.finAcked = [2]bool{true, true}, [2]bool{true, true}
		t.closes[f.flow] = st
		t.open.Store(int32(len(t.closes)))
		return st, nil, false
	}
	return nil, nil, true
}

// filedRecord returns a copy of the record that a TIME-WAIT entry refers
// to, to add to: the filed one is shared with readers and never changes.
// If the log no longer keeps it, the copy starts afresh.
func (t *tracer) filedRecord(fl flow, tw timeWait, now time.Time) *Close {
	if base := t.log.record(tw.id); base != nil {
		c := *base
		c.Segments = append([]Segment(nil), base.Segments...)
		return &c
	}
	local, remote := fl.addrs()
	return &Close{ID: tw.id, Local: local, Remote: remote, Initiator: SideTund, Kind: kindNames[tw.kind], Start: now}
}

// endTimeWaitLocked forgets a TIME-WAIT that ended, counting its time.
func (t *tracer) endTimeWaitLocked(fl flow, tw timeWait, end time.Time) {
	t.log.counters.observe(stTimeWait, end.Sub(timeOf(tw.since)))
	t.timeWaits.delete(fl)
	t.waiting.Store(int32(t.timeWaits.len()))
}

// addLocked records a segment and reports whether the close is over: a
// RST, or both FINs acknowledged (for a reopened close, the FIN replayed in
// TIME-WAIT acknowledged again).
func (t *tracer) addLocked(st *closeState, f tcpFields, from side, now time.Time) bool {
	r := &st.rec
	r.End = now
	if from == peerSide && f.flags&header.TCPFlagFin != 0 && st.sides.state[tund] == stFinWait2 && !t.endpointExists(f.flow) {
		// tund's FIN-WAIT-2 ran out before this FIN came: tund is CLOSED
		// and will not take it. When it ran out the wire does not say, so
		// the time is not counted.
		st.sides.state[tund] = stClosed
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
				if from == tund && s.TundState == stCloseWait.String() {
					s.TundState = ""
				} else if from == peerSide && s.PeerState == stCloseWait.String() {
					s.PeerState = ""
				}
				break
			}
		}
	}
	seg := Segment{At: now, From: from.String(), Flags: flagString(f.flags), Seq: f.seq, Ack: f.ack, Len: f.payloadLen}
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
	if f.flags&header.TCPFlagRst != 0 {
		r.Kind, r.ResetBy = KindReset, from.String()
		if st.finWait2Expired {
			r.Kind = KindFinWait2Timeout
		}
		return true
	}
	if st.reopened {
		return from == tund && f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, st.sides.fin[peerSide]+1)
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

// markPolicy notes that a service's half-close policy is ending the
// connection: its record will be of KindHalfClosePolicy.
func (t *tracer) markPolicy(fl flow) {
	t.mu.Lock()
	if st := t.closes[fl]; st != nil {
		st.policy = true
	}
	t.mu.Unlock()
}

// sweepLocked ends the TIME-WAITs whose 2 x MSL ran out and finishes the
// closes that saw no segment for the linger time and whose endpoint the
// stack has freed: a FIN-WAIT-2 that ran out, a FIN never acknowledged, a
// peer that vanished. A close whose endpoint lives on (a service that
// keeps its connection in CLOSE-WAIT) is followed on.
func (t *tracer) sweepLocked(now time.Time) {
	t.timeWaits.all(func(fl flow, tw timeWait) bool {
		if monoOf(now) > tw.expires {
			t.endTimeWaitLocked(fl, tw, timeOf(tw.expires))
		}
		return true
	})
	t.countDueLocked(now)
	t.ended.all(func(fl flow, e endedClose) bool {
		if monoOf(now) > e.expires {
			t.countEnded(&e)
			t.ended.delete(fl)
		}
		return true
	})
	t.nEnded.Store(int32(t.ended.len()))
	var finished []*Close
	for fl, st := range t.closes {
		if !now.After(st.deadline) {
			continue
		}
		if t.endpointExists(fl) {
			st.deadline = now.Add(t.linger)
			continue
		}
		switch s := &st.sides; {
		case s.state[tund] == stFinWait2 || st.finWait2Expired:
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

// connection returns the state of the stack's endpoint for the flow, if it
// has one. A listener does not count: the demultiplexer hands out the
// listener of the port for a 4-tuple it does not know.
func (t *tracer) connection(fl flow) (tcp.EndpointState, bool) {
	if t.stack == nil {
		return 0, false
	}
	netProto, id := fl.endpointID()
	tep, ok := t.stack.FindTransportEndpoint(netProto, header.TCPProtocolNumber, id, nicID).(*tcp.Endpoint)
	if !ok {
		return 0, false
	}
	st := tep.EndpointState()
	return st, st != tcp.StateListen
}

func (t *tracer) endpointExists(fl flow) bool {
	_, ok := t.connection(fl)
	return ok
}

// flagString names the SYN, FIN, RST, PSH and ACK flags of f, in that
// order ("FA" for FIN|ACK). The names come from a table built once: a
// segment's record allocates no string.
func flagString(f header.TCPFlags) string {
	return flagNames[f&(header.TCPFlagFin|header.TCPFlagSyn|header.TCPFlagRst|header.TCPFlagPsh|header.TCPFlagAck)]
}

var flagNames = func() (names [header.TCPFlagAck << 1]string) {
	for f := range names {
		var b []byte
		for _, x := range []struct {
			bit  header.TCPFlags
			name byte
		}{{header.TCPFlagSyn, 'S'}, {header.TCPFlagFin, 'F'}, {header.TCPFlagRst, 'R'}, {header.TCPFlagPsh, 'P'}, {header.TCPFlagAck, 'A'}} {
			if header.TCPFlags(f)&x.bit != 0 {
				b = append(b, x.name)
			}
		}
		names[f] = string(b)
	}
	return names
}()

// addrs returns the flow's local and remote address.
func (f flow) addrs() (local, remote netip.AddrPort) {
	if f.v6 {
		return netip.AddrPortFrom(netip.AddrFrom16(f.local), f.localPort), netip.AddrPortFrom(netip.AddrFrom16(f.remote), f.remotePort)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(f.local[:4])), f.localPort), netip.AddrPortFrom(netip.AddrFrom4([4]byte(f.remote[:4])), f.remotePort)
}
