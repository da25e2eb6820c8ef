package wire_test

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/internal/wiretest"
)

// The segment parsers read every packet that crosses the device, both ways,
// before gVisor has judged it: whatever the peer sends reaches them first.
// These fuzz targets hold them to gVisor's own reading of the same bytes.
// Seeds from real captures are in testdata/fuzz (see
// stack/testdata/README.md).

// FuzzParseInbound feeds arbitrary packets to wire.ParseInbound as the
// layers call it: the first wire.MaxPeek bytes, and the packet's size.
func FuzzParseInbound(f *testing.F) {
	for _, p := range [][]byte{
		nil,
		{0x45},
		{0x60},
		wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, header.TCPFlagFin|header.TCPFlagAck, 1000, 2000, 0),
		wiretest.BuildSegment(wiretest.Peer6, wiretest.Stack6, header.TCPFlagSyn, 1, 0, 0),
		wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, header.TCPFlagPsh|header.TCPFlagAck, 1, 2, 100),
		wiretest.BuildSegment(wiretest.Peer6, wiretest.Stack6, header.TCPFlagRst, 7, 0, 3),
		wiretest.WithByte(wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, header.TCPFlagFin, 1, 2, 0), 6, 0x20),  // more fragments
		wiretest.WithByte(wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, header.TCPFlagFin, 1, 2, 0), 0, 0x44),  // IHL 4 words
		wiretest.WithByte(wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, header.TCPFlagFin, 1, 2, 0), 32, 0x40), // data offset 4 words
		wiretest.WithByte(wiretest.BuildSegment(wiretest.Peer6, wiretest.Stack6, header.TCPFlagFin, 1, 2, 0), 6, 0),     // hop-by-hop before TCP
		wiretest.WithByte(wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, header.TCPFlagFin, 1, 2, 0), 2, 0xff),  // total length past the end
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		b := pkt[:min(len(pkt), wire.MaxPeek)]
		got, ok := wire.ParseInbound(b, len(pkt))
		// Peeking at wire.MaxPeek bytes must lose nothing that the whole packet
		// would tell.
		if whole, wok := wire.ParseInbound(pkt, len(pkt)); wok != ok || ok && whole != got {
			t.Fatalf("peek of %d bytes: %+v, %v; whole packet: %+v, %v", len(b), got, ok, whole, wok)
		}
		want, wantOK := wiretest.GVisorTCP(pkt)
		if ok != wantOK {
			t.Fatalf("wire.ParseInbound ok = %v, gVisor's parsers say %v, for %x", ok, wantOK, pkt)
		}
		if !ok {
			return
		}
		if got.PayloadLen < 0 || got.PayloadLen > len(pkt) {
			t.Fatalf("payloadLen %d outside [0, %d]", got.PayloadLen, len(pkt))
		}
		if v := pkt[0] >> 4; got.Flow.V6 != (v == 6) {
			t.Fatalf("v6 = %v for IP version %d", got.Flow.V6, v)
		}
		if got != want {
			t.Fatalf("ParseInbound: %+v\ngVisor:       %+v", got, want)
		}
		wiretest.CheckFlowPadding(t, got.Flow)
		// The same connection seen the other way, as the stack sends it,
		// must be the same Flow: the tracer and the merge key their tables
		// by it in both directions.
		network, transport := wiretest.Reverse(pkt)
		out, ok := wire.ParseOutbound(network, transport, got.PayloadLen)
		if !ok || out.Flow != got.Flow {
			t.Fatalf("the reversed segment parses as %+v, %v; want flow %+v", out, ok, got.Flow)
		}
	})
}

// FuzzParseOutbound feeds arbitrary headers to wire.ParseOutbound, which reads
// the segments the stack builds.
func FuzzParseOutbound(f *testing.F) {
	add := func(p []byte, payloadLen int) {
		hl := header.IPv6MinimumSize
		if p[0]>>4 == 4 {
			hl = int(header.IPv4(p).HeaderLength())
		}
		th := int(header.TCP(p[hl:]).DataOffset())
		f.Add(p[:hl], p[hl:hl+th], payloadLen)
	}
	add(wiretest.BuildSegment(wiretest.Stack4, wiretest.Peer4, header.TCPFlagFin|header.TCPFlagAck, 1000, 2000, 0), 0)
	add(wiretest.BuildSegment(wiretest.Stack6, wiretest.Peer6, header.TCPFlagAck, 1, 2, 10), 10)
	f.Add([]byte{0x45}, make([]byte, header.TCPMinimumSize), 0)
	f.Add([]byte{0x65}, make([]byte, header.TCPMinimumSize), -1)
	f.Fuzz(func(t *testing.T, network, transport []byte, payloadLen int) {
		got, ok := wire.ParseOutbound(network, transport, payloadLen)
		var v int
		if len(network) > 0 {
			v = int(network[0] >> 4)
		}
		wantOK := len(transport) >= header.TCPMinimumSize &&
			(v == 4 && len(network) >= header.IPv4MinimumSize || v == 6 && len(network) >= header.IPv6MinimumSize)
		if ok != wantOK {
			t.Fatalf("ok = %v, want %v (network %x, transport %x)", ok, wantOK, network, transport)
		}
		if !ok {
			return
		}
		if got.Flow.V6 != (v == 6) {
			t.Fatalf("v6 = %v for IP version %d", got.Flow.V6, v)
		}
		var src, dst tcpip.Address
		if v == 4 {
			src, dst = header.IPv4(network).SourceAddress(), header.IPv4(network).DestinationAddress()
		} else {
			src, dst = header.IPv6(network).SourceAddress(), header.IPv6(network).DestinationAddress()
		}
		tcp := header.TCP(transport)
		want := wire.Fields{
			Flow:       wiretest.FlowFrom(src, dst, tcp.SourcePort(), tcp.DestinationPort()),
			Flags:      tcp.Flags(),
			Seq:        tcp.SequenceNumber(),
			Ack:        tcp.AckNumber(),
			PayloadLen: payloadLen,
		}
		if got != want {
			t.Fatalf("ParseOutbound: %+v\ngVisor:        %+v", got, want)
		}
		wiretest.CheckFlowPadding(t, got.Flow)
	})
}
