// Package admin serves tund's view of itself over HTTP, on an address of
// the host side (loopback by default), never through the TUN device:
// /metrics for Prometheus, /conns for the live connection table, /closes
// for the close records, /settings and /proxies to change the close path
// while tund runs (package control), and /debug/pprof for profiles.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tund/tund/control"
	"github.com/tund/tund/stack"
)

// DefaultAddr is where the admin server listens unless told otherwise: the
// loopback of tund's namespace, which the TUN device cannot reach (the
// kernel drops packets for 127.0.0.0/8 that arrive on any other interface).
const DefaultAddr = "127.0.0.1:9180"

// NewHandler returns the admin endpoints for st. With ctl, they include
// the live-control API, whose writes need token as a bearer token unless
// it is "".
func NewHandler(st *stack.Stack, ctl *control.Controller, token string) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newCollector(st),
	)
	mux := http.NewServeMux()
	if ctl != nil {
		reg.MustRegister(newSettingsCollector(ctl))
		(&controlAPI{ctl: ctl, token: token}).register(mux)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /conns", func(w http.ResponseWriter, r *http.Request) {
		conns := st.Conns()
		if r.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(conns)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		WriteConns(w, conns)
	})
	mux.HandleFunc("GET /closes", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("peer") {
			closeOf(st, w, r)
			return
		}
		if r.URL.Query().Get("follow") == "" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(st.Closes())
			return
		}
		// A stream of JSON lines, one per close as it ends.
		ch, stop := st.SubscribeCloses()
		defer stop()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		flusher, _ := w.(http.Flusher)
		if flusher != nil {
			flusher.Flush()
		}
		enc := json.NewEncoder(w)
		for {
			select {
			case <-r.Context().Done():
				return
			case c := <-ch:
				if enc.Encode(c) != nil {
					return
				}
				if flusher != nil {
					flusher.Flush()
				}
			}
		}
	})
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "tund admin: /metrics /conns /conns?format=json /closes /closes?follow=1 /closes?peer=IP:PORT&wait=5s /settings /settings/knobs /proxies /debug/pprof/")
	})
	return mux
}

// WriteConns writes a connection table in the columns of `ss -tan`.
func WriteConns(w interface{ Write([]byte) (int, error) }, conns []stack.ConnInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "State\tLocal Address:Port\tPeer Address:Port")
	for _, c := range conns {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.State, endpoint(c.Local), endpoint(c.Remote))
	}
	tw.Flush()
}

// Listen opens the admin address. The admin server never answers on the
// TUN device's own addresses (device): an address of the device is
// refused, and on a wildcard address (0.0.0.0:9180, to publish the server
// from a container) a connection made to one of them is reset as soon as
// it is accepted. Otherwise every program that routes the device's prefix
// (other containers, the stack's own proxied connections) could reach it
// there.
func Listen(addr string, device []netip.Addr) (net.Listener, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && slices.Contains(device, ap.Addr().Unmap()) {
		return nil, fmt.Errorf("admin: %v is an address of the TUN device, where the admin server never answers: give a loopback or another interface's address", ap.Addr())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return &deviceGuard{Listener: ln, device: device}, nil
}

// deviceGuard is a listener that resets the connections made to one of the
// device's addresses.
type deviceGuard struct {
	net.Listener
	device []netip.Addr
}

// Accept returns the next connection not made to a device address.
func (g *deviceGuard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok || !slices.Contains(g.device, tc.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()) {
			return c, nil
		}
		tc.SetLinger(0) // RST: nothing was served
		tc.Close()
	}
}

// Serve serves h on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// endpoint prints an address as ss does: "*" for an unspecified address or
// port, as a listener has.
func endpoint(a netip.AddrPort) string {
	host, port := "*", "*"
	if a.Addr().IsValid() && !a.Addr().IsUnspecified() {
		host = a.Addr().String()
		if a.Addr().Is6() {
			host = "[" + host + "]"
		}
	}
	if a.Port() != 0 {
		port = strconv.Itoa(int(a.Port()))
	}
	return host + ":" + port
}
