package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/link/inline"
)

// TestSegmentsProcessedInline pins patch 0013 and the inline endpoint (link/inline): once the
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
		if f := p.written(t, "a data segment"); f.Flags != header.TCPFlagAck || f.Ack != seq+4 {
			t.Fatalf("segment %d: want the ACK of byte %d, got %+v", i, seq+4, f)
		}
	}
}

// TestLongBurstHandedOff: the segments of a burst longer than
// inline.MaxBurst, handed to gVisor's processors (TestBurstLengthDecides),
// are not lost there: the peer's data is all acknowledged.
func TestLongBurstHandedOff(t *testing.T) {
	p := inlinePeer(t)
	seq := uint32(peerISS + 1)
	for range inline.MaxBurst + 1 {
		p.sendData(seq, p.iss+1, []byte("ping"))
		seq += 4
	}
	p.st.inline.EndBurst(inline.MaxBurst + 1)
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, ok := p.nextOrNone(time.Until(deadline))
		if !ok {
			t.Fatalf("the burst's data was not all acknowledged (up to byte %d)", seq)
		}
		if f.Ack == seq {
			return
		}
	}
}

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
func (p *peer) written(t *testing.T, what string) wire.Fields {
	t.Helper()
	pkt := p.ch.Read()
	if pkt == nil {
		t.Fatalf("nothing written for %s when its burst ended: processed on another goroutine", what)
	}
	f, _ := p.parse(pkt)
	return f
}
