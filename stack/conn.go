package stack

import (
	"fmt"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/internal/wire"
)

// Conn is a TCP connection on the stack. Besides net.Conn and half-close
// (CloseWrite, CloseRead) it gives access to the endpoint's close path.
type Conn struct {
	*gonet.TCPConn
	ep     tcpip.Endpoint
	st     *Stack
	closed atomic.Bool
}

// newConn wraps a connected endpoint.
func (s *Stack) newConn(wq *waiter.Queue, ep tcpip.Endpoint) *Conn {
	s.active.Add(1)
	return &Conn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, st: s}
}

// Close closes the connection: FIN, after the data written so far (RST if
// data that arrived was not read, as in Linux).
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.st.active.Add(-1)
	}
	return c.TCPConn.Close()
}

// NoteHalfClose records what the service's half-close policy did after the
// peer half-closed: it is counted, and a close that the policy makes
// (closes.HalfCloseClosed, closes.HalfCloseTimeout; call it before
// closing) is recorded as closes.KindHalfClosePolicy.
func (c *Conn) NoteHalfClose(action string) {
	c.st.closes.CountHalfClose(action)
	if action == closes.HalfCloseAllowed || c.st.tracer == nil {
		return
	}
	local, lerr := c.ep.GetLocalAddress()
	remote, rerr := c.ep.GetRemoteAddress()
	if lerr != nil || rerr != nil {
		return
	}
	c.st.tracer.MarkPolicy(wire.FlowOf(addrPort(local.Addr, local.Port), addrPort(remote.Addr, remote.Port)))
}

// Abort ends the connection with RST instead of FIN (an abortive close,
// RFC 9293 §3.10.4, SO_LINGER with a zero timeout): unsent data is dropped
// and no TIME-WAIT follows.
func (c *Conn) Abort() error {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	return c.Close()
}

// SetFinWait2 sets how long this connection, once closed by tund, waits in
// FIN-WAIT-2 for the peer's FIN (TCP_LINGER2). gVisor caps it at 120 s.
func (c *Conn) SetFinWait2(d time.Duration) error {
	opt := tcpip.TCPLingerTimeoutOption(d)
	if terr := c.ep.SetSockOpt(&opt); terr != nil {
		return fmt.Errorf("stack: setting the FIN-WAIT-2 timeout to %v: %s", d, terr)
	}
	return nil
}
