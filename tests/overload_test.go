package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// roundTrip sends a line through an echo connection and reads it back.
func roundTrip(c net.Conn, line string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo returned %q, want %q", got, line)
	}
	return nil
}

// TestMaxConns fills --max-conns with echo connections, then storms tund
// with more: each one beyond the limit is reset at once and counted, the
// established ones keep working, and when some close, new ones get in.
func TestMaxConns(t *testing.T) {
	const limit, excess, freed = 50, 200, 10
	ns := newNS(t)
	startTund(t, ns, "--max-conns", fmt.Sprint(limit), "--serve", "echo")
	addr := net.JoinHostPort(stackV4, "7")
	dial := func() net.Conn {
		t.Helper()
		c, err := ns.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var held []net.Conn
	for i := range limit {
		c := dial()
		if err := roundTrip(c, fmt.Sprint("held ", i)); err != nil {
			t.Fatalf("connection %d within the limit: %v", i, err)
		}
		held = append(held, c)
	}
	// The storm: the handshake completes in the stack, then tund resets,
	// sometimes before connect(2) has returned.
	reset := 0
	for i := range excess {
		c, err := ns.Dial("tcp", addr)
		if err == nil {
			err = roundTrip(c, fmt.Sprint("excess ", i))
			c.Close()
		}
		switch {
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			reset++
		case err == nil:
			t.Errorf("connection %d beyond the limit was served", i)
		default:
			t.Errorf("connection %d beyond the limit: %v, want a reset", i, err)
		}
	}
	if reset != excess {
		t.Errorf("%d of %d connections beyond the limit were reset", reset, excess)
	}
	for i, c := range held {
		if err := roundTrip(c, fmt.Sprint("after the storm ", i)); err != nil {
			t.Errorf("held connection %d after the storm: %v", i, err)
		}
	}
	if n := metric(t, ns, "tund_tcp_conns_refused_total"); n != excess {
		t.Errorf("tund_tcp_conns_refused_total = %v, want %d", n, excess)
	}
	if n := metric(t, ns, `tund_tcp_resets_total{direction="sent",reason="abort"}`); n != excess {
		t.Errorf("RSTs sent as aborts: %v, want %d", n, excess)
	}

	for _, c := range held[:freed] {
		c.Close()
	}
	// The services see the FINs and close: poll the gauge, which has no
	// event to await from outside tund.
	deadline := time.Now().Add(5 * time.Second)
	for metric(t, ns, "tund_tcp_conns_open") != limit-freed {
		if time.Now().After(deadline) {
			t.Fatalf("tund_tcp_conns_open = %v 5 s after %d closes, want %d", metric(t, ns, "tund_tcp_conns_open"), freed, limit-freed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range freed {
		if err := roundTrip(dial(), fmt.Sprint("new ", i)); err != nil {
			t.Errorf("new connection %d after %d closed: %v", i, freed, err)
		}
	}
}
