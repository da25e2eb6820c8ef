package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
)

// needRoot fails, it does not skip: a test that cannot make namespaces
// checks nothing.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it makes network namespaces")
	}
}

func listed(t *testing.T, name string) bool {
	t.Helper()
	ok, err := Exists(name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestName(t *testing.T) {
	a, b := Name("x"), Name("x")
	prefix := fmt.Sprintf("x-%d-", os.Getpid())
	if a == b || !strings.HasPrefix(a, prefix) || !strings.HasPrefix(b, prefix) {
		t.Errorf("Name gave %q and %q, want two names starting %q", a, b, prefix)
	}
}

func TestNewRunDoRemove(t *testing.T) {
	needRoot(t)
	n, err := New("tund-netnstest")
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			n.Remove()
		}
	})
	if !listed(t, n.Name) {
		t.Fatalf("%s is not in ip netns list", n.Name)
	}
	// Only lo: a kernel with tunnel modules loaded adds their fallback
	// devices (sit0, gre0) to every new namespace, down.
	out, err := n.Run(context.Background(), "ip", "-o", "link", "show", "lo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "<LOOPBACK,UP,LOWER_UP>") {
		t.Errorf("loopback in a new namespace: %q, want it up", out)
	}
	// No forwarding, whatever the host does.
	for _, f := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if out, err := n.Run(context.Background(), "cat", "/proc/sys/"+strings.ReplaceAll(f, ".", "/")); err != nil || strings.TrimSpace(out) != "0" {
			t.Errorf("%s in a new namespace: %q, %v; want 0", f, out, err)
		}
	}
	if out, err := n.Run(context.Background(), "ip", "route", "show", "default"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("default route in a new namespace: %q, %v; want none", out, err)
	}
	if _, err := n.Run(context.Background(), "sh", "-c", "echo oops >&2; exit 3"); err == nil || !strings.Contains(err.Error(), "sh -c echo oops >&2; exit 3: exit status 3: oops") {
		t.Errorf("a failing command: error %v, want what ran, its status and its stderr", err)
	}

	// A listener made in Do is the namespace's: a dial from Do reaches it,
	// one from this process's namespace does not.
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if err := n.Do(func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("dialling the listener from inside: %v", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Errorf("the namespace's listener was reached from outside it")
	}
	// Do leaves the thread where it was.
	here, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	self, err := vnetns.GetFromPid(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if !here.Equal(self) {
		t.Errorf("after Do, this thread is in %v, not the process's %v", here, self)
	}

	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
	removed = true
	if listed(t, n.Name) {
		t.Errorf("%s is still listed after Remove", n.Name)
	}
	if err := n.Do(func() error { return nil }); err == nil {
		t.Errorf("Do in a removed namespace succeeded")
	}
	if err := n.Remove(); err == nil || !strings.HasPrefix(err.Error(), "ip netns del "+n.Name+": exit status 1: ") {
		t.Errorf("removing twice: error %v, want what failed and why", err)
	}
}

func TestAttach(t *testing.T) {
	needRoot(t)
	n, err := New("tund-netnstest")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Remove()
	ctx, cancel := context.WithCancel(context.Background())
	sleep := n.Command(ctx, "sleep", "60")
	if err := sleep.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	defer sleep.Wait()
	defer cancel() // before Wait: it kills sleep
	// ip netns exec has become sleep by now, or is about to: wait for the
	// process to be in the namespace.
	want, err := vnetns.GetFromName(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, err := vnetns.GetFromPid(sleep.Process.Pid)
		in := err == nil && h.Equal(want)
		if err == nil {
			h.Close()
		}
		if in {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep (pid %d) did not enter %s within 5 s", sleep.Process.Pid, n.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a, err := Attach("tund-netnstest", sleep.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	got, err := vnetns.GetFromName(a.Name)
	if err != nil {
		a.Remove()
		t.Fatal(err)
	}
	defer got.Close()
	if !got.Equal(want) {
		t.Errorf("%s is not the namespace of the process attached", a.Name)
	}
	if err := a.Remove(); err != nil {
		t.Error(err)
	}
	if _, err := Attach("tund-netnstest", 0); err == nil || !strings.Contains(err.Error(), "ip netns attach ") {
		t.Errorf("attaching PID 0: error %v, want what failed", err)
	}
}
