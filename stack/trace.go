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
)

// Close kinds, as Close.Kind reports them.
const (
	KindFourWay      = "four-way"     // FIN, ACK, FIN, ACK
	KindThreeWay     = "three-way"    // FIN, FIN|ACK, ACK (RFC 9293 §3.6): the first FIN's ACK rides on the second FIN or on data
	KindSimultaneous = "simultaneous" // both FINs sent before either arrived (CLOSING)
	KindReset        = "reset"        // ended by a RST
	KindUnfinished   = "unfinished"   // forgotten before it completed
)

// Sides of a connection, as Segment.From and Close.Initiator name them.
const (
	SideTund = "tund"
	SidePeer = "peer"
)

// maxCloseSegments bounds a record: a close takes four segments, and
// retransmissions a few more; past this the record notes the overflow.
const maxCloseSegments = 48

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
}

// Close is the record of one connection's close, built from the segments
// on the wire: who closed first, how, and the segments from the first FIN
// or RST to the end.
type Close struct {
	Local     netip.AddrPort `json:"local"`
	Remote    netip.AddrPort `json:"remote"`
	Initiator string         `json:"initiator"` // side that sent the first FIN or RST
	Kind      string         `json:"kind"`
	// ResetBy names the side that sent the RST, for KindReset.
	ResetBy string `json:"reset_by,omitempty"`
	// FINRetransmits counts FINs sent again by either side.
	FINRetransmits int       `json:"fin_retransmits"`
	Start          time.Time `json:"start"`
	End            time.Time `json:"end"`
	Segments       []Segment `json:"segments"`
	Truncated      bool      `json:"truncated,omitempty"`
}

// Duration is the time from the first FIN or RST to the last segment.
func (c *Close) Duration() time.Duration { return c.End.Sub(c.Start) }

// closeState follows one close as it happens.
type closeState struct {
	rec               Close
	tundFIN, peerFIN  *uint32 // sequence number of each side's FIN
	tundFINAcked      bool
	peerFINAcked      bool
	tundFINBeforePeer bool // tund's FIN left before the peer's arrived
	peerFINBeforeTund bool // the peer's FIN arrived before tund's left
	deadline          time.Time
}

// tracer is a link endpoint, nested right above the device, that records
// every close as the wire sees it (beneath the FIN/ACK merge) and hands
// each finished record to Closes' subscribers.
type tracer struct {
	nested.Endpoint

	open    atomic.Int32 // len(closes), read without the lock
	mu      sync.Mutex
	closes  map[flow]*closeState
	sweepAt int
	linger  time.Duration // how long an unfinished close is followed
	dropped atomic.Uint64

	sink func(*Close)
	stop chan struct{}
}

func newTracer(child stack.LinkEndpoint, linger time.Duration, sink func(*Close)) *tracer {
	t := &tracer{closes: make(map[flow]*closeState), sweepAt: 256, linger: linger, sink: sink, stop: make(chan struct{})}
	t.Init(child, t)
	go t.sweeper()
	return t
}

// sweeper finishes forgotten closes every few seconds, so that an
// unfinished close is reported even when no new close comes.
func (t *tracer) sweeper() {
	tick := time.NewTicker(max(t.linger/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			if t.open.Load() > 0 {
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
			t.segment(f, SideTund)
		}
	}
	return t.Endpoint.WritePackets(pkts)
}

// segment follows one segment. Only segments of flows that are closing
// take the lock: the fast path is a flag test and an atomic load.
func (t *tracer) segment(f tcpFields, from string) {
	closing := f.flags&(header.TCPFlagFin|header.TCPFlagRst) != 0
	if !closing && t.open.Load() == 0 {
		return
	}
	now := time.Now()
	t.mu.Lock()
	st := t.closes[f.flow]
	if st == nil {
		if !closing || f.flags&header.TCPFlagSyn != 0 {
			t.mu.Unlock()
			return
		}
		if len(t.closes) >= t.sweepAt {
			t.sweepLocked(now)
		}
		if len(t.closes) >= maxOpenCloses {
			t.mu.Unlock()
			t.dropped.Add(1)
			return
		}
		local, remote := f.flow.addrs()
		st = &closeState{rec: Close{Local: local, Remote: remote, Initiator: from, Start: now}}
		t.closes[f.flow] = st
		t.open.Store(int32(len(t.closes)))
	}
	done := st.add(f, from, now)
	st.deadline = now.Add(t.linger)
	if done {
		delete(t.closes, f.flow)
		t.open.Store(int32(len(t.closes)))
	}
	t.mu.Unlock()
	if done && t.sink != nil {
		t.sink(&st.rec)
	}
}

// add records a segment and reports whether the close is over: a RST, or
// both FINs acknowledged.
func (st *closeState) add(f tcpFields, from string, now time.Time) bool {
	r := &st.rec
	r.End = now
	if len(r.Segments) < maxCloseSegments {
		r.Segments = append(r.Segments, Segment{At: now, From: from, Flags: flagString(f.flags), Seq: f.seq, Ack: f.ack, Len: f.payloadLen})
	} else {
		r.Truncated = true
	}
	own, other := &st.tundFIN, &st.peerFIN
	otherAcked := &st.peerFINAcked
	if from == SidePeer {
		own, other = &st.peerFIN, &st.tundFIN
		otherAcked = &st.tundFINAcked
	}
	if f.flags&header.TCPFlagRst != 0 {
		r.Kind, r.ResetBy = KindReset, from
		return true
	}
	if f.flags&header.TCPFlagFin != 0 {
		finSeq := f.seq + uint32(f.payloadLen)
		if *own != nil {
			if **own == finSeq {
				r.FINRetransmits++
			}
		} else {
			*own = &finSeq
			if *other == nil {
				if from == SideTund {
					st.tundFINBeforePeer = true
				} else {
					st.peerFINBeforeTund = true
				}
			} else if !(f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, **other+1)) && !*otherAcked {
				// This FIN does not acknowledge the other one: they crossed.
				st.tundFINBeforePeer, st.peerFINBeforeTund = true, true
			}
		}
	}
	if *other != nil && f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, **other+1) {
		*otherAcked = true
	}
	if st.tundFINAcked && st.peerFINAcked {
		r.Kind = st.kind()
		return true
	}
	return false
}

// kind classifies a close whose FINs were both acknowledged.
func (st *closeState) kind() string {
	if st.tundFINBeforePeer && st.peerFINBeforeTund {
		return KindSimultaneous
	}
	// Four-way if the first FIN was acknowledged by a pure ACK of its own;
	// three-way if the acknowledgement rode on the second FIN (or on data
	// that preceded it).
	second, firstFIN := SidePeer, *st.tundFIN
	if st.peerFINBeforeTund {
		second, firstFIN = SideTund, *st.peerFIN
	}
	for _, s := range st.rec.Segments {
		if s.From != second || !strings.Contains(s.Flags, "A") || !seqGE(s.Ack, firstFIN+1) {
			continue
		}
		if s.Len == 0 && !strings.Contains(s.Flags, "F") {
			return KindFourWay
		}
		return KindThreeWay
	}
	return KindFourWay
}

// sweepLocked finishes closes that saw no segment for the linger time
// (a FIN-WAIT-2 that never ended, a peer that vanished) as unfinished.
func (t *tracer) sweepLocked(now time.Time) {
	for fl, st := range t.closes {
		if now.After(st.deadline) {
			st.rec.Kind = KindUnfinished
			delete(t.closes, fl)
			if t.sink != nil {
				rec := st.rec
				t.sink(&rec) // the sink never blocks
			}
		}
	}
	t.open.Store(int32(len(t.closes)))
	t.sweepAt = max(256, 2*len(t.closes))
}

func flagString(f header.TCPFlags) string {
	var b []byte
	for _, x := range []struct {
		bit  header.TCPFlags
		name byte
	}{{header.TCPFlagSyn, 'S'}, {header.TCPFlagFin, 'F'}, {header.TCPFlagRst, 'R'}, {header.TCPFlagPsh, 'P'}, {header.TCPFlagAck, 'A'}} {
		if f&x.bit != 0 {
			b = append(b, x.name)
		}
	}
	return string(b)
}

// addrs returns the flow's local and remote address.
func (f flow) addrs() (local, remote netip.AddrPort) {
	if f.v6 {
		return netip.AddrPortFrom(netip.AddrFrom16(f.local), f.localPort), netip.AddrPortFrom(netip.AddrFrom16(f.remote), f.remotePort)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(f.local[:4])), f.localPort), netip.AddrPortFrom(netip.AddrFrom4([4]byte(f.remote[:4])), f.remotePort)
}
