// Package timewait is the close-path layer that keeps the TIME-WAIT of the
// connections tund accepted in a compact table, 48 bytes an entry outside
// the Go heap (wire.FlowMap), in place of gVisor's 5 KB endpoints, and answers their late segments as
// gVisor would.
package timewait

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
)

// maxTimeWaits bounds the compact table. Past it, connections keep
// gVisor's own TIME-WAIT: nothing is lost, it only costs more.
const maxTimeWaits = 1 << 20

// twEntry is one connection in TIME-WAIT: what its late segments need for
// an answer. It is kept by value: 32 bytes, and 12 of key for IPv4 (see
// FlowMap), against the 5.7 KB of a gVisor endpoint.
type twEntry struct {
	sndNxt, rcvNxt uint32 // of tund's ACKs
	// tsBase is tund's timestamp clock less MonoNow in milliseconds:
	// tsBase + ms(now) is its value now. tsEcr is the last TSval echoed.
	tsBase, tsEcr uint32
	expires       int64 // monotonic nanoseconds (MonoNow)
	// challenged is when the entry last answered a SYN, in milliseconds
	// (MsOf(MonoNow)): one answer per invalidRateLimit. It fits in the
	// entry's padding.
	challenged uint32
	window     uint16
	ts         bool
}

// invalidRateLimit is how often an entry answers a SYN that may not open a
// new connection: gVisor's TCPInvalidRateLimitOption and Linux's
// tcp_invalid_ratelimit, 500 ms.
const invalidRateLimit = 500

// Table keeps the TIME-WAIT of the connections tund accepted,
// in place of gVisor's endpoints, which it frees as they enter TIME-WAIT
// (gVisor patch 0005). It is a layer (see package layer); what it sends is
// faulted and recorded like the stack's own segments. It answers a
// TIME-WAIT connection's late segments as gVisor's handleTimeWaitSegment
// does (RFC 9293 §3.10.7.4, RFC 1122 §4.2.2.13):
//
//   - a RST closes TIME-WAIT if it is at RCV.NXT and --time-wait-rst close
//     is set; otherwise it is ignored (RFC 1337);
//   - a SYN above RCV.NXT opens a new incarnation: the entry goes and the
//     SYN passes to the listener; any other SYN draws an ACK of the old
//     connection (RFC 5961 §4, gVisor patch 0018), at most one per 500 ms;
//     any other segment without ACK is dropped;
//   - the peer's FIN again (tund's final ACK was lost) is ACKed again and
//     restarts 2 x MSL;
//   - a segment out of sequence or with data is ACKed; the rest dropped.
//
// Connections tund opened itself (--dial) keep gVisor's TIME-WAIT, whose
// hold on the local port is what port exhaustion is about.
type Table struct {
	layer.Layer

	duration  atomic.Int64 // 2 x MSL, in nanoseconds; 0: no TIME-WAIT to take
	rstCloses atomic.Bool
	listening *Ports

	count   atomic.Int32 // len(entries), read without the lock
	mu      sync.Mutex
	entries wire.FlowMap[twEntry]
	closed  bool
	kick    chan struct{} // the table was empty and has an entry
	stop    chan struct{}

	// stack tells whether a connection is the stack's.
	stack *stack.Stack

	stats Stats
}

// Stats counts what the compact TIME-WAIT table did.
type Stats struct {
	// Entered counts connections whose TIME-WAIT the table took over.
	Entered atomic.Uint64
	// Reacked counts the peer's FINs ACKed again (each restarts 2 x MSL).
	Reacked atomic.Uint64
	// Reopened counts TIME-WAITs that a SYN above RCV.NXT ended.
	Reopened atomic.Uint64
	// Reset counts TIME-WAITs that an RST ended (--time-wait-rst close).
	Reset atomic.Uint64
	// Challenged counts SYNs answered with an ACK of the old connection
	// (not above RCV.NXT: not a new one).
	Challenged atomic.Uint64
	// SuppressedRSTs counts RSTs the stack's listener would have sent to
	// a connection in TIME-WAIT (see WritePackets).
	SuppressedRSTs atomic.Uint64
}

// Ports is a set of ports, read without a lock: the listening ports, whose
// connections' TIME-WAIT the table takes.
type Ports [1024]atomic.Uint64

// Add adds port to the set.
func (p *Ports) Add(port uint16) { p[port/64].Or(1 << (port % 64)) }

// Has reports whether port is in the set.
func (p *Ports) Has(port uint16) bool { return p[port/64].Load()&(1<<(port%64)) != 0 }

// New returns the table over child. duration is 2 x MSL; rstCloses makes
// an RST at RCV.NXT end a TIME-WAIT; listening are the ports whose
// connections it takes; s is the stack above.
func New(child stack.LinkEndpoint, duration time.Duration, rstCloses bool, listening *Ports, s *stack.Stack) *Table {
	t := &Table{
		listening: listening, stack: s,
		entries: wire.NewFlowMap[twEntry](), kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	t.Set(duration, rstCloses)
	t.Init(child, t)
	go t.expire()
	return t
}

// Set changes 2 x MSL and what a RST does while the table runs. A
// TIME-WAIT that starts or restarts from then on lasts the new duration;
// one under way keeps its end. A duration of 0 takes no TIME-WAIT (gVisor
// then ends it at once).
func (t *Table) Set(duration time.Duration, rstCloses bool) {
	t.duration.Store(int64(duration))
	t.rstCloses.Store(rstCloses)
	// The sweep's pace follows the duration: a TIME-WAIT much shorter than
	// the old pace must not wait for it.
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Handoff is gVisor's TCPTimeWaitHandoffOption: it takes the TIME-WAIT of
// a connection on a listening port. It runs on the stack's processor with
// the endpoint locked, so it only records.
func (t *Table) Handoff(h tcpip.TimeWaitHandoff) bool {
	duration := t.duration.Load()
	if duration == 0 || !t.listening.Has(h.LocalPort) {
		return false
	}
	fl := wire.FlowOf(netip.AddrPortFrom(addrOf(h.LocalAddress), h.LocalPort), netip.AddrPortFrom(addrOf(h.RemoteAddress), h.RemotePort))
	now := wire.MonoNow()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.entries.Len() >= maxTimeWaits {
		return false
	}
	t.entries.Set(fl, twEntry{
		sndNxt: h.SndNxt, rcvNxt: h.RcvNxt, window: h.Window,
		ts: h.TS, tsBase: h.TSVal - wire.MsOf(now), tsEcr: h.TSEcr,
		expires: now + duration,
	})
	if t.entries.Len() == 1 {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
	t.count.Store(int32(t.entries.Len()))
	t.stats.Entered.Add(1)
	return true
}

// Late is gVisor's TCPTimeWaitLateSegmentOption (patch 0019): a segment
// that was waiting on an endpoint while it handed its TIME-WAIT to the
// table, which went past the table before its entry existed. The table
// answers it as any segment of the connection and reports whether it did;
// a SYN that opens a new connection goes on to the listener.
func (t *Table) Late(packet []byte) bool {
	f, ok := wire.ParseInbound(packet, len(packet))
	return ok && !t.Inbound(f, packet)
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// sweepEvery is how often the table looks for TIME-WAITs whose time is up,
// as a fraction of 2 x MSL, and its bounds: a TIME-WAIT ends at most that
// much late. A sweep over the map, rather than a queue of deadlines, keeps
// an entry at its 80 bytes; at 100,000 entries it takes about a millisecond.
const (
	sweepFraction = 16
	minSweep      = 10 * time.Millisecond
	maxSweep      = time.Second
)

// expire ends TIME-WAITs as their 2 x MSL runs out, sweeping while the
// table has entries and sleeping while it has none.
func (t *Table) expire() {
	every := func() time.Duration {
		return min(max(time.Duration(t.duration.Load())/sweepFraction, minSweep), maxSweep)
	}
	tick := time.NewTicker(every())
	tick.Stop()
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.kick:
			tick.Reset(every())
		case <-tick.C:
			if t.sweep(wire.MonoNow()) == 0 {
				tick.Stop()
			}
		}
	}
}

// sweep removes the entries whose time is up and returns how many are
// left.
func (t *Table) sweep(now int64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries.All(func(fl wire.Flow, e twEntry) bool {
		if e.expires <= now {
			t.entries.Delete(fl)
		}
		return true
	})
	t.count.Store(int32(t.entries.Len()))
	return t.entries.Len()
}

// Watching: every segment, while the table has entries.
func (t *Table) Watching(layer.Direction) bool { return t.count.Load() > 0 }

// Inbound answers a segment for a connection in TIME-WAIT, if it is one,
// and reports whether the segment goes on up.
func (t *Table) Inbound(f wire.Fields, b []byte) bool {
	t.mu.Lock()
	_, ok := t.entries.Get(f.Flow)
	t.mu.Unlock()
	if !ok {
		return true
	}
	// A SYN that came while the stack was handing the connection over
	// waited in the old endpoint's queue, and the stack gave it to the
	// listener as it closed the endpoint: the new connection is the
	// stack's, and the entry must not answer for it. The lookup is made
	// only for segments of connections in the table, without the lock.
	live := t.live(f.Flow)
	t.mu.Lock()
	e, ok := t.entries.Get(f.Flow)
	if ok && live {
		t.entries.Delete(f.Flow)
		t.count.Store(int32(t.entries.Len()))
		t.stats.Reopened.Add(1)
	}
	if !ok || live {
		t.mu.Unlock()
		return true
	}
	var reply []byte
	switch {
	case f.Flags&header.TCPFlagRst != 0:
		if t.rstCloses.Load() && f.Seq == e.rcvNxt {
			t.entries.Delete(f.Flow)
			t.stats.Reset.Add(1)
		}
	case f.Flags&header.TCPFlagSyn != 0 && f.Flags&header.TCPFlagAck == 0 && newIncarnation(f, b, &e):
		t.entries.Delete(f.Flow)
		t.count.Store(int32(t.entries.Len()))
		t.stats.Reopened.Add(1)
		t.mu.Unlock()
		return true
	case f.Flags&header.TCPFlagSyn != 0:
		now := wire.MonoNow()
		if ms := wire.MsOf(now); e.challenged == 0 || ms-e.challenged >= invalidRateLimit {
			e.challenged = max(ms, 1)
			t.stats.Challenged.Add(1)
			reply = t.ack(f.Flow, &e, now)
			t.entries.Set(f.Flow, e)
		}
	case f.Flags&header.TCPFlagAck == 0:
	default:
		tsVal, hasTS := tsValOf(b)
		if e.ts && hasTS && int32(tsVal-e.tsEcr) > 0 && int32(f.Seq-e.rcvNxt) <= 0 {
			e.tsEcr = tsVal // RFC 7323 §4.3, as gVisor's updateRecentTimestamp
		}
		now := wire.MonoNow()
		switch {
		case f.Flags&header.TCPFlagFin != 0 && f.Seq+1 == e.rcvNxt:
			e.expires = now + t.duration.Load()
			t.stats.Reacked.Add(1)
			reply = t.ack(f.Flow, &e, now)
		case f.Seq != e.rcvNxt || f.PayloadLen != 0:
			reply = t.ack(f.Flow, &e, now)
		}
		t.entries.Set(f.Flow, e)
	}
	t.count.Store(int32(t.entries.Len()))
	closed := t.closed
	t.mu.Unlock()
	if reply != nil && !closed {
		t.send(f.Flow, reply)
	}
	return false
}

// newIncarnation reports whether a SYN may end the TIME-WAIT of e and open
// a new connection. RFC 1122 §4.2.2.13 allows it when the SYN's sequence
// number is above the old connection's; RFC 6191 §2 adds, for a connection
// that used timestamps, a SYN whose TSval is newer than the last one seen,
// whatever its sequence number (and drops one whose TSval is older), as
// Linux does (tcp_timewait_state_process). Without the timestamp rule a
// client that reuses its port soon, with a sequence number that happens to
// be lower, waits a second for its SYN to be sent again: at thousands of
// connections a second, most of them do. gVisor's own TIME-WAIT
// (--time-wait full) knows only the first rule.
func newIncarnation(f wire.Fields, b []byte, e *twEntry) bool {
	if tsVal, ok := tsValOf(b); ok && e.ts && tsVal != e.tsEcr {
		return int32(tsVal-e.tsEcr) > 0
	}
	return int32(f.Seq-e.rcvNxt) > 0
}

// OutboundFlags: only the stack's RSTs matter to the table (see Outbound).
func (t *Table) OutboundFlags() header.TCPFlags { return header.TCPFlagRst }

// Outbound keeps the stack from resetting a connection that is in the
// table. The segments that were waiting in the old endpoint's queue when
// it handed its TIME-WAIT over come to the table (Late, gVisor patch 0019);
// one that still reaches the listener, which answers an ACK with a RST
// (RFC 9293 §3.10.7.2), gets nothing. A RST of a live connection of the stack on the
// same 4-tuple (a new incarnation) passes, and the entry goes.
func (t *Table) Outbound(f wire.Fields, _ *stack.PacketBuffer) bool {
	return f.Flags&header.TCPFlagRst != 0 && t.suppress(f.Flow)
}

// suppress reports whether a RST of fl is one to drop: fl is in the
// table and the stack has no live connection of it.
func (t *Table) suppress(fl wire.Flow) bool {
	t.mu.Lock()
	_, ok := t.entries.Get(fl)
	t.mu.Unlock()
	if !ok {
		return false
	}
	if t.live(fl) {
		t.mu.Lock()
		if _, ok := t.entries.Get(fl); ok {
			t.entries.Delete(fl)
			t.count.Store(int32(t.entries.Len()))
			t.stats.Reopened.Add(1)
		}
		t.mu.Unlock()
		return false
	}
	t.stats.SuppressedRSTs.Add(1)
	return true
}

// live reports whether the stack has a connection (not a listener) for fl.
func (t *Table) live(fl wire.Flow) bool {
	_, ok := layer.Connection(t.stack, fl)
	return ok
}

// tsValOf returns the TSval of the segment's timestamp option, if it has
// one; b starts with the IP header (wire.ParseInbound accepted it).
func tsValOf(b []byte) (uint32, bool) {
	ipLen := header.IPv6MinimumSize
	if b[0]>>4 == 4 {
		ipLen = int(header.IPv4(b).HeaderLength())
	}
	tcp := header.TCP(b[ipLen:])
	off := int(tcp.DataOffset())
	if off > len(tcp) {
		return 0, false
	}
	opts := header.ParseTCPOptions(tcp[header.TCPMinimumSize:off])
	return opts.TSVal, opts.TS
}

// ack builds the TCP header of tund's ACK in TIME-WAIT, as gVisor's
// sendAck would: SND.NXT, RCV.NXT, the last window and, with timestamps,
// tund's clock and the last TSval seen.
func (t *Table) ack(fl wire.Flow, e *twEntry, now int64) []byte {
	n := header.TCPMinimumSize
	if e.ts {
		n += 12 // NOP, NOP, TS: gVisor's layout
	}
	b := make([]byte, n)
	header.TCP(b).Encode(&header.TCPFields{
		SrcPort: fl.LocalPort, DstPort: fl.RemotePort, SeqNum: e.sndNxt, AckNum: e.rcvNxt,
		DataOffset: uint8(n), Flags: header.TCPFlagAck, WindowSize: e.window,
	})
	if e.ts {
		b[20], b[21] = header.TCPOptionNOP, header.TCPOptionNOP
		header.EncodeTSOption(e.tsBase+wire.MsOf(now), e.tsEcr, b[22:])
	}
	return b
}

// send writes a TCP segment of fl, with its IP header, to the link below.
func (t *Table) send(fl wire.Flow, tcpHdr []byte) {
	netProto, id := fl.EndpointID()
	tcp := header.TCP(tcpHdr)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, id.LocalAddress, id.RemoteAddress, uint16(len(tcpHdr)))
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	ipLen := header.IPv4MinimumSize
	if fl.V6 {
		ipLen = header.IPv6MinimumSize
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: ipLen + len(tcpHdr) + int(t.MaxHeaderLength())})
	defer pkt.DecRef()
	copy(pkt.TransportHeader().Push(len(tcpHdr)), tcpHdr)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	total := ipLen + len(tcpHdr)
	if fl.V6 {
		header.IPv6(pkt.NetworkHeader().Push(ipLen)).Encode(&header.IPv6Fields{
			PayloadLength: uint16(len(tcpHdr)), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64,
			SrcAddr: id.LocalAddress, DstAddr: id.RemoteAddress,
		})
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
			SrcAddr: id.LocalAddress, DstAddr: id.RemoteAddress,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	pkt.NetworkProtocolNumber = netProto
	t.WriteOne(pkt.IncRef())
}

// Flows returns the connections in the table, for the connection table.
func (t *Table) Flows() []wire.Flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]wire.Flow, 0, t.entries.Len())
	t.entries.All(func(fl wire.Flow, _ twEntry) bool {
		out = append(out, fl)
		return true
	})
	return out
}

// Len returns how many connections are in the table.
func (t *Table) Len() int { return int(t.count.Load()) }

// Stop forgets every TIME-WAIT when the stack detaches: the link is going
// away, and a connection whose close completed needs nothing more.
func (t *Table) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	close(t.stop)
	t.entries.Clear()
	t.count.Store(0)
}

// Stats returns the table's counters.
func (t *Table) Stats() *Stats { return &t.stats }
