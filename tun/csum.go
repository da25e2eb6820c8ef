package tun

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// softwareChecksumsValid checks the checksums of an IP packet that came
// through the offload path without the kernel vouching for them (neither
// VIRTIO_NET_HDR_F_NEEDS_CSUM nor _DATA_VALID): a packet that some program
// injected into the device through a packet socket, or a forwarded one.
//
// The offload endpoint claims receive checksum offload from gVisor, which
// is per link, not per packet: gVisor then skips the IPv4 header, TCP and
// UDP checksums of everything. So they are checked here, and a packet is
// refused when it cannot be checked: a TCP segment in IPv4 fragments (Linux
// TCP sets DF, RFC 1191, so only a forged segment arrives so on this link)
// and any IPv6 packet whose payload is not TCP, UDP or ICMPv6 directly
// (extension headers, fragments; tund's services are TCP). ICMP checksums
// gVisor always checks. Malformed headers are passed on: gVisor's network
// layer rejects them.
func softwareChecksumsValid(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	switch p[0] >> 4 {
	case header.IPv4Version:
		if len(p) < header.IPv4MinimumSize {
			return true
		}
		ip := header.IPv4(p)
		hl, tl := int(ip.HeaderLength()), int(ip.TotalLength())
		if hl < header.IPv4MinimumSize || hl > tl || tl > len(p) {
			return true
		}
		if !ip.IsChecksumValid() {
			return false
		}
		proto := ip.TransportProtocol()
		if ip.More() || ip.FragmentOffset() != 0 {
			return proto != header.TCPProtocolNumber
		}
		return transportChecksumValid(proto, p[12:16], p[16:20], p[hl:tl], false)
	case header.IPv6Version:
		if len(p) < header.IPv6MinimumSize {
			return true
		}
		ip := header.IPv6(p)
		end := header.IPv6MinimumSize + int(ip.PayloadLength())
		if end > len(p) {
			return true
		}
		switch proto := ip.TransportProtocol(); proto {
		case header.TCPProtocolNumber, header.UDPProtocolNumber:
			return transportChecksumValid(proto, p[8:24], p[24:40], p[header.IPv6MinimumSize:end], true)
		case header.ICMPv6ProtocolNumber:
			return true
		}
		return false
	}
	return true
}

// transportChecksumValid checks a TCP or UDP checksum over the pseudo-header
// (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1) and the segment.
func transportChecksumValid(proto tcpip.TransportProtocolNumber, src, dst, seg []byte, v6 bool) bool {
	switch proto {
	case header.TCPProtocolNumber:
		if len(seg) < header.TCPMinimumSize {
			return true // gVisor drops it as malformed
		}
	case header.UDPProtocolNumber:
		if len(seg) < header.UDPMinimumSize {
			return true
		}
		if !v6 && seg[6] == 0 && seg[7] == 0 {
			return true // IPv4 UDP without a checksum (RFC 768)
		}
	default:
		return true
	}
	xsum := checksum.Checksum(src, 0)
	xsum = checksum.Checksum(dst, xsum)
	xsum = checksum.Combine(xsum, uint16(proto))
	xsum = checksum.Combine(xsum, uint16(len(seg)))
	if len(seg) > 0xffff {
		xsum = checksum.Combine(xsum, uint16(len(seg)>>16))
	}
	return checksum.Checksum(seg, xsum) == 0xffff
}
