package stack

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// twoStacks returns a client stack (198.18.0.2) and a server stack
// (198.18.0.1) joined by a wire that carries every packet across, unless
// cut is set: then packets are dropped.
func twoStacks(t *testing.T, cut bool) (client, server *Stack) {
	t.Helper()
	mk := func(addr string) (*Stack, *channel.Endpoint) {
		ch := channel.New(256, 1500, "")
		st, err := New(ch, Config{Addrs: []netip.Addr{netip.MustParseAddr(addr)}, MSL: time.Second, FinWait2: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st, ch
	}
	client, cch := mk("198.18.0.2")
	server, sch := mk("198.18.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	wire := func(from, to *channel.Endpoint) {
		for {
			pkt := from.ReadContext(ctx)
			if pkt == nil {
				return
			}
			b := pkt.ToView().AsSlice()
			pkt.DecRef()
			if cut {
				continue
			}
			in := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
			to.InjectInbound(header.IPv4ProtocolNumber, in)
			in.DecRef()
		}
	}
	go wire(cch, sch)
	go wire(sch, cch)
	return client, server
}

// TestDialTCP dials from one stack to another that listens: data both ways,
// the client's half-close seen as EOF by the server while the server still
// sends, then the server's close seen as EOF by the client.
func TestDialTCP(t *testing.T) {
	client, server := twoStacks(t, false)
	ln, err := server.Listen(9000)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.AcceptConn()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "ping" {
			served <- errors.New("server read " + string(got))
			return
		}
		_, err = c.Write([]byte("pong after your FIN"))
		served <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialTCP(ctx, netip.MustParseAddrPort("198.18.0.1:9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().String(); !strings.HasPrefix(got, "198.18.0.2:") {
		t.Errorf("local address %s, want the stack's 198.18.0.2", got)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "pong after your FIN" {
		t.Errorf("client read %q, %v", got, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if c.Failed() {
		t.Error("Failed() after a graceful close")
	}
}

// TestDialTCPRefused: a port nobody listens on answers RST, which DialTCP
// reports as ECONNREFUSED.
func TestDialTCPRefused(t *testing.T) {
	client, _ := twoStacks(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.DialTCP(ctx, netip.MustParseAddrPort("198.18.0.1:9"))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a closed port: %v, want ECONNREFUSED", err)
	}
}

// TestDialTCPContext: a dial that gets no answer ends with its context.
func TestDialTCPContext(t *testing.T) {
	client, _ := twoStacks(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := client.DialTCP(ctx, netip.MustParseAddrPort("198.18.0.1:9000"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial into the void: %v, want the context's deadline", err)
	}
}

// TestFailedAfterReset: the peer's RST is reported once, to the first
// read or write; later reads return io.EOF, and Failed tells them from a
// FIN.
func TestFailedAfterReset(t *testing.T) {
	client, server := twoStacks(t, false)
	ln, err := server.Listen(9000)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := ln.AcceptConn()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialTCP(ctx, netip.MustParseAddrPort("198.18.0.1:9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	if sc == nil {
		t.FailNow()
	}
	sc.Abort()
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err == nil || err == io.EOF {
		t.Fatalf("first read after the RST: %v, want the reset", err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("second read after the RST: %v, want io.EOF (gonet's report of a taken error)", err)
	}
	if !c.Failed() {
		t.Error("Failed() is false after a RST")
	}
}
