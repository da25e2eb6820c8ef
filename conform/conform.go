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
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tund/tund/internal/rawpeer"
	"github.com/tund/tund/internal/tcpflag"
	"gvisor.dev/gvisor/pkg/tcpip/header"
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

// Seg is one segment of an exchange, as the report shows it: sequence
// and acknowledgment numbers relative to the ISN of the side that sent
// them (seq) and of the other side (ack), so that two runs compare.
type Seg struct {
	From     string        `json:"from"` // "peer" or "server"
	Flags    string        `json:"flags"`
	Seq      uint32        `json:"seq"`
	Ack      uint32        `json:"ack"`
	Len      int           `json:"len"`
	At       time.Duration `json:"at_ns"` // since the case began
	Replayed bool          `json:"replayed,omitempty"`
}

// String is the segment as the report prints it: p: or s:, the flags,
// seq/ack and the payload length.
func (s Seg) String() string {
	who := "p"
	if s.From == "server" {
		who = "s"
	}
	l := ""
	if s.Len > 0 {
		l = fmt.Sprintf("(%d)", s.Len)
	}
	return fmt.Sprintf("%s:%s %d/%d%s", who, s.Flags, s.Seq, s.Ack, l)
}

// same reports whether two segments are the same but for their timing.
func (s Seg) same(o Seg) bool {
	return s.From == o.From && s.Flags == o.Flags && s.Seq == o.Seq && s.Ack == o.Ack && s.Len == o.Len
}

// Exchange is the peer's side of one case on one target: the scripted
// connection and everything that crossed.
type Exchange struct {
	p      *rawpeer.Peer
	start  time.Time
	iss    uint32 // the peer's ISN
	irs    uint32 // the server's
	SndNxt uint32 // the peer's next sequence number
	RcvNxt uint32 // the server's next, as the peer has received it
	// Log is every segment that crossed, both ways, in order: what the
	// report shows and what two targets are compared on.
	Log []Seg
	// Kept is a packet the peer sent and kept, to send again (a FIN whose
	// ACK was "lost", an old duplicate).
	Kept []byte
	// soft is the first failure of a step that let the script go on, so
	// that the report shows all a side did.
	soft error
}

// peerISS is every case's ISN for the peer's first connection.
const peerISS = 1_000_000

func (x *Exchange) log(from string, flags header.TCPFlags, seq, ack uint32, n int) Seg {
	s := Seg{From: from, Flags: tcpflag.String(uint8(flags)), Len: n, At: time.Since(x.start)}
	if from == "peer" {
		s.Seq, s.Ack = seq-x.iss, ack-x.irs
	} else {
		s.Seq, s.Ack = seq-x.irs, ack-x.iss
	}
	if flags&header.TCPFlagAck == 0 {
		s.Ack = 0
	}
	x.Log = append(x.Log, s)
	return s
}

// SendAt sends a segment with absolute numbers.
func (x *Exchange) SendAt(flags header.TCPFlags, seq, ack uint32, payload []byte) ([]byte, error) {
	b, err := x.p.Send(flags, seq, ack, payload)
	if err == nil {
		x.log("peer", flags, seq, ack, len(payload))
	}
	return b, err
}

// Send sends a segment at SndNxt, acknowledging RcvNxt, and advances
// SndNxt past it.
func (x *Exchange) Send(flags header.TCPFlags, payload []byte) error {
	_, err := x.SendAt(flags, x.SndNxt, x.RcvNxt, payload)
	x.SndNxt += uint32(len(payload))
	if flags&(header.TCPFlagFin|header.TCPFlagSyn) != 0 {
		x.SndNxt++
	}
	return err
}

// Replay sends a packet sent before, again.
func (x *Exchange) Replay(b []byte) error {
	if err := x.p.Inject(b); err != nil {
		return err
	}
	t := header.TCP(b[header.IPv4MinimumSize:])
	x.log("peer", t.Flags(), t.SequenceNumber(), t.AckNumber(), len(b)-header.IPv4MinimumSize-int(t.DataOffset()))
	x.Log[len(x.Log)-1].Replayed = true
	return nil
}

// Recv returns the server's next segment within timeout, and moves
// RcvNxt past it when it is the next in order.
func (x *Exchange) Recv(timeout time.Duration) (rawpeer.Segment, error) {
	s, err := x.p.Next(timeout)
	if err != nil {
		return s, err
	}
	x.log("server", s.Flags, s.Seq, s.Ack, len(s.Payload))
	if s.Seq == x.RcvNxt && s.Flags&header.TCPFlagSyn == 0 {
		x.RcvNxt += uint32(len(s.Payload))
		if s.Flags&header.TCPFlagFin != 0 {
			x.RcvNxt++
		}
	}
	return s, nil
}

// Expect receives until a segment satisfies ok, and returns it; what
// comes before it is logged. what names it for the error.
func (x *Exchange) Expect(what string, timeout time.Duration, ok func(rawpeer.Segment) bool) (rawpeer.Segment, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := x.Recv(time.Until(deadline))
		if err != nil {
			return s, fmt.Errorf("want %s: %w", what, err)
		}
		if ok(s) {
			return s, nil
		}
	}
}

// Quiet receives for d and returns what came (nothing, for a peer that
// expects silence).
func (x *Exchange) Quiet(d time.Duration) ([]rawpeer.Segment, error) {
	var got []rawpeer.Segment
	deadline := time.Now().Add(d)
	for {
		s, err := x.Recv(time.Until(deadline))
		if errors.Is(err, rawpeer.ErrNoSegment) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, s)
	}
}

// Connect makes the handshake from ISN iss.
func (x *Exchange) Connect(iss uint32) error {
	x.iss, x.SndNxt = iss, iss
	if err := x.Send(header.TCPFlagSyn, nil); err != nil {
		return err
	}
	s, err := x.p.Next(3 * time.Second)
	if err != nil {
		return fmt.Errorf("no SYN-ACK: %w", err)
	}
	x.irs = s.Seq
	x.log("server", s.Flags, s.Seq, s.Ack, len(s.Payload))
	if s.Flags != header.TCPFlagSyn|header.TCPFlagAck || s.Ack != iss+1 {
		return fmt.Errorf("the SYN got %s ack %d, not a SYN-ACK", s.Flags, s.Ack)
	}
	x.RcvNxt = s.Seq + 1
	return x.Send(header.TCPFlagAck, nil)
}

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
	x := &Exchange{p: p, start: time.Now()}
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
			if !segs[j].same(linux[j]) {
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
