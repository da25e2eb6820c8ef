package tun

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunFlags returns the IFF_* flags a queue descriptor was opened with.
func tunFlags(t *testing.T, fd int) uint16 {
	t.Helper()
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		t.Errorf("TUNGETIFF: %v", err)
	}
	return ifr.Uint16()
}

func TestOffloadIsDefaultAndCanBeTurnedOff(t *testing.T) {
	inNewNamespace(t, func() {
		for _, c := range []struct {
			noOffload bool
			want      bool
		}{{false, true}, {true, false}} {
			d, err := Open(Config{Name: "to0", Queues: 2, NoOffload: c.noOffload})
			if err != nil {
				t.Errorf("Open(NoOffload=%v): %v", c.noOffload, err)
				return
			}
			if d.Offload() != c.want {
				t.Errorf("NoOffload=%v: Offload() = %v, want %v", c.noOffload, d.Offload(), c.want)
			}
			for _, fd := range d.FDs() {
				f := tunFlags(t, fd)
				if got := f&unix.IFF_VNET_HDR != 0; got != c.want {
					t.Errorf("NoOffload=%v: IFF_VNET_HDR = %v on a queue, want %v", c.noOffload, got, c.want)
				}
				if f&unix.IFF_MULTI_QUEUE == 0 {
					t.Errorf("NoOffload=%v: two queues without IFF_MULTI_QUEUE", c.noOffload)
				}
			}
			ep, err := d.LinkEndpoint()
			if err != nil {
				t.Errorf("LinkEndpoint: %v", err)
			}
			_, gso := ep.(stack.GSOEndpoint)
			if c.want && (!gso || ep.(stack.GSOEndpoint).SupportedGSO() != stack.HostGSOSupported) {
				t.Errorf("the offload endpoint does not offer host GSO")
			}
			d.Close()
		}
	})
}

// recorder is a NetworkDispatcher that keeps copies of the packets it gets.
type recorder struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (r *recorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.ToView().AsSlice()
	r.mu.Lock()
	r.pkts = append(r.pkts, append([]byte(nil), b...))
	r.mu.Unlock()
}

func (*recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// await polls until f holds or the deadline passes.
func (r *recorder) await(f func([][]byte) bool) bool {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		ok := f(r.pkts)
		r.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// udp4 builds an IPv4 UDP packet from 198.18.6.1:1000 to 198.18.6.2:2000
// with payload, its checksums right, or the UDP one wrong if bad.
func udp4(payload string, bad bool) []byte {
	p := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(p)
	src, dst := tcpip.AddrFrom4([4]byte{198, 18, 6, 1}), tcpip.AddrFrom4([4]byte{198, 18, 6, 2})
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(p[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 1000, DstPort: 2000, Length: uint16(len(u))})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u)))
	sum := ^checksum.Checksum(u, xsum)
	if bad {
		sum ^= 0x5555
	}
	u.SetChecksum(sum)
	return p
}

// TestOffloadEndpointChecksums delivers what the kernel sends, and checks in
// software what it did not vouch for: a packet injected through a packet
// socket with a wrong UDP checksum is dropped, the same with a right one
// is delivered.
func TestOffloadEndpointChecksums(t *testing.T) {
	inNewNamespace(t, func() {
		d, err := Open(Config{Name: "to1", Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.6.1/24")}})
		if err != nil || !d.Offload() {
			t.Errorf("Open: %v, offload %v", err, d != nil && d.Offload())
			return
		}
		defer d.Close()
		ep, err := d.LinkEndpoint()
		if err != nil {
			t.Error(err)
			return
		}
		rec := &recorder{}
		ep.Attach(rec)
		defer ep.Attach(nil)

		// The kernel's own UDP datagram comes with a partial checksum.
		c, err := net.Dial("udp4", "198.18.6.2:2000")
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		c.Write([]byte("from-kernel"))
		if !rec.await(hasUDP("from-kernel")) {
			t.Errorf("the kernel's datagram was not delivered; got %d packets: %x", len(rec.pkts), rec.pkts)
		}

		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(s)
		to := &unix.SockaddrLinklayer{Ifindex: d.Index(), Protocol: htons(unix.ETH_P_IP)}
		if err := unix.Sendto(s, udp4("forged-bad", true), 0, to); err != nil {
			t.Errorf("injecting: %v", err)
		}
		if err := unix.Sendto(s, udp4("forged-good", false), 0, to); err != nil {
			t.Errorf("injecting: %v", err)
		}
		if !rec.await(hasUDP("forged-good")) {
			t.Errorf("the injected datagram with a right checksum was not delivered")
		}
		// It was injected after the bad one, on the same queue.
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if hasUDP("forged-bad")(rec.pkts) {
			t.Errorf("a datagram with a wrong checksum was delivered")
		}
		if n := ep.(*offloadEndpoint).badChecksums.Load(); n != 1 {
			t.Errorf("badChecksums = %d, want 1", n)
		}
	})
}

// hasUDP returns a test for an IPv4 UDP datagram carrying payload.
func hasUDP(payload string) func([][]byte) bool {
	return func(pkts [][]byte) bool {
		for _, p := range pkts {
			if len(p) > header.IPv4MinimumSize+header.UDPMinimumSize && p[0]>>4 == 4 && p[9] == uint8(header.UDPProtocolNumber) &&
				string(header.UDP(p[header.IPv4MinimumSize:]).Payload()) == payload {
				return true
			}
		}
		return false
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func TestSoftwareChecksums(t *testing.T) {
	good, bad := udp4("x", false), udp4("x", true)
	badIP := udp4("x", false)
	badIP[10] ^= 1
	tcpFrag := udp4("xxxxxxxxxxxxxxxxxxxxxxxx", false)
	tcpFrag[9] = uint8(header.TCPProtocolNumber)
	binary.BigEndian.PutUint16(tcpFrag[6:], 0x2000) // MF
	ip := header.IPv4(tcpFrag)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"right", good, true}, {"wrong UDP checksum", bad, false}, {"wrong IP checksum", badIP, false},
		{"TCP fragment", tcpFrag, false}, {"truncated", good[:10], true}, {"empty", nil, true},
	} {
		if got := softwareChecksumsValid(c.p); got != c.want {
			t.Errorf("%s: softwareChecksumsValid = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	h := vnetHdr{flags: vnetNeedsCsum, gsoType: vnetGSOTCPv6, hdrLen: 72, gsoSize: 1440, csumStart: 40, csumOffset: 16}
	var b [vnetHdrLen]byte
	h.encode(b[:])
	var g vnetHdr
	g.decode(b[:])
	if g != h {
		t.Errorf("decode(encode(%+v)) = %+v", h, g)
	}
}

// BenchmarkDeliver measures the read side past the syscall: header decode
// and the packet buffer handed to the stack. Run with -benchmem: it must
// not allocate per packet (gVisor's buffers come from pools).
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{60, 65000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			e := &offloadEndpoint{}
			buf := make([]byte, vnetHdrLen+size)
			(&vnetHdr{flags: vnetNeedsCsum}).encode(buf)
			copy(buf[vnetHdrLen:], udp4("", false))
			d := nopDispatcher{}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				e.deliver(d, buf)
			}
		})
	}
}

type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// BenchmarkWrite measures writing one packet to the device (a UDP datagram
// the kernel drops, having no socket for it): virtio-net header, iovecs
// and writev. It must not allocate per packet.
func BenchmarkWrite(b *testing.B) {
	inNewNamespace(b, func() {
		d, err := Open(Config{Name: "tb0", Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.6.2/24")}})
		if err != nil {
			b.Error(err)
			return
		}
		defer d.Close()
		ep, err := d.LinkEndpoint()
		if err != nil {
			b.Error(err)
			return
		}
		p := udp4("payload", false)
		var l stack.PacketBufferList
		b.ReportAllocs()
		for b.Loop() {
			l.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)}))
			if _, err := ep.WritePackets(l); err != nil {
				b.Errorf("WritePackets: %v", err)
				return
			}
			l.Reset() // releases the packet
		}
	})
}

// TestCloseStopsReaders checks that Device.Close stops the endpoint's
// readers before closing the queues (a reader left behind would read a
// descriptor number the process may reuse), even when the stack never
// detached it, and that detaching does not wait for them: gVisor detaches
// with its lock held, which a reader inside the stack may be waiting for.
func TestCloseStopsReaders(t *testing.T) {
	inNewNamespace(t, func() {
		d, err := Open(Config{Name: "to2", Queues: 2})
		if err != nil {
			t.Error(err)
			return
		}
		ep, err := d.LinkEndpoint()
		if err != nil {
			t.Error(err)
			return
		}
		ep.Attach(&recorder{})
		ep.Attach(nil) // returns at once
		done := make(chan error, 1)
		go func() { done <- d.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Close did not return in 5s: a reader did not stop")
			return
		}
		if linkExists("to2") {
			t.Errorf("to2 still exists after Close")
		}
	})
}
