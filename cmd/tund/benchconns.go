package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// benchConnsCommand is `tund bench-conns`, the client (and the kernel
// server) of scripts/bench-mem. As a client it opens -n connections to
// --to, numbered from --first, each from its own source address and port
// (so that several processes, each within its open file limit, can share
// one run without two using the same 4-tuple), and either holds them
// ESTABLISHED (SIGUSR1: check that every one still is; SIGTERM: reset
// them all, so that no TIME-WAIT is left on either side, and exit) or,
// with --read-close, reads each to the server's EOF and closes it, which
// leaves the server, having closed first, in TIME-WAIT. With
// --listen it is the kernel server of the baseline: it holds what it
// accepts, or with --close-first writes a line and closes at once, as
// tund's daytime service does. Servers set SO_REUSEPORT, so that several
// processes can share a port and, between them, more connections than one
// process may have files.
func benchConnsCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tund bench-conns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "server `IP:PORT` to connect to")
	n := fs.Int("n", 1000, "number of connections")
	first := fs.Int("first", 0, "number of the first connection: this client opens connections first to first+n-1")
	srcs := fs.String("src", "", "comma-separated source `IPs`; connection i uses IP i mod len and port --port-base + i / len, so every 4-tuple is distinct")
	portBase := fs.Int("port-base", 10000, "first source `port`")
	parallel := fs.Int("parallel", 256, "connections being opened at once")
	readClose := fs.Bool("read-close", false, "read each connection to EOF, then close it (the server closes first) instead of holding it")
	listen := fs.String("listen", "", "be the kernel server on `IP:PORT` instead of a client")
	closeFirst := fs.Bool("close-first", false, "server: write one line and close each connection at once")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *listen != "" {
		return benchConnsServe(*listen, *closeFirst, stdout, stderr)
	}
	addrs, err := benchConnsAddrs(*to, *srcs, *first+*n, *portBase)
	if err != nil {
		fmt.Fprintf(stderr, "tund bench-conns: %v\n", err)
		return 2
	}
	if *parallel < 1 {
		*parallel = 1
	}
	b := &benchConns{to: addrs.to, srcs: addrs.srcs, portBase: *portBase, first: *first, n: *n, stderr: stderr}
	if *readClose {
		return b.readClose(*parallel, stdout)
	}
	return b.hold(*parallel, stdout)
}

type benchAddrs struct {
	to   *net.TCPAddr
	srcs []netip.Addr
}

// benchConnsAddrs checks the client's addresses and that the source
// ports needed fit below 65536.
func benchConnsAddrs(to, srcs string, n, portBase int) (benchAddrs, error) {
	var a benchAddrs
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		return a, fmt.Errorf("--to %q: want IP:PORT: %w", to, err)
	}
	a.to = net.TCPAddrFromAddrPort(ap)
	for _, s := range strings.Split(srcs, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return a, fmt.Errorf("--src %q: %w", srcs, err)
		}
		a.srcs = append(a.srcs, ip)
	}
	perSrc := (n + len(a.srcs) - 1) / len(a.srcs)
	if n < 1 || portBase < 1 || portBase+perSrc > 65536 {
		return a, fmt.Errorf("-n %d from %d source addresses needs ports %d to %d: give more --src addresses or a lower --port-base",
			n, len(a.srcs), portBase, portBase+perSrc-1)
	}
	return a, nil
}

// benchConns is one client run.
type benchConns struct {
	to       *net.TCPAddr
	srcs     []netip.Addr
	portBase int
	first    int
	n        int
	stderr   io.Writer

	errs     atomic.Int64
	firstErr sync.Once
}

// dial opens connection first+i from its own source address and port.
func (b *benchConns) dial(i int) (*net.TCPConn, error) {
	i += b.first
	src := b.srcs[i%len(b.srcs)]
	port := b.portBase + i/len(b.srcs)
	d := net.Dialer{Timeout: 20 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(port)))}
	c, err := d.Dial("tcp", b.to.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// fail counts an error and reports the first one, which usually says
// what limit was hit (file descriptors, ports, a timeout).
func (b *benchConns) fail(err error) {
	b.errs.Add(1)
	b.firstErr.Do(func() { fmt.Fprintf(b.stderr, "tund bench-conns: first error: %v\n", err) })
}

// each runs f for 0..n-1 on parallel goroutines.
func (b *benchConns) each(parallel int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < b.n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// hold opens every connection and says how many it holds. Then on
// SIGUSR1 it says how many are still ESTABLISHED (TCP_INFO), and on
// SIGTERM or SIGINT it resets them all and exits. It fails if any
// connection failed to open or was found dead.
func (b *benchConns) hold(parallel int, stdout io.Writer) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	conns := make([]*net.TCPConn, b.n)
	start := time.Now()
	b.each(parallel, func(i int) {
		c, err := b.dial(i)
		if err != nil {
			b.fail(err)
			return
		}
		conns[i] = c
	})
	fmt.Fprintf(stdout, "established %d errors %d seconds %.1f\n", int64(b.n)-b.errs.Load(), b.errs.Load(), time.Since(start).Seconds())
	failed := b.errs.Load() > 0
	for s := range sig {
		if s != syscall.SIGUSR1 {
			break
		}
		alive, dead := 0, 0
		for _, c := range conns {
			if c == nil {
				continue
			}
			if established(c) {
				alive++
			} else {
				dead++
			}
		}
		fmt.Fprintf(stdout, "alive %d dead %d\n", alive, dead)
		failed = failed || dead > 0
	}
	for _, c := range conns {
		if c != nil {
			// A reset leaves no TIME-WAIT behind on either side, so the
			// next measurement starts from a clean kernel.
			c.SetLinger(0)
			c.Close()
		}
	}
	if failed {
		return 1
	}
	return 0
}

// established reports whether the kernel still has c in ESTABLISHED.
func established(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	state := -1
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = int(info.State)
		}
	})
	return state == unix.BPF_TCP_ESTABLISHED
}

// readClose opens each connection, reads it to EOF and closes it. A
// connection that gives no bytes before EOF counts as an error.
func (b *benchConns) readClose(parallel int, stdout io.Writer) int {
	start := time.Now()
	b.each(parallel, func(i int) {
		c, err := b.dial(i)
		if err != nil {
			b.fail(err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(c)
		switch {
		case err != nil:
			b.fail(fmt.Errorf("reading connection %d: %w", b.first+i, err))
		case len(got) == 0:
			b.fail(fmt.Errorf("connection %d: EOF before any byte", b.first+i))
		}
	})
	fmt.Fprintf(stdout, "closed %d errors %d seconds %.1f\n", int64(b.n)-b.errs.Load(), b.errs.Load(), time.Since(start).Seconds())
	if b.errs.Load() > 0 {
		return 1
	}
	return 0
}

// benchConnsServe is the kernel server: it holds every connection it
// accepts until SIGTERM, then resets them all (so that what the kernel
// frees then is what they cost), or with closeFirst sends a line and
// closes each first.
func benchConnsServe(addr string, closeFirst bool, stdout, stderr io.Writer) int {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "tund bench-conns: %v\n", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var accepted, errs atomic.Int64
	done := make(chan []net.Conn)
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				done <- held
				return
			}
			if err != nil {
				if errs.Add(1) == 1 {
					fmt.Fprintf(stderr, "tund bench-conns: accept: %v\n", err)
				}
				time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
				continue
			}
			accepted.Add(1)
			if closeFirst {
				io.WriteString(c, time.Now().UTC().Format(time.RFC1123)+"\r\n")
				c.Close()
				continue
			}
			held = append(held, c)
		}
	}()
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	<-sig
	ln.Close()
	for _, c := range <-done {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	fmt.Fprintf(stdout, "accepted %d errors %d\n", accepted.Load(), errs.Load())
	if errs.Load() > 0 {
		return 1
	}
	return 0
}
