package stack

import (
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// DefaultFINACKMerge is the default FIN/ACK merge window. It is Linux's
// minimum delayed-ACK timeout (TCP_DELACK_MIN, 40 ms), the delay a Linux
// server gives the ACK of a FIN, so tund closes as a Linux server would:
// a service that closes when it reads EOF does so within microseconds, well
// inside it, and it stays far below the 200 ms minimum RTO of Linux peers,
// which would otherwise retransmit their FIN (RFC 6298 §2.4).
const DefaultFINACKMerge = 40 * time.Millisecond

// maxTrackedFINs bounds the table of peer FINs awaiting their ACK. Past it,
// new FINs are acknowledged at once (a four-way close), so a flood of FINs
// cannot grow memory.
const maxTrackedFINs = 1 << 16

// mergeEndpoint is a link endpoint, nested between the stack and the
// device, that turns the four-way close a peer starts into a three-way one.
//
// gVisor ACKs a peer's FIN at once (tcp/rcv.go), then sends its own FIN when
// the application closes: FIN, ACK, FIN, ACK. RFC 9293 §3.6 allows the ACK
// to ride on the FIN: FIN, FIN|ACK, ACK. The endpoint holds the pure ACK of
// a peer FIN for the merge window; any later segment of the flow that
// acknowledges at least as much (the FIN|ACK above, or data) replaces it,
// and if none comes the held ACK goes out alone when the window ends.
//
// Correctness rules, each enforced below: hold only a pure ACK (flags ACK,
// no payload) whose ack is the peer FIN's sequence + length + 1; never once
// tund's own FIN is out (then it is the final ACK of an active or
// simultaneous close: the endpoint must be ESTABLISHED when the peer's FIN
// arrives, and no FIN of ours may pass after it); hold at most one per FIN;
// never send a held ACK after a newer segment of the flow; and send it at
// once when the peer retransmits its FIN.
type mergeEndpoint struct {
	nested.Endpoint

	// The windows are fixed at start; 0 disables.
	window      time.Duration
	portWindows map[uint16]time.Duration // per local port
	anyWindow   bool                     // some window is not zero

	pending   atomic.Int32 // len(fins), read without the lock
	mu        sync.Mutex
	fins      map[flow]*finState
	lastSweep time.Time
	closed    bool // the stack let go of the link: nothing more is sent

	// stack finds the endpoint of a flow; set before the NIC is created.
	stack *stack.Stack

	stats MergeStats
}

// MergeStats counts what the FIN/ACK merge did.
type MergeStats struct {
	// Merged counts ACKs of peer FINs that rode on tund's FIN.
	Merged atomic.Uint64
	// Carried counts held ACKs that a data or other segment carried.
	Carried atomic.Uint64
	// Released counts held ACKs sent alone when the window ended.
	Released atomic.Uint64
	// Flushed counts held ACKs sent early because the peer retransmitted
	// its FIN.
	Flushed atomic.Uint64
}

// finState is a peer FIN waiting for its ACK to go out.
type finState struct {
	finEnd  uint32 // the ack that acknowledges the FIN
	ourFIN  bool   // tund's FIN went out after the peer's arrived
	expires time.Time
	window  time.Duration
	held    *stack.PacketBuffer
	timer   *time.Timer
}

func newMergeEndpoint(child stack.LinkEndpoint, window time.Duration, portWindows map[uint16]time.Duration) *mergeEndpoint {
	e := &mergeEndpoint{window: window, portWindows: portWindows, fins: make(map[flow]*finState), anyWindow: window > 0}
	for _, w := range portWindows {
		e.anyWindow = e.anyWindow || w > 0
	}
	e.Init(child, e)
	return e
}

func (e *mergeEndpoint) windowFor(localPort uint16) time.Duration {
	if w, ok := e.portWindows[localPort]; ok {
		return w
	}
	return e.window
}

// DeliverNetworkPacket notes peer FINs on their way into the stack.
func (e *mergeEndpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if e.anyWindow {
		e.inbound(pkt)
	}
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// maxPeek covers an IPv6 header and a TCP header with options.
const maxPeek = header.IPv6MinimumSize + header.TCPHeaderMaximumSize

func (e *mergeEndpoint) inbound(pkt *stack.PacketBuffer) {
	size := pkt.Data().Size()
	b, ok := pkt.Data().PullUp(min(size, maxPeek))
	if !ok {
		return
	}
	f, ok := parseInbound(b, size)
	if !ok || f.flags&(header.TCPFlagFin|header.TCPFlagRst) == 0 {
		return
	}
	if f.flags&header.TCPFlagRst != 0 {
		// Not acted on: the stack may yet refuse it (a bad checksum, a
		// sequence number out of window, RFC 5961), and a held ACK that
		// goes out late to a peer that did reset costs only its RST.
		return
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.maybeSweepLocked(now)
	st := e.fins[f.flow]
	finEnd := f.seq + uint32(f.payloadLen) + 1
	if st != nil {
		if st.finEnd == finEnd && st.held != nil {
			// The peer retransmitted its FIN: our ACK is overdue.
			e.stats.Flushed.Add(1)
			e.sendLocked(f.flow, st)
		}
		return
	}
	w := e.windowFor(f.flow.localPort)
	if w <= 0 || f.flags&header.TCPFlagAck == 0 || len(e.fins) >= maxTrackedFINs || !e.established(f.flow) {
		return
	}
	// An entry lives until a segment of the flow acknowledges the FIN; one
	// whose FIN the stack dropped (a bad checksum, say) expires.
	e.fins[f.flow] = &finState{finEnd: finEnd, window: w, expires: now.Add(w + time.Second)}
	e.pending.Store(int32(len(e.fins)))
}

// established reports whether the flow's endpoint is synchronized and has
// not sent its FIN: only then is the ACK of the peer's FIN one to merge.
// SYN-RECEIVED counts: a peer's ACK, data and FIN can arrive together, and
// the endpoint is still SYN-RECEIVED while they wait in its queue.
func (e *mergeEndpoint) established(fl flow) bool {
	if e.stack == nil {
		return false
	}
	netProto, id := fl.endpointID()
	ep := e.stack.FindTransportEndpoint(netProto, header.TCPProtocolNumber, id, nicID)
	tep, ok := ep.(*tcp.Endpoint)
	if !ok {
		return false
	}
	st := tep.EndpointState()
	return st == tcp.StateEstablished || st == tcp.StateSynRecv
}

// WritePackets holds the pure ACK of a peer FIN, and drops a held one that a
// newer segment carries.
func (e *mergeEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.pending.Load() == 0 {
		return e.Endpoint.WritePackets(pkts)
	}
	var hold []bool
	for i, pkt := range pkts.AsSlice() {
		if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
			continue
		}
		f, ok := parseOutbound(pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice(), pkt.Data().Size())
		if !ok || !e.outbound(f, pkt) {
			continue
		}
		if hold == nil {
			hold = make([]bool, pkts.Len())
		}
		hold[i] = true
	}
	if hold == nil {
		return e.Endpoint.WritePackets(pkts)
	}
	return writeKept(&e.Endpoint, pkts, hold)
}

// outbound looks at one segment the stack sends and reports whether to
// hold it. A held packet gets its own reference.
func (e *mergeEndpoint) outbound(f tcpFields, pkt *stack.PacketBuffer) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.fins[f.flow]

	if st == nil {
		return false
	}
	switch {
	case f.flags&header.TCPFlagRst != 0:
		e.dropLocked(f.flow, st)
	case st.held != nil:
		if f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, st.finEnd) {
			if f.flags&header.TCPFlagFin != 0 {
				e.stats.Merged.Add(1)
			} else {
				e.stats.Carried.Add(1)
			}
			e.dropLocked(f.flow, st)
		}
	case f.flags&header.TCPFlagFin != 0:
		// Our FIN: it carries the ACK if the peer's FIN was processed, and
		// any ACK after it is the final one, never to be held.
		st.ourFIN = true
		if f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, st.finEnd) {
			e.dropLocked(f.flow, st)
		}
	case !st.ourFIN && f.flags == header.TCPFlagAck && f.payloadLen == 0 && f.ack == st.finEnd:
		st.held = pkt.IncRef()
		flow := f.flow
		st.timer = time.AfterFunc(st.window, func() { e.release(flow, st) })
		return true
	case f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, st.finEnd):
		// The FIN was acknowledged by a segment we may not hold (tund's
		// FIN was out already): nothing to merge.
		e.dropLocked(f.flow, st)
	}
	return false
}

// release sends a held ACK whose window ended.
func (e *mergeEndpoint) release(fl flow, st *finState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.fins[fl] != st || st.held == nil {
		return // a newer segment carried it, it was flushed, or the link is gone
	}
	e.stats.Released.Add(1)
	e.sendLocked(fl, st)
}

// sendLocked writes the held ACK and forgets the FIN. Writing under the lock
// keeps it ordered before any later segment of the flow, which must take
// the lock first.
func (e *mergeEndpoint) sendLocked(fl flow, st *finState) {
	pkt := st.held
	st.held = nil
	e.dropLocked(fl, st)
	writeOne(&e.Endpoint, pkt)
}

// dropLocked forgets a FIN, discarding its held ACK if any.
func (e *mergeEndpoint) dropLocked(fl flow, st *finState) {
	if st.timer != nil {
		st.timer.Stop()
	}
	if st.held != nil {
		st.held.DecRef()
		st.held = nil
	}
	delete(e.fins, fl)
	e.pending.Store(int32(len(e.fins)))
}

// maybeSweepLocked forgets, at most once a second, the expired FINs that
// hold nothing: FINs the stack never acknowledged (it dropped them) would
// otherwise keep every packet on the slow path.
func (e *mergeEndpoint) maybeSweepLocked(now time.Time) {
	if now.Sub(e.lastSweep) < time.Second {
		return
	}
	e.lastSweep = now
	for fl, st := range e.fins {
		if st.held == nil && now.After(st.expires) {
			delete(e.fins, fl)
		}
	}
	e.pending.Store(int32(len(e.fins)))
}

// Attach stops holding ACKs when the stack detaches (nil): held ACKs are
// dropped and their timers stopped, so that nothing is written to a device
// that is being closed.
func (e *mergeEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.shutdown()
	}
	e.Endpoint.Attach(d)
}

// Close drops held ACKs and closes the link below.
func (e *mergeEndpoint) Close() {
	e.shutdown()
	e.Endpoint.Close()
}

func (e *mergeEndpoint) shutdown() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for fl, st := range e.fins {
		e.dropLocked(fl, st)
	}
}

// Stats returns the merge counters.
func (e *mergeEndpoint) Stats() *MergeStats { return &e.stats }
