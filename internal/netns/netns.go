// Package netns makes, enters and removes the named network namespaces in
// which tund's end-to-end tests and scenarios run tund and the kernel
// clients beside it. It drives iproute2 (ip netns), so that a namespace is
// visible to ip netns exec and to whoever debugs a run, and enters one from
// Go with github.com/vishvananda/netns.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	vnetns "github.com/vishvananda/netns"
)

// NS is a named network namespace, as ip netns names it.
type NS struct {
	Name string
}

// counter makes names unique within the process; the PID in the name makes
// them unique across processes running at once.
var counter atomic.Int64

// Name returns prefix-PID-N, a name that no other call returns in this
// process or, given the same prefix, in another running at once. New and
// Attach take theirs from it; a namespace another program makes (a script
// under test) can too, so that a sweep by prefix and PID finds whatever a
// killed run left behind.
func Name(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), counter.Add(1))
}

// New makes a namespace named prefix-PID-N with its loopback up and no
// route out. Its caller removes it.
func New(prefix string) (*NS, error) {
	n := &NS{Name: Name(prefix)}
	if err := ip("netns", "add", n.Name); err != nil {
		return nil, err
	}
	if _, err := n.Run(context.Background(), "ip", "link", "set", "lo", "up"); err != nil {
		n.Remove()
		return nil, err
	}
	if err := n.Do(noForwarding); err != nil {
		n.Remove()
		return nil, err
	}
	return n, nil
}

// noForwarding turns forwarding off in the namespace it runs in. A new
// namespace takes its IPv4 forwarding from the host's (on wherever Docker
// runs, it forwards), and a namespace that forwards sends a packet for an
// address on one of its links but not its own back out: tund's answers to a
// spoofed source came straight back into the device and tund read its own
// packets. A test that wants forwarding turns it on.
func noForwarding() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(f, []byte("0"), 0); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("turning forwarding off: %w", err)
		}
	}
	return nil
}

// Attach gives the network namespace of process pid (a container's, say)
// a name, prefix-PID-N, with ip netns attach, so that Command, Run and Do
// reach it. Remove takes the name away; the namespace lives on with the
// process.
func Attach(prefix string, pid int) (*NS, error) {
	n := &NS{Name: Name(prefix)}
	if err := ip("netns", "attach", n.Name, strconv.Itoa(pid)); err != nil {
		return nil, err
	}
	return n, nil
}

// Remove deletes the namespace's name (ip netns del); the namespace itself
// goes once no process and no socket holds it.
func (n *NS) Remove() error { return ip("netns", "del", n.Name) }

// Exists reports whether ip netns lists a namespace called name, e.g. one
// that a script under test was to make or to remove.
func Exists(name string) (bool, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return false, fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// A line is "NAME" or "NAME (id: N)".
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true, nil
		}
	}
	return false, nil
}

// ip runs ip with args in this process's namespace; the error says what
// ran, why it failed and what ip printed.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns the command name with args prepared to run in the
// namespace (through ip netns exec, which also gives it the namespace's
// /etc/netns files), stopped when ctx is done.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs the command name with args in the namespace, bounded by ctx, and
// returns its stdout; on failure the error says what ran, why it failed and
// what it wrote to stderr.
func (n *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := n.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Do runs f on an OS thread that has entered the namespace, so that the
// sockets f makes belong to it: a socket keeps the namespace it was made
// in, whichever thread uses it later. The thread is locked for the call
// alone and goes back to the namespace it was in before it is unlocked.
func (n *NS) Do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return fmt.Errorf("this thread's namespace: %w", err)
	}
	defer orig.Close()
	h, err := vnetns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", n.Name, err)
	}
	defer h.Close()
	if err := vnetns.Set(h); err != nil {
		return fmt.Errorf("entering %s: %w", n.Name, err)
	}
	defer func() {
		if err := vnetns.Set(orig); err != nil {
			// UnlockOSThread would hand the thread, still in the
			// namespace, to any goroutine, and every socket made on it
			// later would silently be the namespace's. Better to stop.
			panic(fmt.Sprintf("leaving %s: %v", n.Name, err))
		}
	}()
	return f()
}
