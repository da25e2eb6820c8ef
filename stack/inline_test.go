package stack

import (
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestSegmentsProcessedInline pins patch 0013 and inlineEndpoint: once the
// device ends bursts, a connection's segment is processed by the goroutine
// that delivered it, at the end of its burst, so the stack's answer has
// been written to the link when EndBurst returns. Handed to a processor
// goroutine (gVisor's way, and this test without the patch), the answer
// comes later, from that goroutine, and is not yet in the channel.
func TestSegmentsProcessedInline(t *testing.T) {
	p := inlinePeer(t)
	burst := func() { p.st.inline.EndBurst(1) } // what the TUN reader calls
	for i := range 50 {
		seq := uint32(peerISS + 1 + 4*i)
		p.sendData(seq, p.iss+1, []byte("ping"))
		burst()
		if f := p.written(t, "a data segment"); f.flags != header.TCPFlagAck || f.ack != seq+4 {
			t.Fatalf("segment %d: want the ACK of byte %d, got %+v", i, seq+4, f)
		}
	}
}

// TestLongBurstHandedOff: the segments of a burst longer than
// maxInlineBurst, handed to gVisor's processors (TestBurstLengthDecides),
// are not lost there: the peer's data is all acknowledged.
func TestLongBurstHandedOff(t *testing.T) {
	p := inlinePeer(t)
	seq := uint32(peerISS + 1)
	for range maxInlineBurst + 1 {
		p.sendData(seq, p.iss+1, []byte("ping"))
		seq += 4
	}
	p.st.inline.EndBurst(maxInlineBurst + 1)
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, ok := p.nextOrNone(time.Until(deadline))
		if !ok {
			t.Fatalf("the burst's data was not all acknowledged (up to byte %d)", seq)
		}
		if f.ack == seq {
			return
		}
	}
}

// TestBurstLengthDecides: EndBurst processes a short burst on the caller's
// goroutine and hands a long one to the processors.
func TestBurstLengthDecides(t *testing.T) {
	var calls []string
	e := &inlineEndpoint{tcp: recordingTCP{&calls}}
	for _, n := range []int{1, maxInlineBurst, maxInlineBurst + 1, 64} {
		e.EndBurst(n)
	}
	want := "inline inline hand-off hand-off"
	if got := strings.Join(calls, " "); got != want {
		t.Errorf("bursts of 1, %d, %d, 64 packets: %s; want %s", maxInlineBurst, maxInlineBurst+1, got, want)
	}
	if !e.bursts.Load() {
		t.Error("after EndBurst, packets are not marked for inline processing")
	}
}

type recordingTCP struct{ calls *[]string }

func (r recordingTCP) ProcessInline() { *r.calls = append(*r.calls, "inline") }
func (r recordingTCP) HandOffInline() { *r.calls = append(*r.calls, "hand-off") }

// inlinePeer is connect for a device that ends its bursts, one packet
// each: the handshake's SYN goes to the listener's processor, its ACK to
// the new connection, processed inline.
func inlinePeer(t *testing.T) *peer {
	t.Helper()
	p, accept := listenPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	p.injected = func() { p.st.inline.EndBurst(1) }
	p.injected() // this device ends bursts
	p.handshake(accept, nil, 0)
	p.injected = nil // the tests end their bursts themselves
	return p
}

// written returns the segment the stack has already written, without
// waiting, failing if there is none.
func (p *peer) written(t *testing.T, what string) tcpFields {
	t.Helper()
	pkt := p.ch.Read()
	if pkt == nil {
		t.Fatalf("nothing written for %s when its burst ended: processed on another goroutine", what)
	}
	f, _ := p.parse(pkt)
	return f
}
