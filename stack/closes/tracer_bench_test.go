package closes

import (
	"net/netip"
	"testing"
	"time"

	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/internal/wiretest"
)

// BenchmarkSegment and BenchmarkTraceClose time the tracer alone; package
// stack's BenchmarkClose times it in whole connections between two stacks.

// BenchmarkSegment times what the tracer does for one data segment of an
// established connection, the bulk of all traffic: parse, and look whether
// its flow is closing. "idle" has no close in progress; "busy" has 64, as
// a server closing thousands of connections a second always has some.
func BenchmarkSegment(b *testing.B) {
	for _, tc := range []struct {
		name string
		open int
	}{{"idle", 0}, {"busy", 64}} {
		b.Run(tc.name, func(b *testing.B) {
			tr := NewTracer(channel.New(1, 1500, ""), Config{Linger: time.Hour, TimeWait: time.Hour}, NewLog(), nil)
			defer tr.Close()
			for i := range tc.open {
				// Closes of other flows, begun by tund's FIN and still open.
				f := wire.Fields{Flow: benchFlow(uint16(20000 + i)), Flags: header.TCPFlagFin | header.TCPFlagAck, Seq: 1, Ack: 1}
				tr.segment(f, SideTund)
			}
			pkt := benchDataPacket(benchFlow(10000), 1400)
			defer pkt.DecRef()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// DeliverNetworkPacket without a stack above: only the
				// tracer's work is timed.
				tr.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
			}
		})
	}
}

func benchFlow(remotePort uint16) wire.Flow {
	return wire.FlowOf(netip.MustParseAddrPort("198.18.0.2:80"), netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), remotePort))
}

// benchDataPacket is an IPv4 packet from the peer carrying n bytes on fl.
func benchDataPacket(fl wire.Flow, n int) *gstack.PacketBuffer {
	size := header.IPv4MinimumSize + header.TCPMinimumSize + n
	b := make([]byte, size)
	local, remote := fl.Addrs()
	src, dst := tcpip.AddrFrom4(remote.Addr().As4()), tcpip.AddrFrom4(local.Addr().As4())
	header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: uint16(size), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	header.TCP(b[header.IPv4MinimumSize:]).Encode(&header.TCPFields{SrcPort: remote.Port(), DstPort: local.Port(), SeqNum: 5000, AckNum: 7000,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 65535})
	return gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// BenchmarkTraceClose times the tracer alone over the segments of whole
// connections, as a Linux client over HTTP with Connection: close makes
// them: handshake, request, reply, tund's FIN, the peer's FIN|ACK (its
// delayed ACK rides on it), tund's final ACK and a TIME-WAIT entry. Each
// connection has its own 4-tuple. ns/op and allocs/op are per connection.
func BenchmarkTraceClose(b *testing.B) {
	tr := NewTracer(channel.New(1, 1500, ""), Config{Linger: DefaultLinger, TimeWait: time.Minute}, NewLog(), nil)
	defer tr.Close()
	const (
		S, A, F, P = header.TCPFlagSyn, header.TCPFlagAck, header.TCPFlagFin, header.TCPFlagPsh
	)
	b.ReportAllocs()
	for i := range b.N {
		fl := wire.FlowOf(netip.MustParseAddrPort("198.18.0.2:80"), wiretest.ClientAddr(uint32(i)))
		seg := func(from string, flags header.TCPFlags, seq, ack uint32, n int) {
			tr.segment(wire.Fields{Flow: fl, Flags: flags, Seq: seq, Ack: ack, PayloadLen: n}, from)
		}
		seg(SidePeer, S, 100, 0, 0)
		seg(SideTund, S|A, 500, 101, 0)
		seg(SidePeer, A, 101, 501, 0)
		seg(SidePeer, P|A, 101, 501, 80)
		seg(SideTund, A, 501, 181, 0)
		seg(SideTund, P|A, 501, 181, 120)
		seg(SideTund, F|A, 621, 181, 0)
		seg(SidePeer, F|A, 181, 622, 0)
		seg(SideTund, A, 622, 182, 0)
	}
}
