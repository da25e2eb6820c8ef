package merge

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/internal/wiretest"
)

// The FIN/ACK merge withholds a segment the stack asked to send: a bug
// there loses an ACK (the peer retransmits its FIN until it gives up) or
// sends one late, after a newer segment. FuzzMerge drives an Endpoint
// with arbitrary inbound packets and outbound segments and checks it
// against the rules in its doc comment, as a model:
//
//   - every outbound segment is written to the device below at once, or
//     held; only a pure ACK of a peer FIN (flags ACK, no data, ack = the
//     FIN's sequence + length + 1) of an ESTABLISHED connection, with a
//     window for its port and no FIN of ours since, is ever held;
//   - at most one ACK per flow is held; it is dropped only when a newer
//     segment of the flow acknowledges as much (or is a RST), written when
//     its window ends or the peer retransmits its FIN, and never written
//     twice nor after Close;
//   - the counters agree with what happened, and never exceed the FINs seen;
//   - no packet reference is leaked or dropped twice, and every inbound
//     packet goes on up.
//
// established() asks a real gVisor stack: the fixture connects a few flows
// to it by hand (as package stack's peer tests do), and the fuzzed endpoint looks its
// flows up there. The fuzzed packets themselves never reach that stack, so
// its endpoints keep their states across iterations.

// Flows of FuzzMerge, chosen by bits 2-3 of a record's ctl.
const (
	mergeEstablished4 = iota // 198.18.0.2:7, ESTABLISHED
	mergeCloseWait           // 198.18.0.2:7, CLOSE-WAIT: the peer's FIN was processed
	mergeEstablished6        // [2001:2::2]:9, ESTABLISHED
	mergeNoEndpoint          // 198.18.0.2:7, unknown to the stack (it finds the listener)
)

var mergeFlowAddrs = [4][2]netip.AddrPort{ // local, remote
	{netip.MustParseAddrPort("198.18.0.2:7"), netip.MustParseAddrPort("198.18.0.1:40000")},
	{netip.MustParseAddrPort("198.18.0.2:7"), netip.MustParseAddrPort("198.18.0.1:40001")},
	{netip.MustParseAddrPort("[2001:2::2]:9"), netip.MustParseAddrPort("[2001:2::1]:40002")},
	{netip.MustParseAddrPort("198.18.0.2:7"), netip.MustParseAddrPort("198.18.0.1:40003")},
}

// Ops of a FuzzMerge record, in bits 0-1 of its ctl; a special op's kind is
// in bits 4-5.
const (
	mergeIn      = 0 // the peer's segment, delivered as a whole packet
	mergeOut     = 1 // tund's segment, in a new WritePackets batch
	mergeOutJoin = 2 // tund's segment, in the same batch as the previous one
	mergeSpecial = 3

	mergeFire   = 0 // the flow's release timer fires (the last entry seen, stale or not)
	mergeSweep  = 1 // the once-a-second sweep runs a day later
	mergeDetach = 2 // the stack detaches the link (Attach(nil))
)

// mergeConfig is a FuzzMerge configuration, chosen by the input's first
// byte. Without timers no window ends during a run, and release timers
// fire only when an op says so: the model then predicts every counter.
type mergeConfig struct {
	window time.Duration
	ports  map[uint16]time.Duration
	timers bool // windows short enough for the real timers to fire
}

var mergeConfigs = []mergeConfig{
	{window: 0},
	{window: time.Hour},
	{window: time.Millisecond, timers: true},
	{window: 0, ports: map[uint16]time.Duration{9: time.Hour}},
	{window: time.Hour, ports: map[uint16]time.Duration{7: 0}},
	{window: time.Hour, ports: map[uint16]time.Duration{9: time.Millisecond}, timers: true},
}

func (c mergeConfig) windowFor(port uint16) time.Duration {
	if w, ok := c.ports[port]; ok {
		return w
	}
	return c.window
}

// mergeSeeds are hand-made FuzzMerge inputs, each with the counters the
// run must end with (checked by TestMergeFuzzHarness: they prove that the
// harness reaches every path).
var mergeSeeds = func() []struct {
	name                              string
	data                              []byte
	merged, carried, released, flushd uint64
} {
	const ack, fin, rst, psh = header.TCPFlagAck, header.TCPFlagFin, header.TCPFlagRst, header.TCPFlagPsh
	in := func(fl byte, flags header.TCPFlags, seq, ack uint32) wiretest.Record {
		return wiretest.Record{Ctl: mergeIn | fl<<2, Flags: flags, Seq: seq, Ack: ack}
	}
	out := func(fl byte, flags header.TCPFlags, seq, ack uint32, n int) wiretest.Record {
		return wiretest.Record{Ctl: mergeOut | fl<<2, Flags: flags, Seq: seq, Ack: ack, PayloadLen: n}
	}
	join := func(r wiretest.Record) wiretest.Record { r.Ctl = r.Ctl&^3 | mergeOutJoin; return r }
	special := func(fl, op byte) wiretest.Record { return wiretest.Record{Ctl: mergeSpecial | fl<<2 | op<<4} }
	const e4, cw, e6, none = mergeEstablished4, mergeCloseWait, mergeEstablished6, mergeNoEndpoint
	return []struct {
		name                              string
		data                              []byte
		merged, carried, released, flushd uint64
	}{
		// The peer closes; the ACK is held and rides on tund's FIN.
		{"merged", wiretest.EncodeRecords([]byte{1}, in(e4, fin|ack, 100, 500), out(e4, ack, 500, 101, 0), out(e4, fin|ack, 500, 101, 0)), 1, 0, 0, 0},
		// The same over IPv6, with the ACK and the FIN in one batch.
		{"merged6", wiretest.EncodeRecords([]byte{1}, in(e6, fin|ack, 100, 500), out(e6, ack, 500, 101, 0), join(out(e6, fin|ack, 500, 101, 0))), 1, 0, 0, 0},
		// Data after the FIN carries the ACK.
		{"carried", wiretest.EncodeRecords([]byte{1}, in(e4, psh|fin|ack, 100, 500), out(e4, ack, 500, 101, 0), out(e4, psh|ack, 500, 101, 10)), 0, 1, 0, 0},
		// The window ends.
		{"released", wiretest.EncodeRecords([]byte{1}, in(e6, fin|ack, 100, 500), out(e6, ack, 500, 101, 0), special(e6, mergeFire), out(e6, fin|ack, 500, 101, 0)), 0, 0, 1, 0},
		// The peer retransmits its FIN.
		{"flushed", wiretest.EncodeRecords([]byte{1}, in(e4, fin|ack, 100, 500), out(e4, ack, 500, 101, 0), in(e4, fin|ack, 100, 500), special(e4, mergeFire)), 0, 0, 0, 1},
		// tund's FIN went first: the ACK of the peer's FIN is final.
		{"final", wiretest.EncodeRecords([]byte{1}, in(e4, fin|ack, 100, 500), out(e4, fin, 500, 0, 0), out(e4, ack, 501, 101, 0)), 0, 0, 0, 0},
		// Not ESTABLISHED, or unknown, or no window: nothing is held.
		{"closewait", wiretest.EncodeRecords([]byte{1}, in(cw, fin|ack, 100, 500), out(cw, ack, 500, 101, 0), in(none, fin|ack, 7, 8), out(none, ack, 8, 8, 0)), 0, 0, 0, 0},
		{"noport", wiretest.EncodeRecords([]byte{4}, in(e4, fin|ack, 100, 500), out(e4, ack, 500, 101, 0)), 0, 0, 0, 0},
		// A RST of ours drops the held ACK; detaching drops the next one.
		{"reset", wiretest.EncodeRecords([]byte{1}, in(e4, fin|ack, 100, 500), out(e4, ack, 500, 101, 0), out(e4, rst|ack, 500, 101, 0),
			in(e6, fin|ack, 1, 2), out(e6, ack, 2, 2, 0), special(e6, mergeSweep), special(e6, mergeDetach), in(e6, fin|ack, 1, 2)), 0, 0, 0, 0},
		// A FIN with RST is a RST: not acted on.
		{"finrst", wiretest.EncodeRecords([]byte{1}, in(e4, fin|rst|ack, 100, 500), out(e4, ack, 500, 101, 0)), 0, 0, 0, 0},
		// Real timers.
		{"timers", wiretest.EncodeRecords([]byte{2}, in(e4, fin|ack, 100, 500), out(e4, ack, 500, 101, 0), in(e6, fin|ack, 1, 2), out(e6, ack, 2, 2, 0)), 0, 0, 0, 0},
	}
}()

func FuzzMerge(f *testing.F) {
	for _, s := range mergeSeeds {
		f.Add(s.data)
	}
	fx := newMergeFixture(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		runMerge(t, fx, data)
	})
}

// TestMergeFuzzHarness runs the hand-made seeds and checks their counters:
// a harness whose stack lost its connections, or whose packets the merge
// could not parse, would hold nothing and check nothing.
func TestMergeFuzzHarness(t *testing.T) {
	fx := newMergeFixture(t)
	for _, s := range mergeSeeds {
		t.Run(s.name, func(t *testing.T) {
			st := runMerge(t, fx, s.data)
			if s.name == "timers" {
				return // the counters depend on when the timers fire
			}
			if st.Merged.Load() != s.merged || st.Carried.Load() != s.carried || st.Released.Load() != s.released || st.Flushed.Load() != s.flushd {
				t.Errorf("merged %d carried %d released %d flushed %d, want %d %d %d %d", st.Merged.Load(), st.Carried.Load(),
					st.Released.Load(), st.Flushed.Load(), s.merged, s.carried, s.released, s.flushd)
			}
		})
	}
}

// mergeFixture is a gVisor stack with a connection in each of the states
// that the merge asks about.
type mergeFixture struct {
	st          *gstack.Stack
	flows       [4]wire.Flow
	established [4]bool
}

func newMergeFixture(tb testing.TB) *mergeFixture {
	tb.Helper()
	ch := channel.New(256, 1500, "")
	st := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	tb.Cleanup(func() { st.Close(); st.Wait() })
	if err := st.CreateNIC(layer.NICID, ch); err != nil {
		tb.Fatal(err)
	}
	st.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: layer.NICID}, {Destination: header.IPv6EmptySubnet, NIC: layer.NICID}})
	lns := map[uint16]*gonet.TCPListener{}
	for _, local := range []netip.AddrPort{mergeFlowAddrs[mergeEstablished4][0], mergeFlowAddrs[mergeEstablished6][0]} {
		addr := tcpip.AddrFromSlice(local.Addr().AsSlice())
		proto := ipv6.ProtocolNumber
		if local.Addr().Is4() {
			proto = ipv4.ProtocolNumber
		}
		if err := st.AddProtocolAddress(layer.NICID, tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: addr.WithPrefix()}, gstack.AddressProperties{}); err != nil {
			tb.Fatal(err)
		}
		ln, err := gonet.ListenTCP(st, tcpip.FullAddress{NIC: layer.NICID, Addr: addr, Port: local.Port()}, proto)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { ln.Close() })
		lns[local.Port()] = ln
	}
	fx := &mergeFixture{st: st}
	for i, a := range mergeFlowAddrs {
		fx.flows[i] = wiretest.FlowOf(a[0].String(), a[1].String())
	}
	fx.established[mergeEstablished4], fx.established[mergeEstablished6] = true, true
	for _, i := range []int{mergeEstablished4, mergeCloseWait, mergeEstablished6} {
		local, remote := mergeFlowAddrs[i][0], mergeFlowAddrs[i][1]
		c, iss := handshake(tb, ch, lns[local.Port()], local, remote)
		tb.Cleanup(func() { c.Close() })
		if i == mergeCloseWait {
			inject(ch, wiretest.BuildSegment(remote, local, header.TCPFlagFin|header.TCPFlagAck, 1001, iss+1, 0))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				tb.Fatalf("read after the peer's FIN: %d, %v; want EOF", n, err)
			}
		}
	}
	// The flow without a connection of its own finds the listener.
	want := [4]tcp.EndpointState{tcp.StateEstablished, tcp.StateCloseWait, tcp.StateEstablished, tcp.StateListen}
	for i, fl := range fx.flows {
		netProto, id := fl.EndpointID()
		ep, _ := st.FindTransportEndpoint(netProto, header.TCPProtocolNumber, id, layer.NICID).(*tcp.Endpoint)
		if ep == nil || ep.EndpointState() != want[i] {
			tb.Fatalf("flow %d: no endpoint, or not in state %v", i, want[i])
		}
	}
	return fx
}

// handshake connects remote to local over ch, playing the peer (ISS 1000),
// and returns the accepted connection and the stack's ISS.
func handshake(tb testing.TB, ch *channel.Endpoint, ln *gonet.TCPListener, local, remote netip.AddrPort) (net.Conn, uint32) {
	tb.Helper()
	inject(ch, wiretest.BuildSegment(remote, local, header.TCPFlagSyn, 1000, 0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var iss uint32
	for {
		pkt := ch.ReadContext(ctx)
		if pkt == nil {
			tb.Fatalf("no SYN|ACK from %v", local)
		}
		b := pkt.ToView().AsSlice()
		f, ok := wiretest.GVisorTCP(b)
		pkt.DecRef()
		if ok && f.Flow.RemotePort == local.Port() && f.Flow.LocalPort == remote.Port() && f.Flags == header.TCPFlagSyn|header.TCPFlagAck {
			iss = f.Seq
			break
		} // else the stack's ICMPv6 chatter
	}
	inject(ch, wiretest.BuildSegment(remote, local, header.TCPFlagAck, 1001, iss+1, 0))
	type accepted struct {
		c   net.Conn
		err error
	}
	done := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		done <- accepted{c, err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			tb.Fatal(a.err)
		}
		return a.c, iss
	case <-ctx.Done():
		ln.Close()
		tb.Fatalf("%v never accepted %v", local, remote)
		return nil, 0
	}
}

func inject(ch *channel.Endpoint, b []byte) {
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	ch.InjectInbound(protoOf(b), pkt)
	pkt.DecRef()
}

func protoOf(b []byte) tcpip.NetworkProtocolNumber {
	if b[0]>>4 == 6 {
		return header.IPv6ProtocolNumber
	}
	return header.IPv4ProtocolNumber
}

// recordingLink is the device below the merge: a channel endpoint that
// notes every packet written to it, and whether it came after Close.
type recordingLink struct {
	*channel.Endpoint
	mu         sync.Mutex
	written    map[*gstack.PacketBuffer]bool
	writes     int
	twice      int // packets written again
	closed     bool
	afterClose int
}

func (l *recordingLink) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, pkt := range pkts.AsSlice() {
		if l.written[pkt] {
			l.twice++
		}
		l.written[pkt] = true
		l.writes++
		if l.closed {
			l.afterClose++
		}
	}
	return pkts.Len(), nil
}

func (l *recordingLink) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.Endpoint.Close()
}

// counts returns how many packets were written, and how many of them for
// the second time or after Close.
func (l *recordingLink) counts() (writes, twice, afterClose int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writes, l.twice, l.afterClose
}

// wrote reports whether pkt was written.
func (l *recordingLink) wrote(pkt *gstack.PacketBuffer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written[pkt]
}

// countingDispatcher stands for the stack above the merge.
type countingDispatcher struct{ delivered int }

func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *gstack.PacketBuffer) {
	d.delivered++
}
func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gstack.PacketBuffer) {}

// outSeg is an outbound segment handed to the merge.
type outSeg struct {
	pkt  *gstack.PacketBuffer
	list gstack.PacketBufferList // holds the test's reference until the end
	fl   int
	r    wiretest.Record
}

func (o *outSeg) pureACK() bool { return o.r.Flags == header.TCPFlagAck && o.r.PayloadLen == 0 }

// supersedes reports whether q, a later segment of the same flow, makes
// the held ACK h moot: it acknowledges as much, or resets.
func (q *outSeg) supersedes(h *outSeg) bool {
	return q.r.Flags&header.TCPFlagRst != 0 || q.r.Flags&header.TCPFlagAck != 0 && wire.SeqGE(q.r.Ack, h.r.Ack)
}

// runMerge plays one FuzzMerge input and returns the merge's counters.
func runMerge(t *testing.T, fx *mergeFixture, data []byte) *Stats {
	if len(data) == 0 {
		return &Stats{}
	}
	cfg := mergeConfigs[int(data[0])%len(mergeConfigs)]
	child := &recordingLink{Endpoint: channel.New(1, 1500, ""), written: map[*gstack.PacketBuffer]bool{}}
	m := New(child, cfg.window, cfg.ports, fx.st)
	disp := &countingDispatcher{}
	m.Attach(disp)

	var (
		outs      []*outSeg
		byPkt     = map[*gstack.PacketBuffer]*outSeg{}
		held      [4]*outSeg   // the model's held ACK per flow (exact without timers)
		lastSt    [4]*finState // the newest entry seen per flow, for mergeFire
		clean     [4]map[uint32]bool
		finsSeen  uint64
		want      struct{ merged, carried, released, flushed uint64 }
		detached  bool
		delivered int
		shutdown  = map[*outSeg]bool{} // held when the link was detached or closed
		steps     []string
	)
	for i := range clean {
		clean[i] = map[uint32]bool{}
	}
	defer func() {
		for _, o := range outs {
			o.list.Reset()
		}
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("config %+v, after %v: "+format, append([]any{cfg, wiretest.LastSteps(steps)}, args...)...)
	}
	// actualHeld reads the merge's table.
	actualHeld := func() (h [4]*gstack.PacketBuffer, st [4]*finState) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if int(m.pending.Load()) != len(m.fins) {
			fail("pending = %d with %d FINs", m.pending.Load(), len(m.fins))
		}
		for i, fl := range fx.flows {
			if s := m.fins[fl]; s != nil {
				st[i], h[i] = s, s.held
			}
		}
		return h, st
	}
	// sound checks that o may be held at all.
	sound := func(o *outSeg) {
		t.Helper()
		switch {
		case !o.pureACK():
			fail("held a segment that is not a pure ACK: %+v", o.r)
		case !fx.established[o.fl] || cfg.windowFor(fx.flows[o.fl].LocalPort) <= 0:
			fail("held an ACK of flow %d, which is not ESTABLISHED or has no window", o.fl)
		case !clean[o.fl][o.r.Ack]:
			fail("held an ACK (ack %d) that acknowledges no peer FIN since our own FIN", o.r.Ack)
		case detached:
			fail("held an ACK after the link was detached")
		}
	}
	// syncHeld forgets, with real timers, the held ACKs that a timer sent.
	syncHeld := func() {
		if !cfg.timers {
			return
		}
		h, _ := actualHeld()
		for i := range held {
			if held[i] != nil && h[i] != held[i].pkt {
				held[i] = nil
			}
		}
	}
	// check compares the merge with the model after a step.
	check := func() {
		t.Helper()
		h, st := actualHeld()
		for i := range h {
			if st[i] != nil {
				lastSt[i] = st[i]
			}
			if cfg.timers && held[i] != nil && h[i] != held[i].pkt {
				held[i] = nil // a timer sent it
			}
			var want *gstack.PacketBuffer
			if held[i] != nil {
				want = held[i].pkt
			}
			if h[i] != want {
				fail("flow %d holds %p, the model %p", i, h[i], want)
			}
		}
		if _, twice, _ := child.counts(); twice > 0 {
			fail("%d packets written twice", twice)
		}
		if !cfg.timers {
			s := m.Stats()
			if s.Merged.Load() != want.merged || s.Carried.Load() != want.carried || s.Released.Load() != want.released || s.Flushed.Load() != want.flushed {
				fail("merged %d carried %d released %d flushed %d; the model says %+v",
					s.Merged.Load(), s.Carried.Load(), s.Released.Load(), s.Flushed.Load(), want)
			}
		}
	}
	var batch []*outSeg
	flush := func() {
		t.Helper()
		if len(batch) == 0 {
			return
		}
		syncHeld()
		var l gstack.PacketBufferList
		for _, o := range batch {
			l.PushBack(o.pkt)
		}
		before, _, _ := child.counts()
		if n, err := m.WritePackets(l); n != len(batch) || err != nil {
			fail("WritePackets of %d: %d, %v", len(batch), n, err)
		}
		after, _, _ := child.counts()
		if !cfg.timers {
			// Only segments of the batch go out: a held ACK leaves only when
			// its window ends or the peer asks for it again.
			n := 0
			for _, q := range batch {
				if child.wrote(q.pkt) {
					n++
				}
			}
			if after-before != n {
				fail("a batch of %d wrote %d packets, %d of them its own", len(batch), after-before, n)
			}
		}
		for _, q := range batch {
			if h := held[q.fl]; h != nil && q.supersedes(h) {
				if !cfg.timers && child.wrote(h.pkt) {
					fail("the held ACK was sent after a newer segment")
				}
				if q.r.Flags&header.TCPFlagRst == 0 {
					if q.r.Flags&header.TCPFlagFin != 0 {
						want.merged++
					} else {
						want.carried++
					}
				}
				held[q.fl] = nil
			}
			if q.r.Flags&header.TCPFlagFin != 0 {
				clean[q.fl] = map[uint32]bool{}
			}
			if !child.wrote(q.pkt) {
				// Not written: held, by a merge that held nothing else for
				// the flow (in timer mode, perhaps released since).
				if held[q.fl] != nil {
					fail("a second ACK held for flow %d", q.fl)
				}
				sound(q)
				held[q.fl] = q
			}
		}
		check()
		batch = nil
	}

	for _, r := range wiretest.Records(data[1:], 128) {
		fi := int(r.Ctl >> 2 & 3)
		fl := fx.flows[fi]
		local, remote := mergeFlowAddrs[fi][0], mergeFlowAddrs[fi][1]
		n := min(r.PayloadLen, 1400)
		op := int(r.Ctl & 3)
		if op != mergeOutJoin {
			flush()
		}
		switch op {
		case mergeIn:
			steps = append(steps, "in:"+tcpflag.String(uint8(r.Flags)))
			b := wiretest.BuildSegment(remote, local, r.Flags, r.Seq, r.Ack, n)
			pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
			before, _, _ := child.counts()
			m.DeliverNetworkPacket(protoOf(b), pkt)
			if refs := pkt.ReadRefs(); refs != 1 {
				fail("an inbound packet has %d references after delivery", refs)
			}
			pkt.DecRef()
			if !detached {
				delivered++
			}
			if disp.delivered != delivered {
				fail("%d inbound packets went up, want %d", disp.delivered, delivered)
			}
			isFIN := r.Flags&header.TCPFlagFin != 0 && r.Flags&header.TCPFlagRst == 0
			if r.Flags&header.TCPFlagFin != 0 {
				finsSeen++
			}
			end := r.Seq + uint32(n) + 1
			after, _, _ := child.counts()
			if h := held[fi]; !cfg.timers && isFIN && h != nil && h.r.Ack == end {
				// The peer retransmitted its FIN: the held ACK goes now.
				if !child.wrote(h.pkt) || after != before+1 {
					fail("a retransmitted FIN did not send the held ACK at once")
				}
				want.flushed++
				held[fi] = nil
			} else if !cfg.timers && after != before {
				fail("an inbound segment wrote %d packets", after-before)
			}
			if isFIN && r.Flags&header.TCPFlagAck != 0 && !detached {
				clean[fi][end] = true
			}
			check()
		case mergeOut, mergeOutJoin:
			steps = append(steps, "out:"+tcpflag.String(uint8(r.Flags)))
			o := &outSeg{pkt: outboundPacket(local, remote, r, n), fl: fi, r: r}
			o.r.PayloadLen = n
			o.list.PushBack(o.pkt)
			outs = append(outs, o)
			byPkt[o.pkt] = o
			batch = append(batch, o)
		case mergeSpecial:
			before, _, _ := child.counts()
			switch r.Ctl >> 4 & 3 {
			case mergeFire, 3:
				steps = append(steps, "fire")
				st := lastSt[fi]
				if st == nil {
					continue
				}
				_, cur := actualHeld()
				due := cur[fi] == st && held[fi] != nil
				m.release(fl, st)
				after, _, _ := child.counts()
				if cfg.timers {
					break
				}
				if due {
					if !child.wrote(held[fi].pkt) || after != before+1 {
						fail("the window ended but the held ACK was not sent")
					}
					want.released++
					held[fi] = nil
				} else if after != before {
					fail("a stale timer wrote %d packets", after-before)
				}
			case mergeSweep:
				steps = append(steps, "sweep")
				m.mu.Lock()
				m.sweepLocked(time.Now().Add(24 * time.Hour))
				m.mu.Unlock()
				if after, _, _ := child.counts(); !cfg.timers && after != before {
					fail("a sweep wrote %d packets", after-before)
				}
			case mergeDetach:
				steps = append(steps, "detach")
				h, _ := actualHeld()
				for _, p := range h {
					if p != nil {
						shutdown[byPkt[p]] = true
					}
				}
				m.Attach(nil)
				detached = true
				held = [4]*outSeg{}
				if after, _, _ := child.counts(); !cfg.timers && after != before {
					fail("detaching wrote %d packets", after-before)
				}
			}
			check()
		}
	}
	flush()

	h, _ := actualHeld()
	for _, p := range h {
		if p != nil {
			shutdown[byPkt[p]] = true
		}
	}
	m.Close()
	// Timers that fire now, stale or not, and a late FIN must write nothing.
	for i, st := range lastSt {
		if st != nil {
			m.release(fx.flows[i], st)
		}
	}
	if _, _, afterClose := child.counts(); afterClose != 0 {
		t.Fatalf("after %v: %d packets written after Close", wiretest.LastSteps(steps), afterClose)
	}
	var holds uint64
	for i, o := range outs {
		if refs := o.pkt.ReadRefs(); refs != 1 {
			t.Fatalf("outbound packet %d has %d references after Close, want the test's own", i, refs)
		}
		if child.wrote(o.pkt) {
			continue
		}
		holds++
		// An ACK that never went out was made moot by a newer segment of
		// its flow, or was held when the link went away.
		superseded := false
		for _, q := range outs[i+1:] {
			if q.fl == o.fl && q.supersedes(o) {
				superseded = true
				break
			}
		}
		if !superseded && !shutdown[o] {
			t.Fatalf("after %v: the ACK %+v of flow %d was neither sent nor made moot", wiretest.LastSteps(steps), o.r, o.fl)
		}
	}
	s := m.Stats()
	total := s.Merged.Load() + s.Carried.Load() + s.Released.Load() + s.Flushed.Load()
	if total > finsSeen || s.Merged.Load()+s.Carried.Load() > holds {
		t.Fatalf("counters %d (merged %d, carried %d) with %d FINs seen and %d ACKs never sent",
			total, s.Merged.Load(), s.Carried.Load(), finsSeen, holds)
	}
	return s
}

// outboundPacket builds a segment as the stack hands it to the link: the
// headers in their own views, n bytes of data.
func outboundPacket(local, remote netip.AddrPort, r wiretest.Record, n int) *gstack.PacketBuffer {
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{
		ReserveHeaderBytes: header.IPv6MinimumSize + header.TCPMinimumSize,
		Payload:            buffer.MakeWithData(make([]byte, n)),
	})
	header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize)).Encode(&header.TCPFields{
		SrcPort: local.Port(), DstPort: remote.Port(), SeqNum: r.Seq, AckNum: r.Ack,
		DataOffset: header.TCPMinimumSize, Flags: r.Flags, WindowSize: 65535,
	})
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	s, d := tcpip.AddrFromSlice(local.Addr().AsSlice()), tcpip.AddrFromSlice(remote.Addr().AsSlice())
	if local.Addr().Is4() {
		header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize)).Encode(&header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + header.TCPMinimumSize + n), TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d,
		})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	} else {
		header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize)).Encode(&header.IPv6Fields{
			PayloadLength: uint16(header.TCPMinimumSize + n), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: s, DstAddr: d,
		})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	}
	return pkt
}
