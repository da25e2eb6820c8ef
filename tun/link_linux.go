package tun

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// LinkEndpoint returns the gVisor link endpoint that reads and writes the
// device's queues.
//
// With offloads (see Offload) it is the virtio-net endpoint of
// endpoint_linux.go: 64 KB TCP super-segments with partial checksums both
// ways. Without, it is gVisor's fdbased endpoint, one MTU-sized packet per
// readv and writev, and checksums are computed and verified in both
// directions. Received ones are verified even though the kernel computes
// correct ones for what it routes: any program in the namespace can write
// forged packets to the device through a packet socket, and a segment with
// a bad checksum must not reach TCP. Transmit checksums cannot be left to an
// offload: a plain TUN has none, and the kernel drops such packets
// (TcpInCsumErrors).
func (d *Device) LinkEndpoint() (stack.LinkEndpoint, error) {
	if d.offload {
		ep, err := newOffloadEndpoint(d.fds, uint32(d.mtu))
		if err != nil {
			return nil, fmt.Errorf("tun: link endpoint on %s: %w", d.name, err)
		}
		d.eps = append(d.eps, ep)
		return ep, nil
	}
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                d.fds,
		MTU:                uint32(d.mtu),
		PacketDispatchMode: fdbased.Readv,
	})
	if err != nil {
		return nil, fmt.Errorf("tun: link endpoint on %s: %w", d.name, err)
	}
	return ep, nil
}
