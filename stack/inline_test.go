package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestSegmentsProcessedInline pins patch 0013 and inlineEndpoint: once the
// device ends bursts, a connection's segment is processed by the goroutine
// that delivered it, at the end of its burst, so the stack's answer has
// been written to the link when EndBurst returns. Handed to a processor
// goroutine (gVisor's way, and this test without the patch), the answer
// comes later, from that goroutine, and is not yet in the channel. The
// listener's segments (the SYN here) stay with the processors.
func TestSegmentsProcessedInline(t *testing.T) {
	p, accept := listenPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	burst := p.st.inline.EndBurst // what the TUN reader calls
	burst()                       // this device ends bursts
	p.send(header.TCPFlagSyn, peerISS, 0)
	burst()
	synAck := p.next(time.Second) // from the listener's processor
	p.iss = synAck.seq
	p.send(header.TCPFlagAck, peerISS+1, p.iss+1) // to the new endpoint
	burst()
	p.conn = accept()
	for i := range 50 {
		seq := uint32(peerISS + 1 + 4*i)
		p.sendData(seq, p.iss+1, []byte("ping"))
		burst()
		if f := p.written(t, "a data segment"); f.flags != header.TCPFlagAck || f.ack != seq+4 {
			t.Fatalf("segment %d: want the ACK of byte %d, got %+v", i, seq+4, f)
		}
	}
}

// written returns the segment the stack has already written, without
// waiting, failing if there is none.
func (p *peer) written(t *testing.T, what string) tcpFields {
	t.Helper()
	pkt := p.ch.Read()
	if pkt == nil {
		t.Fatalf("nothing written for %s when its burst ended: processed on another goroutine", what)
	}
	defer pkt.DecRef()
	b := pkt.ToView().AsSlice()
	f, ok := parseInbound(b, len(b))
	if !ok {
		t.Fatalf("the stack wrote a packet that is not TCP: %x", b)
	}
	return f
}
