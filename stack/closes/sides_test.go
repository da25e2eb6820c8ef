package closes

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/internal/wire"
)

// TestCloseSides plays the closes of RFC 9293 §3.6 (Figures 12 and 13) and
// checks the state each side enters with each segment.
func TestCloseSides(t *testing.T) {
	const (
		F = header.TCPFlagFin | header.TCPFlagAck
		A = header.TCPFlagAck
		R = header.TCPFlagRst
	)
	type step struct {
		from             side
		flags            header.TCPFlags
		seq, ack         uint32
		len              int
		tundTo, peerTo   string
		finRetx, ackRetx bool
		changes          int // the state changes the segment makes, when checked
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"four-way, tund first", []step{
			{from: tund, flags: F, seq: 100, ack: 500, tundTo: "FIN-WAIT-1", peerTo: "CLOSE-WAIT"},
			{from: peerSide, flags: A, seq: 500, ack: 101, tundTo: "FIN-WAIT-2"},
			{from: peerSide, flags: F, seq: 500, ack: 101, tundTo: "TIME-WAIT", peerTo: "LAST-ACK"},
			{from: tund, flags: A, seq: 101, ack: 501, peerTo: "CLOSED"},
		}},
		{"three-way, peer first, data before the FIN", []step{
			{from: peerSide, flags: F, seq: 500, ack: 100, tundTo: "CLOSE-WAIT", peerTo: "FIN-WAIT-1"},
			{from: tund, flags: A, seq: 100, ack: 501, len: 10, peerTo: "FIN-WAIT-2"},
			{from: tund, flags: F, seq: 110, ack: 501, tundTo: "LAST-ACK", peerTo: "TIME-WAIT"},
			{from: peerSide, flags: A, seq: 501, ack: 111, tundTo: "CLOSED"},
		}},
		{"simultaneous", []step{
			{from: tund, flags: F, seq: 100, ack: 500, tundTo: "FIN-WAIT-1", peerTo: "CLOSE-WAIT"},
			// The peer's FIN left before tund's arrived: it does not ACK it.
			// Nor was the peer ever in CLOSE-WAIT: both are in CLOSING.
			{from: peerSide, flags: F, seq: 500, ack: 100, tundTo: "CLOSING", peerTo: "CLOSING"},
			{from: tund, flags: A, seq: 101, ack: 501, peerTo: "TIME-WAIT"},
			{from: peerSide, flags: A, seq: 501, ack: 101, tundTo: "TIME-WAIT"},
		}},
		{"simultaneous, the peer's FIN seen first", []step{
			// tund reads the peer's FIN after it sent its own: the tracer
			// sees the peer's first, but tund's FIN does not ACK it.
			{from: peerSide, flags: F, seq: 500, ack: 100, tundTo: "CLOSE-WAIT", peerTo: "FIN-WAIT-1"},
			{from: tund, flags: F, seq: 100, ack: 500, tundTo: "CLOSING", peerTo: "CLOSING"},
			{from: peerSide, flags: A, seq: 501, ack: 101, tundTo: "TIME-WAIT"},
			{from: tund, flags: A, seq: 101, ack: 501, peerTo: "TIME-WAIT"},
		}},
		{"FIN|ACK ends FIN-WAIT-1", []step{
			{from: tund, flags: F, seq: 100, ack: 500, tundTo: "FIN-WAIT-1", peerTo: "CLOSE-WAIT"},
			// One change, FIN-WAIT-1 to TIME-WAIT: no FIN-WAIT-2 stay.
			{from: peerSide, flags: F | A, seq: 500, ack: 101, tundTo: "TIME-WAIT", peerTo: "LAST-ACK", changes: 2},
		}},
		{"lost final ACK", []step{
			{from: tund, flags: F, seq: 100, ack: 500, tundTo: "FIN-WAIT-1", peerTo: "CLOSE-WAIT"},
			{from: peerSide, flags: F, seq: 500, ack: 101, tundTo: "TIME-WAIT", peerTo: "LAST-ACK"},
			{from: tund, flags: A, seq: 101, ack: 501, peerTo: "CLOSED"},
			{from: peerSide, flags: F, seq: 500, ack: 101, finRetx: true},
			{from: tund, flags: A, seq: 101, ack: 501, ackRetx: true},
		}},
		{"reset in CLOSE-WAIT", []step{
			{from: peerSide, flags: F, seq: 500, ack: 100, tundTo: "CLOSE-WAIT", peerTo: "FIN-WAIT-1"},
			{from: tund, flags: R, seq: 100, tundTo: "CLOSED", peerTo: "CLOSED"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := newCloseSides(time.Now())
			for i, s := range tc.steps {
				eff := cs.apply(wire.Fields{Flags: s.flags, Seq: s.seq, Ack: s.ack, PayloadLen: s.len}, s.from, time.Now())
				var tundTo, peerTo string
				for _, c := range eff.changes[:eff.n] {
					if c.side == tund {
						tundTo = c.to.String()
					} else {
						peerTo = c.to.String()
					}
				}
				if s.changes != 0 && eff.n != s.changes {
					t.Errorf("step %d (%s %s): %d state changes, want %d: %+v", i, s.from, tcpflag.String(uint8(s.flags)), eff.n, s.changes, eff.changes[:eff.n])
				}
				if tundTo != s.tundTo || peerTo != s.peerTo || eff.finRetx != s.finRetx || eff.ackRetx != s.ackRetx {
					t.Errorf("step %d (%s %s): tund→%q peer→%q finRetx=%v ackRetx=%v; want tund→%q peer→%q finRetx=%v ackRetx=%v",
						i, s.from, tcpflag.String(uint8(s.flags)), tundTo, peerTo, eff.finRetx, eff.ackRetx, s.tundTo, s.peerTo, s.finRetx, s.ackRetx)
				}
			}
		})
	}
}
