package pcapfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

var (
	addr4a = netip.MustParseAddrPort("198.18.0.1:40000")
	addr4b = netip.MustParseAddrPort("198.18.0.2:80")
	addr6a = netip.MustParseAddrPort("[2001:2::1]:40001")
	addr6b = netip.MustParseAddrPort("[2001:2::2]:7")
)

// tcpHeader is a TCP header with data offset 5 (no options).
func tcpHeader(src, dst netip.AddrPort, flags uint8, seq, ack uint32, win uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], src.Port())
	binary.BigEndian.PutUint16(h[2:], dst.Port())
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12], h[13] = 5<<4, flags
	binary.BigEndian.PutUint16(h[14:], win)
	return h
}

// ipv4 is an IPv4 packet (no options, checksum left 0: nothing here
// checks it) of protocol proto carrying l4.
func ipv4(src, dst netip.Addr, proto byte, l4 []byte) []byte {
	p := make([]byte, 20, 20+len(l4))
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(l4)))
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	return append(p, l4...)
}

// ipv6 is an IPv6 packet with next header nh carrying l4.
func ipv6(src, dst netip.Addr, nh byte, l4 []byte) []byte {
	p := make([]byte, 40, 40+len(l4))
	p[0], p[6], p[7] = 0x60, nh, 64
	binary.BigEndian.PutUint16(p[4:], uint16(len(l4)))
	copy(p[8:], src.AsSlice())
	copy(p[24:], dst.AsSlice())
	return append(p, l4...)
}

func tcp4(flags uint8, seq, ack uint32, win uint16, payload int) []byte {
	return ipv4(addr4a.Addr(), addr4b.Addr(), 6, append(tcpHeader(addr4a, addr4b, flags, seq, ack, win), make([]byte, payload)...))
}

func tcp6(flags uint8, seq, ack uint32, win uint16, payload int) []byte {
	return ipv6(addr6b.Addr(), addr6a.Addr(), 6, append(tcpHeader(addr6b, addr6a, flags, seq, ack, win), make([]byte, payload)...))
}

// record is one packet to write: its IP bytes, captured up to snap bytes
// (0: all).
type record struct {
	t    time.Time
	ip   []byte
	snap int
}

// linkHeader returns the header that link type lt puts before an IP packet
// of version v.
func linkHeader(lt uint32, v6 bool) []byte {
	etherType := []byte{0x08, 0x00}
	if v6 {
		etherType = []byte{0x86, 0xdd}
	}
	switch lt {
	case LinkEthernet:
		// Addresses, an 802.1Q tag for the IPv6 frames, the EtherType.
		h := append(make([]byte, 12), etherType...)
		if v6 {
			h = append(append(make([]byte, 12), 0x81, 0x00, 0x00, 0x07), etherType...)
		}
		return h
	case LinkSLL:
		return append(make([]byte, 14), etherType...)
	case LinkSLL2:
		return append(etherType, make([]byte, 18)...)
	}
	return nil
}

// pcap writes a pcap file of link type lt in byte order bo, with
// nanosecond timestamps if nano.
func pcap(bo binary.ByteOrder, nano bool, lt uint32, recs []record) []byte {
	var b bytes.Buffer
	magic := uint32(magicMicro)
	if nano {
		magic = magicNano
	}
	hdr := make([]byte, 24)
	bo.PutUint32(hdr[0:], magic)
	bo.PutUint16(hdr[4:], 2)
	bo.PutUint16(hdr[6:], 4)
	bo.PutUint32(hdr[16:], 0xffff)
	bo.PutUint32(hdr[20:], lt)
	b.Write(hdr)
	for _, r := range recs {
		frame := append(linkHeader(lt, r.ip[0]>>4 == 6), r.ip...)
		incl := len(frame)
		if r.snap > 0 {
			incl = len(frame) - len(r.ip) + r.snap
		}
		rh := make([]byte, 16)
		frac := uint32(r.t.Nanosecond() / 1000)
		if nano {
			frac = uint32(r.t.Nanosecond())
		}
		bo.PutUint32(rh[0:], uint32(r.t.Unix()))
		bo.PutUint32(rh[4:], frac)
		bo.PutUint32(rh[8:], uint32(incl))
		bo.PutUint32(rh[12:], uint32(len(frame)))
		b.Write(rh)
		b.Write(frame[:incl])
	}
	return b.Bytes()
}

var t0 = time.Unix(1_700_000_000, 123_456_789)

// sample is a capture's worth of packets: TCP over both families, one cut
// by the snap length, and packets that are not TCP.
var sample = []record{
	{t: t0, ip: tcp4(tcpflag.SYN, 1000, 0, 64240, 0)},
	{t: t0.Add(time.Millisecond), ip: tcp6(tcpflag.SYN|tcpflag.ACK, 5000, 1001, 65535, 0)},
	{t: t0.Add(2 * time.Millisecond), ip: ipv4(addr4a.Addr(), netip.MustParseAddr("198.18.0.254"), 17, make([]byte, 12))}, // UDP
	{t: t0.Add(3 * time.Millisecond), ip: tcp4(tcpflag.PSH|tcpflag.ACK, 1001, 5001, 502, 1000), snap: 64},
	{t: t0.Add(4 * time.Millisecond), ip: ipv6(addr6a.Addr(), addr6b.Addr(), 58, make([]byte, 8))}, // ICMPv6
	{t: t0.Add(5 * time.Millisecond), ip: tcp6(tcpflag.FIN|tcpflag.ACK, 5001, 2001, 512, 0)},
}

// want is what TCP reads from sample's TCP packets (T aside).
var want = []Segment{
	{Src: addr4a, Dst: addr4b, Flags: tcpflag.SYN, Seq: 1000, Win: 64240, Len: 0, WireLen: 40},
	{Src: addr6b, Dst: addr6a, Flags: tcpflag.SYN | tcpflag.ACK, Seq: 5000, Ack: 1001, Win: 65535, Len: 0, WireLen: 60},
	{Src: addr4a, Dst: addr4b, Flags: tcpflag.PSH | tcpflag.ACK, Seq: 1001, Ack: 5001, Win: 502, Len: 1000, WireLen: 1040},
	{Src: addr6b, Dst: addr6a, Flags: tcpflag.FIN | tcpflag.ACK, Seq: 5001, Ack: 2001, Win: 512, Len: 0, WireLen: 60},
}

func TestParseLinkTypesOrdersPrecisions(t *testing.T) {
	for _, lt := range []uint32{LinkRaw, LinkRaw12, LinkEthernet, LinkSLL, LinkSLL2} {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			for _, nano := range []bool{false, true} {
				pkts, err := Parse(pcap(bo, nano, lt, sample))
				if err != nil {
					t.Fatalf("link type %d, %v, nano %v: %v", lt, bo, nano, err)
				}
				checkSample(t, pkts, nano)
			}
		}
	}
}

// TestParseRawFamilies reads the link types that hold one family only.
func TestParseRawFamilies(t *testing.T) {
	for _, c := range []struct {
		lt   uint32
		recs []record
		want []Segment
	}{
		{LinkIPv4, []record{sample[0], sample[3]}, []Segment{want[0], want[2]}},
		{LinkIPv6, []record{sample[1], sample[5]}, []Segment{want[1], want[3]}},
	} {
		pkts, err := Parse(pcap(binary.LittleEndian, false, c.lt, c.recs))
		if err != nil {
			t.Fatalf("link type %d: %v", c.lt, err)
		}
		segs := Segments(pkts)
		for i := range segs {
			segs[i].T = time.Time{}
		}
		if len(segs) != len(c.want) || segs[0] != c.want[0] || segs[1] != c.want[1] {
			t.Errorf("link type %d: %+v, want %+v", c.lt, segs, c.want)
		}
	}
}

func checkSample(t *testing.T, pkts []Packet, nano bool) {
	t.Helper()
	if len(pkts) != len(sample) {
		t.Fatalf("%d packets, want %d", len(pkts), len(sample))
	}
	for i, p := range pkts {
		wantT := sample[i].t
		if !nano {
			wantT = wantT.Truncate(time.Microsecond)
		}
		if !p.T.Equal(wantT) {
			t.Errorf("packet %d at %v, want %v", i, p.T, wantT)
		}
		wantData := sample[i].ip
		if s := sample[i].snap; s > 0 {
			wantData = wantData[:s]
		}
		if !bytes.Equal(p.Data, wantData) || p.WireLen != len(sample[i].ip) {
			t.Errorf("packet %d: %d bytes of %d, want %d of %d", i, len(p.Data), p.WireLen, len(wantData), len(sample[i].ip))
		}
	}
	segs := Segments(pkts)
	if len(segs) != len(want) {
		t.Fatalf("%d segments, want %d: %+v", len(segs), len(want), segs)
	}
	for i, s := range segs {
		w := want[i]
		w.T = s.T // checked above, with the packets
		if s != w {
			t.Errorf("segment %d: %+v, want %+v", i, s, w)
		}
	}
}

func TestReadFileTruncated(t *testing.T) {
	whole := pcap(binary.LittleEndian, false, LinkRaw, sample)
	last := 16 + len(sample[len(sample)-1].ip)
	for _, cut := range []int{1, 10, last - 8, last - 1} {
		file := filepath.Join(t.TempDir(), "cut.pcap")
		if err := os.WriteFile(file, whole[:len(whole)-cut], 0o644); err != nil {
			t.Fatal(err)
		}
		pkts, err := ReadFile(file)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("cut by %d bytes: error %v, want ErrTruncated", cut, err)
		}
		if len(pkts) != len(sample)-1 {
			t.Errorf("cut by %d bytes: %d packets, want the %d before the cut", cut, len(pkts), len(sample)-1)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good := pcap(binary.LittleEndian, false, LinkRaw, nil)
	otherLink := pcap(binary.LittleEndian, false, 105, nil) // 802.11
	for name, b := range map[string][]byte{
		"empty":       nil,
		"short":       good[:23],
		"bad magic":   append([]byte{1, 2, 3, 4}, good[4:]...),
		"link 802.11": otherLink,
	} {
		if _, err := Parse(b); err == nil || errors.Is(err, ErrTruncated) {
			t.Errorf("%s: error %v, want a refusal", name, err)
		}
	}
	if pkts, err := Parse(good); err != nil || len(pkts) != 0 {
		t.Errorf("no records: %d packets, %v", len(pkts), err)
	}
}

// TestShortFrame checks that a record shorter than its link header is
// left out, not read as an IP packet.
func TestShortFrame(t *testing.T) {
	b := pcap(binary.LittleEndian, false, LinkSLL2, sample[:1])
	// The record header says 10 bytes; the file holds them.
	rh := b[24:]
	binary.LittleEndian.PutUint32(rh[8:], 10)
	b = b[:24+16+10]
	pkts, err := Parse(b)
	if err != nil || len(pkts) != 0 {
		t.Errorf("a 10-byte SLL2 record: %d packets, %v; want it left out", len(pkts), err)
	}
}

func TestTCPRefuses(t *testing.T) {
	v4 := tcp4(tcpflag.ACK, 1, 2, 3, 0)
	v6 := tcp6(tcpflag.ACK, 1, 2, 3, 0)
	for name, data := range map[string][]byte{
		"empty":           nil,
		"not IP":          {0x00, 0x01, 0x08, 0x00},
		"IPv4 UDP":        sample[2].ip,
		"IPv6 ICMPv6":     sample[4].ip,
		"IPv4 cut in TCP": v4[:39],
		"IPv6 cut in TCP": v6[:59],
		"IPv4 cut in IP":  v4[:19],
	} {
		if s, ok := TCP(Packet{Data: data}); ok {
			t.Errorf("%s: read as %+v", name, s)
		}
	}
}

// TestTCPIPv4Options reads past IPv4 options to the TCP header, and the
// payload length from the lengths in the headers.
func TestTCPIPv4Options(t *testing.T) {
	p := tcp4(tcpflag.PSH|tcpflag.ACK, 11, 22, 33, 5)
	opts := append([]byte{0x46}, p[1:20]...) // IHL 6
	binary.BigEndian.PutUint16(opts[2:], uint16(len(p)+4))
	opts = append(append(opts, 1, 1, 1, 0), p[20:]...) // NOP NOP NOP EOL
	s, ok := TCP(Packet{Data: opts, WireLen: len(opts)})
	w := Segment{Src: addr4a, Dst: addr4b, Flags: tcpflag.PSH | tcpflag.ACK, Seq: 11, Ack: 22, Win: 33, Len: 5, WireLen: len(opts)}
	if !ok || s != w {
		t.Errorf("TCP = %+v, %v; want %+v", s, ok, w)
	}
}

func TestSegmentMethods(t *testing.T) {
	s := Segment{T: t0, Src: addr4a, Dst: addr4b, Flags: tcpflag.FIN | tcpflag.PSH | tcpflag.ACK, Seq: 7, Ack: 9, Win: 100, Len: 3}
	// tcpdump's flag letters, "." for ACK, and the local time of day.
	if got, want := s.String(), t0.Format("15:04:05.000000")+" 198.18.0.1:40000 > 198.18.0.2:80 [FP.] seq 7 ack 9 win 100 len 3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !s.Has(tcpflag.FIN) || !s.Has(tcpflag.SYN|tcpflag.ACK) || s.Has(tcpflag.RST) {
		t.Errorf("Has is wrong for %v", s)
	}
	for _, c := range []struct {
		flags uint8
		len   int
		want  bool
	}{
		{tcpflag.ACK, 0, true},
		{tcpflag.PSH | tcpflag.ACK, 0, true},
		{tcpflag.ACK, 1, false},
		{tcpflag.FIN | tcpflag.ACK, 0, false},
		{tcpflag.SYN | tcpflag.ACK, 0, false},
		{0, 0, false},
	} {
		if got := (Segment{Flags: c.flags, Len: c.len}).PureACK(); got != c.want {
			t.Errorf("PureACK of %s len %d = %v, want %v", tcpflag.String(c.flags), c.len, got, c.want)
		}
	}
}
