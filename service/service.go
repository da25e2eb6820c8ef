// Package service holds the small TCP services that tund hosts on its stack:
// the classic echo, discard, daytime and chargen (RFC 862, 863, 867, 864), a
// minimal HTTP server, so that unmodified clients have something to talk to
// and something to close, and a proxy to a kernel address, so that any
// kernel server can be reached through tund's TCP.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tund/tund/forward"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/link/faults"
)

// Spec is one service, the port it listens on and how it closes.
type Spec struct {
	Name string
	Port uint16
	// Target is where proxy carries its connections; the other services
	// have none.
	Target netip.AddrPort
	// CopySplice makes the proxy carry bytes the common way, an io.Copy
	// each way (forward.Copy), instead of tund's splice: the baseline that
	// scripts/bench-proxy measures tund's against (--serve
	// proxy:PORT=IP:PORT/splice=copy).
	CopySplice bool
	Options
	// Own are the options that the spec set itself, by name, with their
	// values as written; the rest of Options came from the defaults.
	Own map[string]string
}

func (s Spec) String() string {
	if s.Target.IsValid() {
		splice := ""
		if s.CopySplice {
			splice = "/splice=copy"
		}
		return fmt.Sprintf("%s:%d=%s/%s%s", s.Name, s.Port, s.Target, s.Options, splice)
	}
	return fmt.Sprintf("%s:%d/%s", s.Name, s.Port, s.Options)
}

// handler serves one accepted connection. It owns c and closes it with
// c.finish.
type handler func(ctx context.Context, c *conn, log *slog.Logger)

// handlers are the services by name, with the port each has by default.
// A handler that drains ends its connection itself once its ctx ends, and
// gets no FIN from Serve (the proxy: a FIN from tund would cut off what the
// server still sends).
var handlers = map[string]struct {
	port   uint16
	serve  handler
	drains bool
}{
	"echo":    {port: 7, serve: serveEcho},
	"discard": {port: 9, serve: serveDiscard},
	"daytime": {port: 13, serve: serveDaytime},
	"chargen": {port: 19, serve: serveChargen},
	"http":    {port: 80},     // served by net/http, see http.go
	"proxy":   {drains: true}, // no port of its own; see proxy.go
}

// Names returns the known service names, sorted.
func Names() []string {
	var n []string
	for k := range handlers {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// ParseList parses a comma-separated list of NAME[:PORT][/OPTION...], such
// as "http:80,echo:7,daytime/abort,chargen/half-close=close", and
// proxy:PORT=IP:PORT[/OPTION...] for the proxy, which needs both a port and
// a target (proxy:8080=127.0.0.1:80). A name without a port gets its
// well-known port; a port may carry one service only.
// Options override defaults for that service:
//
//	half-close=allow|close|DURATION   what to do when the peer half-closes
//	abort                             end connections with RST, not FIN
//	fin-wait2=DURATION                FIN-WAIT-2 timeout of its connections
//	fin-ack-merge=DURATION            FIN/ACK merge window of its port
//	close-delay=DURATION              echo, discard: stay in CLOSE-WAIT this long
//	drop-final-ack=once|P, drop-fin=once|P, delay-fin=DURATION, no-fin,
//	loss-in=P, loss-out=P             close-path faults on its port (faults.Set)
//	splice=tund|copy                  proxy: tund's splice, or the common
//	                                  io.Copy each way (forward.Copy), to measure
//	                                  tund's against
func ParseList(list string, defaults Options) ([]Spec, error) {
	var specs []Spec
	ports := map[uint16]string{}
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		item, optText, _ := strings.Cut(item, "/")
		item, targetText, hasTarget := strings.Cut(item, "=")
		name, portText, hasPort := strings.Cut(item, ":")
		h, ok := handlers[name]
		if !ok {
			return nil, fmt.Errorf("unknown service %q (known: %s)", name, strings.Join(Names(), ", "))
		}
		var target netip.AddrPort
		switch {
		case name == "proxy" && (!hasPort || !hasTarget):
			return nil, fmt.Errorf("service proxy needs a port and a target: proxy:PORT=IP:PORT, such as proxy:8080=127.0.0.1:80")
		case name == "proxy":
			t, err := forward.ParseTarget(targetText)
			if err != nil {
				return nil, fmt.Errorf("service proxy: %w", err)
			}
			target = t
		case hasTarget:
			return nil, fmt.Errorf("service %q takes no target (=%s); only proxy does", name, targetText)
		}
		port := h.port
		if hasPort {
			p, err := strconv.ParseUint(portText, 10, 16)
			if err != nil || p == 0 {
				return nil, fmt.Errorf("service %q: port %q is not a number in [1, 65535]", name, portText)
			}
			port = uint16(p)
		}
		if other, dup := ports[port]; dup {
			return nil, fmt.Errorf("services %q and %q both want port %d", other, name, port)
		}
		copySplice := false
		if name == "proxy" {
			var err error
			if copySplice, optText, err = cutSplice(optText); err != nil {
				return nil, fmt.Errorf("service proxy: %w", err)
			}
		}
		opts, err := OptionsFor(name, optText, defaults)
		if err != nil {
			return nil, err
		}
		ports[port] = name
		specs = append(specs, Spec{Name: name, Port: port, Target: target, CopySplice: copySplice, Options: opts, Own: ownOptions(optText)})
	}
	if len(specs) == 0 {
		return nil, errors.New("no service given")
	}
	return specs, nil
}

// cutSplice takes the proxy's splice=tund|copy out of the options text.
func cutSplice(text string) (copySplice bool, rest string, err error) {
	var kept []string
	for _, opt := range strings.Split(text, "/") {
		switch opt {
		case "splice=copy":
			copySplice = true
		case "splice=tund":
			copySplice = false
		default:
			if strings.HasPrefix(opt, "splice=") {
				return false, "", fmt.Errorf("%s: want splice=tund (the default) or splice=copy", opt)
			}
			kept = append(kept, opt)
		}
	}
	return copySplice, strings.Join(kept, "/"), nil
}

// OptionsFor returns defaults with the options of text, as --serve spells
// them after a service's name ("half-close=close/drop-fin=once"), set for
// the service name, and refuses those that the service would ignore.
func OptionsFor(name, text string, defaults Options) (Options, error) {
	opts, err := parseOptions(text, defaults)
	if err != nil {
		return opts, fmt.Errorf("service %q: %w", name, err)
	}
	for key := range ownOptions(text) {
		switch {
		case Takes(name, key):
		case key == "close-delay":
			return opts, fmt.Errorf("service %q: close-delay applies to echo and discard only", name)
		default:
			// net/http owns its connections' close; the option would be
			// silently ignored.
			return opts, fmt.Errorf("service http takes only the fin-ack-merge and fault options")
		}
	}
	return opts, nil
}

// Takes reports whether the service name acts on the option (as --serve
// spells it) at all: http leaves its close to net/http and takes only the
// fin-ack-merge window and the faults, which act in the stack beneath it;
// close-delay is echo's and discard's.
func Takes(name, option string) bool {
	switch {
	case option == "close-delay":
		return name == "echo" || name == "discard"
	case name == "http":
		return option == "fin-ack-merge" || slices.Contains(faults.Names, option)
	}
	return true
}

// ownOptions returns the options of text by name, with their values as
// written ("true" for those written without one, such as abort).
func ownOptions(text string) map[string]string {
	own := map[string]string{}
	for _, opt := range strings.Split(text, "/") {
		if opt == "" {
			continue
		}
		key, value, hasValue := strings.Cut(opt, "=")
		if !hasValue {
			value = "true"
		}
		own[key] = value
	}
	return own
}

// Configure sets in c the per-port close-path settings of specs: a
// service's own fin-ack-merge window and faults, where they differ from
// the stack-wide ones (c's, which specs' defaults came from). They act in
// the stack, beneath the service, on every segment of the port.
func Configure(c *stack.Config, specs []Spec) {
	for _, s := range specs {
		if s.Faults != c.Faults {
			if c.PortFaults == nil {
				c.PortFaults = map[uint16]faults.Set{}
			}
			c.PortFaults[s.Port] = s.Faults
		}
		if s.FINACKMerge != nil {
			if c.PortFINACKMerge == nil {
				c.PortFINACKMerge = map[uint16]time.Duration{}
			}
			c.PortFINACKMerge[s.Port] = *s.FINACKMerge
		}
	}
}

func parseOptions(text string, o Options) (Options, error) {
	if text == "" {
		return o, nil
	}
	for _, opt := range strings.Split(text, "/") {
		key, value, _ := strings.Cut(opt, "=")
		switch key {
		case "half-close":
			h, err := ParseHalfClose(value)
			if err != nil {
				return o, err
			}
			o.HalfClose = h
		case "abort":
			switch value {
			case "", "true":
				o.Abort = true
			case "false":
				o.Abort = false
			default:
				return o, fmt.Errorf("abort=%q: takes no value (or true, false)", value)
			}
		case "fin-wait2":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 || d > 120*time.Second {
				return o, fmt.Errorf("fin-wait2=%q: want a duration in (0, 120s]", value)
			}
			o.FinWait2 = d
		case "fin-ack-merge":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return o, fmt.Errorf("fin-ack-merge=%q: want a duration, 0 to never merge", value)
			}
			o.FINACKMerge = &d
		case "close-delay":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return o, fmt.Errorf("close-delay=%q: want a duration", value)
			}
			o.CloseDelay = d
		default:
			known, err := o.Faults.Parse(key, value)
			if err != nil {
				return o, err
			}
			if !known {
				return o, fmt.Errorf("unknown option %q (known: half-close=, abort, fin-wait2=, fin-ack-merge=, close-delay=, and the faults %s)", opt, strings.Join(faults.Names, ", "))
			}
		}
	}
	return o, nil
}

// Serve accepts connections on ln and serves spec on each until ctx ends.
// Then it stops accepting and ends every open connection gracefully: FIN
// after what the service has written, and what the peer still sends is
// read and dropped until its FIN, so that no unread data turns the close
// into a RST; a proxied pair is left drain to end by its peers' FINs
// instead. After drain it stops waiting. It returns nil once every
// handler has returned; any other accept error is returned, after the
// same ending.
func Serve(ctx context.Context, ln *stack.Listener, spec Spec, drain time.Duration, log *slog.Logger) error {
	return serve(ctx, ln, spec, func() Options { return spec.Options }, drain, log)
}

// serve is Serve with the options of each new connection taken from
// options when it is accepted, so that they can change while it serves.
func serve(ctx context.Context, ln *stack.Listener, spec Spec, options func() Options, drain time.Duration, log *slog.Logger) error {
	log = log.With("service", spec.Name, "port", spec.Port)
	if spec.Name == "http" {
		return serveHTTP(ctx, ln, drain, log)
	}
	h, ok := handlers[spec.Name]
	if !ok {
		return fmt.Errorf("unknown service %q", spec.Name)
	}
	if spec.Name == "proxy" {
		h.serve = proxyTo(spec.Target, spec.CopySplice, drain)
		log = log.With("target", spec.Target.String())
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[*conn]struct{}{}
	)
	// The handlers' context ends with ctx or when accepting fails, so that
	// a draining handler stops either way.
	hctx, stopHandlers := context.WithCancel(ctx)
	defer stopHandlers()
	closeAll := func() {
		ln.Close()
		stopHandlers()
		if h.drains {
			return
		}
		deadline := time.Now().Add(drain)
		mu.Lock()
		for c := range conns {
			c.shutdown(deadline)
		}
		mu.Unlock()
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	for {
		sc, err := ln.AcceptConn()
		if err != nil {
			// Connections that would never end by themselves (chargen, an
			// idle echo) must not keep Serve from returning.
			closeAll()
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: accept: %w", spec, err)
		}
		c := &conn{Conn: sc, opts: options()}
		if c.opts.FinWait2 > 0 {
			if err := sc.SetFinWait2(c.opts.FinWait2); err != nil {
				log.Warn("per-service FIN-WAIT-2 timeout not set", "err", err)
			}
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			clog := log.With("peer", c.RemoteAddr().String())
			clog.Debug("accepted")
			h.serve(hctx, c, clog)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}
