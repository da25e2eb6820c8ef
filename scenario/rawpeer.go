package scenario

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// rawPeerV4 is the address of a scripted peer: inside the TUN device's
// subnet, so that tund routes its answers into the device, but not the
// kernel's, so that the kernel neither answers tund's segments nor sends
// its own from there (the namespace does not forward: it drops them).
const rawPeerV4 = "198.18.0.77"

// rawPeer is a TCP peer played segment by segment, for stories that need
// sequence numbers no kernel socket would choose. It writes IPv4 packets
// into tund's TUN device through a packet socket, as if the kernel were
// routing them to tund, and reads the ones tund sends to its address off
// the same device.
type rawPeer struct {
	fd         int
	ifindex    int
	local      netip.AddrPort // the peer's end
	remote     netip.AddrPort // tund's
	sent, recv int            // segments, for reports
}

// rawSegment is a TCP segment from tund to the peer.
type rawSegment struct {
	Flags    header.TCPFlags
	Seq, Ack uint32
	Payload  []byte
}

// newRawPeer opens a peer at local for tund's remote on the scenario's
// TUN device.
func (e *Env) newRawPeer(local, remote netip.AddrPort) (*rawPeer, error) {
	p := &rawPeer{local: local, remote: remote, fd: -1}
	err := e.ns.Do(func() error {
		ifi, err := net.InterfaceByName(tunName)
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
			return fmt.Errorf("binding a packet socket to %s: %w", tunName, err)
		}
		p.fd, p.ifindex = fd, ifi.Index
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("a scripted peer on %s: %w", tunName, err)
	}
	e.mu.Lock()
	e.cleanups = append(e.cleanups, p.close)
	e.mu.Unlock()
	return p, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *rawPeer) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// mssOption is the option a SYN of the peer's carries: MSS 1460, no
// timestamps, so that no PAWS check (RFC 7323 §5) could decide a story in
// the peer's place.
var mssOption = []byte{2, 4, 0x05, 0xb4}

// packet builds the IPv4 packet of a segment from the peer.
func (p *rawPeer) packet(flags header.TCPFlags, seq, ack uint32, payload []byte) []byte {
	var opts []byte
	if flags&header.TCPFlagSyn != 0 {
		opts = mssOption
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	b := make([]byte, header.IPv4MinimumSize+tcpLen+len(payload))
	src, dst := tcpip.AddrFrom4(p.local.Addr().As4()), tcpip.AddrFrom4(p.remote.Addr().As4())
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: src, DstAddr: dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	t := header.TCP(b[header.IPv4MinimumSize:])
	t.Encode(&header.TCPFields{
		SrcPort: p.local.Port(), DstPort: p.remote.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 65535,
	})
	copy(t[header.TCPMinimumSize:], opts)
	copy(t[tcpLen:], payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload)))
	sum = checksum.Checksum(payload, sum)
	t.SetChecksum(^t.CalculateChecksum(sum))
	return b
}

// send sends a segment to tund and returns its packet, for a replay.
func (p *rawPeer) send(flags header.TCPFlags, seq, ack uint32, payload []byte) ([]byte, error) {
	b := p.packet(flags, seq, ack, payload)
	return b, p.inject(b)
}

// inject writes a packet, as it is, into tund's device.
func (p *rawPeer) inject(b []byte) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: p.ifindex}
	if err := unix.Sendto(p.fd, b, 0, to); err != nil {
		return fmt.Errorf("writing a segment into %s: %w", tunName, err)
	}
	p.sent++
	return nil
}

// errNoSegment is next's error when tund sent the peer nothing in time.
var errNoSegment = errors.New("no segment from tund")

// next returns the next segment tund sends the peer within timeout.
func (p *rawPeer) next(timeout time.Duration) (rawSegment, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return rawSegment{}, fmt.Errorf("%w within %v", errNoSegment, timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return rawSegment{}, err
		}
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return rawSegment{}, fmt.Errorf("reading %s: %w", tunName, err)
		}
		if s, ok := p.parse(buf[:n]); ok {
			p.recv++
			return s, nil
		}
	}
}

// parse returns the segment in b if it is tund's to the peer.
func (p *rawPeer) parse(b []byte) (rawSegment, bool) {
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber ||
		ip.SourceAddress() != tcpip.AddrFrom4(p.remote.Addr().As4()) ||
		ip.DestinationAddress() != tcpip.AddrFrom4(p.local.Addr().As4()) {
		return rawSegment{}, false
	}
	t := header.TCP(ip.Payload())
	if len(t) < header.TCPMinimumSize || int(t.DataOffset()) > len(t) ||
		t.SourcePort() != p.remote.Port() || t.DestinationPort() != p.local.Port() {
		return rawSegment{}, false
	}
	return rawSegment{
		Flags: t.Flags(), Seq: t.SequenceNumber(), Ack: t.AckNumber(),
		Payload: append([]byte(nil), t[t.DataOffset():]...),
	}, true
}

// seqOf returns a packet's TCP sequence number (packet builds it).
func seqOf(b []byte) uint32 {
	return binary.BigEndian.Uint32(b[header.IPv4MinimumSize+4:])
}
