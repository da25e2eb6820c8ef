package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tund/tund/stack"
)

// Rule is one --dial: a kernel address to listen on, and the address that
// tund's stack dials for each connection accepted there.
type Rule struct {
	// Listen is the kernel socket's address; an unspecified address
	// (":7000") listens on every address of the namespace.
	Listen netip.AddrPort
	Target netip.AddrPort
}

func (r Rule) String() string { return listenString(r.Listen) + "=" + r.Target.String() }

func listenString(a netip.AddrPort) string {
	if !a.Addr().IsValid() {
		return ":" + strconv.Itoa(int(a.Port()))
	}
	return a.String()
}

// ParseRules parses --dial values, each a comma-separated list of
// LISTEN=TARGET such as 127.0.0.1:7000=198.18.0.1:9000.
func ParseRules(values []string) ([]Rule, error) {
	var rules []Rule
	seen := map[netip.AddrPort]bool{}
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			listen, target, ok := strings.Cut(item, "=")
			if !ok {
				return nil, fmt.Errorf("%q: want LISTEN=TARGET, such as 127.0.0.1:7000=198.18.0.1:9000", item)
			}
			var r Rule
			var err error
			if r.Listen, err = parseListen(listen); err != nil {
				return nil, fmt.Errorf("%q: %w", item, err)
			}
			if r.Target, err = ParseTarget(target); err != nil {
				return nil, fmt.Errorf("%q: %w", item, err)
			}
			if seen[r.Listen] {
				return nil, fmt.Errorf("%q: %s is already a --dial listen address", item, listenString(r.Listen))
			}
			seen[r.Listen] = true
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// ParseTarget parses IP:PORT, the address of a server to connect to
// (an IPv6 address in brackets: [2001:2::1]:80). Names are not taken:
// tund's stack has no resolver, and the proxy's target should not depend
// on one either.
func ParseTarget(s string) (netip.AddrPort, error) {
	host, port, err := splitHostPort("target", s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("target %q: want IP:PORT, such as 127.0.0.1:80 or [::1]:80", s)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("target %q: %v is not an address to connect to", s, a)
	}
	return netip.AddrPortFrom(a, port), nil
}

// parseListen parses IP:PORT or :PORT.
func parseListen(s string) (netip.AddrPort, error) {
	host, port, err := splitHostPort("listen address", s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, port), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: want IP:PORT or :PORT, such as 127.0.0.1:7000", s)
	}
	return netip.AddrPortFrom(a.Unmap(), port), nil
}

func splitHostPort(what, s string) (string, uint16, error) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		if what == "listen address" {
			return "", 0, fmt.Errorf("%s %q: want IP:PORT or :PORT, such as 127.0.0.1:7000", what, s)
		}
		return "", 0, fmt.Errorf("%s %q: want IP:PORT, such as 127.0.0.1:80 or [::1]:80", what, s)
	}
	p, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("%s %q: port %q is not a number in [1, 65535]", what, s, portText)
	}
	return host, uint16(p), nil
}

// Listen opens the kernel listener of r in the current namespace.
func Listen(r Rule) (*net.TCPListener, error) {
	addr := net.TCPAddrFromAddrPort(r.Listen)
	if !r.Listen.Addr().IsValid() {
		addr = &net.TCPAddr{Port: int(r.Listen.Port())}
	}
	ln, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--dial %s: %w", r, err)
	}
	return ln, nil
}

// Serve accepts kernel connections on ln and carries each to r.Target
// through st: tund's stack is the client of r.Target, and each accepted
// connection is spliced to it (half-close and RST cross; see Splice). A
// dial that fails resets the accepted connection, as a refused connect
// would. When ctx ends Serve closes ln, leaves each open connection drain
// to end by itself (Policy.Drain) and resets what remains; it returns nil
// once they are done. Any other accept error is returned.
func Serve(ctx context.Context, ln *net.TCPListener, st *stack.Stack, r Rule, drain time.Duration, log *slog.Logger) error {
	log = log.With("dial", r.String())
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var pause time.Duration
	for {
		kc, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Out of file descriptors: wait for some to be freed, as
			// net/http does, rather than give up.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "err", err, "in", pause)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
				}
				continue
			}
			ln.Close()
			return fmt.Errorf("--dial %s: accept: %w", r, err)
		}
		pause = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			carry(ctx, kc, st, r.Target, drain, log.With("client", kc.RemoteAddr().String()))
		}()
	}
}

// carry dials target from the stack for the kernel connection kc and
// splices the two.
func carry(ctx context.Context, kc *net.TCPConn, st *stack.Stack, target netip.AddrPort, drain time.Duration, log *slog.Logger) {
	log.Debug("accepted")
	sc, err := st.DialTCP(ctx, target)
	if err != nil {
		log.Info("dial failed; resetting the client", "err", err)
		Kernel(kc).Abort()
		return
	}
	log = log.With("local", sc.LocalAddr().String())
	log.Debug("connected")
	res := Splice(ctx, Kernel(kc), Stack(sc), Policy{Drain: drain})
	log.Debug("done", "sent", res.AtoB, "received", res.BtoA, "end", res.End)
}
