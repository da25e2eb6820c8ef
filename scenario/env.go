package scenario

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tund/tund/internal/netns"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/closes"
)

// Addresses of tund's default device, as in its --help.
const (
	stackV4  = "198.18.0.2" // tund's stack
	kernelV4 = "198.18.0.1" // the kernel side of the TUN device
	tunName  = "tund0"
	// adminAddr is tund's admin server on the namespace's loopback.
	adminAddr = "127.0.0.1:9180"
)

// Env is the world of one run: a network namespace of its own, tund
// running in it, and the kernel's TCP beside it. Close undoes it all.
type Env struct {
	ctx    context.Context
	bin    string // tund's binary
	ns     *netns.NS
	pcap   string // the pcap file tund writes
	starts int    // how many times tund was started

	mu       sync.Mutex
	tund     *exec.Cmd
	tundDone chan struct{}
	tundLog  bytes.Buffer
	cleanups []func()
	closed   bool

	http *http.Client
	res  *Result
}

// newEnv makes the namespace (loopback up, no route out). ctx bounds every
// wait of the run.
func newEnv(ctx context.Context, bin, pcap string, res *Result) (*Env, error) {
	ns, err := netns.New("tund-scn")
	if err != nil {
		return nil, err
	}
	e := &Env{ctx: ctx, bin: bin, pcap: pcap, res: res, ns: ns}
	e.cleanups = append(e.cleanups, func() { ns.Remove() })
	e.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return e.dial(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
	return e, nil
}

// Close stops tund and removes the namespace, once; it is safe to call
// from a signal handler's goroutine while the scenario runs.
func (e *Env) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	cleanups := e.cleanups
	e.mu.Unlock()
	e.stopTund()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}

// run runs a command in the namespace and returns its output; a failure
// says what ran and what it printed.
func (e *Env) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	return e.ns.Run(ctx, name, args...)
}

// sysctl sets a per-namespace kernel setting, e.g. net.ipv4.tcp_fin_timeout.
func (e *Env) sysctl(key, value string) error {
	_, err := e.run("sysctl", "-q", "-w", key+"="+value)
	return err
}

// startTund starts tund in the namespace with args (beyond the admin
// address and the pcap file) and waits for its "ready" line.
func (e *Env) startTund(args ...string) error {
	e.stopTund()
	e.starts++
	pcap := e.pcap
	if e.starts > 1 {
		pcap = fmt.Sprintf("%s.%d", e.pcap, e.starts)
	}
	e.res.Pcaps = append(e.res.Pcaps, pcap)
	all := append([]string{"--admin", adminAddr, "--pcap", pcap, "--drain", "1s"}, args...)
	// Not bound by e.ctx: stopTund ends tund with SIGTERM, so that its
	// pcap file is complete.
	cmd := e.ns.Command(context.Background(), e.bin, all...)
	// tund must not outlive this process, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	e.res.TundArgs = args
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting tund: %w", err)
	}
	done, ready := make(chan struct{}), make(chan struct{})
	e.mu.Lock()
	e.tund, e.tundDone = cmd, done
	e.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			e.mu.Lock()
			e.tundLog.WriteString(sc.Text() + "\n")
			e.mu.Unlock()
			if !signalled && strings.Contains(sc.Text(), "msg=ready") {
				signalled = true
				close(ready)
			}
		}
		cmd.Wait()
		close(done)
	}()
	select {
	case <-ready:
		return nil
	case <-done:
		return fmt.Errorf("tund exited before it was ready:\n%s", e.TundLog())
	case <-time.After(20 * time.Second):
		return fmt.Errorf("tund not ready after 20 s:\n%s", e.TundLog())
	case <-e.ctx.Done():
		return e.ctx.Err()
	}
}

// TundLog returns what tund logged so far.
func (e *Env) TundLog() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tundLog.String()
}

// stopTund sends tund SIGTERM and waits for it to exit (SIGKILL after
// 10 s), so that its pcap file is complete.
func (e *Env) stopTund() {
	e.mu.Lock()
	cmd, done := e.tund, e.tundDone
	e.tund = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// dial connects with the kernel's TCP, from inside the namespace.
func (e *Env) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := e.ns.Do(func() error {
		var err error
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// dialStack connects a kernel socket to tund's IPv4 address on port.
func (e *Env) dialStack(port int) (*net.TCPConn, error) {
	c, err := e.dial(e.ctx, "tcp", net.JoinHostPort(stackV4, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("connecting to tund's port %d: %w", port, err)
	}
	return c.(*net.TCPConn), nil
}

// listen opens a kernel listener in the namespace.
func (e *Env) listen(addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := e.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s in the namespace: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

// get fetches path from tund's admin server.
func (e *Env) get(path string) ([]byte, error) {
	resp, err := e.http.Get("http://" + adminAddr + path)
	if err != nil {
		return nil, fmt.Errorf("tund's admin server: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s answered %s", path, resp.Status)
	}
	return b, err
}

// closes returns tund's close records.
func (e *Env) closes() ([]*closes.Record, error) {
	b, err := e.get("/closes")
	if err != nil {
		return nil, err
	}
	var recs []*closes.Record
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("/closes: %w", err)
	}
	return recs, nil
}

// tundConns returns tund's connection table.
func (e *Env) tundConns() ([]stack.ConnInfo, error) {
	b, err := e.get("/conns?format=json")
	if err != nil {
		return nil, err
	}
	var conns []stack.ConnInfo
	if err := json.Unmarshal(b, &conns); err != nil {
		return nil, fmt.Errorf("/conns: %w", err)
	}
	return conns, nil
}

// metric returns the value of one sample of tund's /metrics, named as the
// exposition format writes it (labels sorted), or 0 if it is absent.
func (e *Env) metric(sample string) (float64, error) {
	b, err := e.get("/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

// await polls cond every 10 ms until it holds, fails or the timeout
// passes. States change on timers and on segments that no socket call
// reports, so polling is the only way to wait for them.
func (e *Env) await(what string, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not happen within %v", what, timeout)
		}
		select {
		case <-e.ctx.Done():
			return e.ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// record waits for tund's close record of the connection whose peer (or,
// if local is set, whose local end) is addr, and returns it once match
// accepts it (nil match: any). A record is filed again when a replayed FIN
// adds to it, so the newest version with that ID is the one returned.
func (e *Env) record(addr netip.AddrPort, local bool, timeout time.Duration, match func(*closes.Record) bool) (*closes.Record, error) {
	var found *closes.Record
	err := e.await(fmt.Sprintf("tund's close record of %v", addr), timeout, func() (bool, error) {
		recs, err := e.closes()
		if err != nil {
			return false, err
		}
		for _, r := range recs {
			end := r.Remote
			if local {
				end = r.Local
			}
			if end == addr && (match == nil || match(r)) {
				found = r
				return true, nil
			}
		}
		return false, nil
	})
	return found, err
}

// tundState returns tund's state for the connection with peer remote, or
// "" if it has none.
func (e *Env) tundState(remote netip.AddrPort) (string, error) {
	conns, err := e.tundConns()
	if err != nil {
		return "", err
	}
	for _, c := range conns {
		if c.Remote == remote {
			return c.State, nil
		}
	}
	return "", nil
}

// awaitTund waits until tund's side of the connection with peer remote is
// in state want ("" for gone).
func (e *Env) awaitTund(remote netip.AddrPort, want string, timeout time.Duration) error {
	what := fmt.Sprintf("tund's side of %v in %s", remote, want)
	if want == "" {
		what = fmt.Sprintf("tund forgetting %v", remote)
	}
	return e.await(what, timeout, func() (bool, error) {
		got, err := e.tundState(remote)
		return got == want, err
	})
}

// errExpected is a scenario that did not happen as it should.
var errExpected = errors.New("the scenario did not happen as expected")

// expect returns an error wrapping errExpected when ok is false.
func expect(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf("%w: %s", errExpected, fmt.Sprintf(format, args...))
}

// localAddr is the kernel socket's own address.
func localAddr(c net.Conn) netip.AddrPort { return c.LocalAddr().(*net.TCPAddr).AddrPort() }
