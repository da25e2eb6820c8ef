package stack

import (
	"io"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// These pin patch 0011 (Config.DelayedACK): the ACK of a small request
// waits for the reply to carry it, as Linux's delayed ACK does (RFC 9293
// §3.8.6.3), instead of going out alone before it.

// TestDelayedACKRidesOnReply: a request answered within the delay draws
// one segment, the reply, which acknowledges the request.
func TestDelayedACKRidesOnReply(t *testing.T) {
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, DelayedACK: 5 * time.Second})
	p.sendData(peerISS+1, p.iss+1, []byte("ping"))
	if _, err := io.ReadFull(p.conn, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.conn.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	f := p.next(time.Second)
	if f.PayloadLen != 4 || f.Ack != peerISS+5 {
		t.Fatalf("want the reply carrying the ACK of the request (ack %d), got %+v", peerISS+5, f)
	}
	// Once the peer has the reply, the delay's timer adds no bare ACK.
	p.send(header.TCPFlagAck, peerISS+5, f.Seq+4)
	p.noSegment(200*time.Millisecond, "the reply acknowledged the request")
}

// TestDelayedACKTimer: with no reply the ACK goes alone when the delay
// runs out, and not before.
func TestDelayedACKTimer(t *testing.T) {
	const delay = 300 * time.Millisecond
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, DelayedACK: delay})
	sent := time.Now()
	p.sendData(peerISS+1, p.iss+1, []byte("ping"))
	p.noSegment(delay*2/3, "the delayed ACK is not due yet")
	f := p.next(3 * time.Second)
	if f.Flags != header.TCPFlagAck || f.PayloadLen != 0 || f.Ack != peerISS+5 {
		t.Fatalf("want a bare ACK of the request, got %+v", f)
	}
	t.Logf("ACK %v after the request (delay %v)", time.Since(sent).Round(time.Millisecond), delay)
}

// TestDelayedACKTwoFullSegments: two full-sized segments are acknowledged
// at once (RFC 1122 §4.2.3.2), whatever the delay.
func TestDelayedACKTwoFullSegments(t *testing.T) {
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, DelayedACK: 5 * time.Second})
	const mss = 536 // the peer's SYN has no MSS option (RFC 9293 §3.7.1)
	p.sendData(peerISS+1, p.iss+1, make([]byte, mss))
	p.sendData(peerISS+1+mss, p.iss+1, make([]byte, mss))
	f := p.next(2 * time.Second)
	if f.Flags != header.TCPFlagAck || f.Ack != peerISS+1+2*mss {
		t.Fatalf("want the ACK of both segments at once, got %+v", f)
	}
}

// TestNoDelayedACKByDefault: without the option every segment is
// acknowledged at once, gVisor's behaviour.
func TestNoDelayedACKByDefault(t *testing.T) {
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second})
	p.sendData(peerISS+1, p.iss+1, []byte("ping"))
	f := p.next(2 * time.Second)
	if f.Flags != header.TCPFlagAck || f.PayloadLen != 0 || f.Ack != peerISS+5 {
		t.Fatalf("want a bare ACK of the request at once, got %+v", f)
	}
}

// sendData injects a data segment (ACK|PSH) from the peer.
func (p *peer) sendData(seq, ack uint32, payload []byte) {
	p.sendRaw(header.TCPFlagAck|header.TCPFlagPsh, seq, ack, nil, payload)
}
