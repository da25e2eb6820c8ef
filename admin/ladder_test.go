package admin

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/stack/closes"
)

// TestLadderStates draws the textbook four-way close that tund starts and
// checks the arrows and the states each side enters (the tracer names
// them; stack/closes/sides_test.go checks that it names them right).
func TestLadderStates(t *testing.T) {
	t0 := time.Unix(0, 0)
	seg := func(ms int, from, flags string, seq, ack uint32, tundState, peerState string) closes.Segment {
		return closes.Segment{At: t0.Add(time.Duration(ms) * time.Millisecond), From: from, Flags: flags, Seq: seq, Ack: ack,
			TundState: tundState, PeerState: peerState}
	}
	c := &closes.Record{
		Local: netip.MustParseAddrPort("198.18.0.2:13"), Remote: netip.MustParseAddrPort("198.18.0.1:40000"),
		Initiator: closes.SideTund, Kind: closes.KindFourWay, Start: t0, End: t0.Add(3 * time.Millisecond),
		Segments: []closes.Segment{
			seg(0, closes.SideTund, "FA", 100, 500, "FIN-WAIT-1", "CLOSE-WAIT"),
			seg(1, closes.SidePeer, "A", 500, 101, "FIN-WAIT-2", ""),
			seg(2, closes.SidePeer, "FA", 500, 101, "TIME-WAIT", "LAST-ACK"),
			seg(3, closes.SideTund, "A", 101, 501, "", "CLOSED"),
		},
	}
	var b strings.Builder
	WriteLadder(&b, c)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	want := []struct{ tund, arrow, peer string }{
		{"FIN-WAIT-1", "-- FIN|ACK seq=100 ack=500 ", "CLOSE-WAIT"},
		{"FIN-WAIT-2", "<", ""},
		{"TIME-WAIT", "FIN|ACK seq=500 ack=101 --", "LAST-ACK"},
		{"", "-- ACK seq=101 ack=501 ", "CLOSED"},
	}
	if len(lines) != 3+len(want) || !strings.HasPrefix(lines[0], "four-way close, started by tund") {
		t.Fatalf("ladder:\n%s", b.String())
	}
	for i, w := range want {
		line := lines[3+i]
		fields := strings.Fields(line)
		if (w.tund != "" && fields[0] != w.tund) || !strings.Contains(line, w.arrow) ||
			(w.peer != "" && !strings.Contains(line, "| "+w.peer)) || (w.tund == "" && !strings.HasPrefix(strings.TrimSpace(line), "|")) {
			t.Errorf("row %d = %q, want tund %q, arrow %q, peer %q", i, line, w.tund, w.arrow, w.peer)
		}
	}
}
