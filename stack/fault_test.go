package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/link/faults"
)

// faultConnect connects the hand-played peer to a stack with faults f
// (four-way closes, so that every ACK is its own segment).
func faultConnect(t *testing.T, f faults.Set) *peer {
	t.Helper()
	return connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, Faults: f})
}

// noSegment fails if the stack sends anything within d.
func (p *peer) noSegment(d time.Duration, why string) {
	p.t.Helper()
	if f, ok := p.nextOrNone(d); ok {
		p.t.Fatalf("%s, but the stack sent %s seq=%d ack=%d", why, tcpflag.String(uint8(f.Flags)), f.Seq, f.Ack)
	}
}

func faultSegments(c *closes.Record, fault string) int {
	n := 0
	for _, s := range c.Segments {
		if s.Fault == fault {
			n++
		}
	}
	return n
}

func TestFaultDropFinalACKOnce(t *testing.T) {
	p := faultConnect(t, faults.Set{DropFinalACK: faults.Chance{Once: true}})
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.noSegment(200*time.Millisecond, "the final ACK was to be dropped")
	// The peer, in LAST-ACK, retransmits its FIN; TIME-WAIT answers it.
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	ack := p.next(time.Second)
	if ack.Flags != header.TCPFlagAck || ack.Ack != peerISS+2 {
		t.Fatalf("TIME-WAIT answered the retransmitted FIN with %s ack=%d, want ACK ack=%d", tcpflag.String(uint8(ack.Flags)), ack.Ack, peerISS+2)
	}
	c := awaitClose(t, p)
	if !c.FinalACKLost || faultSegments(c, faults.DropFinalACK) != 1 || c.FINRetransmits != 1 {
		t.Errorf("record: final ACK lost %v, %d dropped ACKs, %d FIN retransmits; want true, 1, 1: %s", c.FinalACKLost, faultSegments(c, faults.DropFinalACK), c.FINRetransmits, ladder(c))
	}
	if n := p.st.FaultStats().Count(faults.DropFinalACK); n != 1 {
		t.Errorf("drop-final-ack struck %d times, want 1", n)
	}
}

func TestFaultDropFinalACKSparesPassiveClose(t *testing.T) {
	// When the peer closes first, tund's ACK of its FIN is not a final ACK.
	p := faultConnect(t, faults.Set{DropFinalACK: faults.Chance{P: 1}})
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	if ack := p.next(time.Second); ack.Flags != header.TCPFlagAck || ack.Ack != peerISS+2 {
		t.Fatalf("got %s ack=%d, want the ACK of the peer's FIN", tcpflag.String(uint8(ack.Flags)), ack.Ack)
	}
	if n := p.st.FaultStats().Count(faults.DropFinalACK); n != 0 {
		t.Errorf("drop-final-ack struck %d times in a passive close, want 0", n)
	}
}

func TestFaultDropFINOnce(t *testing.T) {
	p := faultConnect(t, faults.Set{DropFIN: faults.Chance{Once: true}})
	p.conn.Close()
	p.noSegment(100*time.Millisecond, "the first FIN was to be dropped")
	fin := p.next(3 * time.Second) // gVisor's retransmission
	if fin.Flags&header.TCPFlagFin == 0 || fin.Seq != p.iss+1 {
		t.Fatalf("got %s seq=%d, want the FIN retransmitted at seq %d", tcpflag.String(uint8(fin.Flags)), fin.Seq, p.iss+1)
	}
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.next(time.Second)
	c := awaitClose(t, p)
	if faultSegments(c, faults.DropFIN) != 1 || c.Initiator != closes.SideTund || c.Segments[0].Fault != faults.DropFIN {
		t.Errorf("record does not start with the dropped FIN: %+v", c.Segments)
	}
}

func TestFaultNoFIN(t *testing.T) {
	p := faultConnect(t, faults.Set{NoFIN: true})
	p.conn.Close()
	p.noSegment(1500*time.Millisecond, "tund's FINs were never to reach the wire")
	if n := p.st.FaultStats().Count(faults.NoFIN); n < 2 {
		t.Errorf("no-fin struck %d times in 1.5 s, want the FIN and at least one retransmission", n)
	}
}

func TestFaultDelayFIN(t *testing.T) {
	const d = 300 * time.Millisecond
	p := faultConnect(t, faults.Set{DelayFIN: d})
	start := time.Now()
	p.conn.Close()
	fin := p.next(2 * time.Second)
	if fin.Flags&header.TCPFlagFin == 0 {
		t.Fatalf("got %s, want the FIN", tcpflag.String(uint8(fin.Flags)))
	}
	if late := time.Since(start); late < d {
		t.Errorf("the FIN left %v after Close, want at least %v", late, d)
	}
}

func TestFaultPerPort(t *testing.T) {
	// No-fin on another port leaves port 7 alone.
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, PortFaults: map[uint16]faults.Set{8: {NoFIN: true}}})
	p.conn.Close()
	if fin := p.next(time.Second); fin.Flags&header.TCPFlagFin == 0 {
		t.Fatalf("got %s, want tund's FIN", tcpflag.String(uint8(fin.Flags)))
	}
}
