package stack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DialTCP opens a TCP connection from the stack to remote, out through the
// TUN link: tund is the client, the kernel (or whatever it routes to) the
// server. The source is the stack's address of remote's family and an
// ephemeral port. It returns once the handshake is complete, fails when it
// fails (the peer's RST is syscall.ECONNREFUSED, as for a kernel socket),
// and gives up when ctx ends.
//
// The connection is a *Conn like an accepted one: the same close path,
// Abort and SetFinWait2.
func (s *Stack) DialTCP(ctx context.Context, remote netip.AddrPort) (*Conn, error) {
	a := remote.Addr().Unmap()
	if !a.IsValid() || remote.Port() == 0 {
		return nil, fmt.Errorf("stack: dialing %v: want an address and a port", remote)
	}
	remote = netip.AddrPortFrom(a, remote.Port())
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(remote), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	wq := new(waiter.Queue)
	ep, terr := s.s.NewEndpoint(tcp.ProtocolNumber, protocolOf(a), wq)
	if terr != nil {
		return nil, opErr(fmt.Errorf("creating the endpoint: %s", terr))
	}
	// A connect that completes or fails makes the endpoint writable (and,
	// on failure, readable with an error).
	entry, ready := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: remote.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-ready:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(connectError(terr))
	}
	return s.newConn(wq, ep), nil
}

// connectError turns a failed connect into the error a kernel socket would
// give, so that errors.Is(err, syscall.ECONNREFUSED) and its kin work; the
// text stays gVisor's.
func connectError(terr tcpip.Error) error {
	var errno syscall.Errno
	switch terr.(type) {
	case *tcpip.ErrConnectionRefused:
		errno = syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		errno = syscall.ECONNRESET
	case *tcpip.ErrTimeout:
		errno = syscall.ETIMEDOUT
	case *tcpip.ErrHostUnreachable:
		errno = syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		errno = syscall.ENETUNREACH
	default:
		return fmt.Errorf("%s", terr)
	}
	return &os.SyscallError{Syscall: "connect", Err: errno}
}

// Failed reports whether the connection ended in error rather than with
// FINs: reset by the peer or by tund, or timed out. gonet hands such an end
// to the first Read or Write that meets it, once; every later Read returns
// io.EOF as it does after the peer's FIN. So a reader that shares the
// connection with a writer, and finds io.EOF, asks Failed whether it was a
// FIN.
func (c *Conn) Failed() bool {
	return tcp.EndpointState(c.ep.State()) == tcp.StateError
}
