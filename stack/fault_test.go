package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

// faultConnect connects the hand-played peer to a stack with faults f
// (four-way closes, so that every ACK is its own segment).
func faultConnect(t *testing.T, f Faults) *peer {
	t.Helper()
	return connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, Faults: f})
}

// noSegment fails if the stack sends anything within d.
func (p *peer) noSegment(d time.Duration, why string) {
	p.t.Helper()
	if f, ok := p.nextOrNone(d); ok {
		p.t.Fatalf("%s, but the stack sent %s seq=%d ack=%d", why, flagString(f.flags), f.seq, f.ack)
	}
}

func faultSegments(c *Close, fault string) int {
	n := 0
	for _, s := range c.Segments {
		if s.Fault == fault {
			n++
		}
	}
	return n
}

func TestFaultDropFinalACKOnce(t *testing.T) {
	p := faultConnect(t, Faults{DropFinalACK: Chance{Once: true}})
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+1, fin.seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.seq+1)
	p.noSegment(200*time.Millisecond, "the final ACK was to be dropped")
	// The peer, in LAST-ACK, retransmits its FIN; TIME-WAIT answers it.
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.seq+1)
	ack := p.next(time.Second)
	if ack.flags != header.TCPFlagAck || ack.ack != peerISS+2 {
		t.Fatalf("TIME-WAIT answered the retransmitted FIN with %s ack=%d, want ACK ack=%d", flagString(ack.flags), ack.ack, peerISS+2)
	}
	c := awaitClose(t, p)
	if !c.FinalACKLost || faultSegments(c, FaultDropFinalACK) != 1 || c.FINRetransmits != 1 {
		t.Errorf("record: final ACK lost %v, %d dropped ACKs, %d FIN retransmits; want true, 1, 1: %s", c.FinalACKLost, faultSegments(c, FaultDropFinalACK), c.FINRetransmits, ladder(c))
	}
	if n := p.st.FaultStats().Count(FaultDropFinalACK); n != 1 {
		t.Errorf("drop-final-ack struck %d times, want 1", n)
	}
}

func TestFaultDropFinalACKSparesPassiveClose(t *testing.T) {
	// When the peer closes first, tund's ACK of its FIN is not a final ACK.
	p := faultConnect(t, Faults{DropFinalACK: Chance{P: 1}})
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	if ack := p.next(time.Second); ack.flags != header.TCPFlagAck || ack.ack != peerISS+2 {
		t.Fatalf("got %s ack=%d, want the ACK of the peer's FIN", flagString(ack.flags), ack.ack)
	}
	if n := p.st.FaultStats().Count(FaultDropFinalACK); n != 0 {
		t.Errorf("drop-final-ack struck %d times in a passive close, want 0", n)
	}
}

func TestFaultDropFINOnce(t *testing.T) {
	p := faultConnect(t, Faults{DropFIN: Chance{Once: true}})
	p.conn.Close()
	p.noSegment(100*time.Millisecond, "the first FIN was to be dropped")
	fin := p.next(3 * time.Second) // gVisor's retransmission
	if fin.flags&header.TCPFlagFin == 0 || fin.seq != p.iss+1 {
		t.Fatalf("got %s seq=%d, want the FIN retransmitted at seq %d", flagString(fin.flags), fin.seq, p.iss+1)
	}
	p.send(header.TCPFlagAck, peerISS+1, fin.seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.seq+1)
	p.next(time.Second)
	c := awaitClose(t, p)
	if faultSegments(c, FaultDropFIN) != 1 || c.Initiator != SideTund || c.Segments[0].Fault != FaultDropFIN {
		t.Errorf("record does not start with the dropped FIN: %+v", c.Segments)
	}
}

func TestFaultNoFIN(t *testing.T) {
	p := faultConnect(t, Faults{NoFIN: true})
	p.conn.Close()
	p.noSegment(1500*time.Millisecond, "tund's FINs were never to reach the wire")
	if n := p.st.FaultStats().Count(FaultNoFIN); n < 2 {
		t.Errorf("no-fin struck %d times in 1.5 s, want the FIN and at least one retransmission", n)
	}
}

func TestFaultDelayFIN(t *testing.T) {
	const d = 300 * time.Millisecond
	p := faultConnect(t, Faults{DelayFIN: d})
	start := time.Now()
	p.conn.Close()
	fin := p.next(2 * time.Second)
	if fin.flags&header.TCPFlagFin == 0 {
		t.Fatalf("got %s, want the FIN", flagString(fin.flags))
	}
	if late := time.Since(start); late < d {
		t.Errorf("the FIN left %v after Close, want at least %v", late, d)
	}
}

func TestFaultLoss(t *testing.T) {
	// The handshake could not pass a certain loss: the decisions are
	// tested on their own.
	def, ports, stats := Faults{LossIn: 1}, map[uint16]Faults{8: {LossOut: 1}}, new(FaultStats)
	e := newFaultEndpoint(channel.New(1, 1500, ""), def, ports, nil, newLossIn(def, ports, stats), stats)
	f := tcpFields{flow: flow{localPort: 7}, flags: header.TCPFlagAck}
	if e.inbound(f) {
		t.Error("loss-in 1 delivered a segment")
	}
	if v, _ := e.outbound(f); v != pass {
		t.Error("loss-out 0 on port 7 dropped a segment")
	}
	f.flow.localPort = 8
	if !e.inbound(f) {
		t.Error("loss-in 0 on port 8 dropped a segment")
	}
	if v, fault := e.outbound(f); v != drop || fault != FaultLossOut {
		t.Errorf("loss-out 1 on port 8: %v %q, want a drop by loss-out", v, fault)
	}
	if n := e.Stats().Count(FaultLossIn); n != 1 {
		t.Errorf("loss-in struck %d times, want 1", n)
	}
}

func TestFaultPerPort(t *testing.T) {
	// No-fin on another port leaves port 7 alone.
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second, PortFaults: map[uint16]Faults{8: {NoFIN: true}}})
	p.conn.Close()
	if fin := p.next(time.Second); fin.flags&header.TCPFlagFin == 0 {
		t.Fatalf("got %s, want tund's FIN", flagString(fin.flags))
	}
}

func TestFaultsSet(t *testing.T) {
	for _, c := range []struct {
		key, value string
		want       Faults
		bad        bool
	}{
		{key: "drop-final-ack", value: "once", want: Faults{DropFinalACK: Chance{Once: true}}},
		{key: "drop-fin", value: "30%", want: Faults{DropFIN: Chance{P: 0.3}}},
		{key: "drop-fin", value: "0", bad: true},
		{key: "drop-fin", value: "1.5", bad: true},
		{key: "delay-fin", value: "250ms", want: Faults{DelayFIN: 250 * time.Millisecond}},
		{key: "delay-fin", value: "-1s", bad: true},
		{key: "no-fin", value: "", want: Faults{NoFIN: true}},
		{key: "no-fin", value: "x", bad: true},
		{key: "loss-in", value: "0.05", want: Faults{LossIn: 0.05}},
		{key: "loss-out", value: "5%", want: Faults{LossOut: 0.05}},
		{key: "loss-out", value: "NaN", bad: true},
	} {
		var f Faults
		known, err := f.Set(c.key, c.value)
		if !known || (err != nil) != c.bad || (!c.bad && f != c.want) {
			t.Errorf("Set(%q, %q) = %v, %v, %+v; want known, bad=%v, %+v", c.key, c.value, known, err, f, c.bad, c.want)
		}
	}
	var f Faults
	if known, _ := f.Set("nope", "1"); known {
		t.Error("Set knew an unknown fault")
	}
	f = Faults{DropFinalACK: Chance{Once: true}, LossIn: 0.5, NoFIN: true}
	if got := f.String(); got != "drop-final-ack=once/no-fin/loss-in=0.5" {
		t.Errorf("String() = %q", got)
	}
}
