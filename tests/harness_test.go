// Package tests holds tund's end-to-end tests: each test makes its own
// network namespace, starts the built tund in it and drives real kernel
// clients (curl, nc, socat, wrk, ab, and Go programs whose sockets are made
// inside the namespace) against it.
//
// They need root, /dev/net/tun and the client tools; a missing one fails the
// run with what to install, it never skips. scripts/test installs them.
package tests

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tund/tund/internal/netns"
)

// Stack addresses of a default tund, as in its --help.
const (
	stackV4 = "198.18.0.2"
	stackV6 = "2001:2::2"
	kernV4  = "198.18.0.1"
)

// tundBin is the tund binary that TestMain built.
var tundBin string

// requiredTools are the programs the tests run, with their Debian package.
var requiredTools = map[string]string{
	"ip": "iproute2", "curl": "curl", "nc": "netcat-openbsd", "socat": "socat",
	"wrk": "wrk", "ab": "apache2-utils", "tcpdump": "tcpdump", "setpriv": "util-linux",
	"unshare": "util-linux", "ping": "iputils-ping", "hping3": "hping3", "ss": "iproute2", "sysctl": "procps",
	"docker": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap",
}

func TestMain(m *testing.M) {
	if err := preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "tests: %v\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "tund-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "tests: %v\n", err)
		os.Exit(1)
	}
	tundBin = filepath.Join(dir, "tund")
	build := exec.Command("go", "build", "-o", tundBin, "../cmd/tund")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "tests: building tund: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// preflight fails the whole run, loudly, when the tests cannot be what they
// claim: not root, no TUN, a client tool missing.
func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the end-to-end tests need root (namespaces, TUN devices); run scripts/test as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("no /dev/net/tun: %v", err)
	}
	var missing []string
	for tool, pkg := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", tool, pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools: %s; scripts/test installs them", strings.Join(missing, ", "))
	}
	return nil
}

// nsPrefix begins the name of every namespace the tests make or attach:
// scripts/test sweeps namespaces by it, and the PID after it, after a run
// that was killed.
const nsPrefix = "tundt"

// NS is a network namespace made for one test: netns.NS (Name, Command,
// Do) with the test's conveniences.
type NS struct {
	*netns.NS
	t testing.TB
}

// newNS makes a namespace with loopback up and no route out, and removes it
// when the test ends.
func newNS(t testing.TB) *NS {
	t.Helper()
	n, err := netns.New(nsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ns := &NS{NS: n, t: t}
	t.Cleanup(func() {
		if err := n.Remove(); err != nil {
			t.Error(err)
		}
	})
	return ns
}

// Run runs a command in the namespace with a 2-minute bound and returns its
// stdout; stderr is included in the error.
func (n *NS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.NS.Run(ctx, name, args...)
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Dial connects from the namespace with the kernel's TCP.
func (n *NS) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 10*time.Second)
		return err
	})
	return c, err
}

// DialStack connects from the namespace to tund's IPv4 address on port,
// failing the test if it cannot; the connection is closed when the test ends.
func (n *NS) DialStack(t testing.TB, port int) *net.TCPConn {
	t.Helper()
	c, err := n.Dial("tcp", net.JoinHostPort(stackV4, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// Tund is a tund process running in a namespace.
type Tund struct {
	t    testing.TB
	ns   *NS
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error // exit status, valid after done
}

// startTund starts tund in ns with args and waits for it to log "ready".
// When the test ends it sends SIGTERM and checks that tund exited 0 and
// removed its device.
func startTund(t testing.TB, ns *NS, args ...string) *Tund {
	t.Helper()
	td := &Tund{t: t, ns: ns, logs: &syncBuffer{}, done: make(chan struct{})}
	td.cmd = ns.Command(context.Background(), tundBin, args...)
	// If the test binary dies (a panic, go test's -timeout), tund must not
	// outlive it holding a device in a namespace nobody removes.
	td.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := td.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := td.cmd.Start(); err != nil {
		t.Fatalf("starting tund: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			td.logs.WriteLine(line)
			if !signalled && strings.Contains(line, "msg=ready") {
				signalled = true
				close(ready)
			}
		}
		td.err = td.cmd.Wait()
		close(td.done)
	}()
	t.Cleanup(func() {
		td.Stop()
		if t.Failed() {
			t.Logf("tund log:\n%s", td.logs.String())
		}
	})
	select {
	case <-ready:
	case <-td.done:
		t.Fatalf("tund exited before it was ready: %v\n%s", td.err, td.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("tund not ready after 20s:\n%s", td.logs.String())
	}
	return td
}

// Pid returns tund's process ID.
func (td *Tund) Pid() int { return td.cmd.Process.Pid }

// Alive reports whether tund is still running.
func (td *Tund) Alive() bool {
	select {
	case <-td.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, waits for the exit and checks a clean one: status 0
// and the device gone.
func (td *Tund) Stop() {
	td.t.Helper()
	if !td.Alive() {
		return
	}
	td.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-td.done:
	case <-time.After(20 * time.Second):
		td.cmd.Process.Kill()
		<-td.done
		td.t.Errorf("tund did not exit within 20s of SIGTERM")
		return
	}
	if td.err != nil {
		td.t.Errorf("tund exited with %v after SIGTERM, want status 0", td.err)
	}
	if out, err := td.ns.Run("ip", "-o", "link", "show", "type", "tun"); err != nil || strings.TrimSpace(out) != "" {
		td.t.Errorf("a TUN device is left after tund stopped: %q %v", out, err)
	}
}

// RSS returns tund's resident set size in bytes.
func (td *Tund) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", td.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", td.Pid())
}

// Logs returns what tund logged so far.
func (td *Tund) Logs() string { return td.logs.String() }

// AwaitLog waits for a line of tund's log that contains s.
func (td *Tund) AwaitLog(s string, timeout time.Duration) {
	td.t.Helper()
	deadline := time.After(timeout)
	for {
		logs, more := td.logs.watch()
		if strings.Contains(logs, s) {
			return
		}
		select {
		case <-more:
		case <-deadline:
			td.t.Fatalf("tund did not log %q within %v:\n%s", s, timeout, logs)
		}
	}
}

// syncBuffer collects log lines from one goroutine for others to read.
type syncBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	written chan struct{} // closed at the next line
}

func (s *syncBuffer) WriteLine(line string) {
	s.mu.Lock()
	s.b.WriteString(line)
	s.b.WriteByte('\n')
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	s.mu.Unlock()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watch returns what was written so far and a channel closed when the
// next line is.
func (s *syncBuffer) watch() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written == nil {
		s.written = make(chan struct{})
	}
	return s.b.String(), s.written
}
