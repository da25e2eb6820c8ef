package service

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/link/faults"
)

// HalfClose is what a service does when the peer half-closes: sends its FIN
// while the service still has data to send (RFC 9293 §3.6: the other
// direction stays open until the service closes it).
type HalfClose struct {
	// Close ends the connection at once when the peer's FIN arrives.
	Close bool
	// After, when not zero, keeps the connection half-open at most this
	// long, then closes it.
	After time.Duration
}

// ParseHalfClose parses "allow", "close" or a duration such as "1s".
func ParseHalfClose(s string) (HalfClose, error) {
	switch s {
	case "allow":
		return HalfClose{}, nil
	case "close":
		return HalfClose{Close: true}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return HalfClose{}, fmt.Errorf("half-close %q: want allow, close or a positive duration such as 1s", s)
	}
	return HalfClose{After: d}, nil
}

func (h HalfClose) String() string {
	switch {
	case h.Close:
		return "close"
	case h.After > 0:
		return h.After.String()
	}
	return "allow"
}

// Options shape how a service ends its connections.
type Options struct {
	// HalfClose is the policy when the peer half-closes.
	HalfClose HalfClose
	// Abort ends every connection with RST instead of FIN.
	Abort bool
	// FinWait2, when not zero, overrides the stack's FIN-WAIT-2 timeout for
	// the service's connections.
	FinWait2 time.Duration
	// FINACKMerge, when not nil, overrides the stack's FIN/ACK merge
	// window for the service's port.
	FINACKMerge *time.Duration
	// CloseDelay keeps echo and discard in CLOSE-WAIT this long after the
	// peer's FIN before they close: a slow application, as the peer sees
	// it from FIN-WAIT-2.
	CloseDelay time.Duration
	// Faults are the close-path faults injected on the service's port
	// (faults.Set); they start as the stack-wide ones.
	Faults faults.Set
}

func (o Options) String() string {
	var parts []string
	parts = append(parts, "half-close="+o.HalfClose.String())
	if o.Abort {
		parts = append(parts, "abort")
	}
	if o.FinWait2 > 0 {
		parts = append(parts, "fin-wait2="+o.FinWait2.String())
	}
	if o.FINACKMerge != nil {
		parts = append(parts, "fin-ack-merge="+o.FINACKMerge.String())
	}
	if !o.Faults.IsZero() {
		parts = append(parts, o.Faults.String())
	}
	if o.CloseDelay > 0 {
		parts = append(parts, "close-delay="+o.CloseDelay.String())
	}
	return strings.Join(parts, "/")
}

// conn is a connection being served with its close-path options.
type conn struct {
	*stack.Conn
	opts Options

	mu       sync.Mutex
	timer    *time.Timer
	finished bool // closed by finish: a read's EOF is then our own doing
	stopping bool // tund is stopping: finish drains before it closes
}

// shutdown starts a graceful end while tund stops: tund's FIN goes out
// after everything written so far, and the handler's reads and writes end
// by the deadline at the latest.
func (c *conn) shutdown(deadline time.Time) {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.SetDeadline(deadline)
	c.CloseWrite()
}

// peerClosed applies the half-close policy; a service calls it when a read
// returns io.EOF, i.e. when the peer's FIN has arrived (or, ignored here,
// when finish closed the connection under the reader). It reports whether
// it closed the connection.
func (c *conn) peerClosed() bool {
	c.mu.Lock()
	finished := c.finished
	c.mu.Unlock()
	if finished {
		return false
	}
	switch {
	case c.opts.HalfClose.Close:
		c.NoteHalfClose(closes.HalfCloseClosed)
		c.finish()
		return true
	case c.opts.HalfClose.After > 0:
		c.mu.Lock()
		if c.timer == nil && !c.finished {
			c.timer = time.AfterFunc(c.opts.HalfClose.After, c.halfOpenTimeout)
		}
		c.mu.Unlock()
	default:
		c.NoteHalfClose(closes.HalfCloseAllowed)
	}
	return false
}

// halfOpenTimeout ends a connection whose peer half-closed longer ago than
// the policy allows, unless the service ended it first.
func (c *conn) halfOpenTimeout() {
	c.mu.Lock()
	finished := c.finished
	c.mu.Unlock()
	if !finished {
		c.NoteHalfClose(closes.HalfCloseTimeout)
		c.finish()
	}
}

// afterEOF waits out the close delay, if any, once the peer's FIN has
// arrived; ctx ending (tund stopping) cuts it short.
func (c *conn) afterEOF(ctx context.Context) {
	if c.opts.CloseDelay <= 0 {
		return
	}
	t := time.NewTimer(c.opts.CloseDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// finish ends the connection the way the options say: FIN, or RST.
func (c *conn) finish() {
	c.mu.Lock()
	c.finished = true
	if c.timer != nil {
		c.timer.Stop()
	}
	stopping := c.stopping
	c.mu.Unlock()
	if c.opts.Abort {
		c.Abort()
		return
	}
	if stopping {
		// Closing with unread data would send RST (RFC 9293 §3.10.4, as
		// Linux): read and drop until the peer's FIN or the deadline.
		io.Copy(io.Discard, c.Conn)
	}
	c.Close()
}
