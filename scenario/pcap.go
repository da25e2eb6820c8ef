package scenario

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// TCP flags as the TCP header carries them.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

// wireSegment is one TCP segment from tund's pcap.
type wireSegment struct {
	T        time.Time
	Src, Dst netip.AddrPort
	Flags    uint8
	Seq, Ack uint32
	Len      int
}

func (s wireSegment) has(f uint8) bool { return s.Flags&f != 0 }

// flags spells the flags as tund's close records do: S F R P A.
func (s wireSegment) flags() string {
	var b strings.Builder
	for _, f := range []struct {
		bit    uint8
		letter byte
	}{{flagSYN, 'S'}, {flagFIN, 'F'}, {flagRST, 'R'}, {flagPSH, 'P'}, {flagACK, 'A'}} {
		if s.Flags&f.bit != 0 {
			b.WriteByte(f.letter)
		}
	}
	return b.String()
}

// readPcap reads the TCP segments of a pcap file of raw IP packets, as
// tund's --pcap writes it (gVisor's sniffer: microseconds, link type 101).
func readPcap(file string) ([]wireSegment, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 {
		return nil, fmt.Errorf("%s: %d bytes, no pcap header", file, len(b))
	}
	var bo binary.ByteOrder = binary.LittleEndian
	magic := bo.Uint32(b)
	if magic != 0xa1b2c3d4 && magic != 0xa1b23c4d {
		bo, magic = binary.BigEndian, binary.BigEndian.Uint32(b)
	}
	if magic != 0xa1b2c3d4 && magic != 0xa1b23c4d {
		return nil, fmt.Errorf("%s: not a pcap file", file)
	}
	nano := magic == 0xa1b23c4d
	if lt := bo.Uint32(b[20:]); lt != 101 && lt != 228 && lt != 229 && lt != 12 {
		return nil, fmt.Errorf("%s: link type %d, want raw IP", file, lt)
	}
	var segs []wireSegment
	for p := 24; p+16 <= len(b); {
		sec, frac, incl := bo.Uint32(b[p:]), bo.Uint32(b[p+4:]), int(bo.Uint32(b[p+8:]))
		p += 16
		if p+incl > len(b) {
			break // the last packet was cut short
		}
		ns := int64(frac) * 1000
		if nano {
			ns = int64(frac)
		}
		if s, ok := parseIP(b[p : p+incl]); ok {
			s.T = time.Unix(int64(sec), ns)
			segs = append(segs, s)
		}
		p += incl
	}
	return segs, nil
}

// parseIP reads the TCP segment in an IPv4 or IPv6 packet (no extension
// headers: tund's stack sends none).
func parseIP(pkt []byte) (wireSegment, bool) {
	var s wireSegment
	var l4 []byte
	var payload int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == 6:
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+20 {
			return s, false
		}
		src, _ := netip.AddrFromSlice(pkt[12:16])
		dst, _ := netip.AddrFromSlice(pkt[16:20])
		l4, payload = pkt[ihl:], int(binary.BigEndian.Uint16(pkt[2:]))-ihl
		s.Src, s.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	case len(pkt) >= 60 && pkt[0]>>4 == 6 && pkt[6] == 6:
		src, _ := netip.AddrFromSlice(pkt[8:24])
		dst, _ := netip.AddrFromSlice(pkt[24:40])
		l4, payload = pkt[40:], int(binary.BigEndian.Uint16(pkt[4:]))
		s.Src, s.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	default:
		return s, false
	}
	s.Src = netip.AddrPortFrom(s.Src.Addr(), binary.BigEndian.Uint16(l4[0:]))
	s.Dst = netip.AddrPortFrom(s.Dst.Addr(), binary.BigEndian.Uint16(l4[2:]))
	s.Seq = binary.BigEndian.Uint32(l4[4:])
	s.Ack = binary.BigEndian.Uint32(l4[8:])
	s.Flags = l4[13]
	s.Len = payload - int(l4[12]>>4)*4
	return s, true
}

// between keeps the segments that go either way between a and b.
func between(segs []wireSegment, a, b netip.AddrPort) []wireSegment {
	var out []wireSegment
	for _, s := range segs {
		if (s.Src == a && s.Dst == b) || (s.Src == b && s.Dst == a) {
			out = append(out, s)
		}
	}
	return out
}
