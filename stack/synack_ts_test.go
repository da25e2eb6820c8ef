package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
)

// TestRetransmittedSYNACKTimestamp pins patch 0009: a retransmitted SYN-ACK
// carries the current clock in its TSval (RFC 7323 §4.1). gVisor resent the
// first one's, so a peer whose first SYN-ACK was lost echoed a timestamp from
// before the retransmission, and the first RTT sample, taken from that echo,
// spanned the whole handshake backoff: one lost SYN-ACK gave the connection
// an RTO of seconds (Karn's rule, RFC 6298 §3, forbids exactly that sample).
// Seen on the wire as a lost FIN resent only 5.8 s later, the connection in
// LAST-ACK meanwhile.
func TestRetransmittedSYNACKTimestamp(t *testing.T) {
	p, accept := listenPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	p.sendSYNWithTS(peerTS)

	// The first SYN-ACK is lost; the handshake timer resends it (1 s).
	first := p.nextTS(time.Second)
	if first.Flags != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("want a SYN-ACK, got %+v", first.Fields)
	}
	again := p.nextTS(3 * time.Second)
	if again.Flags != header.TCPFlagSyn|header.TCPFlagAck || again.Seq != first.Seq {
		t.Fatalf("want the SYN-ACK again, got %+v", again.Fields)
	}
	if again.tsVal == first.tsVal {
		t.Fatalf("the retransmitted SYN-ACK carries the first one's TSval %d: the peer's echo of it measures the handshake backoff as RTT", first.tsVal)
	}
	t.Logf("SYN-ACK TSval %d, retransmitted with %d", first.tsVal, again.tsVal)

	// The peer completes the handshake at once, echoing what it got, and
	// tund's first data segment is lost: the RTO, seeded by that echo,
	// must be the minimum (200 ms), or the initial 1 s where the sample
	// rounds to 0 ms and is not taken, not the 3 s that SRTT + 4 RTTVAR
	// gives for a sample of one backoff (1 s).
	p.sendTS(header.TCPFlagAck, peerISS+1, again.Seq+1, peerTS+1, again.tsVal)
	c := accept()
	if _, err := c.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	data := p.nextTS(time.Second)
	sent := time.Now()
	resent := p.nextTS(5 * time.Second)
	if resent.Seq != data.Seq || resent.PayloadLen == 0 {
		t.Fatalf("want the data segment again, got %+v", resent.Fields)
	}
	if wait := time.Since(sent); wait > 2*time.Second {
		t.Fatalf("lost data resent after %v: the RTO was seeded from the first SYN-ACK's timestamp", wait.Round(time.Millisecond))
	}
}

// tsSegment is a segment the stack sent with its timestamp option.
type tsSegment struct {
	wire.Fields
	tsVal, tsEcr uint32
}

// nextTS returns the stack's next segment with its TSval (0 without one).
func (p *peer) nextTS(timeout time.Duration) tsSegment {
	p.t.Helper()
	f, b, ok := p.nextPacket(timeout)
	if !ok {
		p.t.Fatalf("no segment from the stack within %v", timeout)
	}
	tcp := header.TCP(b[header.IPv4(b).HeaderLength():])
	s := tsSegment{Fields: f}
	if f.Flags&header.TCPFlagSyn != 0 {
		o := header.ParseSynOptions(tcp.Options(), true)
		s.tsVal, s.tsEcr = o.TSVal, o.TSEcr
	} else {
		o := header.ParseTCPOptions(tcp.Options())
		s.tsVal, s.tsEcr = o.TSVal, o.TSEcr
	}
	return s
}

// sendTS sends a segment from the peer with a timestamp option.
func (p *peer) sendTS(flags header.TCPFlags, seq, ack, tsVal, tsEcr uint32) {
	var opts [12]byte
	n := header.EncodeNOP(opts[:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeTSOption(tsVal, tsEcr, opts[n:])
	p.sendOptions(flags, seq, ack, opts[:n])
}

// TestRetransmittedSYNGetsSYNACK pins patch 0010: a SYN that arrives again
// in SYN-RECEIVED, the peer's retransmission after our SYN-ACK was lost, is
// answered with the SYN-ACK, as Linux answers it, and not with a bare ACK,
// which the peer in SYN-SENT drops: the handshake then waited for our own
// SYN-ACK backoff (1 s, 2 s, 4 s) while the peer's SYNs went unanswered.
func TestRetransmittedSYNGetsSYNACK(t *testing.T) {
	p, accept := listenPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	p.sendSYNWithTS(peerTS)
	first := p.nextTS(time.Second)
	if first.Flags != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("want a SYN-ACK, got %+v", first.Fields)
	}

	// That SYN-ACK is lost; the peer sends its SYN again.
	p.sendSYNWithTS(peerTS + 1000)
	// Well before the handshake timer's own retransmission (1 s).
	again := p.nextTS(300 * time.Millisecond)
	if again.Flags != header.TCPFlagSyn|header.TCPFlagAck || again.Seq != first.Seq || again.Ack != peerISS+1 {
		t.Fatalf("want the SYN-ACK again in answer to the retransmitted SYN, got %+v", again.Fields)
	}
	if again.tsEcr != peerTS+1000 {
		t.Fatalf("the SYN-ACK echoes TSval %d, want the retransmitted SYN's %d", again.tsEcr, peerTS+1000)
	}

	p.sendTS(header.TCPFlagAck, peerISS+1, again.Seq+1, peerTS+1001, again.tsVal)
	accept() // the handshake completed with the second SYN-ACK
}

// peerTS is the hand-played peer's first TSval.
const peerTS = 5000

// sendSYNWithTS sends the peer's SYN with the MSS and timestamp options.
func (p *peer) sendSYNWithTS(tsVal uint32) {
	var opts [20]byte
	n := header.EncodeMSSOption(sackMSS, opts[:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeTSOption(tsVal, 0, opts[n:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeNOP(opts[n:])
	p.sendOptions(header.TCPFlagSyn, peerISS, 0, opts[:n])
}
