package stack

import (
	"io"
	"slices"
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

// TestMergeDataACKedFirst: the peer's last data and its FIN arrive with
// no ACK of the data sent yet. The data is acknowledged at once by an ACK
// of its own (gVisor patch 0016), and only the FIN's ACK is held, to ride
// on tund's FIN; with no window, one ACK covers both, as gVisor sends it.
func TestMergeDataACKedFirst(t *testing.T) {
	for _, c := range []struct {
		window time.Duration
		acks   []uint32 // the pure ACKs before tund's FIN
	}{
		{40 * time.Millisecond, []uint32{peerISS + 6}},
		{0, []uint32{peerISS + 7}},
	} {
		p := connect(t, c.window)
		p.sendRaw(header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin, peerISS+1, p.iss+1, nil, []byte("hello"))
		if _, err := io.ReadFull(p.conn, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		p.readEOF()
		var acks []uint32
		for {
			f := p.next(time.Second)
			if f.Flags&header.TCPFlagFin != 0 {
				if f.Ack != peerISS+7 {
					t.Errorf("window %v: tund's FIN acks %d, want %d", c.window, f.Ack, peerISS+7)
				}
				break
			}
			acks = append(acks, f.Ack)
			if len(acks) == 1 {
				p.conn.Close() // after the first ACK: inside the window
			}
		}
		if !slices.Equal(acks, c.acks) {
			t.Errorf("window %v: pure ACKs %v before tund's FIN, want %v", c.window, acks, c.acks)
		}
		want := uint64(0)
		if c.window > 0 {
			want = 1
		}
		if s := p.st.MergeStats(); s.DataACKed.Load() != want || s.Merged.Load() != want {
			t.Errorf("window %v: data-acked %d, merged %d, want %d each", c.window, s.DataACKed.Load(), s.Merged.Load(), want)
		}
	}
}
