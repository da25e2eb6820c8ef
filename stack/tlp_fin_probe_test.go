package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestFINProbeWaitsForDelayedACK pins patch 0014: a reply and tund's FIN
// leave back to back (gVisor never puts a FIN on data), and the ACK of the
// reply reaches the stack late, as under load when tund reads it some
// milliseconds after the peer sent it. A FIN with one data segment before
// it is what Linux sends as one segment, so the tail loss probe allows for
// the peer's delayed ACK (RFC 8985 §7.2: 2*SRTT + WCDelAckT; Linux holds
// its ACK of a FIN up to 40 ms): nothing is sent again before the RTO,
// 200 ms after the FIN. Without the patch the probe resent the FIN after
// 2*SRTT, floored at 10 ms by patch 0004, before the late ACK was read.
func TestFINProbeWaitsForDelayedACK(t *testing.T) {
	p, accept := listenPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	// A 1 ms path: 2*SRTT is below the probe's floor (10 ms). (With no
	// RTT sample at all gVisor's probe waits 1 s, which the RTO cuts
	// short.)
	p.handshake(accept, p.sendSYNWithSACK, time.Millisecond)

	if _, err := p.conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	p.conn.Close()
	data := p.next(time.Second)
	if data.PayloadLen != 6 {
		t.Fatalf("want the 6 bytes of data, got %+v", data)
	}
	fin := p.next(time.Second)
	if fin.Flags&header.TCPFlagFin == 0 || fin.Seq != data.Seq+6 {
		t.Fatalf("want tund's FIN after the data, got %+v", fin)
	}
	finAt := time.Now()

	// The data's ACK, read 30 ms late; the ACK of the FIN is the peer's
	// delayed one, which this peer never sends.
	if f, ok := p.nextOrNone(30 * time.Millisecond); ok {
		t.Fatalf("tund sent %+v %v after its FIN, before the ACK of its data was read", f, time.Since(finAt).Round(time.Millisecond))
	}
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq)
	again, ok := p.nextOrNone(2 * time.Second)
	if !ok {
		t.Fatal("tund never sent its FIN again: no RTO after the data's ACK")
	}
	gap := time.Since(finAt)
	if again.Flags&header.TCPFlagFin == 0 || again.Seq != fin.Seq {
		t.Fatalf("want tund's FIN again, got %+v", again)
	}
	t.Logf("the FIN came again %v after the first", gap.Round(time.Millisecond))
	// The RTO is 200 ms (the minimum) from the FIN's transmission; finAt
	// is taken after it, so the margin is the test's scheduling only.
	if gap < 190*time.Millisecond {
		t.Errorf("tund sent its FIN again %v after the first, before the peer's delayed ACK of it could be due (200 ms, RFC 8985 §7.2)", gap)
	}
}
