package service

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tund/tund/stack"
)

// Group runs services on a stack, one per port, and lets them change while
// they run: the options of a port (taken by each connection as it is
// accepted), and services started and stopped (the proxies that a test
// suite adds and removes).
type Group struct {
	ctx   context.Context // the group's life: when it ends, every service ends
	st    *stack.Stack
	drain time.Duration
	log   *slog.Logger
	fail  func(error) // an accept error that ended a service

	mu      sync.Mutex
	running map[uint16]*running
	waiting bool // Wait was called: nothing more starts
	wg      sync.WaitGroup
}

// running is one service being served.
type running struct {
	spec   Spec
	opts   atomic.Pointer[Options]
	ln     *stack.Listener
	cancel context.CancelFunc
}

// NewGroup returns an empty group whose services run on st until ctx ends.
// drain is how long a stopping service waits for its connections to close
// (Serve); fail is told of an error that ended a service.
func NewGroup(ctx context.Context, st *stack.Stack, drain time.Duration, log *slog.Logger, fail func(error)) *Group {
	return &Group{ctx: ctx, st: st, drain: drain, log: log, fail: fail, running: map[uint16]*running{}}
}

// Start listens on spec's port and serves spec there. It fails if the
// group serves the port already or the stack cannot listen on it.
func (g *Group) Start(spec Spec) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting || g.ctx.Err() != nil {
		return fmt.Errorf("port %d: tund is stopping", spec.Port)
	}
	if r, ok := g.running[spec.Port]; ok {
		return fmt.Errorf("port %d is served already (by %s)", spec.Port, r.spec.Name)
	}
	ln, err := g.st.Listen(spec.Port)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(g.ctx)
	r := &running{spec: spec, ln: ln, cancel: cancel}
	r.opts.Store(&spec.Options)
	g.running[spec.Port] = r
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := serve(ctx, ln, spec, func() Options { return *r.opts.Load() }, g.drain, g.log); err != nil {
			g.fail(err)
		}
	}()
	return nil
}

// Stop stops the service on port: it stops accepting at once, so that the
// port can be served again, and its open connections end as they do when
// tund stops (Serve). It reports whether a service ran there.
func (g *Group) Stop(port uint16) bool {
	g.mu.Lock()
	r, ok := g.running[port]
	delete(g.running, port)
	g.mu.Unlock()
	if ok {
		r.ln.Close()
		r.cancel()
	}
	return ok
}

// SetOptions changes the options of the service on port: connections
// accepted from now on take them; open ones keep theirs.
func (g *Group) SetOptions(port uint16, o Options) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r, ok := g.running[port]; ok {
		r.opts.Store(&o)
	}
}

// Specs returns the services being served, by port, with their options in
// force.
func (g *Group) Specs() []Spec {
	g.mu.Lock()
	defer g.mu.Unlock()
	specs := make([]Spec, 0, len(g.running))
	for _, r := range g.running {
		s := r.spec
		s.Options = *r.opts.Load()
		specs = append(specs, s)
	}
	slices.SortFunc(specs, func(a, b Spec) int { return int(a.Port) - int(b.Port) })
	return specs
}

// Wait waits for every service to end: after the group's context ended, or
// each was stopped. No service starts once it is called.
func (g *Group) Wait() {
	g.mu.Lock()
	g.waiting = true
	g.mu.Unlock()
	g.wg.Wait()
}
