package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/tund/tund/tun"
)

// fitIPv6 adapts o to a network namespace where IPv6 is disabled, as in a
// Docker container by default: tund's default IPv6 addresses are left out
// with one warning and it serves IPv4; an IPv6 address the user asked for
// is an error that says how to enable IPv6. Nothing has been created yet
// when it fails.
func fitIPv6(o *options, log *slog.Logger) error {
	if !tun.IPv6Disabled() {
		return nil
	}
	if len(o.explicitIPv6) > 0 {
		return fmt.Errorf("%s: IPv6 is disabled in this network namespace: %s, or give only IPv4 addresses",
			strings.Join(o.explicitIPv6, ", "), tun.IPv6Advice)
	}
	var left []string
	o.tun.Addrs = only4(o.tun.Addrs, func(p netip.Prefix) netip.Addr { return p.Addr() }, &left)
	o.tun.Routes = only4(o.tun.Routes, func(p netip.Prefix) netip.Addr { return p.Addr() }, nil)
	o.stack.Addrs = only4(o.stack.Addrs, func(a netip.Addr) netip.Addr { return a }, &left)
	if len(left) > 0 {
		log.Warn("IPv6 is disabled in this network namespace: serving IPv4 only; "+tun.IPv6Advice, "left_out", strings.Join(left, ","))
	}
	return nil
}

// only4 returns the IPv4 elements of s, appending the others to left.
func only4[T fmt.Stringer](s []T, addr func(T) netip.Addr, left *[]string) []T {
	var kept []T
	for _, x := range s {
		if addr(x).Is4() {
			kept = append(kept, x)
		} else if left != nil {
			*left = append(*left, x.String())
		}
	}
	return kept
}

// logReachability says, once, when programs beyond tund's namespace cannot
// reach the stack because the namespace does not forward: a container with
// an interface besides the device, without Docker's ip_forward sysctl.
func logReachability(dev *tun.Device, o *options, log *slog.Logger) {
	others, err := dev.OtherLinks()
	if err != nil || len(others) == 0 {
		return
	}
	v4, v6 := tun.Forwarding()
	var off []string
	if !v4 && slices.ContainsFunc(o.stack.Addrs, netip.Addr.Is4) {
		off = append(off, "net.ipv4.ip_forward=1")
	}
	if !v6 && slices.ContainsFunc(o.stack.Addrs, netip.Addr.Is6) {
		off = append(off, "net.ipv6.conf.all.forwarding=1")
	}
	if len(off) == 0 {
		return
	}
	log.Warn("this namespace does not forward: only its own programs reach the stack; for hosts or containers that route the stack's prefix via " +
		strings.Join(others, ",") + " set " + strings.Join(off, " and ") + " (Docker: --sysctl " + strings.Join(off, " --sysctl ") + ")")
}
