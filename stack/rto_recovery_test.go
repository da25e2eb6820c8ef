package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
)

// TestRTORecoveryStaysInSlowStart pins patch 0008: after an RTO the sender
// resends its flight from SND.UNA in slow start (RFC 5681 §3.1, RFC 6298
// §5.4), one more segment per ACK. gVisor's RACK saw the whole old flight
// as lost as soon as the first retransmission was ACKed and entered fast
// recovery, whose pipe estimate then counted that flight as in the network:
// one segment more went out, then nothing until the next RTO. Against
// Linux clients with 5% loss each way this kept echo connections in
// LAST-ACK for tens of seconds (RELIABILITY.md). Here a flight of eight
// segments and tund's FIN is lost whole; after the RTO every ACK must bring
// the next segments, each sent once, up to the FIN.
func TestRTORecoveryStaysInSlowStart(t *testing.T) {
	p := connectSACK(t)
	const segments = 8
	if _, err := p.conn.Write(make([]byte, segments*sackMSS)); err != nil {
		t.Fatal(err)
	}
	p.conn.Close()
	var data []wire.Fields
	for n := 0; n < segments*sackMSS; {
		f := p.next(time.Second)
		if f.PayloadLen == 0 {
			t.Fatalf("want data segment %d, got %+v", len(data)+1, f)
		}
		data = append(data, f)
		n += f.PayloadLen
	}
	fin := p.next(time.Second)
	if fin.Flags&header.TCPFlagFin == 0 {
		t.Fatalf("want tund's FIN after its data, got %+v", fin)
	}
	end := func(f wire.Fields) uint32 { return f.Seq + uint32(f.PayloadLen) }

	// All of it is lost. The tail loss probe (RFC 8985 §7) may come
	// first; then the RTO resends the first segment.
	var rto wire.Fields
	for i := 0; ; i++ {
		rto = p.next(5 * time.Second)
		if rto.Seq == data[0].Seq && rto.PayloadLen > 0 {
			break
		}
		if i == 2 {
			t.Fatalf("want the first segment resent by the RTO, got %+v", rto)
		}
	}
	acked := time.Now()
	// After the timeout the RTO is backed off to 400 ms or more (RFC 6298
	// §5.5, gVisor's minimum 200 ms): a segment that takes longer than
	// this came from a timer, not from the ACK before it.
	const ackClocked = 300 * time.Millisecond
	p.sendSACK(header.TCPFlagAck, peerISS+1, end(rto))

	// Slow start: the ACK of one segment lets two more go at once. With
	// the fast recovery that RACK started, one went and the next segment
	// was the same one again, resent by the following RTO.
	first, second := p.next(ackClocked), p.next(ackClocked)
	if first.Seq != end(rto) || second.Seq != end(first) {
		t.Fatalf("after the ACK of the RTO's retransmission at %d, want the next two segments at %d and %d; got %+v then %+v",
			end(rto), end(rto), end(first), first, second)
	}

	// ACK each segment as it comes: the rest of the flight, then the FIN,
	// each sent once.
	sent := map[uint32]bool{first.Seq: true, second.Seq: true}
	p.sendSACK(header.TCPFlagAck, peerISS+1, end(second))
	for {
		f, ok := p.nextOrNone(ackClocked)
		if !ok {
			t.Fatalf("nothing within %v of an ACK, with %d segments resent: the recovery waits for a timer", ackClocked, len(sent))
		}
		if sent[f.Seq] {
			t.Fatalf("segment %d sent twice after the RTO: the recovery waited for another timeout (%+v)", f.Seq, f)
		}
		sent[f.Seq] = true
		if f.Flags&header.TCPFlagFin != 0 {
			if f.Seq != fin.Seq {
				t.Fatalf("FIN at %d, want %d", f.Seq, fin.Seq)
			}
			p.sendSACK(header.TCPFlagAck, peerISS+1, fin.Seq+1)
			break
		}
		p.sendSACK(header.TCPFlagAck, peerISS+1, end(f))
	}
	t.Logf("flight of %d segments and the FIN resent %v after the ACK of the RTO's retransmission", segments, time.Since(acked).Round(time.Millisecond))
}
