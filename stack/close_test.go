package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestNoResetForAckAfterLostFIN pins patch 0002: tund closed first, the
// peer's FIN|ACK was lost, tund retransmitted its FIN and the peer, in
// LAST-ACK, acknowledged it with seq = its FIN + 1, past tund's RCV.NXT.
// That pure ACK carries no data and must not draw a RST; the close then
// completes when the peer retransmits its FIN.
func TestNoResetForAckAfterLostFIN(t *testing.T) {
	p := connect(t, 0)
	p.conn.Close()
	fin := p.next(time.Second)
	if fin.Flags&header.TCPFlagFin == 0 {
		t.Fatalf("want tund's FIN, got %+v", fin)
	}
	// The peer's FIN|ACK (seq peerISS+1) is lost; tund retransmits its FIN.
	again := p.next(5 * time.Second)
	if again.Flags&header.TCPFlagFin == 0 || again.Seq != fin.Seq {
		t.Fatalf("want tund's FIN retransmitted, got %+v", again)
	}
	p.send(header.TCPFlagAck, peerISS+2, fin.Seq+1)
	if f, ok := p.nextOrNone(300 * time.Millisecond); ok && f.Flags&header.TCPFlagRst != 0 {
		t.Fatalf("tund answered the peer's pure ACK with RST: %+v", f)
	}
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	for {
		f := p.next(time.Second)
		if f.Flags&header.TCPFlagRst != 0 {
			t.Fatalf("tund answered the peer's FIN with RST: %+v", f)
		}
		if f.Flags == header.TCPFlagAck && f.Ack == peerISS+2 {
			break // the final ACK: tund is in TIME-WAIT
		}
	}
}
