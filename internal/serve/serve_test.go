package serve

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dial(t *testing.T, ln net.Listener) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// TestDiscard: the server reads all, sends nothing, and closes only after
// the client's FIN.
func TestDiscard(t *testing.T) {
	ln := listen(t)
	go Discard(ln, 0)
	c := dial(t, ln)
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Fatalf("before the client's FIN: read %d bytes, %v; want nothing yet", n, err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("after the client's FIN: %d bytes, %v; want the server's FIN alone", len(b), err)
	}
}

// TestEachTimeout: a connection is closed at its deadline, whatever the
// handler waits for.
func TestEachTimeout(t *testing.T) {
	ln := listen(t)
	go Each(ln, 100*time.Millisecond, func(c net.Conn) { io.Copy(io.Discard, c) })
	c := dial(t, ln)
	start := time.Now()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v, want about 100 ms", d)
	}
}

// TestEachConcurrent: each connection has a handler of its own, and Each
// returns once the listener is closed.
func TestEachConcurrent(t *testing.T) {
	ln := listen(t)
	done := make(chan struct{})
	go func() {
		Each(ln, 0, func(c net.Conn) {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				io.WriteString(c, line)
			}
		})
		close(done)
	}()
	a, b := dial(t, ln), dial(t, ln)
	io.WriteString(b, "second\n") // a has not written: b must not wait for it
	if got, err := bufio.NewReader(b).ReadString('\n'); got != "second\n" {
		t.Errorf("b got %q, %v", got, err)
	}
	io.WriteString(a, "first\n")
	if got, err := bufio.NewReader(a).ReadString('\n'); got != "first\n" {
		t.Errorf("a got %q, %v", got, err)
	}
	ln.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("Each did not return after the listener closed")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
