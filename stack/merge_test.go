package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestMergeThreeWay: the peer's FIN, then the service closes inside the
// window: the ACK rides on tund's FIN, no pure ACK goes out.
func TestMergeThreeWay(t *testing.T) {
	p := connect(t, time.Second)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	p.readEOF()
	p.conn.Close()
	f := p.next(time.Second)
	if f.Flags != header.TCPFlagFin|header.TCPFlagAck || f.Ack != peerISS+2 {
		t.Fatalf("want FIN|ACK ack %d as the first segment after the peer's FIN, got %+v", peerISS+2, f)
	}
	if got := p.st.MergeStats().Merged.Load(); got != 1 {
		t.Errorf("Merged = %d, want 1", got)
	}
}

// TestMergeReleased: the service does not close; the held ACK goes out
// alone when the window ends, not before.
func TestMergeReleased(t *testing.T) {
	const window = 100 * time.Millisecond
	p := connect(t, window)
	start := time.Now()
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	f := p.next(time.Second)
	if elapsed := time.Since(start); elapsed < window {
		t.Errorf("the ACK went out after %v, inside the %v window", elapsed, window)
	}
	if f.Flags != header.TCPFlagAck || f.PayloadLen != 0 || f.Ack != peerISS+2 {
		t.Fatalf("want a pure ACK of the FIN, got %+v", f)
	}
	if got := p.st.MergeStats().Released.Load(); got != 1 {
		t.Errorf("Released = %d, want 1", got)
	}
}

// TestMergeFlushedByRetransmittedFIN: a peer that retransmits its FIN is
// owed the ACK now, whatever the window.
func TestMergeFlushedByRetransmittedFIN(t *testing.T) {
	p := connect(t, 10*time.Second)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	if f, ok := p.nextOrNone(100 * time.Millisecond); ok {
		t.Fatalf("the ACK was not held: %+v", f)
	}
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	f := p.next(time.Second)
	if f.Flags != header.TCPFlagAck || f.Ack != peerISS+2 {
		t.Fatalf("want the held ACK of the FIN, got %+v", f)
	}
	if got := p.st.MergeStats().Flushed.Load(); got != 1 {
		t.Errorf("Flushed = %d, want 1", got)
	}
}

// TestMergeNeverHoldsFinalACK: tund closes first; the ACK of the peer's FIN
// ends the close (tund enters TIME-WAIT) and must go out at once.
func TestMergeNeverHoldsFinalACK(t *testing.T) {
	p := connect(t, 10*time.Second)
	p.conn.Close()
	fin := p.next(time.Second)
	if fin.Flags&header.TCPFlagFin == 0 {
		t.Fatalf("want tund's FIN, got %+v", fin)
	}
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	f := p.next(time.Second)
	if f.Flags != header.TCPFlagAck || f.Ack != peerISS+2 {
		t.Fatalf("want the final ACK, got %+v", f)
	}
	s := p.st.MergeStats()
	if s.Released.Load()+s.Flushed.Load()+s.Merged.Load() != 0 {
		t.Errorf("the final ACK went through the merge: %+v", s)
	}
}
