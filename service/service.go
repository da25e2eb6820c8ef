// Package service holds the small TCP services that tund hosts on its stack:
// the classic echo, discard, daytime and chargen (RFC 862, 863, 867, 864) and
// a minimal HTTP server, so that unmodified clients have something to talk to
// and something to close.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Spec is one service and the port it listens on.
type Spec struct {
	Name string
	Port uint16
}

func (s Spec) String() string { return fmt.Sprintf("%s:%d", s.Name, s.Port) }

// handler serves one accepted connection. It owns c and closes it.
type handler func(ctx context.Context, c net.Conn, log *slog.Logger)

// handlers are the services by name, with the port each has by default.
var handlers = map[string]struct {
	port  uint16
	serve handler
}{
	"echo":    {7, serveEcho},
	"discard": {9, serveDiscard},
	"daytime": {13, serveDaytime},
	"chargen": {19, serveChargen},
	"http":    {80, nil}, // served by net/http, see http.go
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

// ParseList parses a comma-separated list such as "http:80,echo:7,daytime".
// A name without a port gets its well-known port. A port may carry one
// service only.
func ParseList(list string) ([]Spec, error) {
	var specs []Spec
	ports := map[uint16]string{}
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, portText, hasPort := strings.Cut(item, ":")
		h, ok := handlers[name]
		if !ok {
			return nil, fmt.Errorf("unknown service %q (known: %s)", name, strings.Join(Names(), ", "))
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
		ports[port] = name
		specs = append(specs, Spec{Name: name, Port: port})
	}
	if len(specs) == 0 {
		return nil, errors.New("no service given")
	}
	return specs, nil
}

// Serve accepts connections on ln and serves spec on each until ctx ends.
// Then it closes ln and every open connection, waits for the handlers to
// return, and returns nil. Any other accept error is returned.
func Serve(ctx context.Context, ln net.Listener, spec Spec, log *slog.Logger) error {
	log = log.With("service", spec.Name, "port", spec.Port)
	if spec.Name == "http" {
		return serveHTTP(ctx, ln, log)
	}
	h, ok := handlers[spec.Name]
	if !ok {
		return fmt.Errorf("unknown service %q", spec.Name)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: accept: %w", spec, err)
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
			h.serve(ctx, c, clog)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}
