package tun

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/stopfd"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxVnetPacket bounds what one read returns: a virtio-net header and the
// largest IP packet (an IPv6 header and a 65535-byte payload). The kernel
// caps TSO super-segments on a TUN at 64 KB (GSO_LEGACY_MAX_SIZE).
const maxVnetPacket = vnetHdrLen + header.IPv6MinimumSize + 0xffff

// gsoMaxSize is what gVisor may put in one TCP super-segment: it sends at
// most gsoMaxSize - TCPTotalHeaderMaximumSize - 1 bytes of payload, so the
// IP packet stays within IPv4's 16-bit total length.
const gsoMaxSize = 0xffff - header.IPv6MinimumSize

// offloadEndpoint is a gVisor link endpoint on a TUN device opened with
// IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6).
//
// gVisor's link/fdbased cannot drive such a device: it enables host GSO
// only on sockets, and writes its checksum start as if an Ethernet header
// came first. So this endpoint speaks the virtio-net header itself:
//
//   - Outbound, it tells gVisor it does host GSO: TCP hands it segments of up
//     to 64 KB with a partial checksum, and the header asks the kernel to
//     finish the checksum and, if the super-segment is larger than the MSS,
//     to treat it as TSO (the kernel delivers it locally as one GRO packet
//     or segments it when it forwards).
//   - Inbound, the kernel's TCP sends 64 KB super-segments with partial
//     checksums. They go to gVisor whole, as its own GRO would hand them, and
//     their checksums are not computed: the sender is the local kernel, and
//     the data never crossed a wire. Packets without the kernel's word on
//     their checksum are checked in software (softwareChecksumsValid).
//
// One goroutine per queue reads and delivers; each read is one packet or
// super-segment, so a 64 KB read replaces 45 reads of 1500 bytes. Writes
// go out on the queue of the packet's flow hash with one writev each.
type offloadEndpoint struct {
	fds []int
	mtu atomic.Uint32
	tx  []txQueue

	stop     stopfd.StopFD
	stopOnce sync.Once
	stopped  atomic.Bool    // set with stop, for readers that never reach the poll
	wg       sync.WaitGroup // the readers

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher

	// badChecksums counts packets dropped by softwareChecksumsValid.
	badChecksums atomic.Uint64
}

// txQueue holds the scratch space of the writes on one queue, so that
// writing a packet allocates nothing.
type txQueue struct {
	mu     sync.Mutex
	fd     int
	hdr    [vnetHdrLen]byte
	iovecs []unix.Iovec
}

var (
	_ stack.LinkEndpoint = (*offloadEndpoint)(nil)
	_ stack.GSOEndpoint  = (*offloadEndpoint)(nil)
)

func newOffloadEndpoint(fds []int, mtu uint32) (*offloadEndpoint, error) {
	stop, err := stopfd.New()
	if err != nil {
		return nil, err
	}
	e := &offloadEndpoint{fds: fds, stop: stop, tx: make([]txQueue, len(fds))}
	e.mtu.Store(mtu)
	for i, fd := range fds {
		e.tx[i].fd = fd
		e.tx[i].iovecs = make([]unix.Iovec, 0, 16)
	}
	return e, nil
}

// MTU implements stack.LinkEndpoint.
func (e *offloadEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *offloadEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: IP packets only, the
// virtio-net header is written from the queue's own buffer.
func (*offloadEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a TUN link has none.
func (*offloadEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*offloadEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. Receive checksum offload is
// claimed for the whole link; the endpoint checks what the kernel did not
// vouch for before delivering it.
func (*offloadEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint.
func (*offloadEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint.
func (*offloadEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// ARPHardwareType implements stack.LinkEndpoint.
func (*offloadEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint: there is no link header.
func (*offloadEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*offloadEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint. The descriptors belong to the Device.
func (*offloadEndpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (*offloadEndpoint) SetOnCloseAction(func()) {}

// Wait implements stack.LinkEndpoint: it waits for the readers to stop.
func (e *offloadEndpoint) Wait() { e.wg.Wait() }

// shutdown stops the readers, waits for them and releases the stop
// descriptor: Device.Close calls it before closing the queues, so that no
// reader is left to read a descriptor number the process may reuse. It must
// not run under a stack lock (see Attach).
func (e *offloadEndpoint) shutdown() {
	e.stopReaders()
	e.wg.Wait()
	unix.Close(e.stop.EFD)
}

func (e *offloadEndpoint) stopReaders() {
	e.stopOnce.Do(func() {
		e.stopped.Store(true)
		e.stop.Stop()
	})
}

// IsAttached implements stack.LinkEndpoint.
func (e *offloadEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Attach implements stack.LinkEndpoint: it starts one reader per queue, or,
// with a nil dispatcher (the NIC is being removed), tells them to stop.
//
// It does not wait for them: gVisor detaches with the stack's lock held,
// and a reader may be inside the stack waiting for that lock (answering a
// packet needs a route). A reader that goes on delivering meanwhile hands
// its packet to a disabled NIC, which drops it. Device.Close waits.
func (e *offloadEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d == nil {
		if e.dispatcher != nil {
			e.dispatcher = nil
			e.stopReaders()
		}
		return
	}
	if e.dispatcher != nil {
		return
	}
	e.dispatcher = d
	for _, fd := range e.fds {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.readLoop(fd, d)
		}()
	}
}

// maxBurst bounds how many packets a reader delivers before it ends a
// burst (BatchDispatcher) even though more are queued, so that the first
// of a long run is not held back for long.
const maxBurst = 64

// readLoop reads packets from one queue until the endpoint is detached or
// the descriptor fails (closed under it). A burst ends when the queue is
// empty or after maxBurst packets.
func (e *offloadEndpoint) readLoop(fd int, d stack.NetworkDispatcher) {
	buf := make([]byte, maxVnetPacket)
	b, _ := d.(BatchDispatcher)
	burst := 0
	endBurst := func() {
		if b != nil && burst > 0 {
			b.EndBurst(burst)
		}
		burst = 0
	}
	defer endBurst() // what was delivered must not wait for a next burst
	for !e.stopped.Load() {
		n, err := unix.Read(fd, buf)
		switch err {
		case nil:
			e.deliver(d, buf[:n])
			if burst++; burst == maxBurst {
				endBurst()
			}
		case unix.EAGAIN:
			endBurst()
			stopped, errno := rawfile.BlockingPollUntilStopped(e.stop.EFD, fd, unix.POLLIN)
			if stopped || (errno != 0 && errno != unix.EINTR) {
				return
			}
		case unix.EINTR:
		default:
			return
		}
	}
}

// deliver hands one packet read from the device (virtio-net header first)
// to the stack.
func (e *offloadEndpoint) deliver(d stack.NetworkDispatcher, b []byte) {
	if len(b) <= vnetHdrLen {
		return
	}
	var h vnetHdr
	h.decode(b)
	p := b[vnetHdrLen:]
	var proto tcpip.NetworkProtocolNumber
	switch p[0] >> 4 {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	if h.flags&(vnetNeedsCsum|vnetDataValid) == 0 && !softwareChecksumsValid(p) {
		e.badChecksums.Add(1)
		return
	}
	// The payload is copied into pooled buffer chunks: the read buffer is
	// reused at once, and a 64 KB chunk should not stay pinned by a
	// 52-byte ACK queued in TCP.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.NetworkProtocolNumber = proto
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// WritePackets implements stack.LinkEndpoint. A packet the device does not
// take is dropped, as a full NIC queue drops it; TCP retransmits.
func (e *offloadEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.writePacket(pkt); err != nil {
			if n == 0 {
				return 0, err
			}
			break
		}
		n++
	}
	return n, nil
}

func (e *offloadEndpoint) writePacket(pkt *stack.PacketBuffer) tcpip.Error {
	q := &e.tx[pkt.Hash%uint32(len(e.tx))]
	var h vnetHdr
	if gso := pkt.GSOOptions; gso.Type != stack.GSONone {
		if gso.NeedsCsum {
			h.flags = vnetNeedsCsum
			h.csumStart = uint16(len(pkt.NetworkHeader().Slice()))
			h.csumOffset = gso.CsumOffset
		}
		if pkt.Data().Size() > int(gso.MSS) {
			switch gso.Type {
			case stack.GSOTCPv4:
				h.gsoType = vnetGSOTCPv4
			case stack.GSOTCPv6:
				h.gsoType = vnetGSOTCPv6
			}
			h.gsoSize = gso.MSS
			h.hdrLen = uint16(pkt.HeaderSize())
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	h.encode(q.hdr[:])
	iov := append(q.iovecs[:0], rawfile.IovecFromBytes(q.hdr[:]))
	views, offset := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if offset >= len(s) {
			offset -= len(s)
			continue
		}
		iov = append(iov, rawfile.IovecFromBytes(s[offset:]))
		offset = 0
	}
	errno := rawfile.NonBlockingWriteIovec(q.fd, iov)
	clear(iov) // pin no packet memory until the next write
	q.iovecs = iov[:0]
	if errno != 0 {
		return tcpip.TranslateErrno(errno)
	}
	return nil
}
