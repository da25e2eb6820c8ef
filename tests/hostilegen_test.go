package tests

// The packet generator of TestHostilePackets (hostile_test.go): seeded, so
// that TUND_HOSTILE_SEED replays a run, and confined to the destinations and
// source ports that the test's rules leave to hostile packets.

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"

	"github.com/tund/tund/internal/tcpflag"
)

// Hostile packet kinds, each a sizeable share of the injection.
const (
	hkTCP4         = iota // IPv4 TCP, checksums right: reaches TCP processing
	hkTCP4Offset          // IPv4 TCP, data offset < 5 or past the header
	hkTCP4Short           // IPv4 TCP, truncated headers and lying lengths
	hkTCP4Checksum        // IPv4 TCP, a checksum wrong
	hkFrag4               // IPv4 fragments
	hkBadIP4              // IPv4, bad IHL, total length, version, sources
	hkUDP4                // IPv4 UDP to random ports
	hkICMP4               // ICMP of random types, errors and echo requests
	hkProto4              // IPv4, other protocol numbers
	hkTCP6                // IPv6 TCP, pseudo-header checksum right
	hkExt6                // IPv6 extension headers, fragments, next headers
	hkICMP6               // ICMPv6 of random types, NDP included
	hkRandom              // random bytes
	hkCount
)

var hostileKinds = [hkCount]struct {
	name   string
	weight int
}{
	hkTCP4:         {"tcp4", 16},
	hkTCP4Offset:   {"tcp4-offset", 8},
	hkTCP4Short:    {"tcp4-short", 8},
	hkTCP4Checksum: {"tcp4-checksum", 8},
	hkFrag4:        {"frag4", 10},
	hkBadIP4:       {"bad-ip4", 8},
	hkUDP4:         {"udp4", 4},
	hkICMP4:        {"icmp4", 5},
	hkProto4:       {"proto4", 3},
	hkTCP6:         {"tcp6", 10},
	hkExt6:         {"ext6", 8},
	hkICMP6:        {"icmp6", 6},
	hkRandom:       {"random", 8},
}

// Addresses the packets use.
var (
	hStack4 = [4]byte{198, 18, 0, 2}
	hKern4  = [4]byte{198, 18, 0, 1}
	hStack6 = [16]byte{0x20, 0x01, 0, 0x02, 14: 0, 15: 2}
	hKern6  = [16]byte{0x20, 0x01, 0, 0x02, 14: 0, 15: 1}
	// hPrefix6 is 2001:2::/48.
	hPrefix6 = []byte{0x20, 0x01, 0, 0x02, 0, 0}
)

// hostileGen builds hostile packets from one seeded generator.
type hostileGen struct {
	r       *rand.Rand
	total   int
	fragIDs [16]uint16 // a small pool, so that fragments meet and overlap
	frag6ID [16]uint32
}

func newHostileGen(seed uint64) *hostileGen {
	g := &hostileGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for _, k := range hostileKinds {
		g.total += k.weight
	}
	for i := range g.fragIDs {
		g.fragIDs[i] = uint16(g.r.Uint32())
		g.frag6ID[i] = g.r.Uint32()
	}
	return g
}

// packet builds the next packet in buf and says whether it goes out as
// IPv6 (the ethertype; tund itself goes by the version nibble) and its kind.
func (g *hostileGen) packet(buf []byte) (p []byte, v6 bool, kind int) {
	w := g.r.IntN(g.total)
	for kind = 0; w >= hostileKinds[kind].weight; kind++ {
		w -= hostileKinds[kind].weight
	}
	b := buf[:0]
	switch kind {
	case hkTCP4:
		return g.tcp4(b, g.src4(), g.dst4(), -1), false, kind
	case hkTCP4Offset:
		return g.tcp4BadOffset(b), false, kind
	case hkTCP4Short:
		return g.tcp4Short(b), false, kind
	case hkTCP4Checksum:
		return g.tcp4BadChecksum(b), false, kind
	case hkFrag4:
		return g.frag4(b), false, kind
	case hkBadIP4:
		return g.badIP4(b), false, kind
	case hkUDP4:
		return g.udp4(b), false, kind
	case hkICMP4:
		return g.icmp4(b), false, kind
	case hkProto4:
		return g.proto4(b), false, kind
	case hkTCP6:
		return g.tcp6(b), true, kind
	case hkExt6:
		return g.ext6(b), true, kind
	case hkICMP6:
		return g.icmp6(b), true, kind
	default:
		return g.random(b), g.r.IntN(2) == 0, hkRandom
	}
}

// --- small helpers ---

func (g *hostileGen) chance(n int) bool { return g.r.IntN(n) == 0 }

func (g *hostileGen) junk(b []byte, n int) []byte {
	for ; n >= 8; n -= 8 {
		b = binary.LittleEndian.AppendUint64(b, g.r.Uint64())
	}
	for ; n > 0; n-- {
		b = append(b, byte(g.r.Uint32()))
	}
	return b
}

// size picks a length in [0, limit]: often zero, often small, sometimes
// anything up to the limit.
func (g *hostileGen) size(limit int) int {
	if limit <= 0 {
		return 0
	}
	switch g.r.IntN(5) {
	case 0:
		return 0
	case 1, 2:
		return g.r.IntN(min(limit, 64) + 1)
	default:
		return g.r.IntN(limit + 1)
	}
}

func (g *hostileGen) sport() uint16 {
	return uint16(hostilePortMin + g.r.IntN(hostilePortMax-hostilePortMin+1))
}

// dport aims at the services tund runs, and anywhere else.
func (g *hostileGen) dport() uint16 {
	switch n := g.r.IntN(10); {
	case n < 4:
		return 7
	case n < 7:
		return 80
	case n < 8:
		return []uint16{9, 13, 19, 0}[g.r.IntN(4)]
	default:
		return uint16(g.r.Uint32())
	}
}

// src4 is mostly the kernel's address, sometimes another of 198.18.0.0/15,
// sometimes tund's own (a LAND packet).
func (g *hostileGen) src4() [4]byte {
	switch n := g.r.IntN(10); {
	case n < 5:
		return hKern4
	case n < 9:
		return [4]byte{198, 18 + byte(g.r.IntN(2)), byte(g.r.Uint32()), byte(g.r.Uint32())}
	default:
		return hStack4
	}
}

// dst4 is tund's address, or another of 198.18.0.0/15 (never outside it).
func (g *hostileGen) dst4() [4]byte {
	if g.r.IntN(10) < 9 {
		return hStack4
	}
	return [4]byte{198, 18 + byte(g.r.IntN(2)), byte(g.r.Uint32()), byte(g.r.Uint32())}
}

func (g *hostileGen) rand6() [16]byte {
	var a [16]byte
	copy(a[:], hPrefix6)
	for i := 6; i < 16; i++ {
		a[i] = byte(g.r.Uint32())
	}
	return a
}

func (g *hostileGen) src6() [16]byte {
	switch n := g.r.IntN(10); {
	case n < 5:
		return hKern6
	case n < 9:
		return g.rand6()
	default:
		return hStack6
	}
}

// dst6 is tund's address, or another of 2001:2::/48 (never outside it).
func (g *hostileGen) dst6() [16]byte {
	if g.r.IntN(10) < 9 {
		return hStack6
	}
	return g.rand6()
}

func (g *hostileGen) tcpFlags() byte {
	if g.chance(3) {
		return byte(g.r.Uint32())
	}
	combos := [...]byte{
		tcpflag.SYN, tcpflag.SYN | tcpflag.ACK, tcpflag.ACK, tcpflag.RST, tcpflag.RST | tcpflag.ACK,
		tcpflag.FIN | tcpflag.ACK, tcpflag.FIN, tcpflag.PSH | tcpflag.ACK, tcpflag.FIN | tcpflag.PSH | tcpflag.ACK,
		tcpflag.SYN | tcpflag.FIN, tcpflag.SYN | tcpflag.RST, tcpflag.FIN | tcpflag.PSH | tcpflag.URG, 0, 0xff,
		tcpflag.SYN | tcpflag.ECE | tcpflag.CWR, tcpflag.ACK | tcpflag.URG,
	}
	return combos[g.r.IntN(len(combos))]
}

// --- checksums ---

func hCsum(sum uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func hCsumFinish(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func hPseudo4(src, dst [4]byte, proto byte, n int) uint32 {
	return hCsum(hCsum(0, src[:]), dst[:]) + uint32(proto) + uint32(n)
}

func hPseudo6(src, dst [16]byte, nh byte, n int) uint32 {
	return hCsum(hCsum(0, src[:]), dst[:]) + uint32(n>>16) + uint32(n&0xffff) + uint32(nh)
}

// setCsum writes the checksum field at offset at of seg, if seg has one.
func setCsum(seg []byte, at int, pseudo uint32) {
	if len(seg) < at+2 {
		return
	}
	seg[at], seg[at+1] = 0, 0
	binary.BigEndian.PutUint16(seg[at:], hCsumFinish(hCsum(pseudo, seg)))
}

// breakCsum makes the checksum at offset at of seg wrong.
func (g *hostileGen) breakCsum(seg []byte, at int) {
	if len(seg) >= at+2 {
		seg[at] ^= byte(1 + g.r.IntN(255))
	}
}

// --- IPv4 ---

// ip4 appends an IPv4 header, sometimes with options; fin4 sets its total
// length and checksum once the payload is in.
func (g *hostileGen) ip4(b []byte, proto byte, src, dst [4]byte, frag uint16) []byte {
	ttl := byte(64)
	if g.chance(10) {
		ttl = byte(g.r.IntN(3))
	}
	var opts int
	if g.chance(10) {
		opts = 4 * (1 + g.r.IntN(10))
	}
	b = append(b, 0x40|byte(5+opts/4), byte(g.r.Uint32()), 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(g.r.Uint32()))
	b = binary.BigEndian.AppendUint16(b, frag)
	b = append(b, ttl, proto, 0, 0)
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	return g.ip4Options(b, opts)
}

// ip4Options appends n bytes of IPv4 options, well-formed or not.
func (g *hostileGen) ip4Options(b []byte, n int) []byte {
	end := len(b) + n
	for len(b) < end {
		switch g.r.IntN(8) {
		case 0:
			b = append(b, 0) // end of list
		case 1:
			b = append(b, 1) // no-op
		case 2:
			b = append(b, 148, 4, 0, 0) // router alert
		case 3: // record route
			l := 3 + 4*g.r.IntN(3)
			b = append(b, 7, byte(l), byte(4+4*g.r.IntN(3)))
			b = g.junk(b, l-3)
		case 4: // timestamp
			l := 4 + 4*g.r.IntN(3)
			b = append(b, 68, byte(l), byte(5+g.r.IntN(l)), byte(g.r.Uint32()))
			b = g.junk(b, l-4)
		case 5: // a length of 0, 1 or past the header
			b = append(b, byte(g.r.Uint32()), []byte{0, 1, 255}[g.r.IntN(3)])
		default:
			b = g.junk(b, end-len(b))
		}
	}
	return b[:end]
}

func (g *hostileGen) noFrag() uint16 {
	switch g.r.IntN(8) {
	case 0:
		return 0x8000 // the reserved bit
	case 1, 2, 3:
		return 0x4000 // DF
	default:
		return 0
	}
}

// fin4 sets the total length to the packet's and the header checksum.
func fin4(p []byte) {
	ihl := int(p[0]&0xf) * 4
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	reck4(p, ihl)
}

// reck4 recomputes the header checksum over the first n bytes.
func reck4(p []byte, n int) {
	n = min(n, len(p))
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], hCsumFinish(hCsum(0, p[:n])))
}

// --- TCP ---

// tcpSeg appends a TCP segment with random sequence and acknowledgment
// numbers, flags, window and urgent pointer, optLen bytes of options and
// payLen of payload. doff is the data offset to write, -1 for the true one.
func (g *hostileGen) tcpSeg(b []byte, sport, dport uint16, optLen, payLen, doff int) []byte {
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint32(b, g.r.Uint32())
	b = binary.BigEndian.AppendUint32(b, g.r.Uint32())
	if doff < 0 {
		doff = (20 + optLen) / 4
	}
	var reserved byte
	if g.chance(8) {
		reserved = byte(g.r.IntN(16))
	}
	b = append(b, byte(doff)<<4|reserved, g.tcpFlags())
	win := uint16(g.r.Uint32())
	if g.chance(4) {
		win = 0
	}
	b = binary.BigEndian.AppendUint16(b, win)
	b = append(b, 0, 0)
	var urg uint16
	if g.chance(4) {
		urg = uint16(g.r.Uint32())
	}
	b = binary.BigEndian.AppendUint16(b, urg)
	b = g.tcpOptions(b, optLen)
	return g.junk(b, payLen)
}

func (g *hostileGen) tcpOptLen() int {
	if g.chance(2) {
		return 0
	}
	return 4 * g.r.IntN(11)
}

// tcpOptions appends n bytes of TCP options, well-formed or not.
func (g *hostileGen) tcpOptions(b []byte, n int) []byte {
	end := len(b) + n
	for len(b) < end {
		switch g.r.IntN(10) {
		case 0:
			b = append(b, 0) // end of list
		case 1:
			b = append(b, 1) // no-op
		case 2:
			b = append(b, 2, 4) // MSS, sometimes 0
			b = binary.BigEndian.AppendUint16(b, []uint16{0, 1, 536, 1460, uint16(g.r.Uint32())}[g.r.IntN(5)])
		case 3:
			b = append(b, 3, 3, byte(g.r.Uint32())) // window scale, often > 14
		case 4:
			b = append(b, 4, 2) // SACK permitted
		case 5: // SACK blocks, random edges, sometimes a bad length
			k := 1 + g.r.IntN(4)
			l := 2 + 8*k
			if g.chance(4) {
				l = g.r.IntN(40)
			}
			b = append(b, 5, byte(l))
			b = g.junk(b, 8*k)
		case 6:
			b = append(b, 8, 10) // timestamps
			b = g.junk(b, 8)
		case 7: // any kind, a length of 0, 1 or past the header
			b = append(b, byte(g.r.Uint32()), []byte{0, 1, byte(n + 1), 255}[g.r.IntN(4)])
		default:
			b = g.junk(b, end-len(b))
		}
	}
	return b[:end]
}

// tcp4 builds an IPv4 TCP segment whose checksums are right, whatever its
// data offset.
func (g *hostileGen) tcp4(b []byte, src, dst [4]byte, doff int) []byte {
	b = g.ip4(b, 6, src, dst, g.noFrag())
	ihl := len(b)
	optLen := g.tcpOptLen()
	b = g.tcpSeg(b, g.sport(), g.dport(), optLen, g.size(hostileMTU-ihl-20-optLen), doff)
	fin4(b)
	setCsum(b[ihl:], 16, hPseudo4(src, dst, 6, len(b)-ihl))
	return b
}

func (g *hostileGen) badOffset(hdr int) int {
	if hdr < 15 && g.chance(2) {
		return hdr + 1 + g.r.IntN(15-hdr)
	}
	return g.r.IntN(5)
}

func (g *hostileGen) tcp4BadOffset(b []byte) []byte {
	src, dst := g.src4(), g.dst4()
	b = g.ip4(b, 6, src, dst, g.noFrag())
	ihl := len(b)
	optLen := g.tcpOptLen()
	// Short payloads, so that an offset past the header is often past the
	// whole segment too.
	pay := g.size(hostileMTU - ihl - 20 - optLen)
	if g.chance(2) {
		pay = g.r.IntN(8)
	}
	b = g.tcpSeg(b, g.sport(), g.dport(), optLen, pay, g.badOffset((20+optLen)/4))
	fin4(b)
	setCsum(b[ihl:], 16, hPseudo4(src, dst, 6, len(b)-ihl))
	return b
}

func (g *hostileGen) tcp4Short(b []byte) []byte {
	src, dst := g.src4(), g.dst4()
	switch g.r.IntN(4) {
	case 0: // the TCP header is cut short; the IP lengths agree
		b = g.ip4(b, 6, src, dst, g.noFrag())
		ihl := len(b)
		b = g.tcpSeg(b, g.sport(), g.dport(), 0, 0, -1)
		b = b[:ihl+g.r.IntN(20)]
		fin4(b)
		setCsum(b[ihl:], 16, hPseudo4(src, dst, 6, len(b)-ihl))
	case 1: // the total length claims more than there is
		b = g.tcp4(b, src, dst, -1)
		binary.BigEndian.PutUint16(b[2:], uint16(min(65535, len(b)+1+g.r.IntN(2000))))
		reck4(b, int(b[0]&0xf)*4)
	case 2: // the total length ends inside the TCP header; bytes follow it
		b = g.tcp4(b, src, dst, -1)
		ihl := int(b[0]&0xf) * 4
		binary.BigEndian.PutUint16(b[2:], uint16(ihl+g.r.IntN(20)))
		reck4(b, ihl)
	default: // cut inside the IP header
		b = g.tcp4(b, src, dst, -1)
		ihl := int(b[0]&0xf) * 4
		b = b[:1+g.r.IntN(ihl-1)]
	}
	return b
}

func (g *hostileGen) tcp4BadChecksum(b []byte) []byte {
	b = g.tcp4(b, g.src4(), g.dst4(), -1)
	ihl := int(b[0]&0xf) * 4
	switch n := g.r.IntN(6); {
	case n < 3:
		g.breakCsum(b[ihl:], 16)
	case n < 4:
		g.breakCsum(b, 10)
	case n < 5:
		g.breakCsum(b[ihl:], 16)
		g.breakCsum(b, 10)
	default: // no checksum at all
		if b[ihl+16] == 0 && b[ihl+17] == 0 || b[ihl+16] == 0xff && b[ihl+17] == 0xff {
			b[ihl+16] ^= 0x5a
		} else {
			b[ihl+16], b[ihl+17] = 0, 0
		}
	}
	return b
}

// --- IPv4 fragments ---

func (g *hostileGen) fragOffset() int {
	switch n := g.r.IntN(10); {
	case n < 3:
		return 0
	case n < 7:
		return 1 + g.r.IntN(32) // near each other: overlaps
	case n < 9:
		return g.r.IntN(8192)
	default:
		return 8191 - g.r.IntN(16) // past 64 KiB once reassembled
	}
}

func (g *hostileGen) fragLen(limit int) int {
	switch n := g.r.IntN(10); {
	case n < 3:
		return min(limit, g.r.IntN(17)) // tiny
	case n < 8:
		return min(limit, 8*(1+g.r.IntN(150)))
	default:
		return g.r.IntN(limit + 1)
	}
}

// fragPayload appends the first n bytes of a datagram of protocol proto
// that starts at offset off: at offset 0, a transport header with a safe
// source port.
func (g *hostileGen) fragPayload(b []byte, proto byte, off, n int, pseudo func(int) uint32) []byte {
	start := len(b)
	if off == 0 {
		switch proto {
		case 6:
			b = g.tcpSeg(b, g.sport(), g.dport(), g.tcpOptLen(), g.size(n+64), -1)
			setCsum(b[start:], 16, pseudo(len(b)-start))
		case 17:
			l := n + g.size(512)
			b = binary.BigEndian.AppendUint16(b, g.sport())
			b = binary.BigEndian.AppendUint16(b, g.dport())
			b = binary.BigEndian.AppendUint16(b, uint16(l))
			b = append(b, byte(g.r.Uint32()), byte(g.r.Uint32()))
		case 1, 58:
			t := byte(8)
			if proto == 58 {
				t = 128
			}
			b = append(b, t, 0, byte(g.r.Uint32()), byte(g.r.Uint32()))
		}
	}
	if len(b)-start > n {
		return b[:start+n]
	}
	return g.junk(b, n-(len(b)-start))
}

// fragProto is the protocol of a fragment: mostly TCP, and never TCP or
// UDP without the safe port when the fragment starts the datagram.
func (g *hostileGen) fragProto(icmp byte) byte {
	switch n := g.r.IntN(8); {
	case n < 4:
		return 6
	case n < 5:
		return 17
	case n < 6:
		return icmp
	default:
		return hOtherProto(byte(g.r.Uint32()))
	}
}

// hOtherProto maps TCP and UDP to protocols whose payload may be random.
func hOtherProto(p byte) byte {
	switch p {
	case 6:
		return 47
	case 17:
		return 132
	}
	return p
}

func (g *hostileGen) frag4(b []byte) []byte {
	if g.chance(64) {
		g.fragIDs[g.r.IntN(len(g.fragIDs))] = uint16(g.r.Uint32())
	}
	src := hKern4
	if g.chance(3) {
		src = g.src4()
	}
	dst := g.dst4()
	proto := g.fragProto(1)
	off := g.fragOffset()
	frag := uint16(off)
	if !g.chance(5) {
		frag |= 0x2000 // more fragments
	}
	if g.chance(20) {
		frag |= 0x4000 // and don't fragment
	}
	b = g.ip4(b, proto, src, dst, frag)
	binary.BigEndian.PutUint16(b[4:], g.fragIDs[g.r.IntN(len(g.fragIDs))])
	ihl := len(b)
	b = g.fragPayload(b, proto, off, g.fragLen(hostileMTU-ihl), func(n int) uint32 { return hPseudo4(src, dst, proto, n) })
	fin4(b)
	return b
}

// --- bad IPv4 headers ---

func (g *hostileGen) badIP4(b []byte) []byte {
	src, dst := g.src4(), g.dst4()
	switch g.r.IntN(7) {
	case 0: // IHL below 5
		b = g.tcp4(b, src, dst, -1)
		b[0] = 0x40 | byte(g.r.IntN(5))
		reck4(b, 20)
	case 1: // IHL past the real header, sometimes past the packet
		b = g.tcp4(b, src, dst, -1)
		ihl := 6 + g.r.IntN(10)
		b[0] = 0x40 | byte(ihl)
		if g.chance(2) {
			b = b[:min(len(b), 20+g.r.IntN(ihl*4-20))]
		}
		reck4(b, ihl*4)
	case 2: // total length shorter than the header, zero or absurd
		b = g.tcp4(b, src, dst, -1)
		l := []int{0, g.r.IntN(20), int(b[0]&0xf)*4 - 1, 65535, g.r.IntN(65536)}[g.r.IntN(5)]
		binary.BigEndian.PutUint16(b[2:], uint16(l))
		reck4(b, int(b[0]&0xf)*4)
	case 3: // a version that is neither 4 nor 6
		b = g.tcp4(b, src, dst, -1)
		v := []byte{0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15}[g.r.IntN(14)]
		b[0] = v<<4 | b[0]&0xf
		reck4(b, int(b[0]&0xf)*4)
	case 4: // an IPv4 packet that says it is IPv6
		b = g.tcp4(b, src, dst, -1)
		b[0] = 0x60 | b[0]&0xf
	case 5: // a martian source: unspecified, broadcast, loopback, multicast
		src = [][4]byte{{0, 0, 0, 0}, {255, 255, 255, 255}, {127, 0, 0, 1}, {224, 0, 0, 1}, {198, 18, 0, 255}, {198, 18, 0, 0}}[g.r.IntN(6)]
		b = g.tcp4(b, src, dst, -1)
	default: // options of any kind and length, checksum right
		b = g.ip4(b, 6, src, dst, g.noFrag())
		ihl := 6 + g.r.IntN(10)
		b[0] = 0x40 | byte(ihl)
		b = g.ip4Options(b[:20], ihl*4-20)
		b = g.tcpSeg(b, g.sport(), g.dport(), 0, g.size(200), -1)
		fin4(b)
		setCsum(b[ihl*4:], 16, hPseudo4(src, dst, 6, len(b)-ihl*4))
	}
	return b
}

// --- other IPv4 protocols ---

func (g *hostileGen) udp4(b []byte) []byte {
	src, dst := g.src4(), g.dst4()
	b = g.ip4(b, 17, src, dst, g.noFrag())
	ihl := len(b)
	n := g.size(hostileMTU - ihl - 8)
	dport := uint16(g.r.Uint32())
	if g.chance(3) {
		dport = []uint16{7, 9, 13, 19, 53, 80, 123, 0}[g.r.IntN(8)]
	}
	b = binary.BigEndian.AppendUint16(b, g.sport())
	b = binary.BigEndian.AppendUint16(b, dport)
	l := 8 + n
	switch g.r.IntN(10) {
	case 0:
		l += 1 + g.r.IntN(100)
	case 1:
		l = g.r.IntN(l)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(l))
	b = append(b, 0, 0)
	b = g.junk(b, n)
	fin4(b)
	switch g.r.IntN(5) {
	case 0: // none
	case 1:
		setCsum(b[ihl:], 6, hPseudo4(src, dst, 17, len(b)-ihl))
		g.breakCsum(b[ihl:], 6)
	default:
		setCsum(b[ihl:], 6, hPseudo4(src, dst, 17, len(b)-ihl))
	}
	return b
}

func (g *hostileGen) icmp4(b []byte) []byte {
	src, dst := g.src4(), g.dst4()
	b = g.ip4(b, 1, src, dst, g.noFrag())
	ihl := len(b)
	typ := byte(g.r.Uint32())
	if !g.chance(3) {
		typ = []byte{0, 3, 3, 3, 4, 5, 8, 8, 8, 11, 12, 13, 14, 15, 16, 17, 18}[g.r.IntN(17)]
	}
	code := byte(0)
	if g.chance(2) {
		code = byte(g.r.IntN(16))
		if g.chance(4) {
			code = byte(g.r.Uint32())
		}
	}
	b = append(b, typ, code, 0, 0)
	switch typ {
	case 3, 4, 5, 11, 12: // errors, quoting a segment tund might have sent
		if typ == 3 && code == 4 && g.chance(2) {
			b = append(b, 0, 0) // fragmentation needed: next-hop MTU
			b = binary.BigEndian.AppendUint16(b, []uint16{0, 1, 68, 576, 1280, 1499, 1500, 9000, uint16(g.r.Uint32())}[g.r.IntN(9)])
		} else {
			b = g.junk(b, 4)
		}
		proto := []byte{6, 6, 17, 1}[g.r.IntN(4)]
		is := len(b)
		b = g.ip4(b, proto, hStack4, src, 0x4000)
		il := len(b) - is
		b = append(b, 0, byte([]int{7, 80, 19}[g.r.IntN(3)]))
		b = binary.BigEndian.AppendUint16(b, g.sport())
		b = g.junk(b, 4+g.size(40))
		inner := b[is:]
		fin4(inner)
		if g.chance(4) { // claims more than it quotes
			binary.BigEndian.PutUint16(inner[2:], uint16(il+20+g.r.IntN(1400)))
			reck4(inner, il)
		}
		if g.chance(8) { // cut short
			b = b[:is+g.r.IntN(len(inner))]
		}
	case 8, 0, 13, 14, 15, 16, 17, 18: // echo and the obsolete queries
		b = g.junk(b, 4+g.size(hostileMTU-ihl-8))
	default:
		b = g.junk(b, g.size(hostileMTU-ihl-4))
	}
	fin4(b)
	setCsum(b[ihl:], 2, hCsum(0, nil))
	if g.chance(6) {
		g.breakCsum(b[ihl:], 2)
	}
	return b
}

func (g *hostileGen) proto4(b []byte) []byte {
	p := byte(g.r.Uint32())
	if g.chance(2) {
		p = []byte{0, 2, 4, 41, 43, 44, 47, 50, 51, 58, 59, 60, 89, 103, 112, 132, 136, 253, 255}[g.r.IntN(19)]
	}
	if p == 1 {
		p = 2
	}
	p = hOtherProto(p)
	b = g.ip4(b, p, g.src4(), g.dst4(), g.noFrag())
	b = g.junk(b, g.size(hostileMTU-len(b)))
	fin4(b)
	return b
}

// --- IPv6 ---

func (g *hostileGen) ip6(b []byte, nh byte, src, dst [16]byte) []byte {
	var tcFlow uint32
	if g.chance(5) {
		tcFlow = g.r.Uint32() & 0x0fffffff
	}
	b = binary.BigEndian.AppendUint32(b, 6<<28|tcFlow)
	hop := byte(64)
	switch g.r.IntN(8) {
	case 0:
		hop = 255
	case 1:
		hop = byte(g.r.IntN(2))
	}
	b = append(b, 0, 0, nh, hop)
	b = append(b, src[:]...)
	return append(b, dst[:]...)
}

// fin6 sets the payload length to the packet's.
func fin6(p []byte) { binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40)) }

func (g *hostileGen) tcp6Seg(b []byte, src, dst [16]byte) []byte {
	start := len(b)
	optLen := g.tcpOptLen()
	doff := -1
	if g.chance(7) {
		doff = g.badOffset((20 + optLen) / 4)
	}
	b = g.tcpSeg(b, g.sport(), g.dport(), optLen, g.size(hostileMTU-start-20-optLen), doff)
	setCsum(b[start:], 16, hPseudo6(src, dst, 6, len(b)-start))
	return b
}

func (g *hostileGen) tcp6(b []byte) []byte {
	src, dst := g.src6(), g.dst6()
	b = g.ip6(b, 6, src, dst)
	b = g.tcp6Seg(b, src, dst)
	switch g.r.IntN(12) {
	case 0: // checksum wrong
		g.breakCsum(b[40:], 16)
	case 1: // TCP header cut short
		b = b[:40+g.r.IntN(20)]
		setCsum(b[40:], 16, hPseudo6(src, dst, 6, len(b)-40))
	}
	fin6(b)
	return b
}

// Extension header types, and a few that are not.
var hExtTypes = []byte{0, 0, 60, 60, 43, 44, 44, 51, 50, 59, 135, 139, 140, 253, 254, 255, 4, 41}

func (g *hostileGen) ext6(b []byte) []byte {
	src, dst := g.src6(), g.dst6()
	switch g.r.IntN(4) {
	case 0: // any next header, garbage after the fixed header
		b = g.ip6(b, byte(g.r.Uint32()), src, dst)
		b = g.junk(b, g.size(hostileMTU-40))
		fin6(b)
	case 1: // a chain of extension headers, garbage or not
		b = g.ip6(b, 0, src, dst)
		nhAt := 6 // where the next header field to fill is
		terminal := false
	chain:
		for range 1 + g.r.IntN(5) {
			nh := hExtTypes[g.r.IntN(len(hExtTypes))]
			b[nhAt] = nh
			switch nh {
			case 44: // fragment
				nhAt = len(b)
				b = append(b, 0, 0)
				b = binary.BigEndian.AppendUint16(b, uint16(g.fragOffset())<<3|uint16(g.r.IntN(8)))
				b = binary.BigEndian.AppendUint32(b, g.frag6ID[g.r.IntN(len(g.frag6ID))])
			case 51: // authentication header
				nhAt = len(b)
				l := g.r.IntN(6)
				b = append(b, 0, byte(l))
				b = g.junk(b, 4*(l+2)-2)
			case 50, 59, 4, 41, 255: // no next header we follow: garbage
				b = g.junk(b, g.size(200))
				terminal = true
				break chain
			default: // options, routing and the rest: TLVs in 8-octet units
				nhAt = len(b)
				l := g.r.IntN(4)
				if g.chance(10) {
					l = 255 // past the packet
				}
				b = append(b, 0, byte(l))
				b = g.tlvs(b, 6+8*min(l, 3))
			}
		}
		if !terminal {
			upper := []byte{6, 6, 17, 58, 59, hOtherProto(byte(g.r.Uint32()))}[g.r.IntN(6)]
			b[nhAt] = upper
			switch upper {
			case 6:
				b = g.tcp6Seg(b, src, dst)
			case 17:
				b = binary.BigEndian.AppendUint16(b, g.sport())
				b = binary.BigEndian.AppendUint16(b, g.dport())
				b = g.junk(b, 4+g.size(200))
			case 58:
				b = append(b, 128, 0)
				b = g.junk(b, 6+g.size(200))
			default:
				b = g.junk(b, g.size(200))
			}
		}
		b = b[:min(len(b), hostileMTU)]
		fin6(b)
	case 2: // a fragment header right after the fixed header
		if g.chance(64) {
			g.frag6ID[g.r.IntN(len(g.frag6ID))] = g.r.Uint32()
		}
		if g.chance(3) {
			src = hKern6
		}
		b = g.ip6(b, 44, src, dst)
		proto := g.fragProto(58)
		off := g.fragOffset()
		m := uint16(1)
		if g.chance(5) {
			m = 0 // the last fragment, or an atomic one at offset 0
		}
		b = append(b, proto, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(off)<<3|m)
		b = binary.BigEndian.AppendUint32(b, g.frag6ID[g.r.IntN(len(g.frag6ID))])
		b = g.fragPayload(b, proto, off, g.fragLen(hostileMTU-48), func(n int) uint32 { return hPseudo6(src, dst, proto, n) })
		fin6(b)
	default: // a TCP segment whose payload length lies
		b = g.ip6(b, 6, src, dst)
		b = g.tcp6Seg(b, src, dst)
		l := []int{0, g.r.IntN(len(b) - 40 + 1), len(b) - 40 + 1 + g.r.IntN(1000), 65535}[g.r.IntN(4)]
		binary.BigEndian.PutUint16(b[4:], uint16(l))
	}
	return b
}

// tlvs appends n bytes of IPv6 options: padding, router alert, jumbo
// payload, and unknown ones with each of the four actions, in lengths that
// fit or do not.
func (g *hostileGen) tlvs(b []byte, n int) []byte {
	end := len(b) + n
	for len(b) < end {
		switch g.r.IntN(6) {
		case 0:
			b = append(b, 0) // Pad1
		case 1:
			l := g.r.IntN(6)
			b = append(b, 1, byte(l)) // PadN
			b = append(b, make([]byte, l)...)
		case 2:
			b = append(b, 5, 2, 0, byte(g.r.IntN(3))) // router alert
		case 3:
			b = append(b, 0xc2, 4) // jumbo payload
			b = binary.BigEndian.AppendUint32(b, g.r.Uint32())
		case 4: // unknown, action in the top two bits
			t := byte(g.r.IntN(4))<<6 | byte(2+g.r.IntN(30))
			l := g.r.IntN(8)
			b = append(b, t, byte(l))
			b = g.junk(b, l)
		default:
			b = g.junk(b, end-len(b))
		}
	}
	return b[:end]
}

func (g *hostileGen) icmp6(b []byte) []byte {
	src, dst := g.src6(), g.dst6()
	b = g.ip6(b, 58, src, dst)
	if g.chance(2) {
		b[7] = 255 // as NDP requires
	}
	typ := byte(g.r.Uint32())
	if !g.chance(3) {
		typ = []byte{1, 1, 2, 2, 3, 4, 4, 128, 128, 128, 129, 130, 131, 132, 133, 134, 135, 135, 136, 136, 137, 143}[g.r.IntN(22)]
	}
	code := byte(0)
	if g.chance(3) {
		code = byte(g.r.Uint32())
	}
	b = append(b, typ, code, 0, 0)
	switch typ {
	case 1, 2, 3, 4: // errors, quoting a segment tund might have sent
		switch typ {
		case 2: // packet too big
			b = binary.BigEndian.AppendUint32(b, []uint32{0, 68, 1279, 1280, 1500, 9000, 65535, g.r.Uint32()}[g.r.IntN(8)])
		case 4: // parameter problem: a pointer
			b = binary.BigEndian.AppendUint32(b, uint32(g.r.IntN(64)))
		default:
			b = g.junk(b, 4)
		}
		nh := []byte{6, 6, 17, 58}[g.r.IntN(4)]
		is := len(b)
		b = g.ip6(b, nh, hStack6, src)
		b = append(b, 0, byte([]int{7, 80, 19}[g.r.IntN(3)]))
		b = binary.BigEndian.AppendUint16(b, g.sport())
		b = g.junk(b, 4+g.size(200))
		inner := b[is:]
		binary.BigEndian.PutUint16(inner[4:], uint16(len(inner)-40))
		if g.chance(4) {
			binary.BigEndian.PutUint16(inner[4:], uint16(g.r.Uint32()))
		}
		if g.chance(8) {
			b = b[:is+g.r.IntN(len(inner))]
		}
	case 128, 129:
		b = g.junk(b, 4+g.size(hostileMTU-48))
	case 135, 136: // neighbour solicitation and advertisement
		b = g.junk(b, 4)
		target := [][16]byte{hStack6, hKern6, g.rand6()}[g.r.IntN(3)]
		b = append(b, target[:]...)
		b = g.ndpOptions(b)
	case 133, 134, 137: // router solicitation, advertisement, redirect
		b = g.junk(b, []int{4, 12, 36}[g.r.IntN(3)])
		b = g.ndpOptions(b)
	default:
		b = g.junk(b, g.size(hostileMTU-44))
	}
	fin6(b)
	setCsum(b[40:], 2, hPseudo6(src, dst, 58, len(b)-40))
	if g.chance(7) {
		g.breakCsum(b[40:], 2)
	}
	return b
}

// ndpOptions appends NDP options, a length of 0 among them.
func (g *hostileGen) ndpOptions(b []byte) []byte {
	for range g.r.IntN(5) {
		t := []byte{1, 2, 3, 5, 24, 25, 31, byte(g.r.Uint32())}[g.r.IntN(8)]
		l := g.r.IntN(4)
		b = append(b, t, byte(l))
		b = g.junk(b, max(0, 8*l-2))
		if g.chance(10) {
			b = g.junk(b, g.r.IntN(8)) // out of 8-octet step
		}
	}
	return b
}

// --- random bytes ---

func (g *hostileGen) random(b []byte) []byte {
	n := 1 + g.size(hostileMTU-1)
	b = g.junk(b, n)
	switch g.r.IntN(4) {
	case 0:
		b[0] = 0x40 | b[0]&0xf
	case 1:
		b[0] = 0x45
	case 2:
		b[0] = 0x60 | b[0]&0xf
	}
	return b
}

// confine keeps the packets whose bytes are partly random under the rules
// the others follow by construction: an IP destination inside 198.18.0.0/15
// or 2001:2::/48, and a TCP or UDP source port in hostilePortMin..Max. It
// reports whether it changed anything: only random bytes and IPv4 packets
// relabelled as IPv6 can need it.
func confine(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	changed := false
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return false
		}
		if p[16] != 198 || p[17]&^1 != 18 {
			p[16], p[17] = 198, 18+p[17]&1
			changed = true
		}
		ihl := int(p[0]&0xf) * 4
		first := binary.BigEndian.Uint16(p[6:])&0x1fff == 0
		if (p[9] == 6 || p[9] == 17) && ihl >= 20 && first && len(p) >= ihl+2 {
			changed = confinePort(p[ihl:]) || changed
		}
	case 6:
		if len(p) < 40 {
			return false
		}
		if !bytes.Equal(p[24:30], hPrefix6) {
			copy(p[24:30], hPrefix6)
			changed = true
		}
		if (p[6] == 6 || p[6] == 17) && len(p) >= 42 {
			changed = confinePort(p[40:]) || changed
		}
	}
	return changed
}

func confinePort(b []byte) bool {
	sp := int(binary.BigEndian.Uint16(b))
	if sp >= hostilePortMin && sp <= hostilePortMax {
		return false
	}
	binary.BigEndian.PutUint16(b, uint16(hostilePortMin+sp%(hostilePortMax-hostilePortMin+1)))
	return true
}
