// Package rawpeer plays a TCP peer segment by segment, for stories and
// comparisons that need sequence numbers, flags and timing no kernel
// socket would choose. It writes IPv4 packets into a network device
// through a packet socket, as if the kernel were sending them out of it,
// and reads the ones that come back to its address off the same device:
// on tund's TUN device the packets go to tund; on one end of a veth pair
// they go to the kernel at the other end.
//
// The peer's address must be one the kernel of the device's namespace
// does not own (it would answer the other side's segments itself) and one
// the other side routes back through the device.
package rawpeer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/netns"
)

// Peer is one scripted TCP end.
type Peer struct {
	fd      int
	ifindex int
	dstMAC  net.HardwareAddr // nil on a device without link headers (TUN)
	// Local is the peer's end, Remote the other side's.
	Local, Remote netip.AddrPort
	// Options are the TCP options of the peer's SYNs (default: MSS 1460
	// only, no timestamps, so that no PAWS check decides a story).
	Options []byte
}

// Segment is a TCP segment the other side sent the peer.
type Segment struct {
	At       time.Time
	Flags    header.TCPFlags
	Seq, Ack uint32
	Window   uint16
	Payload  []byte
}

// MSSOption is the default SYN option: MSS 1460.
var MSSOption = []byte{2, 4, 0x05, 0xb4}

// Open opens a peer at local for remote on device dev of namespace ns.
// dstMAC is the link address of the other side on an Ethernet device
// (veth); nil on a TUN device.
func Open(ns *netns.NS, dev string, dstMAC net.HardwareAddr, local, remote netip.AddrPort) (*Peer, error) {
	p := &Peer{fd: -1, dstMAC: dstMAC, Local: local, Remote: remote, Options: MSSOption}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_IP)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding a packet socket to %s: %w", dev, err)
		}
		p.fd, p.ifindex = fd, ifi.Index
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("a scripted peer on %s: %w", dev, err)
	}
	return p, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Close closes the peer's socket.
func (p *Peer) Close() error {
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}

// Packet builds the IPv4 packet of a segment from the peer; a SYN carries
// p.Options.
func (p *Peer) Packet(flags header.TCPFlags, seq, ack uint32, payload []byte) []byte {
	var opts []byte
	if flags&header.TCPFlagSyn != 0 {
		opts = p.Options
	}
	tcpLen := header.TCPMinimumSize + (len(opts)+3)&^3
	b := make([]byte, header.IPv4MinimumSize+tcpLen+len(payload))
	src, dst := tcpip.AddrFrom4(p.Local.Addr().As4()), tcpip.AddrFrom4(p.Remote.Addr().As4())
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: src, DstAddr: dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	t := header.TCP(b[header.IPv4MinimumSize:])
	t.Encode(&header.TCPFields{
		SrcPort: p.Local.Port(), DstPort: p.Remote.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 65535,
	})
	copy(t[header.TCPMinimumSize:], opts) // padded with zeros: end of options
	copy(t[tcpLen:], payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload)))
	sum = checksum.Checksum(payload, sum)
	t.SetChecksum(^t.CalculateChecksum(sum))
	return b
}

// Send sends a segment and returns its packet, for a replay.
func (p *Peer) Send(flags header.TCPFlags, seq, ack uint32, payload []byte) ([]byte, error) {
	b := p.Packet(flags, seq, ack, payload)
	return b, p.Inject(b)
}

// Inject writes a packet, as it is, into the device.
func (p *Peer) Inject(b []byte) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: p.ifindex}
	if p.dstMAC != nil {
		to.Halen = uint8(len(p.dstMAC))
		copy(to.Addr[:], p.dstMAC)
	}
	if err := unix.Sendto(p.fd, b, 0, to); err != nil {
		return fmt.Errorf("writing a segment into the device: %w", err)
	}
	return nil
}

// ErrNoSegment is Next's error when nothing came in time.
var ErrNoSegment = errors.New("no segment")

// Next returns the next segment the other side sends the peer within
// timeout.
func (p *Peer) Next(timeout time.Duration) (Segment, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return Segment{}, fmt.Errorf("%w from %v within %v", ErrNoSegment, p.Remote, timeout.Round(time.Millisecond))
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return Segment{}, err
		}
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return Segment{}, fmt.Errorf("reading the device: %w", err)
		}
		if s, ok := p.parse(buf[:n]); ok {
			s.At = time.Now()
			return s, nil
		}
	}
}

// parse returns the segment in b if it is the other side's to the peer.
func (p *Peer) parse(b []byte) (Segment, bool) {
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber ||
		ip.SourceAddress() != tcpip.AddrFrom4(p.Remote.Addr().As4()) ||
		ip.DestinationAddress() != tcpip.AddrFrom4(p.Local.Addr().As4()) {
		return Segment{}, false
	}
	t := header.TCP(ip.Payload())
	if len(t) < header.TCPMinimumSize || int(t.DataOffset()) > len(t) ||
		t.SourcePort() != p.Remote.Port() || t.DestinationPort() != p.Local.Port() {
		return Segment{}, false
	}
	return Segment{
		Flags: t.Flags(), Seq: t.SequenceNumber(), Ack: t.AckNumber(), Window: t.WindowSize(),
		Payload: append([]byte(nil), t[t.DataOffset():]...),
	}, true
}

// SeqOf returns the TCP sequence number of an IPv4 packet Packet built.
func SeqOf(b []byte) uint32 {
	return header.TCP(b[header.IPv4MinimumSize:]).SequenceNumber()
}
