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
