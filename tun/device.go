// Package tun creates and configures the Linux TUN device that carries
// packets between the kernel and tund's userspace stack.
//
// The kernel side of the link is an ordinary interface: it gets addresses,
// an MTU and routes through netlink, so that any program in the namespace
// reaches the stack by routing. The userspace side is one file descriptor per
// queue, handed to the stack as a gVisor link endpoint.
package tun

import (
	"fmt"
	"net/netip"
	"strings"
)

// DefaultName is the interface name used when Config.Name is empty.
const DefaultName = "tund0"

// DefaultMTU is the link MTU used when Config.MTU is zero.
const DefaultMTU = 1500

// maxQueues bounds Config.Queues; the kernel allows 256 queues per device
// (MAX_TAP_QUEUES) but more than one per core only costs memory.
const maxQueues = 256

// Config describes the device to create.
type Config struct {
	// Name is the interface name (at most 15 bytes). Empty means DefaultName.
	Name string
	// MTU of the link. Zero means DefaultMTU.
	MTU int
	// Queues is the number of file descriptors opened on the device. More
	// than one sets IFF_MULTI_QUEUE so that the kernel spreads flows over
	// them. Zero means one.
	Queues int
	// Addrs are the kernel side's addresses on the link, with the prefix
	// that the kernel routes into the device (198.18.0.1/24 routes
	// 198.18.0.0/24 to the stack).
	Addrs []netip.Prefix
	// Routes are extra destinations routed into the device, for stack
	// addresses that no prefix in Addrs covers.
	Routes []netip.Prefix
	// NoOffload opens the plain device (one MTU-sized packet per read and
	// write, checksums computed in userspace) even where the kernel offers
	// IFF_VNET_HDR offloads. Without it Open asks for the offloads and
	// falls back to the plain device when the kernel refuses them.
	NoOffload bool
}

// Validate reports the first invalid field of c, so that a command line
// can be refused before anything is created.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns c with zero fields replaced by their defaults and
// reports the first invalid field, so that nothing is created from a bad
// configuration.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Name) > 15 {
		return c, fmt.Errorf("tun: interface name %q is longer than 15 bytes (IFNAMSIZ)", c.Name)
	}
	if strings.ContainsAny(c.Name, "/%: \t\n") || c.Name == "." || c.Name == ".." {
		return c, fmt.Errorf("tun: %q is not a valid interface name (no '/', '%%', ':' or spaces)", c.Name)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	// 1280 is the IPv6 minimum link MTU (RFC 8200 §5); 65535 is the largest
	// IP packet the TUN driver passes.
	if c.MTU < 1280 || c.MTU > 65535 {
		return c, fmt.Errorf("tun: MTU %d is out of range [1280, 65535]", c.MTU)
	}
	if c.Queues == 0 {
		c.Queues = 1
	}
	if c.Queues < 1 || c.Queues > maxQueues {
		return c, fmt.Errorf("tun: %d queues is out of range [1, %d]", c.Queues, maxQueues)
	}
	for _, p := range c.Addrs {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return c, fmt.Errorf("tun: invalid interface address %v", p)
		}
	}
	for _, p := range c.Routes {
		if !p.IsValid() || p.Masked() != p {
			return c, fmt.Errorf("tun: invalid route %v (want a network prefix such as 198.18.1.0/24)", p)
		}
	}
	return c, nil
}

// BatchDispatcher is a stack.NetworkDispatcher told where the bursts of
// packets read from the device end: after the last packet a reader found
// queued (or after a bounded number), and when it stops, it calls EndBurst
// with the burst's length, on the goroutine that delivered the packets. A
// dispatcher can defer work to it, such as processing the burst's TCP
// segments together (stack.Stack does), which acknowledges several
// segments of a connection with one ACK.
type BatchDispatcher interface {
	EndBurst(packets int)
}
