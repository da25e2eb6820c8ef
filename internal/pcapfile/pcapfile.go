// Package pcapfile reads classic pcap files (not pcapng) down to the IP
// packets they hold, and the TCP segments in those: what tund's --pcap
// writes (gVisor's sniffer: raw IP) and what tcpdump writes on a TUN
// device (raw IP), on "any" (Linux cooked) or on an Ethernet device.
//
// It is for tund's own tests, scenarios and corpus generator, which judge
// the wire from such files; it reads whole files into memory.
package pcapfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
)

// Link types it reads (https://www.tcpdump.org/linktypes.html), and how
// many bytes of link header each puts before the IP packet.
const (
	LinkEthernet = 1   // Ethernet II: 14 bytes, and 4 a VLAN tag
	LinkRaw12    = 12  // raw IP: DLT_RAW's number on most BSDs
	LinkRaw      = 101 // LINKTYPE_RAW: tund's --pcap, tcpdump on a TUN device
	LinkSLL      = 113 // Linux cooked v1 (tcpdump -i any, older): 16 bytes
	LinkIPv4     = 228 // raw IPv4
	LinkIPv6     = 229 // raw IPv6
	LinkSLL2     = 276 // Linux cooked v2 (tcpdump -i any): 20 bytes
)

// ErrTruncated is returned, with the packets before it, when the file ends
// inside a record: a file that tcpdump or tund is still writing does.
// Readers that poll such a file take the packets and ignore it.
var ErrTruncated = errors.New("the last record is cut short")

// Packet is one record of the file.
type Packet struct {
	T time.Time
	// Data is the IP packet as captured: the link header is removed, and
	// the capture's snap length may have cut the end. For an Ethernet or
	// cooked frame of another protocol (ARP), it is that protocol's bytes.
	Data []byte
	// WireLen is the IP packet's length on the wire (the record's original
	// length less the link header): Data is shorter when the capture cut
	// the packet.
	WireLen int
}

// Byte-order-independent magic numbers: the file's first four bytes, read
// in the byte order of the machine that wrote it.
const (
	magicMicro = 0xa1b2c3d4 // timestamps in microseconds
	magicNano  = 0xa1b23c4d // timestamps in nanoseconds
)

// ReadFile reads the named pcap file; see Parse.
func ReadFile(name string) ([]Packet, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	pkts, err := Parse(b)
	if err != nil {
		err = fmt.Errorf("%s: %w", name, err)
	}
	return pkts, err
}

// Parse reads the packets of a pcap file, in either byte order, with
// microsecond or nanosecond timestamps, of one of the link types above. The
// packets' Data point into b. A record too short to hold its link header
// is left out. A file that ends inside a record returns the packets before
// it with ErrTruncated.
func Parse(b []byte) ([]Packet, error) {
	if len(b) < 24 {
		return nil, fmt.Errorf("%d bytes, no pcap header", len(b))
	}
	var bo binary.ByteOrder
	var nano bool
	switch {
	case binary.LittleEndian.Uint32(b) == magicMicro:
		bo = binary.LittleEndian
	case binary.LittleEndian.Uint32(b) == magicNano:
		bo, nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(b) == magicMicro:
		bo = binary.BigEndian
	case binary.BigEndian.Uint32(b) == magicNano:
		bo, nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("not a pcap file (magic %#08x)", binary.BigEndian.Uint32(b))
	}
	lt := bo.Uint32(b[20:])
	var skip func([]byte) int // the link header's length in a frame
	switch lt {
	case LinkRaw, LinkRaw12, LinkIPv4, LinkIPv6:
		skip = func([]byte) int { return 0 }
	case LinkSLL:
		skip = func([]byte) int { return 16 }
	case LinkSLL2:
		skip = func([]byte) int { return 20 }
	case LinkEthernet:
		skip = ethernetHeader
	default:
		return nil, fmt.Errorf("link type %d, want raw IP (%d, %d, %d, %d), Ethernet (%d) or Linux cooked (%d, %d)",
			lt, LinkRaw, LinkRaw12, LinkIPv4, LinkIPv6, LinkEthernet, LinkSLL, LinkSLL2)
	}
	var pkts []Packet
	for p := 24; p < len(b); {
		if p+16 > len(b) {
			return pkts, ErrTruncated
		}
		sec, frac := bo.Uint32(b[p:]), bo.Uint32(b[p+4:])
		incl, orig := int(bo.Uint32(b[p+8:])), int(bo.Uint32(b[p+12:]))
		p += 16
		if incl > len(b)-p {
			return pkts, ErrTruncated
		}
		frame := b[p : p+incl : p+incl]
		p += incl
		n := skip(frame)
		if len(frame) < n {
			continue
		}
		ns := int64(frac)
		if !nano {
			ns *= 1000
		}
		pkts = append(pkts, Packet{T: time.Unix(int64(sec), ns), Data: frame[n:], WireLen: orig - n})
	}
	return pkts, nil
}

// ethernetHeader is the length of an Ethernet frame's header: the two
// addresses, any 802.1Q or 802.1ad tags, and the EtherType.
func ethernetHeader(f []byte) int {
	n := 12
	for len(f) >= n+4 && (binary.BigEndian.Uint16(f[n:]) == 0x8100 || binary.BigEndian.Uint16(f[n:]) == 0x88a8) {
		n += 4
	}
	return n + 2
}
