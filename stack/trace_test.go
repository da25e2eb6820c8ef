package stack

import (
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/closes"
)

// awaitClose returns the first close record, waiting for it up to 3 s.
func awaitClose(t *testing.T, p *peer) *closes.Record {
	t.Helper()
	ch, stop := p.st.SubscribeCloses()
	defer stop()
	if c := p.st.Closes(); len(c) > 0 {
		return c[0]
	}
	return awaitRecord(t, ch)
}

func ladder(c *closes.Record) string {
	var b []string
	for _, s := range c.Segments {
		b = append(b, s.From+":"+s.Flags)
	}
	return strings.Join(b, " ")
}

func TestTracePeerFirstMerged(t *testing.T) {
	p := connect(t, time.Second)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	p.readEOF()
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+2, fin.Seq+1)
	c := awaitClose(t, p)
	if c.Kind != closes.KindThreeWay || c.Initiator != closes.SidePeer || ladder(c) != "peer:FA tund:FA peer:A" {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
}

func TestTracePeerFirstFourWay(t *testing.T) {
	p := connect(t, 0)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	p.next(time.Second) // the ACK of the FIN, alone
	p.readEOF()
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+2, fin.Seq+1)
	c := awaitClose(t, p)
	if c.Kind != closes.KindFourWay || c.Initiator != closes.SidePeer || ladder(c) != "peer:FA tund:A tund:FA peer:A" {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
}

func TestTraceTundFirst(t *testing.T) {
	p := connect(t, 0)
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.next(time.Second)
	c := awaitClose(t, p)
	if c.Kind != closes.KindFourWay || c.Initiator != closes.SideTund || ladder(c) != "tund:FA peer:A peer:FA tund:A" {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
}

func TestTraceSimultaneous(t *testing.T) {
	p := connect(t, 0)
	p.conn.Close()
	fin := p.next(time.Second)
	// The peer's FIN crosses tund's: it does not acknowledge it.
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	p.next(time.Second) // tund ACKs the peer's FIN (CLOSING)
	p.send(header.TCPFlagAck, peerISS+2, fin.Seq+1)
	c := awaitClose(t, p)
	if c.Kind != closes.KindSimultaneous {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
}

func TestTraceReset(t *testing.T) {
	p := connect(t, 0)
	p.conn.Abort()
	c := awaitClose(t, p)
	if c.Kind != closes.KindReset || c.ResetBy != closes.SideTund || c.Initiator != closes.SideTund {
		t.Errorf("got %s by %s (reset by %q): %s", c.Kind, c.Initiator, c.ResetBy, ladder(c))
	}
	if n := p.st.CloseStats().Resets[closes.ResetKey{Direction: "sent", Reason: closes.ResetAbort}]; n != 1 {
		t.Errorf("RST counted %d times as an abort: %v", n, p.st.CloseStats().Resets)
	}
}

// TestTraceLateSegmentsJoinTheirClose: after tund's abort, the peer's FIN
// that crossed the RST and tund's RST in answer to it belong to the same
// close, not to a second one; a SYN on the same 4-tuple then starts a new
// connection, whose end is a close of its own.
func TestTraceLateSegmentsJoinTheirClose(t *testing.T) {
	p := connect(t, 0)
	p.conn.Abort()
	rst := p.next(time.Second)
	if rst.Flags&header.TCPFlagRst == 0 {
		t.Fatalf("want tund's RST, got %+v", rst)
	}
	awaitClose(t, p)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, rst.Seq)
	if again := p.next(time.Second); again.Flags&header.TCPFlagRst == 0 {
		t.Fatalf("want tund's RST for the late FIN, got %+v", again)
	}
	recs := p.st.Closes()
	if len(recs) != 1 || ladder(recs[0]) != "tund:RA peer:FA tund:RA" && ladder(recs[0]) != "tund:RA peer:FA tund:R" {
		t.Fatalf("want one close with the late FIN and tund's RST in it, got %d: %v", len(recs), ladders(recs))
	}
	if n := p.st.CloseStats().Resets[closes.ResetKey{Direction: "sent", Reason: closes.ResetNoConnection}]; n != 1 {
		t.Errorf("tund's RST for the late FIN counted %d times as no-connection", n)
	}
	// The peer sent its FIN before tund's RST reached it: they crossed.
	counted := p.st.CloseStats().Closes
	if recs[0].Initiator != closes.SideBoth || counted[closes.Key{Kind: closes.KindReset, Initiator: closes.SideBoth}] != 1 || counted[closes.Key{Kind: closes.KindReset, Initiator: closes.SideTund}] != 0 {
		t.Errorf("the crossed close: initiator %s, counted %v; want both, once", recs[0].Initiator, counted)
	}

	p.send(header.TCPFlagSyn, peerISS+100000, 0)
	if synack := p.next(time.Second); synack.Flags != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("want a SYN-ACK for the new incarnation, got %+v", synack)
	}
	p.send(header.TCPFlagRst, peerISS+100001, 0)
	ch, stop := p.st.SubscribeCloses()
	defer stop()
	if len(p.st.Closes()) < 2 {
		awaitRecord(t, ch)
	}
	if recs := p.st.Closes(); len(recs) != 2 || ladder(recs[1]) != "peer:R" {
		t.Errorf("want the new incarnation's reset as a close of its own, got %v", ladders(recs))
	}
}

func ladders(recs []*closes.Record) []string {
	var l []string
	for _, c := range recs {
		l = append(l, ladder(c))
	}
	return l
}

// awaitRecord returns the next record from ch, waiting up to 3 s.
func awaitRecord(t *testing.T, ch <-chan *closes.Record) *closes.Record {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(3 * time.Second):
		t.Fatal("no close record")
		return nil
	}
}

// TestTraceFinalACKLost replays the peer's FIN while tund is in TIME-WAIT,
// as a peer does whose LAST-ACK never got tund's final ACK: the record is
// filed again with the replay, and the TIME-WAIT time counts from entering
// it to 2 x MSL after the second ACK.
func TestTraceFinalACKLost(t *testing.T) {
	p := connect(t, 0)
	ch, stop := p.st.SubscribeCloses()
	defer stop()
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.next(time.Second) // the final ACK, "lost"
	first := awaitRecord(t, ch)
	if first.FinalACKLost || ladder(first) != "tund:FA peer:FA tund:A" {
		t.Fatalf("first record: %+v", first)
	}
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	if again := p.next(time.Second); again.Flags != header.TCPFlagAck || again.Ack != peerISS+2 {
		t.Fatalf("tund answered the replayed FIN with %s ack %d", tcpflag.String(uint8(again.Flags)), again.Ack)
	}
	c := awaitRecord(t, ch)
	if c.ID != first.ID || !c.FinalACKLost || c.FINRetransmits != 1 || c.ACKRetransmits != 1 || c.Kind != first.Kind ||
		ladder(c) != "tund:FA peer:FA tund:A peer:FA tund:A" {
		t.Errorf("amended record: id %d (first %d) kind %s lost=%v finRetx=%d ackRetx=%d %s",
			c.ID, first.ID, c.Kind, c.FinalACKLost, c.FINRetransmits, c.ACKRetransmits, ladder(c))
	}
	if first.FinalACKLost || len(first.Segments) != 3 {
		t.Errorf("the first record changed under its readers: %+v", first)
	}
	if recs := p.st.Closes(); len(recs) != 1 || recs[0] != c {
		t.Errorf("/closes keeps %d records, want the amended one only", len(recs))
	}
	s := p.st.CloseStats()
	if s.FinalACKLost != 1 || s.Retransmits[closes.RetransmitKey{Side: closes.SidePeer, Segment: "FIN"}] != 1 || s.Retransmits[closes.RetransmitKey{Side: closes.SideTund, Segment: "ACK"}] != 1 ||
		s.Closes[closes.Key{Kind: c.Kind, Initiator: closes.SideTund}] != 1 {
		t.Errorf("stats: %+v", s)
	}
	// 2 x MSL (2 s) after the second ACK, TIME-WAIT ends.
	tr := p.st.tracer
	tr.Sweep(c.End.Add(2*time.Second - time.Millisecond))
	early := tr.TimeWaits()
	tr.Sweep(c.End.Add(2*time.Second + time.Millisecond))
	late := tr.TimeWaits()
	h := p.st.CloseStats().StateTimes["TIME-WAIT"]
	want := c.End.Add(2 * time.Second).Sub(c.Segments[1].At).Seconds()
	if early != 1 || late != 0 || h.Count != 1 || h.Sum < want-0.001 || h.Sum > want+0.001 {
		t.Errorf("TIME-WAIT entries %d then %d; histogram count %d sum %.4f s, want 1 of %.4f s", early, late, h.Count, h.Sum, want)
	}
}

// TestTraceFinWait2Timeout lets tund's FIN-WAIT-2 run out (1 s), then sends
// the peer's late FIN: tund no longer knows the connection and resets it.
func TestTraceFinWait2Timeout(t *testing.T) {
	p := connect(t, 0)
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	awaitStateCount(t, p.st, "FIN-WAIT-2", 1)
	awaitStateCount(t, p.st, "FIN-WAIT-2", 0)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	if rst := p.next(time.Second); rst.Flags&header.TCPFlagRst == 0 {
		t.Fatalf("late FIN answered with %s", tcpflag.String(uint8(rst.Flags)))
	}
	c := awaitClose(t, p)
	if c.Kind != closes.KindFinWait2Timeout || c.ResetBy != closes.SideTund || ladder(c) != "tund:FA peer:A peer:FA tund:R" {
		t.Errorf("got %s (reset by %s): %s", c.Kind, c.ResetBy, ladder(c))
	}
	s := p.st.CloseStats()
	// When FIN-WAIT-2 ran out the wire does not say: it is not timed.
	if s.Resets[closes.ResetKey{Direction: "sent", Reason: closes.ResetNoConnection}] != 1 || s.StateTimes["FIN-WAIT-2"].Count != 0 || s.StateTimes["FIN-WAIT-1"].Count != 1 {
		t.Errorf("resets %v, FIN-WAIT-1/2 observations %d/%d", s.Resets, s.StateTimes["FIN-WAIT-1"].Count, s.StateTimes["FIN-WAIT-2"].Count)
	}
}

// TestTraceHalfClosePolicy closes at the peer's FIN as a half-close=close
// service does: the record says the policy ended it.
func TestTraceHalfClosePolicy(t *testing.T) {
	p := connect(t, 0)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, p.iss+1)
	p.next(time.Second)
	p.readEOF()
	p.conn.NoteHalfClose(closes.HalfCloseClosed)
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+2, fin.Seq+1)
	c := awaitClose(t, p)
	if c.Kind != closes.KindHalfClosePolicy || c.Initiator != closes.SidePeer {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
	if n := p.st.CloseStats().HalfClose[closes.HalfCloseClosed]; n != 1 {
		t.Errorf("half-close closed counted %d times, want 1", n)
	}
}

// awaitStateCount polls the stack until n endpoints are in state.
func awaitStateCount(t *testing.T, st *Stack, state string, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for st.StateCounts()[state] != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d endpoints in %s after 3 s, want %d", st.StateCounts()[state], state, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTraceRetransmitLimit never acknowledges tund's FIN: tund retransmits
// it until its user timeout (500 ms) gives up, and the record, finished by
// the sweep once the endpoint is gone, says so.
func TestTraceRetransmitLimit(t *testing.T) {
	p := connect(t, 0)
	timeout := tcpip.TCPUserTimeoutOption(500 * time.Millisecond)
	if err := p.conn.ep.SetSockOpt(&timeout); err != nil {
		t.Fatal(err)
	}
	p.conn.Close()
	p.next(time.Second) // the FIN
	p.next(time.Second) // and again: the ACK never comes
	awaitStateCount(t, p.st, "FIN-WAIT-1", 0)
	ch, stop := p.st.SubscribeCloses()
	defer stop()
	p.st.tracer.Sweep(time.Now().Add(closes.DefaultLinger + time.Second))
	c := awaitRecord(t, ch)
	if c.Kind != closes.KindRetransmitLimit || c.Initiator != closes.SideTund || c.FINRetransmits < 1 {
		t.Errorf("got %s by %s with %d FIN retransmissions: %s", c.Kind, c.Initiator, c.FINRetransmits, ladder(c))
	}
}
