package pcapfile

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// Segment is a TCP segment read from a packet.
type Segment struct {
	T        time.Time
	Src, Dst netip.AddrPort
	Flags    uint8 // the header's flag byte: tcpflag.FIN and the others
	Seq, Ack uint32
	Win      uint16 // as sent, before the window scale
	// Len is the payload's length, from the IP header's length field, so
	// that a capture that kept only the headers still tells it.
	Len int
	// WireLen is the IP packet's length on the wire (Packet.WireLen).
	WireLen int
}

// TCP reads the TCP segment in p, an IPv4 or IPv6 packet without extension
// headers (tund's stack sends none, and the kernel sends none on TCP),
// with at least the fixed TCP header captured. It reports false for
// anything else.
func TCP(p Packet) (Segment, bool) {
	pkt := p.Data
	s := Segment{T: p.T, WireLen: p.WireLen}
	if len(pkt) < 1 {
		return s, false
	}
	var src, dst netip.Addr
	var l4 []byte
	var ipPayload int
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != 6 {
			return s, false
		}
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+20 {
			return s, false
		}
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = pkt[ihl:]
		ipPayload = int(binary.BigEndian.Uint16(pkt[2:])) - ihl
	case 6:
		if len(pkt) < 60 || pkt[6] != 6 {
			return s, false
		}
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		l4 = pkt[40:]
		ipPayload = int(binary.BigEndian.Uint16(pkt[4:]))
	default:
		return s, false
	}
	s.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	s.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	s.Seq = binary.BigEndian.Uint32(l4[4:])
	s.Ack = binary.BigEndian.Uint32(l4[8:])
	s.Flags = l4[13]
	s.Win = binary.BigEndian.Uint16(l4[14:])
	s.Len = ipPayload - int(l4[12]>>4)*4
	return s, true
}

// Segments returns the TCP segments among pkts, in order.
func Segments(pkts []Packet) []Segment {
	var segs []Segment
	for _, p := range pkts {
		if s, ok := TCP(p); ok {
			segs = append(segs, s)
		}
	}
	return segs
}

// Has reports whether any of the flags f is set.
func (s Segment) Has(f uint8) bool { return s.Flags&f != 0 }

// PureACK reports a segment with only ACK set (PSH aside) and no payload.
func (s Segment) PureACK() bool { return s.Flags&^tcpflag.PSH == tcpflag.ACK && s.Len == 0 }

// String prints the segment much as tcpdump does ("." for ACK), for
// failure messages.
func (s Segment) String() string {
	flags := strings.ReplaceAll(tcpflag.String(s.Flags), "A", ".")
	return fmt.Sprintf("%s %v > %v [%s] seq %d ack %d win %d len %d", s.T.Format("15:04:05.000000"), s.Src, s.Dst, flags, s.Seq, s.Ack, s.Win, s.Len)
}
