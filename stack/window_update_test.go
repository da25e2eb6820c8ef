package stack

import (
	"io"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/tcpflag"
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
	p, seq := fillSmallBuffer(t)
	p.send(header.TCPFlagFin|header.TCPFlagAck, seq, p.iss+1)
	if f := p.next(time.Second); f.Flags != header.TCPFlagAck || f.Ack != seq+1 {
		t.Fatalf("want the ACK of the FIN (ack %d), got %s ack %d", seq+1, tcpflag.String(uint8(f.Flags)), f.Ack)
	}
	got, err := io.ReadAll(p.conn)
	if err != nil || len(got) != fillChunk*fillChunks {
		t.Fatalf("read %d bytes, %v; want %d and EOF", len(got), err, fillChunk*fillChunks)
	}
	p.conn.Close()
	if f := p.next(time.Second); !f.Flags.Contains(header.TCPFlagFin) {
		t.Fatalf("after the peer's FIN the application read the %d bytes and closed: want the stack's FIN next, got %s seq %d ack %d (a window update)", len(got), tcpflag.String(uint8(f.Flags)), f.Seq, f.Ack)
	}
}

// TestWindowUpdateBeforeFIN is the premise of TestNoWindowUpdateAfterFIN:
// without a FIN, reading what fillSmallBuffer sent does send a window
// update, so the read crosses the threshold.
func TestWindowUpdateBeforeFIN(t *testing.T) {
	p, seq := fillSmallBuffer(t)
	if _, err := io.ReadFull(p.conn, make([]byte, fillChunk*fillChunks)); err != nil {
		t.Fatal(err)
	}
	if f := p.next(time.Second); f.Flags != header.TCPFlagAck || f.Ack != seq || f.PayloadLen != 0 {
		t.Fatalf("want a window update (a bare ACK of byte %d) after the read, got %+v", seq, f)
	}
}

// The peer's data that nearly fills a 4 KiB receive buffer: three segments
// of 512 bytes take about 3.3 KiB of it, since gVisor counts each
// segment's memory, not only its payload.
const fillChunk, fillChunks = 512, 3

// fillSmallBuffer connects, shrinks the connection's receive buffer to
// 4 KiB and fills it as above, each segment ACKed; seq is the peer's next
// sequence number.
func fillSmallBuffer(t *testing.T) (p *peer, seq uint32) {
	t.Helper()
	p = connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second})
	p.conn.ep.SocketOptions().SetReceiveBufferSize(4<<10, true)
	seq = peerISS + 1
	for range fillChunks {
		p.sendData(seq, p.iss+1, make([]byte, fillChunk))
		seq += fillChunk
		if f := p.next(time.Second); f.Ack != seq {
			t.Fatalf("want the ACK of byte %d, got %s ack %d", seq, tcpflag.String(uint8(f.Flags)), f.Ack)
		}
	}
	return p, seq
}
