package stack

import (
	"io"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestNoWindowUpdateAfterFIN pins patch 0012: once the peer's FIN is in,
// a read that frees the receive buffer sends no window update. No data
// can follow a FIN, so the update tells the peer nothing, and after the
// ACK of a FIN that ended the peer's LAST-ACK it draws a RST from a peer
// that is already CLOSED (seen on tund0: a kernel server's FIN|PSH, tund's
// ACK, a second ACK with a larger window, the server's RST).
//
// The peer nearly fills a 4 KiB receive buffer, sends its FIN, and the
// application reads everything and closes: the next segment from the
// stack must be its FIN. Without the patch it is a bare ACK: the read
// took the buffer's free space from below the window-update threshold
// (half the buffer) to above it.
func TestNoWindowUpdateAfterFIN(t *testing.T) {
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second})
	const bufSize = 4 << 10
	p.conn.ep.SocketOptions().SetReceiveBufferSize(bufSize, true)

	// Three segments of 512 bytes take about 3.3 KiB of the buffer: gVisor
	// counts each segment's memory, not only its payload.
	const chunk, chunks = 512, 3
	seq := uint32(peerISS + 1)
	for range chunks {
		p.sendData(seq, p.iss+1, make([]byte, chunk))
		seq += chunk
		if f := p.next(time.Second); f.ack != seq {
			t.Fatalf("want the ACK of byte %d, got %s ack %d", seq, flagString(f.flags), f.ack)
		}
	}
	p.send(header.TCPFlagFin|header.TCPFlagAck, seq, p.iss+1)
	if f := p.next(time.Second); f.flags != header.TCPFlagAck || f.ack != seq+1 {
		t.Fatalf("want the ACK of the FIN (ack %d), got %s ack %d", seq+1, flagString(f.flags), f.ack)
	}
	got, err := io.ReadAll(p.conn)
	if err != nil || len(got) != chunk*chunks {
		t.Fatalf("read %d bytes, %v; want %d and EOF", len(got), err, chunk*chunks)
	}
	p.conn.Close()
	if f := p.next(time.Second); !f.flags.Contains(header.TCPFlagFin) {
		t.Fatalf("after the peer's FIN the application read the %d bytes and closed: want the stack's FIN next, got %s seq %d ack %d (a window update)", len(got), flagString(f.flags), f.seq, f.ack)
	}
}
