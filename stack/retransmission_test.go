package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/link/faults"
)

// TestRetransmissionsOnTheWire pins gVisor patch 0015: TCP marks a segment
// it sends again, and the tracer, beneath the faults, counts those that
// reach the wire. tund's first FIN is dropped by drop-fin=once (gVisor
// counts a FIN sent, the wire sees none); its RTO sends it again, which the
// wire sees: one retransmission on the wire, against one in gVisor's count
// (which would count it even if a fault dropped it).
func TestRetransmissionsOnTheWire(t *testing.T) {
	p := faultConnect(t, faults.Set{DropFIN: faults.Chance{Once: true}})
	gvisor := func() uint64 { return p.st.GVisor().Stats().TCP.Retransmits.Value() }
	before := gvisor()
	p.conn.Close()
	fin := p.next(2 * time.Second) // the second transmission: the first was dropped
	if fin.Flags&header.TCPFlagFin == 0 {
		t.Fatalf("got %+v, want tund's FIN sent again", fin)
	}
	if n := p.st.CloseStats().SegmentsResent; n != 1 {
		t.Errorf("%d segments sent again on the wire, want 1 (the FIN)", n)
	}
	if n := gvisor() - before; n != 1 {
		t.Errorf("gVisor counted %d retransmissions, want 1", n)
	}
	// Segments sent once are not marked.
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.next(time.Second) // the final ACK
	if n := p.st.CloseStats().SegmentsResent; n != 1 {
		t.Errorf("%d segments sent again after the final ACK, want still 1", n)
	}
}
