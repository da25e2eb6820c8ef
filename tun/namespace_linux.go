package tun

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// IPv6Advice says how to enable IPv6 in a network namespace where it is
// disabled, as a command and as Docker's option, for messages.
const IPv6Advice = "enable it with sysctl -w net.ipv6.conf.all.disable_ipv6=0, in Docker with docker run --sysctl net.ipv6.conf.all.disable_ipv6=0"

// IPv6Disabled reports whether an interface created now in the current
// network namespace would refuse IPv6 addresses: the kernel has no IPv6, or
// net.ipv6.conf.default.disable_ipv6 is set, which a new interface inherits.
// Docker sets it in a container's namespace unless the container is run
// with --sysctl net.ipv6.conf.all.disable_ipv6=0. Where /proc/sys cannot be
// read it reports false, and adding an address says what failed.
func IPv6Disabled() bool {
	if _, err := os.Stat("/proc/sys/net"); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6")
	if errors.Is(err, fs.ErrNotExist) {
		return true // no IPv6 in this kernel (ipv6.disable=1)
	}
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Forwarding reports whether the current network namespace forwards IPv4
// (net.ipv4.ip_forward) and IPv6 (net.ipv6.conf.all.forwarding) packets
// between its interfaces. Hosts beyond the namespace reach the stack only
// through a namespace that forwards.
func Forwarding() (v4, v6 bool) {
	return sysctlOn("/proc/sys/net/ipv4/ip_forward"), sysctlOn("/proc/sys/net/ipv6/conf/all/forwarding")
}

func sysctlOn(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// OtherLinks returns the names of the namespace's interfaces that are up,
// other than loopback and d: where packets for the stack could come from if
// the namespace forwards them (a container's eth0, a veth).
func (d *Device) OtherLinks() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.Index == d.index || a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		names = append(names, a.Name)
	}
	return names, nil
}
