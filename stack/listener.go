package stack

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// listenBacklog matches Linux's default somaxconn. gVisor answers with SYN
// cookies beyond it instead of dropping SYNs.
const listenBacklog = 4096

// Listener accepts TCP connections on the stack. Unlike gonet's listener it
// hands out *Conn, which keeps the endpoint so that the close path can be
// shaped per connection.
type Listener struct {
	st        *Stack
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	closeOnce sync.Once
	closed    chan struct{}
}

// Listen returns a listener for TCP port on every address of the stack,
// IPv4 and IPv6 alike (a dual-stack IPv6 endpoint, as Linux's [::]:port).
func (s *Stack) Listen(port uint16) (*Listener, error) {
	wq := new(waiter.Queue)
	ep, terr := s.s.NewEndpoint(tcp.ProtocolNumber, ipv6.ProtocolNumber, wq)
	if terr != nil {
		return nil, fmt.Errorf("stack: listening on port %d: %s", port, terr)
	}
	// As a server's SO_REUSEADDR: a port whose listener was closed while
	// its connections live on (a proxy removed and added again while tund
	// runs) can be listened on again at once.
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(tcpip.FullAddress{Port: port}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("stack: binding port %d: %s", port, terr)
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("stack: listening on port %d: %s", port, terr)
	}
	// Its connections' TIME-WAIT may go to the compact table; a port that
	// tund dials from never does (see package timewait).
	s.listening.Add(port)
	return &Listener{st: s, ep: ep, wq: wq, closed: make(chan struct{})}, nil
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptConn() }

// AcceptConn waits for the next connection and returns it as a *Conn.
func (l *Listener) AcceptConn() (*Conn, error) {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		ep, wq, terr := l.ep.Accept(nil)
		if terr == nil {
			if max := l.st.maxConns.Load(); max > 0 && l.st.active.Load() >= max {
				// Over the limit: reset it now rather than let it wait in
				// a queue that grows (RFC 9293 §3.10.4 abort).
				ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
				ep.Close()
				l.st.refused.Add(1)
				continue
			}
			return l.st.newConn(wq, ep), nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: errors.New(terr.String())}
		}
		select {
		case <-l.closed:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		case <-ready:
		}
	}
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.ep.Close()
	})
	return nil
}

// Addr returns the listening address ([::]:port).
func (l *Listener) Addr() net.Addr {
	a, terr := l.ep.GetLocalAddress()
	if terr != nil {
		return nil
	}
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
}
