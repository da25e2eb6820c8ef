package scenario

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tund/tund/stack"
)

// Socket is one line of `ss -tanoH`: a kernel TCP socket.
type Socket struct {
	State string         `json:"state"` // as ss spells it: ESTAB, FIN-WAIT-2, TIME-WAIT, ...
	RecvQ int            `json:"recv_q"`
	SendQ int            `json:"send_q"`
	Local netip.AddrPort `json:"local"`
	Peer  netip.AddrPort `json:"peer"`
	// Timer is ss's timer column, e.g. "timer:(timewait,1.9sec,0)".
	Timer string `json:"timer,omitempty"`
}

// parseSS parses the output of `ss -tanH` or `ss -tanoH`. Listeners
// ("*:9000", "[::]:80") are kept with the unspecified address.
func parseSS(out string) ([]Socket, error) {
	var socks []Socket
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 5 {
			return nil, fmt.Errorf("ss line %q: want state, queues and two addresses", line)
		}
		s := Socket{State: f[0], Timer: strings.Join(f[5:], " ")}
		var err error
		if s.RecvQ, err = strconv.Atoi(f[1]); err != nil {
			return nil, fmt.Errorf("ss line %q: Recv-Q: %w", line, err)
		}
		if s.SendQ, err = strconv.Atoi(f[2]); err != nil {
			return nil, fmt.Errorf("ss line %q: Send-Q: %w", line, err)
		}
		if s.Local, err = parseSSAddr(f[3]); err != nil {
			return nil, fmt.Errorf("ss line %q: %w", line, err)
		}
		if s.Peer, err = parseSSAddr(f[4]); err != nil {
			return nil, fmt.Errorf("ss line %q: %w", line, err)
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// parseSSAddr reads ss's ADDRESS:PORT: "198.18.0.1:45904",
// "[2001:2::1]:80", "[::ffff:198.18.0.1]:80", "*:9000", "0.0.0.0:*",
// "127.0.0.1%lo:53".
func parseSSAddr(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	host, port := s[:i], s[i+1:]
	var p uint64
	if port != "*" {
		var err error
		if p, err = strconv.ParseUint(port, 10, 16); err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: port: %w", s, err)
		}
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if j := strings.IndexByte(host, '%'); j >= 0 {
		host = host[:j]
	}
	a := netip.IPv6Unspecified()
	if host != "*" {
		var err error
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
		}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// Observation is what both sides said of the scenario's connections at one
// moment: the kernel through ss, tund through its connection table.
type Observation struct {
	At     time.Time        `json:"at"`
	Label  string           `json:"label"`
	Kernel []Socket         `json:"kernel"`
	Tund   []stack.ConnInfo `json:"tund,omitempty"`
}

// KernelState returns the ss state of the kernel socket between local and
// peer in the observation, or "" if there was none.
func (o Observation) KernelState(local, peer netip.AddrPort) string {
	for _, s := range o.Kernel {
		if s.Local == local && s.Peer == peer {
			return s.State
		}
	}
	return ""
}

// ss lists the namespace's TCP sockets, listeners left out.
func (e *Env) ss() ([]Socket, error) {
	out, err := e.run("ss", "-tanoH")
	if err != nil {
		return nil, err
	}
	all, err := parseSS(out)
	if err != nil {
		return nil, err
	}
	var socks []Socket
	for _, s := range all {
		if s.State != "LISTEN" {
			socks = append(socks, s)
		}
	}
	return socks, nil
}

// kernelState returns the state of the kernel socket between local and
// peer, "" if there is none.
func (e *Env) kernelState(local, peer netip.AddrPort) (string, error) {
	socks, err := e.ss()
	if err != nil {
		return "", err
	}
	return Observation{Kernel: socks}.KernelState(local, peer), nil
}

// awaitKernel waits until ss shows the kernel socket between local and
// peer in state want ("" for gone).
func (e *Env) awaitKernel(local, peer netip.AddrPort, want string, timeout time.Duration) error {
	what := fmt.Sprintf("the kernel's socket %v-%v in %s", local, peer, want)
	if want == "" {
		what = fmt.Sprintf("the kernel's socket %v-%v gone", local, peer)
	}
	return e.await(what, timeout, func() (bool, error) {
		got, err := e.kernelState(local, peer)
		return got == want, err
	})
}

// observe records what ss and tund's table show now, keeping the sockets
// that keep accepts (nil: all), under label.
func (e *Env) observe(label string, keep func(netip.AddrPort) bool) error {
	o, err := e.snapshot(label, keep)
	if err == nil {
		e.res.Observations = append(e.res.Observations, o)
	}
	return err
}

// observeWhen takes snapshots until one satisfies cond, and records that
// one: for states that last only a few hundred milliseconds, the
// observation is then the state that was awaited.
func (e *Env) observeWhen(label string, keep func(netip.AddrPort) bool, timeout time.Duration, cond func(Observation) bool) error {
	var o Observation
	err := e.await(label, timeout, func() (bool, error) {
		var err error
		o, err = e.snapshot(label, keep)
		return err == nil && cond(o), err
	})
	if err == nil {
		e.res.Observations = append(e.res.Observations, o)
	}
	return err
}

// TundState returns the state of tund's connection with peer remote in the
// observation, or "" if there was none.
func (o Observation) TundState(remote netip.AddrPort) string {
	for _, c := range o.Tund {
		if c.Remote == remote {
			return c.State
		}
	}
	return ""
}

// snapshot reads ss and tund's table once.
func (e *Env) snapshot(label string, keep func(netip.AddrPort) bool) (Observation, error) {
	o := Observation{At: time.Now(), Label: label}
	socks, err := e.ss()
	if err != nil {
		return o, err
	}
	for _, s := range socks {
		if keep == nil || keep(s.Local) || keep(s.Peer) {
			o.Kernel = append(o.Kernel, s)
		}
	}
	conns, err := e.tundConns()
	if err != nil {
		return o, err
	}
	for _, c := range conns {
		if c.State != "LISTEN" && (keep == nil || keep(c.Remote) || keep(c.Local)) {
			o.Tund = append(o.Tund, c)
		}
	}
	return o, nil
}

// is returns a filter for observe that keeps one address.
func is(a netip.AddrPort) func(netip.AddrPort) bool {
	return func(x netip.AddrPort) bool { return x == a }
}
