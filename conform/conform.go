// Package conform plays close-path cases against the Linux kernel and
// against tund, segment by segment, in one run (`tund conform`): a scripted
// peer (package rawpeer) writes each case's segments from an address no
// kernel owns, into tund's TUN device on one side and into a veth pair to a
// namespace of the kernel's on the other, while the same application (the
// case's server, on kernel sockets and on tund's stack) answers. Each case
// checks the rule it is about (RFC 9293, RFC 5961, RFC 1337, Linux's
// choices) on both sides, and the report shows what each side sent, with
// DIFF where tund's segments differ from Linux's.
//
// This is what gVisor's packetimpact does for netstack against Linux, for a
// stack behind a TUN device.
package conform

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/tund/tund/internal/rawpeer"
)

// Conn is what a case's server does with a connection: the calls an
// application makes on a socket, on kernel sockets and on tund's stack
// alike.
type Conn interface {
	net.Conn
	CloseWrite() error // shutdown(SHUT_WR)
	CloseRead() error  // shutdown(SHUT_RD)
	Abort() error      // SO_LINGER 0 and close: RST
}

// kernelConn adds Abort to a kernel socket.
type kernelConn struct{ *net.TCPConn }

func (k kernelConn) Abort() error {
	k.SetLinger(0)
	return k.Close()
}

// asConn returns nc, an accepted kernel or tund connection, as a Conn.
func asConn(nc net.Conn) Conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		return kernelConn{tc}
	}
	return nc.(Conn)
}

// Case is one close-path case.
type Case struct {
	Name  string
	Title string // what the peer does, and the source of the case
	Rule  string // what must hold on every side, and why
	Port  uint16 // the server's port, of this case alone
	// Server is the application's side of each connection.
	Server func(c Conn)
	// Play is the peer's script. It fails the case with an error saying
	// which part of the rule did not hold.
	Play func(x *Exchange) error
}

// Seg is a segment of an exchange, as the report shows it (see
// rawpeer.Seg).
type Seg = rawpeer.Seg

// Exchange is the peer's side of one case on one target: the scripted
// connection (rawpeer.Exchange), a packet kept to send again, and the
// failure of a soft step.
type Exchange struct {
	*rawpeer.Exchange
	// Kept is a packet the peer sent and kept, to send again (a FIN whose
	// ACK was "lost", an old duplicate).
	Kept []byte
	// soft is the first failure of a step that let the script go on, so
	// that the report shows all a side did.
	soft error
}

// peerISS is every case's ISN for the peer's first connection.
const peerISS = 1_000_000

// Side is how one case went on one target.
type Side struct {
	Target string `json:"target"`
	Segs   []Seg  `json:"segments"`
	Err    string `json:"error,omitempty"` // the rule did not hold
	// Diff: tund's segments differ from Linux's (flags, sequence and
	// acknowledgment numbers, lengths; not timing).
	Diff bool `json:"diff,omitempty"`
	// Known is the documented reason for a rule tund does not keep, when
	// Linux does.
	Known string `json:"known_difference,omitempty"`
	// Why is the documented reason for a Diff in a case whose rule both
	// keep.
	Why string `json:"why,omitempty"`
}

// Pass reports whether the rule held.
func (s Side) Pass() bool { return s.Err == "" }

// CaseResult is one case on every target, Linux first.
type CaseResult struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	Rule  string `json:"rule"`
	Sides []Side `json:"sides"`
}

// Result is a whole run.
type Result struct {
	Targets []string     `json:"targets"`
	Cases   []CaseResult `json:"cases"`
}

// Failures returns what makes a run fail: a rule tund broke where Linux
// kept it, or segments that differ from Linux's, with no documented reason
// for either; and Linux breaking a rule it is not documented to break (or
// keeping one it is), which means the peer, a case or the setup is wrong.
func (r *Result) Failures() []string {
	var out []string
	for _, c := range r.Cases {
		if len(c.Sides) == 0 {
			continue
		}
		linux := c.Sides[0]
		if linux.Pass() == LinuxBreaks(c.Name) {
			out = append(out, fmt.Sprintf("%s on linux: kept the rule %v, documented %v (%s)", c.Name, linux.Pass(), !LinuxBreaks(c.Name), linux.Err))
		}
		for _, s := range c.Sides[1:] {
			switch {
			case !s.Pass() && linux.Pass() && s.Known == "":
				out = append(out, c.Name+" on "+s.Target+": "+s.Err)
			case s.Pass() && s.Diff && s.Why == "":
				out = append(out, c.Name+" on "+s.Target+": other segments than Linux's: "+segsString(s.Segs)+" against "+segsString(linux.Segs))
			}
		}
	}
	return out
}

// Options are what a run compares.
type Options struct {
	// Tunds are tund's configurations to hold to Linux.
	Tunds []TundConfig
	// Cases names the cases to run; empty runs all.
	Cases []string
}

// Run plays the cases on the Linux kernel and on each of tund's
// configurations. Everything it makes is removed before it returns.
func Run(ctx context.Context, o Options) (*Result, error) {
	cases, err := selectCases(o.Cases)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var targets []*target
	defer func() {
		cancel() // stops the servers' accept loops first
		for _, t := range targets {
			t.close()
		}
	}()
	lt, err := linuxTarget()
	if err != nil {
		return nil, fmt.Errorf("the Linux side: %w", err)
	}
	targets = append(targets, lt)
	for _, c := range o.Tunds {
		t, err := tundTarget(c)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	res := &Result{}
	for _, t := range targets {
		res.Targets = append(res.Targets, t.Name)
		if err := t.serve(ctx, cases); err != nil {
			return nil, err
		}
	}
	for i, c := range cases {
		cr := CaseResult{Name: c.Name, Title: c.Title, Rule: c.Rule}
		for _, t := range targets {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			cr.Sides = append(cr.Sides, play(t, c, uint16(40000+i)))
		}
		markDiffs(&cr)
		res.Cases = append(res.Cases, cr)
	}
	return res, nil
}

// play runs one case on one target.
func play(t *target, c *Case, peerPort uint16) Side {
	side := Side{Target: t.Name}
	p, err := t.open(c.Port, peerPort)
	if err != nil {
		side.Err = err.Error()
		return side
	}
	defer p.Close()
	x := &Exchange{Exchange: rawpeer.NewExchange(p)}
	if err := c.Play(x); err != nil {
		side.Err = err.Error()
	}
	side.Segs = x.Log
	switch {
	case side.Pass():
	case t.Name == "linux":
		side.Known = linuxBreaks[c.Name]
	default:
		side.Known = known(c.Name, side)
	}
	return side
}

// markDiffs marks each of tund's sides whose segments differ from Linux's.
func markDiffs(cr *CaseResult) {
	linux := cr.Sides[0].Segs
	for i := 1; i < len(cr.Sides); i++ {
		segs := cr.Sides[i].Segs
		if len(segs) != len(linux) {
			cr.Sides[i].Diff = true
			continue
		}
		for j := range segs {
			if !segs[j].Same(linux[j]) {
				cr.Sides[i].Diff = true
				break
			}
		}
	}
	for i := 1; i < len(cr.Sides); i++ {
		if s := &cr.Sides[i]; s.Diff && s.Known == "" {
			s.Why = whyDiff(cr.Name, linux, s.Segs)
		}
	}
}

func selectCases(names []string) ([]*Case, error) {
	all := Cases()
	if len(names) == 0 {
		return all, nil
	}
	var out []*Case
	for _, n := range names {
		found := false
		for _, c := range all {
			if c.Name == n {
				out, found = append(out, c), true
			}
		}
		if !found {
			var have []string
			for _, c := range all {
				have = append(have, c.Name)
			}
			return nil, fmt.Errorf("no case %q (cases: %s)", n, strings.Join(have, ", "))
		}
	}
	return out, nil
}
