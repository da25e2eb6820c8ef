package stack

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// flow names a TCP connection from the stack's side: local and remote
// address (IPv4 in the first 4 bytes) and port.
type flow struct {
	local, remote         [16]byte
	localPort, remotePort uint16
	v6                    bool
}

// flowOf names the connection between local and remote; IPv4-mapped IPv6
// addresses (a dual-stack endpoint's) name the IPv4 flow that the wire
// carries.
func flowOf(local, remote netip.AddrPort) flow {
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	f := flow{localPort: local.Port(), remotePort: remote.Port(), v6: l.Is6()}
	if f.v6 {
		f.local, f.remote = l.As16(), r.As16()
	} else {
		a, b := l.As4(), r.As4()
		copy(f.local[:4], a[:])
		copy(f.remote[:4], b[:])
	}
	return f
}

// endpointID returns the flow as gVisor's demultiplexer names it.
func (f flow) endpointID() (tcpip.NetworkProtocolNumber, gstack.TransportEndpointID) {
	id := gstack.TransportEndpointID{LocalPort: f.localPort, RemotePort: f.remotePort}
	if f.v6 {
		id.LocalAddress, id.RemoteAddress = tcpip.AddrFrom16(f.local), tcpip.AddrFrom16(f.remote)
		return header.IPv6ProtocolNumber, id
	}
	id.LocalAddress = tcpip.AddrFrom4([4]byte(f.local[:4]))
	id.RemoteAddress = tcpip.AddrFrom4([4]byte(f.remote[:4]))
	return header.IPv4ProtocolNumber, id
}

// tcpFields are the fields of a TCP segment that the close path follows.
type tcpFields struct {
	flow       flow
	flags      header.TCPFlags
	seq, ack   uint32
	payloadLen int
}

// parseInbound reads the TCP fields of an IP packet that arrives from the
// link, b being its first bytes. ok is false for anything that is not a
// complete, unfragmented TCP header: the network layer judges those.
func parseInbound(b []byte, totalLen int) (f tcpFields, ok bool) {
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
		copy(f.flow.remote[:4], b[12:16])
		copy(f.flow.local[:4], b[16:20])
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
		f.flow.v6 = true
		copy(f.flow.remote[:], b[8:24])
		copy(f.flow.local[:], b[24:40])
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
	f.flow.remotePort, f.flow.localPort = t.SourcePort(), t.DestinationPort()
	f.flags, f.seq, f.ack = t.Flags(), t.SequenceNumber(), t.AckNumber()
	f.payloadLen = ipLen - ipHdrLen - off
	return f, true
}

// parseOutbound reads the TCP fields of a segment the stack sends, from the
// headers it built.
func parseOutbound(network, transport []byte, payloadLen int) (f tcpFields, ok bool) {
	if len(transport) < header.TCPMinimumSize || len(network) < 1 {
		return f, false
	}
	switch network[0] >> 4 {
	case 4:
		if len(network) < header.IPv4MinimumSize {
			return f, false
		}
		copy(f.flow.local[:4], network[12:16])
		copy(f.flow.remote[:4], network[16:20])
	case 6:
		if len(network) < header.IPv6MinimumSize {
			return f, false
		}
		copy(f.flow.local[:], network[8:24])
		copy(f.flow.remote[:], network[24:40])
		f.flow.v6 = true
	default:
		return f, false
	}
	f.flow.localPort = binary.BigEndian.Uint16(transport[0:])
	f.flow.remotePort = binary.BigEndian.Uint16(transport[2:])
	t := header.TCP(transport)
	f.flags, f.seq, f.ack = t.Flags(), t.SequenceNumber(), t.AckNumber()
	f.payloadLen = payloadLen
	return f, true
}

// seqGE reports a >= b in sequence space (RFC 9293 §3.4).
func seqGE(a, b uint32) bool { return int32(a-b) >= 0 }
