package stack

import (
	"context"
	"io"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tund/tund/stack/internal/wire"
)

// These tests play the peer by hand over a channel endpoint, segment by
// segment, to pin close-path rules that interop tests cannot reach on
// demand. End-to-end proof with kernel clients is in tests/.

var (
	stackAddr = tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
	peerAddr  = tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
)

const (
	peerPort = 40000
	peerISS  = 1000
)

type peer struct {
	t    *testing.T
	ch   *channel.Endpoint
	st   *Stack
	conn *Conn
	iss  uint32 // the stack's initial sequence number
	// injected, when set, runs after each segment the peer injects, as a
	// device's end of burst does (inlinePeer).
	injected func()
}

// connect builds a stack with the given merge window, listens on port 7 and
// completes a handshake from the hand-played peer.
func connect(t *testing.T, window time.Duration) *peer {
	t.Helper()
	return connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, FINACKMerge: window})
}

// connectConfig is connect with a stack built from c (its Addrs are set
// here).
func connectConfig(t *testing.T, c Config) *peer {
	t.Helper()
	p, accept := listenPeer(t, c)
	p.handshake(accept, nil, 0)
	return p
}

// handshake completes a handshake from the hand-played peer and sets
// p.conn to the connection accepted. syn sends the peer's SYN (nil: one
// without options), and the peer waits rtt between the SYN-ACK and its
// ACK.
func (p *peer) handshake(accept func() *Conn, syn func(), rtt time.Duration) {
	t := p.t
	t.Helper()
	if syn == nil {
		syn = func() { p.send(header.TCPFlagSyn, peerISS, 0) }
	}
	syn()
	synAck := p.next(time.Second)
	if synAck.Flags != header.TCPFlagSyn|header.TCPFlagAck || synAck.Ack != peerISS+1 {
		t.Fatalf("want SYN|ACK ack %d, got %+v", peerISS+1, synAck)
	}
	p.iss = synAck.Seq
	time.Sleep(rtt) // the path's round trip, part of the scenario
	p.send(header.TCPFlagAck, peerISS+1, p.iss+1)
	p.conn = accept()
}

// listenPeer builds a stack from c (its Addrs are set here) listening on
// port 7 and a hand-played peer for it. accept returns the connection the
// listener accepts, failing the test if none comes within 5 s.
func listenPeer(t *testing.T, c Config) (p *peer, accept func() *Conn) {
	t.Helper()
	ch := channel.New(64, 1500, "")
	c.Addrs = []netip.Addr{netip.MustParseAddr("198.18.0.2")}
	st, err := New(ch, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ln, err := st.Listen(7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type result struct {
		c   *Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.AcceptConn()
		accepted <- result{c, err}
	}()
	accept = func() *Conn {
		t.Helper()
		select {
		case r := <-accepted:
			if r.err != nil {
				t.Fatalf("accept: %v", r.err)
			}
			t.Cleanup(func() { r.c.Close() })
			return r.c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted within 5 s")
			return nil
		}
	}
	return &peer{t: t, ch: ch, st: st}, accept
}

// send injects one segment from the peer, without options or payload.
func (p *peer) send(flags header.TCPFlags, seq, ack uint32) {
	p.sendRaw(flags, seq, ack, nil, nil)
}

// next returns the next segment the stack sends, failing after timeout.
func (p *peer) next(timeout time.Duration) wire.Fields {
	p.t.Helper()
	f, ok := p.nextOrNone(timeout)
	if !ok {
		p.t.Fatalf("no segment from the stack within %v", timeout)
	}
	return f
}

// nextOrNone returns the next segment the stack sends within timeout.
func (p *peer) nextOrNone(timeout time.Duration) (wire.Fields, bool) {
	f, _, ok := p.nextPacket(timeout)
	return f, ok
}

// nextPacket is nextOrNone with the packet's bytes (IPv4 header first).
func (p *peer) nextPacket(timeout time.Duration) (wire.Fields, []byte, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pkt := p.ch.ReadContext(ctx)
	if pkt == nil {
		return wire.Fields{}, nil, false
	}
	f, b := p.parse(pkt)
	return f, b, true
}

// parse reads the stack's segment from pkt, seen from the peer, and
// releases it.
func (p *peer) parse(pkt *gstack.PacketBuffer) (wire.Fields, []byte) {
	defer pkt.DecRef()
	b := pkt.ToView().AsSlice()
	f, ok := wire.ParseInbound(b, len(b))
	if !ok {
		p.t.Fatalf("the stack sent a packet that is not TCP: %x", b)
	}
	return f, b
}

func (p *peer) readEOF() {
	p.t.Helper()
	if n, err := p.conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		p.t.Fatalf("read after the peer's FIN: %d, %v; want EOF", n, err)
	}
}
