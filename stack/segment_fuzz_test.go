package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The segment parsers read every packet that crosses the device, both ways,
// before gVisor has judged it: whatever the peer sends reaches them first.
// These fuzz targets hold them to gVisor's own reading of the same bytes.
// Seeds from real captures are in testdata/fuzz (see its README).

// FuzzParseInbound feeds arbitrary packets to parseInbound as the tracer and
// the merge call it: the first maxPeek bytes, and the packet's size.
func FuzzParseInbound(f *testing.F) {
	for _, p := range [][]byte{
		nil,
		{0x45},
		{0x60},
		buildSegment(fuzzPeer4, fuzzStack4, header.TCPFlagFin|header.TCPFlagAck, 1000, 2000, 0),
		buildSegment(fuzzPeer6, fuzzStack6, header.TCPFlagSyn, 1, 0, 0),
		buildSegment(fuzzPeer4, fuzzStack4, header.TCPFlagPsh|header.TCPFlagAck, 1, 2, 100),
		buildSegment(fuzzPeer6, fuzzStack6, header.TCPFlagRst, 7, 0, 3),
		withByte(buildSegment(fuzzPeer4, fuzzStack4, header.TCPFlagFin, 1, 2, 0), 6, 0x20),  // more fragments
		withByte(buildSegment(fuzzPeer4, fuzzStack4, header.TCPFlagFin, 1, 2, 0), 0, 0x44),  // IHL 4 words
		withByte(buildSegment(fuzzPeer4, fuzzStack4, header.TCPFlagFin, 1, 2, 0), 32, 0x40), // data offset 4 words
		withByte(buildSegment(fuzzPeer6, fuzzStack6, header.TCPFlagFin, 1, 2, 0), 6, 0),     // hop-by-hop before TCP
		withByte(buildSegment(fuzzPeer4, fuzzStack4, header.TCPFlagFin, 1, 2, 0), 2, 0xff),  // total length past the end
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		b := pkt[:min(len(pkt), maxPeek)]
		got, ok := parseInbound(b, len(pkt))
		// Peeking at maxPeek bytes must lose nothing that the whole packet
		// would tell.
		if whole, wok := parseInbound(pkt, len(pkt)); wok != ok || ok && whole != got {
			t.Fatalf("peek of %d bytes: %+v, %v; whole packet: %+v, %v", len(b), got, ok, whole, wok)
		}
		want, wantOK := gvisorTCP(pkt)
		if ok != wantOK {
			t.Fatalf("parseInbound ok = %v, gVisor's parsers say %v, for %x", ok, wantOK, pkt)
		}
		if !ok {
			return
		}
		if got.payloadLen < 0 || got.payloadLen > len(pkt) {
			t.Fatalf("payloadLen %d outside [0, %d]", got.payloadLen, len(pkt))
		}
		if v := pkt[0] >> 4; got.flow.v6 != (v == 6) {
			t.Fatalf("v6 = %v for IP version %d", got.flow.v6, v)
		}
		if got != want {
			t.Fatalf("parseInbound: %+v\ngVisor:       %+v", got, want)
		}
		checkFlowPadding(t, got.flow)
		// The same connection seen the other way, as the stack sends it,
		// must be the same flow: the tracer and the merge key their tables
		// by it in both directions.
		network, transport := reverse(pkt)
		out, ok := parseOutbound(network, transport, got.payloadLen)
		if !ok || out.flow != got.flow {
			t.Fatalf("the reverse segment parses as %+v, %v; want flow %+v", out, ok, got.flow)
		}
	})
}

// FuzzParseOutbound feeds arbitrary headers to parseOutbound, which reads
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
	add(buildSegment(fuzzStack4, fuzzPeer4, header.TCPFlagFin|header.TCPFlagAck, 1000, 2000, 0), 0)
	add(buildSegment(fuzzStack6, fuzzPeer6, header.TCPFlagAck, 1, 2, 10), 10)
	f.Add([]byte{0x45}, make([]byte, header.TCPMinimumSize), 0)
	f.Add([]byte{0x65}, make([]byte, header.TCPMinimumSize), -1)
	f.Fuzz(func(t *testing.T, network, transport []byte, payloadLen int) {
		got, ok := parseOutbound(network, transport, payloadLen)
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
		if got.flow.v6 != (v == 6) {
			t.Fatalf("v6 = %v for IP version %d", got.flow.v6, v)
		}
		var src, dst tcpip.Address
		if v == 4 {
			src, dst = header.IPv4(network).SourceAddress(), header.IPv4(network).DestinationAddress()
		} else {
			src, dst = header.IPv6(network).SourceAddress(), header.IPv6(network).DestinationAddress()
		}
		tcp := header.TCP(transport)
		want := tcpFields{
			flow:       flowFrom(src, dst, tcp.SourcePort(), tcp.DestinationPort()),
			flags:      tcp.Flags(),
			seq:        tcp.SequenceNumber(),
			ack:        tcp.AckNumber(),
			payloadLen: payloadLen,
		}
		if got != want {
			t.Fatalf("parseOutbound: %+v\ngVisor:        %+v", got, want)
		}
		checkFlowPadding(t, got.flow)
	})
}

// gvisorTCP reads pkt, a packet from the peer, with gVisor's header
// package: ok only for a valid, unfragmented IP packet that carries a whole
// TCP header (the checksum aside, which the network layer judges).
func gvisorTCP(pkt []byte) (f tcpFields, ok bool) {
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
	return tcpFields{
		flow:       flowFrom(dst, src, tcp.DestinationPort(), tcp.SourcePort()),
		flags:      tcp.Flags(),
		seq:        tcp.SequenceNumber(),
		ack:        tcp.AckNumber(),
		payloadLen: len(tcp.Payload()),
	}, true
}

// flowFrom builds a flow from gVisor addresses, independently of the code
// under test.
func flowFrom(local, remote tcpip.Address, localPort, remotePort uint16) flow {
	f := flow{localPort: localPort, remotePort: remotePort, v6: local.Len() == 16}
	copy(f.local[:], local.AsSlice())
	copy(f.remote[:], remote.AsSlice())
	return f
}

// fuzzFlow is the flow between local and remote ("addr:port").
func fuzzFlow(local, remote string) flow {
	l, r := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	return flowFrom(tcpip.AddrFromSlice(l.Addr().AsSlice()), tcpip.AddrFromSlice(r.Addr().AsSlice()), l.Port(), r.Port())
}

// checkFlowPadding: an IPv4 flow's unused address bytes must be zero, or
// the same connection would get several keys in the tracer's and the
// merge's tables.
func checkFlowPadding(t *testing.T, f flow) {
	t.Helper()
	if f.v6 {
		return
	}
	var zero [12]byte
	if !bytes.Equal(f.local[4:], zero[:]) || !bytes.Equal(f.remote[4:], zero[:]) {
		t.Fatalf("IPv4 flow with bytes past the address: %+v", f)
	}
}

// reverse returns the IP and TCP headers of a valid TCP packet with source
// and destination swapped, as the other end would send them.
func reverse(pkt []byte) (network, transport []byte) {
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

func swap(a, b []byte) {
	for i := range a {
		a[i], b[i] = b[i], a[i]
	}
}

func withByte(b []byte, i int, v byte) []byte {
	b[i] = v
	return b
}

// Addresses of the hand-made segments: the peer and the stack, IPv4 and
// IPv6, as tund's defaults have them.
var (
	fuzzPeer4  = netip.MustParseAddrPort("198.18.0.1:40000")
	fuzzStack4 = netip.MustParseAddrPort("198.18.0.2:7")
	fuzzPeer6  = netip.MustParseAddrPort("[2001:2::1]:40000")
	fuzzStack6 = netip.MustParseAddrPort("[2001:2::2]:7")
)

// buildSegment returns a whole IPv4 or IPv6 TCP packet from src to dst with
// payloadLen bytes of data and valid checksums, as a kernel would send it.
func buildSegment(src, dst netip.AddrPort, flags header.TCPFlags, seq, ack uint32, payloadLen int) []byte {
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

// record is one segment of a fuzzed sequence (FuzzTracer, FuzzMerge): 12
// bytes, ctl, flags, seq, ack (big-endian) and payload length.
type record struct {
	ctl        byte
	flags      header.TCPFlags
	seq, ack   uint32
	payloadLen int
}

const recordSize = 12

// records decodes b, ignoring a trailing partial record, at most max.
func records(b []byte, max int) []record {
	var out []record
	for len(b) >= recordSize && len(out) < max {
		out = append(out, record{
			ctl:        b[0],
			flags:      header.TCPFlags(b[1]),
			seq:        binary.BigEndian.Uint32(b[2:]),
			ack:        binary.BigEndian.Uint32(b[6:]),
			payloadLen: int(binary.BigEndian.Uint16(b[10:])),
		})
		b = b[recordSize:]
	}
	return out
}

// encodeRecords is records' inverse, for hand-made seeds.
func encodeRecords(head []byte, rs ...record) []byte {
	b := bytes.Clone(head)
	for _, r := range rs {
		b = append(b, r.ctl, byte(r.flags))
		b = binary.BigEndian.AppendUint32(b, r.seq)
		b = binary.BigEndian.AppendUint32(b, r.ack)
		b = binary.BigEndian.AppendUint16(b, uint16(r.payloadLen))
	}
	return b
}
