// Package control changes tund's close-path settings while it runs: the
// knobs that its flags set, stack-wide and per port, and the proxies. A
// change is checked whole before any of it applies, is logged knob by knob
// (old value, new value) and counted, and raises the settings' generation,
// which /metrics shows so that a test can wait on it. The admin server
// exposes the Controller over HTTP (package admin); the client package
// drives it from a test suite.
package control

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tund/tund/forward"
	"github.com/tund/tund/service"
	"github.com/tund/tund/stack"
)

// Errors that say why a change was refused, beside *FieldError (bad input).
var (
	// ErrNoService: no service is served on the port named.
	ErrNoService = errors.New("no service on this port")
	// ErrPortTaken: a proxy was to be added on a port that is served
	// already.
	ErrPortTaken = errors.New("port served already")
)

// FieldError is a change refused for one of its fields: a knob (by name),
// "port" or "target".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Controller holds the settings in force and applies changes to them.
type Controller struct {
	st    *stack.Stack
	group *service.Group
	base  stack.Config // what New was given: the fields that cannot change
	log   *slog.Logger

	mu    sync.Mutex // one change at a time
	start state      // as the flags set it, for Reset
	cur   state
	admin netip.AddrPort // no proxy may reach it (ForbidTarget)

	generation atomic.Uint64
	changesMu  sync.Mutex
	changes    map[string]uint64 // by knob ("proxy" for proxies added or removed)
}

// state is a whole set of settings: every knob's stack-wide value, and the
// services by port with the knobs each overrides. Values are normalized
// text (Knob.get's), so that equal settings compare equal.
type state struct {
	stack map[string]string
	ports map[uint16]port
}

// port is one served port: its service (spec's Options are not used: they
// follow from the state) and the knobs it overrides.
type port struct {
	spec      service.Spec
	overrides map[string]string
}

func (s state) clone() state {
	c := state{stack: maps.Clone(s.stack), ports: make(map[uint16]port, len(s.ports))}
	for n, p := range s.ports {
		p.overrides = maps.Clone(p.overrides)
		c.ports[n] = p
	}
	return c
}

// New returns a controller of st whose services run in group. c and
// defaults are the stack's config and the services' default options as
// tund's flags set them, specs the services with the options each set
// itself (Spec.Own). Start serves them.
func New(st *stack.Stack, group *service.Group, c stack.Config, defaults service.Options, specs []service.Spec, log *slog.Logger) (*Controller, error) {
	ctl := &Controller{st: st, group: group, base: c, log: log, changes: map[string]uint64{}}
	s := state{stack: map[string]string{}, ports: map[uint16]port{}}
	for _, k := range Knobs {
		s.stack[k.Name] = k.get(&c, &defaults)
	}
	for _, spec := range specs {
		p := port{spec: spec, overrides: map[string]string{}}
		for name, v := range spec.Own {
			if _, ok := knob(name); !ok {
				return nil, fmt.Errorf("service %s: option %s is not a setting", spec, name)
			}
			nv, err := ctl.normalize(s, spec, name, v)
			if err != nil {
				return nil, err
			}
			p.overrides[name] = nv
		}
		s.ports[spec.Port] = p
	}
	if _, _, err := ctl.build(s); err != nil {
		return nil, err
	}
	ctl.start = s
	ctl.cur = state{stack: s.stack, ports: map[uint16]port{}}
	return ctl, nil
}

// Start serves the services as the flags set them.
func (ctl *Controller) Start() error {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return ctl.applyLocked(ctl.start.clone(), false)
}

// change runs edit on a copy of the settings in force and applies the
// result, whole or not at all; it returns the settings then in force.
func (ctl *Controller) change(edit func(next state) error) (Settings, error) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	next := ctl.cur.clone()
	if err := edit(next); err != nil {
		return Settings{}, err
	}
	if err := ctl.applyLocked(next, true); err != nil {
		return Settings{}, err
	}
	return ctl.settingsLocked(), nil
}

// Set changes knobs stack-wide (port 0) or for one served port, whole or
// not at all.
func (ctl *Controller) Set(portNum uint16, knobs map[string]string) (Settings, error) {
	return ctl.change(func(next state) error {
		if portNum == 0 {
			for _, name := range slices.Sorted(maps.Keys(knobs)) {
				v, err := ctl.normalizeStack(name, knobs[name])
				if err != nil {
					return err
				}
				next.stack[name] = v
			}
			return nil
		}
		p, err := served(next, portNum)
		if err != nil {
			return err
		}
		for _, name := range slices.Sorted(maps.Keys(knobs)) {
			v, err := ctl.normalize(next, p.spec, name, knobs[name])
			if err != nil {
				return err
			}
			p.overrides[name] = v
		}
		return nil
	})
}

func served(s state, portNum uint16) (port, error) {
	p, ok := s.ports[portNum]
	if !ok {
		return p, &FieldError{Field: "port", Err: fmt.Errorf("%d: %w", portNum, ErrNoService)}
	}
	return p, nil
}

// normalizeStack checks one knob's stack-wide value and returns it as
// Knob.get spells it.
func (ctl *Controller) normalizeStack(name, v string) (string, error) {
	return ctl.normalizeIn(StackWide, name, v)
}

// normalizeIn checks that the knob name can be set in scope to v, and
// returns v as Knob.get spells it.
func (ctl *Controller) normalizeIn(scope Scope, name, v string) (string, error) {
	k, ok := knob(name)
	switch {
	case !ok:
		return "", fieldErrorf(name, "no such setting (known: %s)", knownNames(scope))
	case k.Scope&scope == 0 && scope == StackWide:
		return "", fieldErrorf(name, "can be set for one port only (/settings/ports/PORT): %s", k.Why)
	case k.Scope&scope == 0:
		return "", fieldErrorf(name, "can be set stack-wide only (/settings): %s", k.Why)
	case v == "":
		return "", fieldErrorf(name, "no value")
	}
	c, d := ctl.base, service.Options{}
	if err := k.set(&c, &d, v); err != nil {
		return "", &FieldError{Field: name, Err: err}
	}
	return k.get(&c, &d), nil
}

// normalize checks one knob's value for a port of spec's service and
// returns it as Knob.get spells it.
func (ctl *Controller) normalize(s state, spec service.Spec, name, v string) (string, error) {
	v, err := ctl.normalizeIn(PerPort, name, v)
	if err != nil {
		return "", err
	}
	// The service's own rules (close-delay for echo and discard only, http
	// owning its close, fin-wait2 within gVisor's bound).
	if _, err := service.OptionsFor(spec.Name, name+"="+v, ctl.defaults(s.stack)); err != nil {
		return "", &FieldError{Field: name, Err: err}
	}
	return v, nil
}

// ClearPort sets the port's knobs back to the stack-wide values.
func (ctl *Controller) ClearPort(portNum uint16) (Settings, error) {
	return ctl.change(func(next state) error {
		p, err := served(next, portNum)
		if err != nil {
			return err
		}
		clear(p.overrides)
		return nil
	})
}

// Reset sets everything back to what the flags set: knobs, ports and
// proxies.
func (ctl *Controller) Reset() (Settings, error) {
	return ctl.change(func(next state) error {
		start := ctl.start.clone()
		maps.Copy(next.stack, start.stack)
		clear(next.ports)
		maps.Copy(next.ports, start.ports)
		return nil
	})
}

// AddProxy starts a proxy on portNum to target, with the knobs it
// overrides.
func (ctl *Controller) AddProxy(portNum uint16, target string, knobs map[string]string) (Settings, error) {
	return ctl.change(func(next state) error {
		if portNum == 0 {
			return fieldErrorf("port", "want a port in [1, 65535]")
		}
		if p, ok := next.ports[portNum]; ok {
			return &FieldError{Field: "port", Err: fmt.Errorf("%d: %w (by %s)", portNum, ErrPortTaken, p.spec.Name)}
		}
		t, err := forward.ParseTarget(target)
		if err != nil {
			return &FieldError{Field: "target", Err: err}
		}
		if err := CheckTarget(t, ctl.admin); err != nil {
			return &FieldError{Field: "target", Err: err}
		}
		p := port{spec: service.Spec{Name: "proxy", Port: portNum, Target: t}, overrides: map[string]string{}}
		for _, name := range slices.Sorted(maps.Keys(knobs)) {
			v, err := ctl.normalize(next, p.spec, name, knobs[name])
			if err != nil {
				return err
			}
			p.overrides[name] = v
		}
		next.ports[portNum] = p
		return nil
	})
}

// RemoveProxy stops the proxy on portNum: it stops accepting, and its
// open pairs end as when tund stops (by their peers' FINs, within
// --drain).
func (ctl *Controller) RemoveProxy(portNum uint16) (Settings, error) {
	return ctl.change(func(next state) error {
		if p, ok := next.ports[portNum]; !ok || p.spec.Name != "proxy" {
			return &FieldError{Field: "port", Err: fmt.Errorf("%d: no proxy on this port: %w", portNum, ErrNoService)}
		}
		delete(next.ports, portNum)
		return nil
	})
}

// ForbidTarget makes proxies to admin refused: a proxy to tund's own admin
// server would open it to the TUN side. An unspecified address (0.0.0.0)
// forbids its port at every address.
func (ctl *Controller) ForbidTarget(admin netip.AddrPort) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	ctl.admin = admin
}

// CheckTarget refuses a proxy target that reaches the admin server at
// admin: the proxy would carry the TUN side's connections to it.
func CheckTarget(t, admin netip.AddrPort) error {
	if !admin.IsValid() || t.Port() != admin.Port() {
		return nil
	}
	a, ta := admin.Addr().Unmap(), t.Addr().Unmap()
	if a.IsUnspecified() || a == ta || a.IsLoopback() && ta.IsLoopback() {
		return fmt.Errorf("%v is tund's admin server, which is never reachable through the TUN device", t)
	}
	return nil
}

// defaults are the services' options that the stack-wide knobs set.
func (ctl *Controller) defaults(stackKnobs map[string]string) service.Options {
	c, d := ctl.base, service.Options{}
	for _, k := range Knobs {
		k.set(&c, &d, stackKnobs[k.Name]) // normalized: cannot fail
	}
	d.Faults = c.Faults
	return d
}

// build turns a state into the stack's config and each port's service
// options, checking them.
func (ctl *Controller) build(s state) (stack.Config, []service.Spec, error) {
	c, d := ctl.base, service.Options{}
	for _, k := range Knobs {
		if err := k.set(&c, &d, s.stack[k.Name]); err != nil {
			return c, nil, &FieldError{Field: k.Name, Err: err}
		}
	}
	d.Faults = c.Faults
	c.PortFaults, c.PortFINACKMerge = nil, nil
	var specs []service.Spec
	for _, n := range slices.Sorted(maps.Keys(s.ports)) {
		p := s.ports[n]
		var text []string
		for _, name := range slices.Sorted(maps.Keys(p.overrides)) {
			text = append(text, name+"="+p.overrides[name])
		}
		opts, err := service.OptionsFor(p.spec.Name, strings.Join(text, "/"), d)
		if err != nil {
			return c, nil, fieldErrorf("port", "%d: %v", n, err)
		}
		spec := p.spec
		spec.Options = opts
		specs = append(specs, spec)
	}
	service.Configure(&c, specs)
	if err := c.Validate(); err != nil {
		field, _, _ := strings.Cut(err.Error(), " ")
		return c, nil, &FieldError{Field: field, Err: err}
	}
	return c, specs, nil
}

// applyLocked makes next the state in force: services stopped and started
// where the ports differ, then the stack and the services' options. If a
// service cannot start, the services stopped for the change start again as
// they were, and nothing else changes; a port that cannot be served again
// leaves the settings in force, as it no longer is.
func (ctl *Controller) applyLocked(next state, logChanges bool) error {
	c, specs, err := ctl.build(next)
	if err != nil {
		return err
	}
	_, curSpecs, err := ctl.build(ctl.cur)
	if err != nil {
		return err // what is in force was built before: not expected
	}
	same := func(a, b service.Spec) bool { return a.Name == b.Name && a.Target == b.Target }
	var stopped, started []service.Spec
	for _, spec := range curSpecs {
		if q, ok := next.ports[spec.Port]; !ok || !same(q.spec, spec) {
			ctl.group.Stop(spec.Port)
			stopped = append(stopped, spec)
		}
	}
	for _, spec := range specs {
		if p, ok := ctl.cur.ports[spec.Port]; ok && same(p.spec, spec) {
			continue
		}
		if err := ctl.group.Start(spec); err != nil {
			for _, s := range started {
				ctl.group.Stop(s.Port)
			}
			for _, s := range stopped {
				if rerr := ctl.group.Start(s); rerr != nil {
					ctl.log.Error("a service stopped for a change that failed cannot start again: it is gone", "service", s.String(), "err", rerr)
					delete(ctl.cur.ports, s.Port)
				}
			}
			return &FieldError{Field: "port", Err: fmt.Errorf("%d: %w: %v", spec.Port, ErrPortTaken, err)}
		}
		started = append(started, spec)
	}
	if err := ctl.st.Tune(c); err != nil {
		return err // build checked c with the same Validate: not expected
	}
	for _, spec := range specs {
		ctl.group.SetOptions(spec.Port, spec.Options)
	}
	prev := ctl.cur
	ctl.cur = next
	if logChanges {
		ctl.logChanges(prev, next, started, stopped)
	}
	return nil
}

// logChanges logs and counts what changed from prev to next, and raises
// the generation.
func (ctl *Controller) logChanges(prev, next state, started, stopped []service.Spec) {
	gen := ctl.generation.Add(1)
	count := func(name string) {
		ctl.changesMu.Lock()
		ctl.changes[name]++
		ctl.changesMu.Unlock()
	}
	for _, k := range Knobs {
		if old, v := prev.stack[k.Name], next.stack[k.Name]; old != v {
			ctl.log.Info("setting changed", "knob", k.Name, "scope", "stack", "old", old, "new", v, "generation", gen)
			count(k.Name)
		}
	}
	for _, s := range stopped {
		ctl.log.Info("service stopped", "service", s.Name, "port", s.Port, "target", targetText(s.Target), "generation", gen)
		count(s.Name)
	}
	for _, s := range started {
		ctl.log.Info("service started", "service", s.Name, "port", s.Port, "target", targetText(s.Target), "generation", gen)
		count(s.Name)
	}
	for _, n := range slices.Sorted(maps.Keys(next.ports)) {
		q := next.ports[n]
		p, ok := prev.ports[n]
		if !ok {
			p = port{overrides: map[string]string{}}
		}
		for _, k := range Knobs {
			old, had := p.overrides[k.Name]
			v, has := q.overrides[k.Name]
			if old == v && had == has {
				continue
			}
			if !had {
				old = "(stack-wide " + next.stack[k.Name] + ")"
			}
			if !has {
				v = "(stack-wide " + next.stack[k.Name] + ")"
			}
			ctl.log.Info("setting changed", "knob", k.Name, "scope", "port", "port", n, "old", old, "new", v, "generation", gen)
			count(k.Name)
		}
	}
}

func targetText(t netip.AddrPort) string {
	if !t.IsValid() {
		return ""
	}
	return t.String()
}

// Generation counts the changes applied since tund started: each
// successful request raises it by one.
func (ctl *Controller) Generation() uint64 { return ctl.generation.Load() }

// Changes returns how many times each knob changed, stack-wide or for a
// port, and how many services ("proxy", ...) started or stopped.
func (ctl *Controller) Changes() map[string]uint64 {
	ctl.changesMu.Lock()
	defer ctl.changesMu.Unlock()
	return maps.Clone(ctl.changes)
}

// Settings is the settings in force, as GET /settings shows them.
type Settings struct {
	Generation uint64            `json:"generation"`
	Stack      map[string]string `json:"stack"`
	Ports      []PortSettings    `json:"ports"`
}

// PortSettings is one served port's settings.
type PortSettings struct {
	Port    uint16 `json:"port"`
	Service string `json:"service"`
	Target  string `json:"target,omitempty"`
	// Overrides are the knobs set for the port; Settings every per-port
	// knob in force on it that its service takes (http leaves its close to
	// net/http: only fin-ack-merge and the faults, which act in the stack,
	// apply to it; close-delay is echo's and discard's).
	Overrides map[string]string `json:"overrides"`
	Settings  map[string]string `json:"settings"`
}

// Settings returns the settings in force.
func (ctl *Controller) Settings() Settings {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return ctl.settingsLocked()
}

func (ctl *Controller) settingsLocked() Settings {
	s := Settings{Generation: ctl.Generation(), Stack: map[string]string{}, Ports: []PortSettings{}}
	for _, k := range Knobs {
		if k.Scope&StackWide != 0 {
			s.Stack[k.Name] = ctl.cur.stack[k.Name]
		}
	}
	for _, n := range slices.Sorted(maps.Keys(ctl.cur.ports)) {
		p := ctl.cur.ports[n]
		ps := PortSettings{Port: n, Service: p.spec.Name, Target: targetText(p.spec.Target), Overrides: maps.Clone(p.overrides), Settings: map[string]string{}}
		for _, k := range Knobs {
			if k.Scope&PerPort == 0 || !service.Takes(p.spec.Name, k.Name) {
				continue
			}
			v, ok := p.overrides[k.Name]
			if !ok {
				v = ctl.cur.stack[k.Name]
			}
			ps.Settings[k.Name] = v
		}
		s.Ports = append(s.Ports, ps)
	}
	return s
}
