// Package wire reads the TCP segments that cross tund's link: which
// connection (Flow) and what the close path follows of them (Fields),
// parsed from the first bytes of a packet without copying it, and keeps
// per-connection tables (FlowMap) and the monotonic clock of compact
// entries. The close-path layers and the tracer share it.
package wire

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Flow names a TCP connection from the stack's side: local and remote
// address (IPv4 in the first 4 bytes) and port.
type Flow struct {
	Local, Remote         [16]byte
	LocalPort, RemotePort uint16
	V6                    bool
}

// FlowOf names the connection between local and remote; IPv4-mapped IPv6
// addresses (a dual-stack endpoint's) name the IPv4 Flow that the wire
// carries.
func FlowOf(local, remote netip.AddrPort) Flow {
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	f := Flow{LocalPort: local.Port(), RemotePort: remote.Port(), V6: l.Is6()}
	if f.V6 {
		f.Local, f.Remote = l.As16(), r.As16()
	} else {
		a, b := l.As4(), r.As4()
		copy(f.Local[:4], a[:])
		copy(f.Remote[:4], b[:])
	}
	return f
}

// EndpointID returns the Flow as gVisor's demultiplexer names it.
func (f Flow) EndpointID() (tcpip.NetworkProtocolNumber, gstack.TransportEndpointID) {
	id := gstack.TransportEndpointID{LocalPort: f.LocalPort, RemotePort: f.RemotePort}
	if f.V6 {
		id.LocalAddress, id.RemoteAddress = tcpip.AddrFrom16(f.Local), tcpip.AddrFrom16(f.Remote)
		return header.IPv6ProtocolNumber, id
	}
	id.LocalAddress = tcpip.AddrFrom4([4]byte(f.Local[:4]))
	id.RemoteAddress = tcpip.AddrFrom4([4]byte(f.Remote[:4]))
	return header.IPv4ProtocolNumber, id
}

// MaxPeek is how many bytes of an inbound packet the parser needs: an IPv6
// header and a TCP header with options.
const MaxPeek = header.IPv6MinimumSize + header.TCPHeaderMaximumSize

// Fields are the fields of a TCP segment that the close path follows.
type Fields struct {
	Flow       Flow
	Flags      header.TCPFlags
	Seq, Ack   uint32
	PayloadLen int
}

// ParseInbound reads the TCP fields of an IP packet that arrives from the
// link, b being its first bytes. ok is false for anything that is not a
// complete, unfragmented TCP header: the network layer judges those.
func ParseInbound(b []byte, totalLen int) (f Fields, ok bool) {
	if len(b) < 1 {
		return f, false
	}
	var ipHdrLen, ipLen int
	switch b[0] >> 4 {
	case 4:
		if len(b) < header.IPv4MinimumSize {
			return f, false
		}
		ip := header.IPv4(b)
		ipHdrLen = int(ip.HeaderLength())
		// A fragment's TCP header is not whole, or not there.
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.More() || ip.FragmentOffset() != 0 || ipHdrLen < header.IPv4MinimumSize {
			return f, false
		}
		ipLen = int(ip.TotalLength())
		copy(f.Flow.Remote[:4], b[12:16])
		copy(f.Flow.Local[:4], b[16:20])
	case 6:
		if len(b) < header.IPv6MinimumSize {
			return f, false
		}
		ip := header.IPv6(b)
		// Extension headers before TCP are rare on this link; such segments
		// are simply not merged.
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return f, false
		}
		ipHdrLen = header.IPv6MinimumSize
		ipLen = header.IPv6MinimumSize + int(ip.PayloadLength())
		f.Flow.V6 = true
		copy(f.Flow.Remote[:], b[8:24])
		copy(f.Flow.Local[:], b[24:40])
	default:
		return f, false
	}
	if ipLen > totalLen || len(b) < ipHdrLen+header.TCPMinimumSize {
		return f, false
	}
	t := header.TCP(b[ipHdrLen:])
	off := int(t.DataOffset())
	if off < header.TCPMinimumSize || ipHdrLen+off > ipLen {
		return f, false
	}
	f.Flow.RemotePort, f.Flow.LocalPort = t.SourcePort(), t.DestinationPort()
	f.Flags, f.Seq, f.Ack = t.Flags(), t.SequenceNumber(), t.AckNumber()
	f.PayloadLen = ipLen - ipHdrLen - off
	return f, true
}

// ParseOutbound reads the TCP fields of a segment the stack sends, from the
// headers it built.
func ParseOutbound(network, transport []byte, payloadLen int) (f Fields, ok bool) {
	if len(transport) < header.TCPMinimumSize || len(network) < 1 {
		return f, false
	}
	switch network[0] >> 4 {
	case 4:
		if len(network) < header.IPv4MinimumSize {
			return f, false
		}
		copy(f.Flow.Local[:4], network[12:16])
		copy(f.Flow.Remote[:4], network[16:20])
	case 6:
		if len(network) < header.IPv6MinimumSize {
			return f, false
		}
		copy(f.Flow.Local[:], network[8:24])
		copy(f.Flow.Remote[:], network[24:40])
		f.Flow.V6 = true
	default:
		return f, false
	}
	f.Flow.LocalPort = binary.BigEndian.Uint16(transport[0:])
	f.Flow.RemotePort = binary.BigEndian.Uint16(transport[2:])
	t := header.TCP(transport)
	f.Flags, f.Seq, f.Ack = t.Flags(), t.SequenceNumber(), t.AckNumber()
	f.PayloadLen = payloadLen
	return f, true
}

// SeqGE reports a >= b in sequence space (RFC 9293 §3.4).
func SeqGE(a, b uint32) bool { return int32(a-b) >= 0 }

// Addrs returns the flow's local and remote address.
func (f Flow) Addrs() (local, remote netip.AddrPort) {
	if f.V6 {
		return netip.AddrPortFrom(netip.AddrFrom16(f.Local), f.LocalPort), netip.AddrPortFrom(netip.AddrFrom16(f.Remote), f.RemotePort)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(f.Local[:4])), f.LocalPort), netip.AddrPortFrom(netip.AddrFrom4([4]byte(f.Remote[:4])), f.RemotePort)
}
