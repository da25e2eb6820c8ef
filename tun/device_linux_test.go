package tun

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNewNamespace runs f on an OS thread moved into a new, unnamed network
// namespace, which disappears with the thread's last reference to it. The
// tests need root; without it they fail, they do not skip.
func inNewNamespace(t testing.TB, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it creates TUN devices in a new network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread is never unlocked: it ends with the goroutine, so the
		// namespace is never leaked to other goroutines.
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new namespace: %v", err)
			return
		}
		defer ns.Close()
		f()
	}()
	<-done
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

func TestOpenConfiguresAndCloseRemoves(t *testing.T) {
	inNewNamespace(t, func() {
		d, err := Open(Config{
			Name:   "tt0",
			MTU:    1400,
			Queues: 2,
			Addrs:  []netip.Prefix{netip.MustParsePrefix("198.18.7.1/24"), netip.MustParsePrefix("2001:2:7::1/64")},
			Routes: []netip.Prefix{netip.MustParsePrefix("198.19.0.9/32")},
		})
		if err != nil {
			t.Errorf("Open: %v", err)
			return
		}
		link, err := netlink.LinkByName("tt0")
		if err != nil {
			t.Errorf("after Open: %v", err)
			return
		}
		if got := link.Attrs().MTU; got != 1400 {
			t.Errorf("MTU = %d, want 1400", got)
		}
		if link.Attrs().Flags&(1<<0) == 0 { // net.FlagUp
			t.Errorf("link is not up")
		}
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_ALL)
		var got []string
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				got = append(got, a.IPNet.String())
			}
		}
		if strings.Join(got, " ") != "198.18.7.1/24 2001:2:7::1/64" {
			t.Errorf("addresses = %v", got)
		}
		routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
		found := false
		for _, r := range routes {
			found = found || (r.Dst != nil && r.Dst.String() == "198.19.0.9/32")
		}
		if !found {
			t.Errorf("no route 198.19.0.9/32 via tt0 in %v", routes)
		}
		if len(d.FDs()) != 2 {
			t.Errorf("%d queues, want 2", len(d.FDs()))
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if linkExists("tt0") {
			t.Errorf("tt0 still exists after Close")
		}
	})
}

// TestDeviceSurvivesGC guards against the failure that made a prototype
// lose its device under traffic: water's *os.File has a finalizer that
// closes the descriptor, and the kernel removes a TUN interface whose last
// descriptor closes.
func TestDeviceSurvivesGC(t *testing.T) {
	inNewNamespace(t, func() {
		d, err := Open(Config{Name: "tt1", Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.8.1/24")}})
		if err != nil {
			t.Errorf("Open: %v", err)
			return
		}
		defer d.Close()
		for i := 0; i < 5; i++ {
			runtime.GC()
		}
		if !linkExists("tt1") {
			t.Errorf("tt1 vanished after garbage collection")
		}
		for _, fd := range d.FDs() {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				t.Errorf("queue descriptor %d closed after garbage collection: %v", fd, err)
			}
		}
	})
}

func TestOpenRefusesATakenName(t *testing.T) {
	inNewNamespace(t, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "taken0"}, PeerName: "taken1"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("adding a veth link: %v", err)
			return
		}
		_, err := Open(Config{Name: "taken0"})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("Open on a taken name: err = %v, want 'already exists'", err)
		}
		l, err := netlink.LinkByName("taken0")
		if err != nil || l.Type() != "veth" {
			t.Errorf("the existing link was disturbed: %v %v", l, err)
		}
	})
}

// TestFailedOpenLeavesNothing makes configuration fail after the device was
// created (the same address twice) and checks that the device is gone.
func TestFailedOpenLeavesNothing(t *testing.T) {
	inNewNamespace(t, func() {
		p := netip.MustParsePrefix("198.18.9.1/24")
		_, err := Open(Config{Name: "tt2", Addrs: []netip.Prefix{p, p}})
		if err == nil || !errors.Is(err, unix.EEXIST) {
			t.Errorf("Open with a duplicate address: err = %v, want EEXIST", err)
		}
		if linkExists("tt2") {
			t.Errorf("tt2 left behind by a failed Open")
		}
	})
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"long name", Config{Name: "a-name-of-16-chr"}, "longer than 15"},
		{"small MTU", Config{MTU: 1000}, "MTU 1000"},
		{"huge MTU", Config{MTU: 70000}, "MTU 70000"},
		{"queues", Config{Queues: 1000}, "1000 queues"},
		{"bad name", Config{Name: "a/b"}, "not a valid interface name"},
		{"route not a prefix", Config{Routes: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}, "invalid route"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	c, err := Config{}.withDefaults()
	if err != nil || c.Name != DefaultName || c.MTU != DefaultMTU || c.Queues != 1 {
		t.Errorf("defaults = %+v, %v", c, err)
	}
}
