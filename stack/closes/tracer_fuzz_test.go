package closes

import (
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/internal/wiretest"
)

// The tracer's state machine follows whatever segments cross the device,
// in any order, retransmitted, reordered or forged: FuzzTracer feeds it
// arbitrary sequences on a few flows and checks that every record it files
// is well-formed and that its bookkeeping stays consistent.

// fuzzTraceFlows are the connections of FuzzTracer, chosen by bits 1-2 of a
// record's ctl: two IPv4 and two IPv6.
var fuzzTraceFlows = [4]wire.Flow{
	wiretest.FlowOf("198.18.0.2:80", "198.18.0.1:40000"),
	wiretest.FlowOf("198.18.0.2:7", "198.18.0.1:40001"),
	wiretest.FlowOf("[2001:2::2]:80", "[2001:2::1]:40002"),
	wiretest.FlowOf("[2001:2::2]:7", "[2001:2::1]:40003"),
}

// Bits of a FuzzTracer record's ctl byte, and of its first byte (config).
const (
	traceFromTund = 1 << 0 // the segment left tund (else it came from the peer)
	traceSweep    = 1 << 3 // not a segment: sweep as if every deadline had passed

	traceRSTCloses  = 1 << 0 // config: a RST ends TIME-WAIT
	traceNoTimeWait = 1 << 1 // config: MSL 0, no TIME-WAIT to follow
)

// closeKinds is the documented set of Record.Kind, and the kinds that only a
// sweep (a close that saw no segment for the linger time) may file.
var (
	closeKinds = []string{KindFourWay, KindThreeWay, KindSimultaneous, KindReset, KindFinWait2Timeout,
		KindRetransmitLimit, KindHalfClosePolicy, KindUnfinished}
	sweepKinds = []string{KindFinWait2Timeout, KindRetransmitLimit, KindUnfinished}
)

// FuzzTracer: the input's first byte configures the tracer (trace*
// config bits); the rest is a list of records (see record), each a segment
// handed to the tracer as DeliverNetworkPacket or WritePackets would, or a
// sweep.
func FuzzTracer(f *testing.F) {
	const ack, fin, rst, syn = header.TCPFlagAck, header.TCPFlagFin, header.TCPFlagRst, header.TCPFlagSyn
	peer := func(flags header.TCPFlags, seq, ack uint32) wiretest.Record {
		return wiretest.Record{Flags: flags, Seq: seq, Ack: ack}
	}
	tund := func(flags header.TCPFlags, seq, ack uint32) wiretest.Record {
		return wiretest.Record{Ctl: traceFromTund, Flags: flags, Seq: seq, Ack: ack}
	}
	// FINs sent again that cross the end of their close, and the ACKs
	// that answer them after it; and a new close over a TIME-WAIT that
	// still awaited one.
	f.Add(wiretest.EncodeRecords([]byte{0}, tund(fin|ack, 500, 100), peer(fin|ack, 100, 501), tund(fin|ack, 500, 100), tund(ack, 501, 101), peer(ack, 101, 501)))
	f.Add(wiretest.EncodeRecords([]byte{0}, peer(fin|ack, 100, 500), tund(fin|ack, 500, 101), peer(fin|ack, 100, 500), peer(ack, 101, 501), tund(ack, 501, 101)))
	f.Add(wiretest.EncodeRecords([]byte{0}, tund(fin|ack, 500, 100), peer(fin|ack, 100, 501), tund(ack, 501, 101), tund(fin|ack, 500, 100),
		tund(fin|ack, 600, 100), peer(fin|ack, 100, 601), tund(ack, 601, 101), peer(ack, 101, 601)))
	// Closes as tund makes them (cf. trace_test.go), and their faults.
	f.Add(wiretest.EncodeRecords([]byte{0}, peer(fin|ack, 100, 500), tund(fin|ack, 500, 101), peer(ack, 101, 501)))
	f.Add(wiretest.EncodeRecords([]byte{0}, peer(fin|ack, 100, 500), tund(ack, 500, 101), tund(fin|ack, 500, 101), peer(ack, 101, 501)))
	f.Add(wiretest.EncodeRecords([]byte{0}, tund(fin|ack, 500, 100), peer(ack, 100, 501), peer(fin|ack, 100, 501), tund(ack, 501, 101),
		peer(fin|ack, 100, 501), tund(ack, 501, 101), peer(syn, 9000, 0)))
	f.Add(wiretest.EncodeRecords([]byte{traceRSTCloses}, tund(fin|ack, 500, 100), peer(fin|ack, 100, 500), tund(ack, 501, 101),
		peer(ack, 101, 501), peer(rst, 101, 0)))
	f.Add(wiretest.EncodeRecords([]byte{0}, tund(rst|ack, 500, 100), peer(rst, 0, 0), tund(rst|ack, 0, 1)))
	f.Add(wiretest.EncodeRecords([]byte{traceNoTimeWait}, tund(fin|ack, 500, 100), peer(ack, 100, 501), tund(rst|ack, 501, 100)))
	f.Add(wiretest.EncodeRecords([]byte{0}, tund(fin|ack, 500, 100), tund(fin|ack, 500, 100), wiretest.Record{Ctl: traceSweep},
		peer(fin|ack, 0xffffffff, 0xfffffff0), wiretest.Record{Ctl: 2 | traceFromTund, Flags: fin, Seq: 7}, wiretest.Record{Ctl: traceSweep}))
	// A close longer than a record holds: tund's FIN is never acknowledged.
	long := []wiretest.Record{tund(fin|ack, 500, 100)}
	for i := range maxCloseSegments + 2 {
		long = append(long, peer(ack, 100, 500), tund(fin|ack, 500, 100+uint32(i)))
	}
	f.Add(wiretest.EncodeRecords([]byte{0}, append(long, peer(ack, 100, 501), peer(fin|ack, 100, 501), tund(ack, 501, 101))...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		cfg := Config{Linger: time.Hour, TimeWait: time.Hour, RSTCloses: data[0]&traceRSTCloses != 0}
		if data[0]&traceNoTimeWait != 0 {
			cfg.TimeWait = 0
		}
		log := NewLog()
		ch := channel.New(1, 1500, "")
		tr := NewTracer(ch, cfg, log, nil)
		defer tr.Close()
		recs, stop := log.Subscribe()
		defer stop()

		var filed []uint64 // IDs, in filing order
		var steps []string // for failure messages
		for i, r := range wiretest.Records(data[1:], 512) {
			fl := fuzzTraceFlows[r.Ctl>>1&3]
			if r.Ctl&traceSweep != 0 {
				steps = append(steps, "sweep")
				tr.mu.Lock()
				tr.sweepLocked(time.Now().Add(2 * (cfg.Linger + cfg.TimeWait)))
				tr.mu.Unlock()
			} else {
				from := SidePeer
				if r.Ctl&traceFromTund != 0 {
					from = SideTund
				}
				steps = append(steps, from+":"+tcpflag.String(uint8(r.Flags)))
				tr.segment(wire.Fields{Flow: fl, Flags: r.Flags, Seq: r.Seq, Ack: r.Ack, PayloadLen: r.PayloadLen}, from)
			}
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("step %d (after %v): "+format, append([]any{i, wiretest.LastSteps(steps)}, args...)...)
			}

			tr.mu.Lock()
			open, nCloses := tr.open.Load(), len(tr.closes)
			waiting, nWaits := tr.waiting.Load(), tr.timeWaits.Len()
			// Every late FIN whose ACK is due is in an entry still kept.
			awaited := 0
			tr.ended.All(func(_ wire.Flow, e endedClose) bool {
				awaited += int(e.late.awaitACK&1 + e.late.awaitACK>>1&1)
				return true
			})
			tr.timeWaits.All(func(_ wire.Flow, tw timeWait) bool {
				awaited += int(tw.late.awaitACK&1 + tw.late.awaitACK>>1&1)
				return true
			})
			lateACKs := tr.lateACKs.Load()
			tr.mu.Unlock()
			if int(open) != nCloses || int(waiting) != nWaits {
				fail("open = %d with %d closes, waiting = %d with %d TIME-WAITs", open, nCloses, waiting, nWaits)
			}
			if int(lateACKs) != awaited {
				fail("lateACKs = %d with %d late FINs awaiting their ACK", lateACKs, awaited)
			}
			if r.Ctl&traceSweep != 0 && nCloses+nWaits != 0 {
				fail("a sweep past every deadline left %d closes and %d TIME-WAITs", nCloses, nWaits)
			}

			published := 0
			for drained := false; !drained; {
				select {
				case c := <-recs:
					published++
					amended := slices.Contains(filed, c.ID)
					if !amended {
						if len(filed) > 0 && c.ID <= filed[len(filed)-1] {
							fail("record ID %d filed after %d", c.ID, filed[len(filed)-1])
						}
						filed = append(filed, c.ID)
					}
					if msg := checkClose(c, amended); msg != "" {
						fail("%s: %+v", msg, c)
					}
					if r.Ctl&traceSweep != 0 {
						if !amended && !slices.Contains(sweepKinds, c.Kind) {
							fail("a sweep filed a %q close", c.Kind)
						}
					} else {
						if l, rm := fl.Addrs(); c.Local != l || c.Remote != rm {
							fail("a segment of %v-%v filed the close of %v-%v", l, rm, c.Local, c.Remote)
						}
						if c.Kind == KindUnfinished || c.Kind == KindRetransmitLimit {
							fail("a segment filed an %q close", c.Kind)
						}
					}
				default:
					drained = true
				}
			}
			if r.Ctl&traceSweep == 0 && published > 1 {
				fail("one segment filed %d records", published)
			}
		}
		var counted uint64
		tr.CountDue(time.Now().Add(time.Hour)) // the closes that wait for a crossing, as they are
		for _, n := range log.Stats().Closes {
			counted += n
		}
		if counted != uint64(len(filed)) {
			t.Fatalf("the close counters say %d, %d records were filed", counted, len(filed))
		}
	})
}

// checkClose returns what is wrong with a record, or "". An amended record
// (a close reopened by a FIN replayed in TIME-WAIT) starts with the
// segments of the original, so the checks of its first segment are left
// out.
func checkClose(c *Record, amended bool) string {
	switch {
	case !slices.Contains(closeKinds, c.Kind):
		return "undocumented kind"
	case c.Initiator != SideTund && c.Initiator != SidePeer && c.Initiator != SideBoth:
		return "initiator neither tund, peer nor both"
	case c.Kind == KindSimultaneous && c.Initiator != SideBoth:
		return "a simultaneous close not started by both"
	case len(c.Segments) > maxCloseSegments:
		return "too many segments"
	case c.Truncated && len(c.Segments) != maxCloseSegments:
		return "truncated before it was full"
	case len(c.Segments) == 0:
		return "no segment"
	case c.Kind == KindReset && c.ResetBy != SideTund && c.ResetBy != SidePeer:
		return "a reset by neither tund nor peer"
	case c.ResetBy != "" && c.Kind != KindReset && c.Kind != KindFinWait2Timeout:
		// A RST ends a close as a reset, or as the FIN-WAIT-2 timeout when
		// tund answers the peer's late FIN with it (TestTraceFinWait2Timeout).
		return "ResetBy set for a close that no RST ended"
	case c.End.Before(c.Start):
		return "ends before it starts"
	}
	for _, s := range c.Segments {
		if s.From != SideTund && s.From != SidePeer {
			return "a segment from neither side"
		}
		if s.At.Before(c.Start) || s.At.After(c.End) {
			return "a segment outside [Start, End]"
		}
	}
	first := c.Segments[0]
	if !amended {
		// A close begins with the first FIN or RST, from its initiator.
		if !hasFlag(first, 'F') && !hasFlag(first, 'R') || hasFlag(first, 'S') {
			return "the first segment is neither FIN nor RST"
		}
		if first.From != c.Initiator && c.Initiator != SideBoth {
			return "the first segment is not the initiator's"
		}
	}
	if c.Truncated {
		return ""
	}
	if c.ResetBy != "" {
		// The first RST ends the close; after it come only the late FINs
		// and RSTs that tund adds to a close that ended (lateSegment), and
		// pure ACKs that answer a FIN sent again (lateACKLocked).
		i := slices.IndexFunc(c.Segments, func(s Segment) bool { return hasFlag(s, 'R') })
		if i < 0 || c.Segments[i].From != c.ResetBy {
			return "ResetBy set but the first RST is not that side's"
		}
		for _, s := range c.Segments[i+1:] {
			if !hasFlag(s, 'F') && !hasFlag(s, 'R') && s.Flags != "A" {
				return "a segment other than a late FIN, RST or ACK after the RST that ended the close"
			}
		}
	}
	if c.Kind == KindFourWay || c.Kind == KindThreeWay || c.Kind == KindSimultaneous {
		// Both FINs were sent, and each acknowledged by the other side.
		for _, side := range []string{SideTund, SidePeer} {
			i := slices.IndexFunc(c.Segments, func(s Segment) bool { return s.From == side && hasFlag(s, 'F') })
			if i < 0 {
				return "a completed close without the FIN of " + side
			}
			end := c.Segments[i].Seq + uint32(c.Segments[i].Len) + 1
			if !slices.ContainsFunc(c.Segments[i+1:], func(s Segment) bool {
				return s.From != side && hasFlag(s, 'A') && wire.SeqGE(s.Ack, end)
			}) {
				return "a completed close whose FIN of " + side + " was never acknowledged"
			}
		}
	}
	return ""
}

func hasFlag(s Segment, f byte) bool {
	for i := range len(s.Flags) {
		if s.Flags[i] == f {
			return true
		}
	}
	return false
}
