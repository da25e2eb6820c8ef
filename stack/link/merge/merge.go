// Package merge is the close-path layer that turns the four-way close a
// peer starts into a three-way one (RFC 9293 §3.6): it holds the ACK of the
// peer's FIN for a short window so that it can ride on tund's own FIN.
package merge

import (
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
)

// DefaultWindow is the default FIN/ACK merge window. It is Linux's
// minimum delayed-ACK timeout (TCP_DELACK_MIN, 40 ms), the delay a Linux
// server gives the ACK of a FIN, so tund closes as a Linux server would:
// a service that closes when it reads EOF does so within microseconds, well
// inside it, and it stays far below the 200 ms minimum RTO of Linux peers,
// which would otherwise retransmit their FIN (RFC 6298 §2.4).
const DefaultWindow = 40 * time.Millisecond

// maxTrackedFINs bounds the table of peer FINs awaiting their ACK. Past it,
// new FINs are acknowledged at once (a four-way close), so a flood of FINs
// cannot grow memory.
const maxTrackedFINs = 1 << 16

// Endpoint is the layer (see package layer) that turns the four-way close a
// peer starts into a three-way one.
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
type Endpoint struct {
	layer.Layer

	windows atomic.Pointer[windows] // replaced whole by SetWindows

	pending atomic.Int32 // len(fins), read without the lock
	mu      sync.Mutex
	fins    map[wire.Flow]*finState
	sweep   layer.Sweep
	closed  bool // the stack let go of the link: nothing more is sent

	stack *stack.Stack // finds a flow's connection
	stats Stats
}

// Stats counts what the FIN/ACK merge did.
type Stats struct {
	// Merged counts ACKs of peer FINs that rode on tund's FIN.
	Merged atomic.Uint64
	// Carried counts held ACKs that a data or other segment carried.
	Carried atomic.Uint64
	// Released counts held ACKs sent alone when the window ended.
	Released atomic.Uint64
	// Flushed counts held ACKs sent early because the peer retransmitted
	// its FIN.
	Flushed atomic.Uint64
	// DataACKed counts peer FINs whose data before them the stack
	// acknowledged at once with an ACK of its own (gVisor patch 0016), so
	// that only the FIN's ACK was held.
	DataACKed atomic.Uint64
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

// windows are the merge windows in force: one for every port, or a port's
// own; 0 never merges. A value is never changed, only replaced, so that a
// segment reads it without a lock.
type windows struct {
	all   time.Duration
	ports map[uint16]time.Duration
	any   bool // some window is not zero
}

// New returns the merge layer over child: window for every port, or the
// port's own in portWindows; 0 never merges. s is the stack above.
func New(child stack.LinkEndpoint, window time.Duration, portWindows map[uint16]time.Duration, s *stack.Stack) *Endpoint {
	e := &Endpoint{fins: make(map[wire.Flow]*finState), stack: s}
	e.SetWindows(window, portWindows)
	e.Init(child, e)
	return e
}

// SetWindows replaces the windows while the layer runs. A peer FIN that
// arrives from then on is held for the new window of its port; an ACK held
// already keeps the window it was held for.
func (e *Endpoint) SetWindows(window time.Duration, portWindows map[uint16]time.Duration) {
	w := &windows{all: window, ports: portWindows, any: window > 0}
	for _, pw := range portWindows {
		w.any = w.any || pw > 0
	}
	e.windows.Store(w)
}

func (e *Endpoint) windowFor(localPort uint16) time.Duration {
	w := e.windows.Load()
	if pw, ok := w.ports[localPort]; ok {
		return pw
	}
	return w.all
}

// Watching: peer FINs while some port has a window; the stack's segments
// while a FIN awaits its ACK.
func (e *Endpoint) Watching(dir layer.Direction) bool {
	if dir == layer.In {
		return e.windows.Load().any
	}
	return e.pending.Load() > 0
}

// Inbound notes a peer FIN on its way into the stack. A RST is not acted
// on: the stack may yet refuse it (a bad checksum, a sequence number out of
// window, RFC 5961), and a held ACK that goes out late to a peer that did
// reset costs only its RST.
func (e *Endpoint) Inbound(f wire.Fields, _ []byte) bool {
	if f.Flags&header.TCPFlagFin == 0 || f.Flags&header.TCPFlagRst != 0 {
		return true
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return true
	}
	if e.sweep.Due(now) {
		e.sweepLocked(now)
	}
	st := e.fins[f.Flow]
	finEnd := f.Seq + uint32(f.PayloadLen) + 1
	if st != nil {
		if st.finEnd == finEnd && st.held != nil {
			// The peer retransmitted its FIN: our ACK is overdue.
			e.stats.Flushed.Add(1)
			e.sendLocked(f.Flow, st)
		}
		return true
	}
	w := e.windowFor(f.Flow.LocalPort)
	if w <= 0 || f.Flags&header.TCPFlagAck == 0 || len(e.fins) >= maxTrackedFINs || !e.established(f.Flow) {
		return true
	}
	// An entry lives until a segment of the flow acknowledges the FIN; one
	// whose FIN the stack dropped (a bad checksum, say) expires.
	e.fins[f.Flow] = &finState{finEnd: finEnd, window: w, expires: now.Add(w + time.Second)}
	e.pending.Store(int32(len(e.fins)))
	return true
}

// established reports whether the flow's endpoint is synchronized and has
// not sent its FIN: only then is the ACK of the peer's FIN one to merge.
// SYN-RECEIVED counts: a peer's ACK, data and FIN can arrive together, and
// the endpoint is still SYN-RECEIVED while they wait in its queue.
func (e *Endpoint) established(fl wire.Flow) bool {
	st, ok := layer.Connection(e.stack, fl)
	return ok && (st == tcp.StateEstablished || st == tcp.StateSynRecv)
}

// Outbound holds the pure ACK of a peer FIN, and drops a held one that a
// newer segment carries. A held packet gets its own reference.
func (e *Endpoint) Outbound(f wire.Fields, pkt *stack.PacketBuffer) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.fins[f.Flow]

	if st == nil {
		return false
	}
	switch {
	case f.Flags&header.TCPFlagRst != 0:
		e.dropLocked(f.Flow, st)
	case st.held != nil:
		if f.Flags&header.TCPFlagAck != 0 && wire.SeqGE(f.Ack, st.finEnd) {
			if f.Flags&header.TCPFlagFin != 0 {
				e.stats.Merged.Add(1)
			} else {
				e.stats.Carried.Add(1)
			}
			e.dropLocked(f.Flow, st)
		}
	case f.Flags&header.TCPFlagFin != 0:
		// Our FIN: it carries the ACK if the peer's FIN was processed, and
		// any ACK after it is the final one, never to be held.
		st.ourFIN = true
		if f.Flags&header.TCPFlagAck != 0 && wire.SeqGE(f.Ack, st.finEnd) {
			e.dropLocked(f.Flow, st)
		}
	case !st.ourFIN && f.Flags == header.TCPFlagAck && f.PayloadLen == 0 && f.Ack == st.finEnd:
		st.held = pkt.IncRef()
		flow := f.Flow
		st.timer = time.AfterFunc(st.window, func() { e.release(flow, st) })
		return true
	case !st.ourFIN && f.Flags == header.TCPFlagAck && f.PayloadLen == 0 && f.Ack == st.finEnd-1:
		// The ACK of the data before the FIN, which goes at once.
		e.stats.DataACKed.Add(1)
	case f.Flags&header.TCPFlagAck != 0 && wire.SeqGE(f.Ack, st.finEnd):
		// The FIN was acknowledged by a segment we may not hold (tund's
		// FIN was out already): nothing to merge.
		e.dropLocked(f.Flow, st)
	}
	return false
}

// release sends a held ACK whose window ended.
func (e *Endpoint) release(fl wire.Flow, st *finState) {
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
func (e *Endpoint) sendLocked(fl wire.Flow, st *finState) {
	pkt := st.held
	st.held = nil
	e.dropLocked(fl, st)
	e.WriteOne(pkt)
}

// dropLocked forgets a FIN, discarding its held ACK if any.
func (e *Endpoint) dropLocked(fl wire.Flow, st *finState) {
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

// sweepLocked forgets the expired FINs that hold nothing: FINs the stack
// never acknowledged (it dropped them) would otherwise keep every packet on
// the slow path.
func (e *Endpoint) sweepLocked(now time.Time) {
	for fl, st := range e.fins {
		if st.held == nil && now.After(st.expires) {
			delete(e.fins, fl)
		}
	}
	e.pending.Store(int32(len(e.fins)))
}

// Stop drops the held ACKs and stops their timers: the stack let go of
// the link, and nothing may be written to a device that is being closed.
func (e *Endpoint) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for fl, st := range e.fins {
		e.dropLocked(fl, st)
	}
}

// Stats returns the merge counters.
func (e *Endpoint) Stats() *Stats { return &e.stats }
