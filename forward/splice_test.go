package forward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests splice two kernel connections over loopback: client <-> a,
// the splice, b <-> server. The stack's side is proven end to end in
// tests/ (forward_test.go); here the splice's rules are.

type pair struct {
	client, server *net.TCPConn
	done           chan Result
}

// loopback returns a connected client and the accepted end of it.
func loopback(t *testing.T) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.TCPConn{d, a} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
	}
	return d, a
}

// spliced starts a splice between a client's and a server's connection.
func spliced(t *testing.T, ctx context.Context, p Policy) *pair {
	t.Helper()
	client, a := loopback(t)
	b, server := loopback(t)
	pr := &pair{client: client, server: server, done: make(chan Result, 1)}
	go func() { pr.done <- Splice(ctx, Kernel(a), Kernel(b), p) }()
	return pr
}

// stopped starts a splice and then ends its ctx, as tund's stop does.
func stopped(t *testing.T, p Policy) *pair {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr := spliced(t, ctx, p)
	cancel()
	return pr
}

func (p *pair) result(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-p.done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the splice did not end")
		return Result{}
	}
}

// TestSpliceHalfClose: either side half-closes, the other keeps sending,
// everything arrives, and both FINs cross.
func TestSpliceHalfClose(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MB
	for _, clientFirst := range []bool{true, false} {
		name := map[bool]string{true: "client first", false: "server first"}[clientFirst]
		t.Run(name, func(t *testing.T) {
			p := spliced(t, context.Background(), Policy{})
			first, second := p.client, p.server
			if !clientFirst {
				first, second = p.server, p.client
			}
			go func() {
				first.Write([]byte("request"))
				first.CloseWrite()
			}()
			got, err := io.ReadAll(second)
			if err != nil || string(got) != "request" {
				t.Fatalf("read %q, %v before the FIN", got, err)
			}
			go func() {
				second.Write(big)
				second.CloseWrite()
			}()
			got, err = io.ReadAll(first)
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("after the half-close read %d bytes, %v; want %d", len(got), err, len(big))
			}
			if r := p.result(t); r.End != "fin" || r.AtoB+r.BtoA != int64(len(big)+len("request")) {
				t.Errorf("result %+v", r)
			}
		})
	}
}

// TestSpliceReset: a reset on either side aborts the other.
func TestSpliceReset(t *testing.T) {
	for _, clientResets := range []bool{true, false} {
		name := map[bool]string{true: "client resets", false: "server resets"}[clientResets]
		t.Run(name, func(t *testing.T) {
			p := spliced(t, context.Background(), Policy{})
			// A round trip: both connections of the splice stand.
			p.client.Write([]byte("x"))
			io.ReadFull(p.server, make([]byte, 1))
			resetter, other := p.client, p.server
			if !clientResets {
				resetter, other = p.server, p.client
			}
			resetter.SetLinger(0)
			resetter.Close()
			if _, err := other.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the other side read %v, want ECONNRESET", err)
			}
			want := "reset by b"
			if clientResets {
				want = "reset by a"
			}
			if r := p.result(t); r.End != want {
				t.Errorf("end %q, want %q", r.End, want)
			}
		})
	}
}

// TestKernelReadTellsResetFromFIN: Linux reports a reset to the first
// read or write only; a read after a write took it must still not look
// like a FIN.
func TestKernelReadTellsResetFromFIN(t *testing.T) {
	c, peer := loopback(t)
	peer.SetLinger(0)
	peer.Close()
	k := Kernel(c)
	// The write that takes the error: loopback delivers the RST before
	// Close returns, so the first write already fails.
	if _, err := k.Write([]byte("x")); err == nil {
		t.Fatal("write after the peer's RST succeeded")
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the plain socket's read after the taken error: %v; this test expects io.EOF", err)
	}
	if _, err := k.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Kernel's read: %v, want ECONNRESET", err)
	}
}

// TestSplicePolicy: half-close=close ends both at the client's FIN; AbortA
// turns the server's FIN into a RST for the client.
func TestSplicePolicy(t *testing.T) {
	t.Run("half-close=close", func(t *testing.T) {
		var noted []string
		p := spliced(t, context.Background(), Policy{HalfCloseClose: true, OnHalfClose: func(a string) { noted = append(noted, a) }})
		p.client.CloseWrite()
		if got, err := io.ReadAll(p.client); err != nil || len(got) != 0 {
			t.Errorf("client read %q, %v; want EOF", got, err)
		}
		if got, err := io.ReadAll(p.server); err != nil || len(got) != 0 {
			t.Errorf("server read %q, %v; want EOF", got, err)
		}
		if r := p.result(t); r.End != "half-close=close" {
			t.Errorf("end %q", r.End)
		}
		if strings.Join(noted, ",") != HalfCloseClosed {
			t.Errorf("noted %v, want [%s]", noted, HalfCloseClosed)
		}
	})
	t.Run("half-close after", func(t *testing.T) {
		var noted []string
		p := spliced(t, context.Background(), Policy{HalfCloseAfter: 50 * time.Millisecond, OnHalfClose: func(a string) { noted = append(noted, a) }})
		p.client.CloseWrite()
		if got, err := io.ReadAll(p.server); err != nil || len(got) != 0 {
			t.Errorf("server read %q, %v; want the FIN passed on", got, err)
		}
		// The server never closes: the policy ends the connection.
		if got, err := io.ReadAll(p.client); err != nil || len(got) != 0 {
			t.Errorf("client read %q, %v; want EOF", got, err)
		}
		if r := p.result(t); r.End != "half-close timeout" {
			t.Errorf("end %q", r.End)
		}
		if strings.Join(noted, ",") != HalfCloseTimeout {
			t.Errorf("noted %v, want [%s]", noted, HalfCloseTimeout)
		}
	})
	t.Run("abort", func(t *testing.T) {
		p := spliced(t, context.Background(), Policy{AbortA: true})
		p.server.Write([]byte("bye"))
		p.server.CloseWrite()
		got, err := io.ReadAll(p.client)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client read %q, %v; want ECONNRESET", got, err)
		}
		if r := p.result(t); r.End != "abort" {
			t.Errorf("end %q", r.End)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		p := stopped(t, Policy{})
		if got, err := io.ReadAll(p.client); err != nil || len(got) != 0 {
			t.Errorf("client read %q, %v; want EOF", got, err)
		}
		if r := p.result(t); r.End != "stopped" {
			t.Errorf("end %q", r.End)
		}
	})
	t.Run("drained", func(t *testing.T) {
		// tund stops while the server has a reply to send: with a
		// drain, the reply still arrives and the FINs cross as usual.
		p := stopped(t, Policy{Drain: 10 * time.Second})
		reply := bytes.Repeat([]byte("reply "), 100000)
		go func() {
			p.server.Write(reply)
			p.server.CloseWrite()
		}()
		got, err := io.ReadAll(p.client)
		if err != nil || !bytes.Equal(got, reply) {
			t.Errorf("client read %d bytes, %v; want the %d-byte reply and EOF", len(got), err, len(reply))
		}
		p.client.CloseWrite()
		if r := p.result(t); r.End != "fin" {
			t.Errorf("end %q, want fin", r.End)
		}
	})
	t.Run("drain time over", func(t *testing.T) {
		p := stopped(t, Policy{Drain: 100 * time.Millisecond})
		if _, err := io.ReadAll(p.client); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client read: %v; want ECONNRESET once the drain ran out", err)
		}
		if r := p.result(t); r.End != "drain time over" {
			t.Errorf("end %q", r.End)
		}
	})
}

// TestParseRules covers the --dial grammar.
func TestParseRules(t *testing.T) {
	rules, err := ParseRules([]string{"127.0.0.1:7000=198.18.0.1:9000, :7001=[2001:2::1]:80", "[::1]:7002=198.18.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rules {
		got = append(got, r.String())
	}
	if want := "127.0.0.1:7000=198.18.0.1:9000 :7001=[2001:2::1]:80 [::1]:7002=198.18.0.1:1"; strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
	for _, c := range []struct{ in, want string }{
		{"foo", "want LISTEN=TARGET"},
		{"127.0.0.1:7000", "want LISTEN=TARGET"},
		{"127.0.0.1=198.18.0.1:9000", "want IP:PORT or :PORT"},
		{"127.0.0.1:0=198.18.0.1:9000", `port "0" is not a number`},
		{"127.0.0.1:7000=198.18.0.1:65536", `port "65536" is not a number`},
		{"127.0.0.1:7000=198.18.0.1", "want IP:PORT"},
		{"127.0.0.1:7000=host:80", `target "host:80": want IP:PORT`},
		{"127.0.0.1:7000=0.0.0.0:80", "not an address to connect to"},
		{"127.0.0.1:7000=198.18.0.1:1,127.0.0.1:7000=198.18.0.1:2", "already a --dial listen address"},
	} {
		if _, err := ParseRules([]string{c.in}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.in, err, c.want)
		}
	}
}
