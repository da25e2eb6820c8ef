// Package forward carries TCP connections between the kernel's TCP and
// tund's stack: --dial (a kernel listener whose connections tund dials out
// through its stack, so that kernel programs get tund's TCP as their client
// side) and the splice that joins two connections, used by --dial and by
// the proxy service, with half-close and RST carried across.
package forward

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/closes"
)

// End is one connection of a spliced pair.
type End interface {
	// Read returns io.EOF only when the peer's FIN has arrived (and
	// everything before it has been read). Any other error means the
	// connection is broken: reset by the peer, timed out, or closed by the
	// splice itself.
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	// CloseWrite sends FIN; the other direction stays open.
	CloseWrite() error
	// Close ends the connection with FIN (if not sent yet) and frees it.
	Close() error
	// Abort ends the connection with RST.
	Abort() error
}

// errReset is what a Read returns for an end whose reset another goroutine
// was told about (see Kernel and Stack).
var errReset = os.NewSyscallError("read", syscall.ECONNRESET)

// Kernel returns c, a kernel TCP socket, as an End. Abort is SO_LINGER
// with a zero timeout and Close, which sends RST.
func Kernel(c *net.TCPConn) End { return &kernelEnd{c: c} }

type kernelEnd struct {
	c        *net.TCPConn
	shutDown atomic.Bool // CloseWrite was called
}

// Read tells a FIN from a reset whose error was taken by a writer: Linux
// reports a reset (sk_err) to the first read or write that comes, once,
// and then reads return 0, as after a FIN. After a FIN, while this side
// has not sent its own, the socket is in CLOSE-WAIT; after a reset it is
// CLOSED. (Once this side has sent FIN, CLOSED is also where a graceful
// close ends, but then no writer is left to take the error.)
func (k *kernelEnd) Read(p []byte) (int, error) {
	n, err := k.c.Read(p)
	if err == io.EOF && !k.shutDown.Load() && kernelState(k.c) == tcpClose {
		return n, &net.OpError{Op: "read", Net: "tcp", Source: k.c.LocalAddr(), Addr: k.c.RemoteAddr(), Err: errReset}
	}
	return n, err
}

func (k *kernelEnd) Write(p []byte) (int, error) { return k.c.Write(p) }

func (k *kernelEnd) CloseWrite() error {
	k.shutDown.Store(true)
	return k.c.CloseWrite()
}

func (k *kernelEnd) Close() error { return k.c.Close() }

func (k *kernelEnd) Abort() error {
	k.c.SetLinger(0)
	return k.c.Close()
}

// tcpClose is TCP_CLOSE as tcpi_state gives it (include/net/tcp_states.h).
const tcpClose = 7

// kernelState returns the socket's TCP state, or 0 if it cannot be read.
func kernelState(c *net.TCPConn) uint8 {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var state uint8
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
	})
	return state
}

// Stack returns c, a connection of tund's stack, as an End.
func Stack(c *stack.Conn) End { return stackEnd{c} }

type stackEnd struct{ *stack.Conn }

// Read tells a FIN from a reset as Kernel's does: gonet, too, hands a
// reset to the first read or write only and returns io.EOF afterwards;
// the endpoint's error state tells them apart.
func (s stackEnd) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	if err == io.EOF && s.Failed() {
		return n, &net.OpError{Op: "read", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: errReset}
	}
	return n, err
}

// Policy shapes how the splice ends the first connection of a pair, a,
// whose peer is the client: the service options of the proxy.
type Policy struct {
	// HalfCloseClose: when a's peer half-closes, end both connections at
	// once instead of passing the half-close on.
	HalfCloseClose bool
	// HalfCloseAfter, when not zero: when a's peer half-closes, pass it
	// on, and end both connections if the other direction is still open
	// after this long.
	HalfCloseAfter time.Duration
	// AbortA: where the splice would send a FIN on a, it sends RST and
	// ends both connections.
	AbortA bool
	// Drain, when not zero: when ctx ends (tund is stopping), the splice
	// is left this long to end by itself, both peers' FINs carried as
	// usual, so that what either side sent before the stop still arrives;
	// then both connections are reset. Zero closes both at once.
	Drain time.Duration
	// OnHalfClose, when not nil, hears what the half-close policy does
	// when a's peer half-closes while b's direction is open, before it is
	// done: HalfCloseAllowed, HalfCloseClosed or, later, HalfCloseTimeout.
	OnHalfClose func(action string)
}

// What Policy.OnHalfClose hears; the values are the stack's
// (closes.HalfCloseAllowed...), for its counters.
const (
	HalfCloseAllowed = closes.HalfCloseAllowed
	HalfCloseClosed  = closes.HalfCloseClosed
	HalfCloseTimeout = closes.HalfCloseTimeout
)

// Result says how a splice went.
type Result struct {
	AtoB, BtoA int64 // bytes carried each way
	// End is how it ended: "fin" (both directions closed by FINs), "reset
	// by a", "reset by b", "abort" (Policy.AbortA), "half-close=close",
	// "half-close timeout", "stopped" (ctx ended) or "drain time over"
	// (ctx ended and Policy.Drain ran out).
	End string
}

// Splice carries bytes both ways between a and b until both directions
// have ended, and then closes both. What one side's peer does, the other
// side's peer sees:
//
//   - a FIN (Read's io.EOF) becomes CloseWrite on the other connection,
//     whose direction towards the peer that closed stays open: half-close
//     crosses, in either direction;
//   - a reset (any other Read error) or a failed Write aborts both: the
//     other peer gets RST. Data still queued towards it is dropped, as a
//     reset drops it.
//
// When ctx ends both are closed (a with RST under Policy.AbortA), or,
// with Policy.Drain, reset if they have not ended by themselves that much
// later; Splice returns once its goroutines have.
func Splice(ctx context.Context, a, b End, p Policy) Result {
	s := &splice{a: a, b: b, p: p}
	stop := context.AfterFunc(ctx, s.stop)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.res.AtoB = s.pump(a, b, "a", s.aEOF)
	}()
	go func() {
		defer wg.Done()
		s.res.BtoA = s.pump(b, a, "b", s.bEOF)
	}()
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res
}

type splice struct {
	a, b End
	p    Policy

	mu    sync.Mutex
	over  bool        // ended: later errors on a and b are the splice's doing
	aDone bool        // a's peer sent FIN, passed on
	bDone bool        // b's peer sent FIN, passed on
	timer *time.Timer // Policy.HalfCloseAfter
	drain *time.Timer // Policy.Drain
	res   Result
}

// stop is what the end of Splice's ctx does: close both at once, or give
// the peers Policy.Drain to finish.
func (s *splice) stop() {
	if s.p.Drain <= 0 {
		s.end("stopped", s.p.AbortA, false)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.over {
		s.drain = time.AfterFunc(s.p.Drain, func() { s.end("drain time over", true, true) })
	}
}

// pump copies src to dst until src ends. A FIN calls onEOF; a reset or a
// failed write aborts both connections.
func (s *splice) pump(src, dst End, name string, onEOF func()) int64 {
	bp := pumpBuffers.Get().(*[]byte)
	defer pumpBuffers.Put(bp)
	buf := *bp
	if _, ok := dst.(stackEnd); !ok {
		// Into a kernel socket, a read of half the buffer is copied in
		// again while it is still in the CPU's cache (BENCHMARKS.md: 1.05
		// to 1.09 times the rate into a server). Into the stack the whole
		// buffer goes: gVisor sends it as one segment that the device
		// splits (GSO).
		buf = buf[:32<<10]
	}
	var n int64
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				// dst's peer reset it (or the splice ended).
				s.end("reset by "+other(name), true, true)
				return n
			}
			n += int64(m)
		}
		switch {
		case err == io.EOF:
			onEOF()
			return n
		case err != nil:
			s.end("reset by "+name, true, true)
			return n
		}
	}
}

// pumpBuffers holds the pumps' read buffers. A buffer of its own for each
// direction of each pair, 128 KB a connection, was most of what a proxy
// allocated per connection: with a new connection per request, the
// collector took a tenth of tund's CPU.
var pumpBuffers = sync.Pool{New: func() any {
	b := make([]byte, 64<<10)
	return &b
}}

func other(name string) string {
	if name == "a" {
		return "b"
	}
	return "a"
}

// aEOF: a's peer half-closed. The half-close policy applies.
func (s *splice) aEOF() {
	s.mu.Lock()
	if s.over {
		s.mu.Unlock()
		return
	}
	s.aDone = true
	both := s.bDone
	if !both && s.p.HalfCloseClose {
		s.mu.Unlock()
		s.note(HalfCloseClosed)
		s.end("half-close=close", s.p.AbortA, false)
		return
	}
	if !both && s.p.HalfCloseAfter > 0 {
		s.timer = time.AfterFunc(s.p.HalfCloseAfter, s.halfOpenTimeout)
	}
	s.mu.Unlock()
	if !both && s.p.HalfCloseAfter == 0 {
		s.note(HalfCloseAllowed)
	}
	if err := s.b.CloseWrite(); err != nil {
		s.end("reset by b", true, true)
		return
	}
	if both {
		s.end("fin", false, false)
	}
}

// halfOpenTimeout ends the pair when a's peer has been half-closed for
// Policy.HalfCloseAfter, unless it ended meanwhile.
func (s *splice) halfOpenTimeout() {
	s.mu.Lock()
	over := s.over
	s.mu.Unlock()
	if !over {
		s.note(HalfCloseTimeout)
		s.end("half-close timeout", s.p.AbortA, false)
	}
}

func (s *splice) note(action string) {
	if s.p.OnHalfClose != nil {
		s.p.OnHalfClose(action)
	}
}

// bEOF: b's peer half-closed.
func (s *splice) bEOF() {
	s.mu.Lock()
	if s.over {
		s.mu.Unlock()
		return
	}
	s.bDone = true
	both := s.aDone
	s.mu.Unlock()
	if s.p.AbortA {
		s.end("abort", true, false)
		return
	}
	if err := s.a.CloseWrite(); err != nil {
		s.end("reset by a", true, true)
		return
	}
	if both {
		s.end("fin", false, false)
	}
}

// end ends both connections, the first time it is called: each with RST
// (resetA, resetB) or with FIN.
func (s *splice) end(how string, resetA, resetB bool) {
	s.mu.Lock()
	if s.over {
		s.mu.Unlock()
		return
	}
	s.over = true
	s.res.End = how
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.drain != nil {
		s.drain.Stop()
	}
	s.mu.Unlock()
	for _, c := range []struct {
		e     End
		reset bool
	}{{s.a, resetA}, {s.b, resetB}} {
		if c.reset {
			c.e.Abort()
		} else {
			c.e.Close()
		}
	}
}
