// Package wiretest builds the TCP segments and the fuzz records that the
// close-path tests share: whole packets as a kernel sends them, and the
// 12-byte segment records that FuzzTracer and FuzzMerge decode.
package wiretest

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
)

// FlowFrom builds a Flow from gVisor addresses, independently of the code
// under test.
func FlowFrom(local, remote tcpip.Address, localPort, remotePort uint16) wire.Flow {
	f := wire.Flow{LocalPort: localPort, RemotePort: remotePort, V6: local.Len() == 16}
	copy(f.Local[:], local.AsSlice())
	copy(f.Remote[:], remote.AsSlice())
	return f
}

// FlowOf is the Flow between local and remote ("addr:port").
func FlowOf(local, remote string) wire.Flow {
	l, r := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	return FlowFrom(tcpip.AddrFromSlice(l.Addr().AsSlice()), tcpip.AddrFromSlice(r.Addr().AsSlice()), l.Port(), r.Port())
}

// CheckFlowPadding: an IPv4 Flow's unused address bytes must be zero, or
// the same connection would get several keys in the tracer's and the
// merge's tables.
func CheckFlowPadding(t *testing.T, f wire.Flow) {
	t.Helper()
	if f.V6 {
		return
	}
	var zero [12]byte
	if !bytes.Equal(f.Local[4:], zero[:]) || !bytes.Equal(f.Remote[4:], zero[:]) {
		t.Fatalf("IPv4 Flow with bytes past the address: %+v", f)
	}
}

// Reverse returns the IP and TCP headers of a valid TCP packet with source
// and destination swapped, as the other end would send them.
func Reverse(pkt []byte) (network, transport []byte) {
	hl := header.IPv6MinimumSize
	if pkt[0]>>4 == 4 {
		hl = int(header.IPv4(pkt).HeaderLength())
	}
	network = bytes.Clone(pkt[:hl])
	transport = bytes.Clone(pkt[hl : hl+header.TCPMinimumSize])
	if pkt[0]>>4 == 4 {
		swap(network[12:16], network[16:20])
	} else {
		swap(network[8:24], network[24:40])
	}
	swap(transport[0:2], transport[2:4])
	return network, transport
}

// swap exchanges the bytes of a and b.
func swap(a, b []byte) {
	for i := range a {
		a[i], b[i] = b[i], a[i]
	}
}

// WithByte sets b[i] to v and returns b.
func WithByte(b []byte, i int, v byte) []byte {
	b[i] = v
	return b
}

// Addresses of the hand-made segments: the peer and the stack, IPv4 and
// IPv6, as tund's defaults have them.
var (
	Peer4  = netip.MustParseAddrPort("198.18.0.1:40000")
	Stack4 = netip.MustParseAddrPort("198.18.0.2:7")
	Peer6  = netip.MustParseAddrPort("[2001:2::1]:40000")
	Stack6 = netip.MustParseAddrPort("[2001:2::2]:7")
)

// BuildSegment returns a whole IPv4 or IPv6 TCP packet from src to dst with
// payloadLen bytes of data and valid checksums, as a kernel would send it.
func BuildSegment(src, dst netip.AddrPort, flags header.TCPFlags, seq, ack uint32, payloadLen int) []byte {
	tcpLen := header.TCPMinimumSize + payloadLen
	hl := header.IPv4MinimumSize
	if src.Addr().Is6() {
		hl = header.IPv6MinimumSize
	}
	b := make([]byte, hl+tcpLen)
	for i := hl + header.TCPMinimumSize; i < len(b); i++ {
		b[i] = byte(i)
	}
	s, d := tcpip.AddrFromSlice(src.Addr().AsSlice()), tcpip.AddrFromSlice(dst.Addr().AsSlice())
	if hl == header.IPv4MinimumSize {
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d})
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: s, DstAddr: d})
	}
	tcp := header.TCP(b[hl:])
	tcp.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack, DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, s, d, uint16(tcpLen))
	tcp.SetChecksum(^checksum.Checksum(b[hl:], xsum))
	return b
}

// Record is one segment of a fuzzed sequence (FuzzTracer, FuzzMerge): 12
// bytes, ctl, flags, seq, ack (big-endian) and payload length.
type Record struct {
	Ctl        byte
	Flags      header.TCPFlags
	Seq, Ack   uint32
	PayloadLen int
}

// RecordSize is the size of an encoded Record.
const RecordSize = 12

// Records decodes b, ignoring a trailing partial Record, at most max.
func Records(b []byte, max int) []Record {
	var out []Record
	for len(b) >= RecordSize && len(out) < max {
		out = append(out, Record{
			Ctl:        b[0],
			Flags:      header.TCPFlags(b[1]),
			Seq:        binary.BigEndian.Uint32(b[2:]),
			Ack:        binary.BigEndian.Uint32(b[6:]),
			PayloadLen: int(binary.BigEndian.Uint16(b[10:])),
		})
		b = b[RecordSize:]
	}
	return out
}

// EncodeRecords is Records' inverse, for hand-made seeds.
func EncodeRecords(head []byte, rs ...Record) []byte {
	b := bytes.Clone(head)
	for _, r := range rs {
		b = append(b, r.Ctl, byte(r.Flags))
		b = binary.BigEndian.AppendUint32(b, r.Seq)
		b = binary.BigEndian.AppendUint32(b, r.Ack)
		b = binary.BigEndian.AppendUint16(b, uint16(r.PayloadLen))
	}
	return b
}

// GVisorTCP reads pkt, a packet from the peer, with gVisor's header
// package: ok only for a valid, unfragmented IP packet that carries a whole
// TCP header (the checksum aside, which the network layer judges).
func GVisorTCP(pkt []byte) (f wire.Fields, ok bool) {
	var src, dst tcpip.Address
	var transport []byte
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || ip.TransportProtocol() != header.TCPProtocolNumber || ip.More() || ip.FragmentOffset() != 0 {
			return f, false
		}
		src, dst, transport = ip.SourceAddress(), ip.DestinationAddress(), ip.Payload()
	case header.IPv6Version:
		ip := header.IPv6(pkt)
		if !ip.IsValid(len(pkt)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return f, false
		}
		src, dst, transport = ip.SourceAddress(), ip.DestinationAddress(), ip.Payload()
	default:
		return f, false
	}
	if len(transport) < header.TCPMinimumSize {
		return f, false
	}
	tcp := header.TCP(transport)
	if _, _, valid := header.TCPValid(tcp, nil, 0, src, dst, true); !valid {
		return f, false
	}
	return wire.Fields{
		Flow:       FlowFrom(dst, src, tcp.DestinationPort(), tcp.SourcePort()),
		Flags:      tcp.Flags(),
		Seq:        tcp.SequenceNumber(),
		Ack:        tcp.AckNumber(),
		PayloadLen: len(tcp.Payload()),
	}, true
}

// LastSteps returns the last 20 steps of a fuzzed run, for its failure
// message.
func LastSteps(steps []string) []string { return steps[max(0, len(steps)-20):] }

// ClientAddrs and ClientPorts give the i-th connection of a benchmark its
// own client address and port: a 4-tuple used again while tund holds it in
// TIME-WAIT would time a SYN retransmission, not the close.
const ClientAddrs, ClientPorts = 64, 50000

// ClientAddr is the client end of the i-th connection of a benchmark, in
// 198.18.1.0/24.
func ClientAddr(i uint32) netip.AddrPort {
	a := i / ClientPorts % ClientAddrs
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(1 + a)}), uint16(10000+i%ClientPorts))
}
