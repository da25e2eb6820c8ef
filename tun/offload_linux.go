package tun

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// errNoOffload reports that the kernel refused the TUN offloads; Open then
// falls back to the plain device.
var errNoOffload = errors.New("tun: the kernel refused IFF_VNET_HDR offloads")

// tunOffloads are the offloads tund asks the kernel for with TUNSETOFFLOAD:
// partial checksums both ways (TUN_F_CSUM) and TCP segmentation offload for
// IPv4 and IPv6 (TUN_F_TSO4, TUN_F_TSO6). With them the kernel sends tund
// whole 64 KB TCP super-segments with a partial checksum instead of
// MTU-sized packets with a computed one, and accepts the same from tund,
// segmenting (or, delivering locally, not even that) on its side. This is
// how a virtio-net NIC talks to its host, and the route by which
// wireguard-go and Tailscale reach about 10 Gbit/s on one stream.
const tunOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// openOffloadQueues creates the device with IFF_VNET_HDR, opens its queues
// and enables tunOffloads. It returns errNoOffload (with the descriptors
// closed, so the device is gone) when the kernel refuses the offloads, and
// any other error as Open would report it.
func openOffloadQueues(name string, queues int) ([]int, error) {
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for i := 0; i < queues; i++ {
		fd, err := openVnetQueue(name, queues > 1)
		if err != nil {
			closeAll()
			return nil, err
		}
		fds = append(fds, fd)
	}
	// The header size and the offloads belong to the device: set once.
	if err := unix.IoctlSetPointerInt(fds[0], unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: TUNSETVNETHDRSZ: %v", errNoOffload, err)
	}
	if err := unix.IoctlSetInt(fds[0], unix.TUNSETOFFLOAD, tunOffloads); err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: TUNSETOFFLOAD: %v", errNoOffload, err)
	}
	return fds, nil
}

// openVnetQueue opens one queue of the named device with IFF_VNET_HDR (which
// songgao/water cannot ask for), non-blocking: the link endpoint polls.
func openVnetQueue(name string, multiQueue bool) (int, error) {
	fd, err := unix.Open(cloneDevice, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("tun: opening %s: %w", cloneDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun: interface name %q: %w", name, err)
	}
	flags := unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if multiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(uint16(flags))
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) {
			// IFF_VNET_HDR itself refused: let the plain path try.
			return -1, fmt.Errorf("%w: TUNSETIFF: %v", errNoOffload, err)
		}
		return -1, explainOpenError(name, err)
	}
	return fd, nil
}
