package stack

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestSegmentsProcessedInline pins patch 0013 and inlineEndpoint: a
// segment is processed by the goroutine that delivers it, so its ACK has
// been written to the link by the time the delivery returns. Handed to a
// processor goroutine (gVisor's way), the ACK comes later, from that
// goroutine, and is not yet in the channel when the delivery returns.
func TestSegmentsProcessedInline(t *testing.T) {
	p := connect(t, 0)
	for i := range 50 {
		seq := uint32(peerISS + 1 + 4*i)
		p.sendData(seq, p.iss+1, []byte("ping")) // returns once delivered
		pkt := p.ch.Read()                       // does not wait
		if pkt == nil {
			t.Fatalf("segment %d: no ACK written when its delivery returned: processed on another goroutine", i)
		}
		b := pkt.ToView().AsSlice()
		f, ok := parseInbound(b, len(b))
		pkt.DecRef()
		if !ok || f.flags != header.TCPFlagAck || f.ack != seq+4 {
			t.Fatalf("segment %d: want the ACK of byte %d, got %+v", i, seq+4, f)
		}
	}
}
