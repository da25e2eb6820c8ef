package forward

import (
	"io"
	"net"
	"sync"
)

// halfCloser is a connection that can send its FIN alone.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// Copy joins a and b the common way: an io.Copy goroutine each way, a FIN
// passed on when one side's stream ends, both closed when both have. It
// carries no RST across and applies no policy. It is the baseline that
// scripts/bench-proxy measures Splice against, built of the same parts
// (tund's stack.Conn and the kernel's *net.TCPConn).
func Copy(a, b halfCloser) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src halfCloser) {
		defer wg.Done()
		io.Copy(dst, src)
		dst.CloseWrite()
	}
	go pipe(b, a)
	go pipe(a, b)
	wg.Wait()
	a.Close()
	b.Close()
}
