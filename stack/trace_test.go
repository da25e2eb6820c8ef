package stack

import (
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// awaitClose returns the first close record, waiting for it up to 2 s.
func awaitClose(t *testing.T, p *peer) *Close {
	t.Helper()
	ch, stop := p.st.SubscribeCloses()
	defer stop()
	if c := p.st.Closes(); len(c) > 0 {
		return c[0]
	}
	select {
	case c := <-ch:
		return c
	case <-time.After(2 * time.Second):
		t.Fatal("no close record")
		return nil
	}
}

func ladder(c *Close) string {
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
	p.send(header.TCPFlagAck, peerISS+2, fin.seq+1)
	c := awaitClose(t, p)
	if c.Kind != KindThreeWay || c.Initiator != SidePeer || ladder(c) != "peer:FA tund:FA peer:A" {
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
	p.send(header.TCPFlagAck, peerISS+2, fin.seq+1)
	c := awaitClose(t, p)
	if c.Kind != KindFourWay || c.Initiator != SidePeer || ladder(c) != "peer:FA tund:A tund:FA peer:A" {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
}

func TestTraceTundFirst(t *testing.T) {
	p := connect(t, 0)
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+1, fin.seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.seq+1)
	p.next(time.Second)
	c := awaitClose(t, p)
	if c.Kind != KindFourWay || c.Initiator != SideTund || ladder(c) != "tund:FA peer:A peer:FA tund:A" {
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
	p.send(header.TCPFlagAck, peerISS+2, fin.seq+1)
	c := awaitClose(t, p)
	if c.Kind != KindSimultaneous {
		t.Errorf("got %s by %s: %s", c.Kind, c.Initiator, ladder(c))
	}
}

func TestTraceReset(t *testing.T) {
	p := connect(t, 0)
	p.conn.Abort()
	c := awaitClose(t, p)
	if c.Kind != KindReset || c.ResetBy != SideTund || c.Initiator != SideTund {
		t.Errorf("got %s by %s (reset by %q): %s", c.Kind, c.Initiator, c.ResetBy, ladder(c))
	}
}
