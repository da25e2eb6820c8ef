package closes

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/stack/internal/wire"
)

// TestTraceKindPastTruncation: a record keeps its first 48 segments, but
// the kind comes from the whole close. Here tund's FIN is followed by 60
// data segments from the peer (a half-close) before the peer's FIN|ACK
// acknowledges it: a three-way close, whose deciding segment the record
// had no room for.
func TestTraceKindPastTruncation(t *testing.T) {
	log := NewLog()
	tr := NewTracer(channel.New(1, 1500, ""), Config{Linger: time.Hour}, log, nil)
	defer tr.Close()
	fl := wire.Flow{LocalPort: 80, RemotePort: 40000}
	seg := func(from string, flags header.TCPFlags, seq, ack uint32, n int) {
		tr.segment(wire.Fields{Flow: fl, Flags: flags, Seq: seq, Ack: ack, PayloadLen: n}, from)
	}
	const A, F = header.TCPFlagAck, header.TCPFlagFin | header.TCPFlagAck
	seg(SideTund, F, 100, 500, 0)
	for i := uint32(0); i < 60; i++ {
		seg(SidePeer, A, 500+10*i, 100, 10) // data, not yet acknowledging tund's FIN
	}
	seg(SidePeer, F, 1100, 101, 0)
	seg(SideTund, A, 101, 1101, 0)
	recs := log.Records()
	if len(recs) != 1 || !recs[0].Truncated || recs[0].Kind != KindThreeWay {
		t.Fatalf("want one truncated three-way close, got %d: %+v", len(recs), recs)
	}
	if recs[0].Kind != KindThreeWay {
		t.Errorf("kind %s, want three-way", recs[0].Kind)
	}
}

// TestTraceLateRetransmits: a FIN sent again after its close completed
// (it crossed the ACK that acknowledged it) and the other side's ACK of it
// are a FIN and an ACK sent again, counted and added to the close's record,
// whether tund is in TIME-WAIT (it closed first) or CLOSED (the peer did).
func TestTraceLateRetransmits(t *testing.T) {
	const A, F = header.TCPFlagAck, header.TCPFlagFin | header.TCPFlagAck
	type seg struct {
		from     string
		flags    header.TCPFlags
		seq, ack uint32
	}
	for _, tc := range []struct {
		name     string
		segs     []seg
		finSide  string // the side that sends its FIN again
		ackSide  string
		tundWait bool
	}{
		{"tund in TIME-WAIT", []seg{
			// (The peer's FIN|ACK acknowledges tund's FIN: a tracer without a
			// stack takes a FIN in FIN-WAIT-2 for one that came too late.)
			{SideTund, F, 100, 500}, {SidePeer, F, 500, 101}, {SideTund, A, 101, 501},
			{SideTund, F, 100, 500}, // sent again before the peer's FIN|ACK arrived
			{SidePeer, A, 501, 101}, // the peer's answer: its ACK again
		}, SideTund, SidePeer, true},
		{"tund's FIN again before its final ACK, the peer's answer after", []seg{
			{SideTund, F, 100, 500}, {SidePeer, F, 500, 101},
			{SideTund, F, 100, 500}, // its RTO fired before the stack read the FIN|ACK
			{SideTund, A, 101, 501}, // the close completes: TIME-WAIT
			{SidePeer, A, 501, 101}, // the peer's answer to the FIN sent again
		}, SideTund, SidePeer, true},
		{"tund CLOSED", []seg{
			{SidePeer, F, 500, 100}, {SideTund, F, 100, 501}, {SidePeer, A, 501, 101},
			{SideTund, F, 100, 501},
			{SidePeer, A, 501, 101},
		}, SideTund, SidePeer, false},
		{"the peer's FIN again before the end, tund's answer after", []seg{
			{SidePeer, F, 500, 100}, {SideTund, F, 100, 501},
			{SidePeer, F, 500, 100}, // sent again before tund's FIN|ACK arrived
			{SidePeer, A, 501, 101}, // the close completes
			{SideTund, A, 101, 501}, // tund's answer to the FIN sent again
		}, SidePeer, SideTund, false},
		{"the peer's FIN again, then its RST, then tund's answer", []seg{
			{SidePeer, F, 500, 100},
			{SideTund, header.TCPFlagPsh | A, 100, 501}, // the reply acknowledges the FIN
			{SideTund, F, 100, 501},
			{SidePeer, F, 500, 100},               // crossed tund's reply
			{SidePeer, header.TCPFlagRst, 501, 0}, // the client is gone: the close ends
			{SideTund, A, 101, 501},               // tund's answer to the FIN sent again
		}, SidePeer, SideTund, false},
		{"the peer's FIN again, tund CLOSED", []seg{
			{SidePeer, F, 500, 100}, {SideTund, F, 100, 501}, {SidePeer, A, 501, 101},
			{SidePeer, F, 500, 101}, // crossed tund's FIN|ACK
			{SideTund, A, 101, 501},
		}, SidePeer, SideTund, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := NewLog()
			tr := NewTracer(channel.New(1, 1500, ""), Config{Linger: time.Hour, TimeWait: time.Hour}, log, nil)
			defer tr.Close()
			fl := wire.Flow{LocalPort: 80, RemotePort: 40000}
			for _, s := range tc.segs {
				tr.segment(wire.Fields{Flow: fl, Flags: s.flags, Seq: s.seq, Ack: s.ack}, s.from)
			}
			if got := tr.TimeWaits() == 1; got != tc.tundWait {
				t.Errorf("tund in TIME-WAIT: %v, want %v", got, tc.tundWait)
			}
			recs := log.Records()
			if len(recs) != 1 {
				t.Fatalf("%d records, want one: the late segments belong to the close", len(recs))
			}
			r := recs[0]
			if r.FINRetransmits != 1 || r.ACKRetransmits != 1 || len(r.Segments) != len(tc.segs) {
				t.Errorf("record: %d FINs and %d ACKs sent again, %d segments; want 1, 1, %d: %+v", r.FINRetransmits, r.ACKRetransmits, len(r.Segments), len(tc.segs), r)
			}
			st := log.Stats()
			want := map[RetransmitKey]uint64{{Side: tc.finSide, Segment: "FIN"}: 1, {Side: tc.ackSide, Segment: "ACK"}: 1}
			if len(st.Retransmits) != 2 || st.Retransmits[RetransmitKey{Side: tc.finSide, Segment: "FIN"}] != 1 || st.Retransmits[RetransmitKey{Side: tc.ackSide, Segment: "ACK"}] != 1 {
				t.Errorf("counted %v, want %v", st.Retransmits, want)
			}
			if n := tr.lateACKs.Load(); n != 0 {
				t.Errorf("%d late ACKs still awaited", n)
			}
			// Every awaited ACK is given back when the entries go.
			tr.segment(wire.Fields{Flow: fl, Flags: F, Seq: 100, Ack: 500}, tc.finSide)
			tr.Sweep(time.Now().Add(3 * time.Hour))
			if n := tr.lateACKs.Load(); n != 0 {
				t.Errorf("%d late ACKs still awaited after the sweep", n)
			}
			// A second ACK answers nothing: it is not counted again.
			tr.segment(wire.Fields{Flow: fl, Flags: A, Seq: 600, Ack: 101}, tc.ackSide)
			if n := log.Stats().Retransmits[RetransmitKey{Side: tc.ackSide, Segment: "ACK"}]; n != 1 {
				t.Errorf("an ACK that answers no late FIN counted: %d", n)
			}
		})
	}
}
