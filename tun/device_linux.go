package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// cloneDevice is the TUN clone device that every queue is opened from.
const cloneDevice = "/dev/net/tun"

// Device is a configured TUN interface and the descriptors of its queues.
//
// The descriptors are tund's own duplicates: water's *os.File for each queue
// is closed as soon as the descriptor is duplicated. A water.Interface that
// stays open but unreferenced is closed by its finalizer at the next garbage
// collection, which removes the interface under live traffic; owning plain
// descriptors removes that failure entirely instead of relying on keeping
// the Interface reachable.
type Device struct {
	name    string
	index   int
	mtu     int
	fds     []int
	offload bool               // opened with IFF_VNET_HDR and TUNSETOFFLOAD
	eps     []*offloadEndpoint // link endpoints handed out, stopped by Close
}

// Open creates the TUN interface described by c, opens its queues, gives the
// kernel side its addresses, MTU and routes, and sets the link up.
//
// On error nothing is left behind: descriptors are closed, which makes the
// kernel remove the (non-persistent) interface with its addresses and routes.
func Open(c Config) (*Device, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(cloneDevice); err != nil {
		return nil, fmt.Errorf("tun: %s is missing (%v): load the tun module (modprobe tun), or give a container --device /dev/net/tun", cloneDevice, err)
	}
	// TUNSETIFF attaches to an existing TUN interface of the same name
	// instead of failing, so ask first: tund never takes over a device.
	if _, err := netlink.LinkByName(c.Name); err == nil {
		return nil, fmt.Errorf("tun: interface %q already exists: choose another --tun name or remove it (ip link del %s)", c.Name, c.Name)
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("tun: checking whether %q exists: %w", c.Name, err)
	}

	d := &Device{name: c.Name, mtu: c.MTU}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if !c.NoOffload {
		fds, err := openOffloadQueues(c.Name, c.Queues)
		switch {
		case err == nil:
			d.fds, d.offload = fds, true
		case !errors.Is(err, errNoOffload):
			return nil, err
		}
	}
	for i := 0; !d.offload && i < c.Queues; i++ {
		fd, err := openQueue(c.Name, c.Queues > 1)
		if err != nil {
			return nil, err
		}
		d.fds = append(d.fds, fd)
	}
	if err := d.configure(c); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// openQueue opens one queue of the named device through water and returns a
// duplicate of its descriptor that tund owns.
func openQueue(name string, multiQueue bool) (int, error) {
	ifce, err := water.New(water.Config{
		DeviceType: water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{
			Name:       name,
			MultiQueue: multiQueue,
		},
	})
	if err != nil {
		return -1, explainOpenError(name, err)
	}
	defer ifce.Close()
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		return -1, fmt.Errorf("tun: water returned a %T, not an *os.File", ifce.ReadWriteCloser)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("tun: %s: %w", name, err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("tun: %s: %w", name, err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("tun: duplicating the descriptor of %s: %w", name, dupErr)
	}
	return fd, nil
}

// explainOpenError turns the errno of TUNSETIFF into advice.
func explainOpenError(name string, err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("tun: creating %s: %w: tund needs CAP_NET_ADMIN (run it as root, or give a container --cap-add NET_ADMIN)", name, err)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("tun: creating %s: %w: the name is taken by another device", name, err)
	case errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("tun: creating %s: %w: the name is taken by a device of another kind, or its queue flags differ", name, err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("tun: creating %s: %w: the kernel has no TUN driver (modprobe tun)", name, err)
	}
	return fmt.Errorf("tun: creating %s: %w", name, err)
}

// configure sets MTU, addresses and routes on the kernel side, then the link up.
func (d *Device) configure(c Config) error {
	link, err := netlink.LinkByName(c.Name)
	if err != nil {
		return fmt.Errorf("tun: looking up %s after creating it: %w", c.Name, err)
	}
	d.index = link.Attrs().Index
	if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
		return fmt.Errorf("tun: setting MTU %d on %s: %w", c.MTU, c.Name, err)
	}
	for _, p := range c.Addrs {
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() {
			// A TUN link has no neighbours to collide with, and duplicate
			// address detection would hold the address tentative (unusable)
			// for a second after start.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			if p.Addr().Is6() && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)) && IPv6Disabled() {
				return fmt.Errorf("tun: adding address %v to %s: %w: IPv6 is disabled in this network namespace (%s)", p, c.Name, err, IPv6Advice)
			}
			return fmt.Errorf("tun: adding address %v to %s: %w", p, c.Name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tun: setting %s up: %w", c.Name, err)
	}
	for _, p := range c.Routes {
		r := &netlink.Route{LinkIndex: d.index, Dst: prefixToIPNet(p), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("tun: adding route %v via %s: %w", p, c.Name, err)
		}
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := p.Addr().BitLen()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// Index returns the kernel's interface index.
func (d *Device) Index() int { return d.index }

// MTU returns the link MTU.
func (d *Device) MTU() int { return d.mtu }

// Offload reports whether the device runs with IFF_VNET_HDR offloads
// (TSO and partial checksums both ways) rather than the plain path.
func (d *Device) Offload() bool { return d.offload }

// FDs returns the queue descriptors. They stay owned by the Device: the link
// endpoint reads and writes them, and Close closes them.
func (d *Device) FDs() []int { return d.fds }

// Close stops the link endpoint's readers and closes every queue. The kernel removes a non-persistent TUN
// interface, its addresses and its routes when its last queue closes.
func (d *Device) Close() error {
	for _, ep := range d.eps {
		ep.shutdown()
	}
	d.eps = nil
	var errs []error
	for _, fd := range d.fds {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("tun: closing a queue of %s: %w", d.name, err))
		}
	}
	d.fds = nil
	return errors.Join(errs...)
}
