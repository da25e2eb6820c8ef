// Package serve holds the small servers that tund's benchmarks and
// scenarios run on kernel sockets, to stand beside or behind tund's stack.
package serve

import (
	"io"
	"net"
	"time"
)

// Each accepts connections on ln until Accept fails (ln was closed) and
// handles each on a goroutine of its own, closing it when handle returns.
// A timeout above zero is a deadline on each connection from its accept,
// so that a peer that never finishes cannot hold a goroutine past the run
// that made it; zero is no deadline.
func Each(ln net.Listener, timeout time.Duration, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if timeout > 0 {
				c.SetDeadline(time.Now().Add(timeout))
			}
			handle(c)
		}()
	}
}

// Discard is a discard server (RFC 863) on ln, as Each runs it: it reads
// and drops each connection's bytes until the peer's FIN, then closes, as
// tund's discard service does, so the server's FIN comes second.
func Discard(ln net.Listener, timeout time.Duration) {
	Each(ln, timeout, func(c net.Conn) { io.Copy(io.Discard, c) })
}
