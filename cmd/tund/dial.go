package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tund/tund/forward"
	"github.com/tund/tund/stack"
)

// dialFlag registers --dial on fs.
func dialFlag(fs *flag.FlagSet) *listFlag {
	l := &listFlag{}
	fs.Var(l, "dial", "`LISTEN=TARGET`: listen on the kernel address LISTEN (IP:PORT or :PORT, in tund's namespace) and carry\n"+
		"each connection out through tund's stack to TARGET (IP:PORT, e.g. the TUN's kernel side 198.18.0.1:9000):\n"+
		"tund is the client side of a kernel server. Repeatable, or comma-separated. Example: 127.0.0.1:7000=198.18.0.1:9000")
	return l
}

// parseDials parses the --dial values into o.dials. A target needs a stack
// address of its family to dial from.
func parseDials(l *listFlag, o *options) error {
	rules, err := forward.ParseRules(l.values)
	if err != nil {
		return fmt.Errorf("--dial %w", err)
	}
	for _, r := range rules {
		if !hasFamily(o.stack.Addrs, r.Target.Addr()) {
			family := "IPv6"
			if r.Target.Addr().Is4() {
				family = "IPv4"
			}
			return fmt.Errorf("--dial %s: the stack has no %s address (--addr) to dial from", r, family)
		}
	}
	for _, r := range rules {
		if r.Target.Addr().Is6() {
			o.explicitIPv6 = append(o.explicitIPv6, "--dial "+r.String())
		}
	}
	o.dials = rules
	return nil
}

func hasFamily(addrs []netip.Addr, a netip.Addr) bool {
	for _, x := range addrs {
		if x.Is4() == a.Is4() {
			return true
		}
	}
	return false
}

// listenDials opens the kernel listeners of the --dial rules; on failure
// the ones already open are closed.
func listenDials(rules []forward.Rule) ([]*net.TCPListener, error) {
	var lns []*net.TCPListener
	for _, r := range rules {
		ln, err := forward.Listen(r)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serveDials runs forward.Serve on each listener until ctx ends; an error
// goes to fail.
func serveDials(ctx context.Context, wg *sync.WaitGroup, lns []*net.TCPListener, rules []forward.Rule, st *stack.Stack, drain time.Duration, log *slog.Logger, fail func(error)) {
	for i, ln := range lns {
		log.Info("dialing", "listen", ln.Addr().String(), "target", rules[i].Target.String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := forward.Serve(ctx, ln, st, rules[i], drain, log); err != nil {
				fail(err)
			}
		}()
	}
}
