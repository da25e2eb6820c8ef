package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/scenario"
	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/link/faults"
)

// runScenario runs `tund scenario NAME --json --pcap FILE` and returns its
// result and the TCP segments of each pcap it wrote. The scenario exits 1
// when the close did not go as its story says; that fails the test.
func runScenario(t *testing.T, name string) (*scenario.Result, [][]Segment) {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), name+".pcap")
	cmd := exec.Command(tundBin, "scenario", name, "--json", "--pcap", pcap)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res scenario.Result
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		t.Fatalf("tund scenario %s: %v; output not JSON (%v):\n%s\n%s", name, err, jerr, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("tund scenario %s: %v\n%s", name, err, stderr.String())
	}
	var caps [][]Segment
	for _, p := range res.Pcaps {
		segs, _, err := readPcap(p)
		if err != nil {
			t.Fatalf("reading %s: %v", p, err)
		}
		caps = append(caps, segs)
	}
	if len(caps) == 0 {
		t.Fatalf("tund scenario %s wrote no pcap", name)
	}
	return &res, caps
}

// tundAddr is the stack's address: segments from it are tund's.
var tundAddr = netip.MustParseAddr(stackV4)

// closeEvent is one segment that closes or acknowledges a close.
type closeEvent struct {
	Name string
	T    time.Time
}

// closeEvents spells the close of c as the wire shows it, one word per
// segment that closes or acknowledges a close, with T for tund and K for
// the kernel: "K FIN" (a FIN that does not acknowledge the other's FIN),
// "T FIN/ACK" (one that does), "T ACK" (a pure ACK of the other's FIN,
// each copy), "K RST". Data segments and other ACKs are left out.
func closeEvents(c *Conversation) []closeEvent {
	var events []closeEvent
	fin := map[bool]uint32{} // by "from tund": the end of that side's FIN
	for _, s := range c.Segs {
		byTund := s.Src.Addr() == tundAddr
		who := "K"
		if byTund {
			who = "T"
		}
		theirs, ok := fin[!byTund]
		acksTheirs := ok && s.Has(tcpflag.ACK) && s.Ack == theirs
		name := ""
		switch {
		case s.Has(tcpflag.RST):
			name = who + " RST"
		case s.Has(tcpflag.FIN) && acksTheirs:
			name = who + " FIN/ACK"
		case s.Has(tcpflag.FIN):
			name = who + " FIN"
		case acksTheirs && s.PureACK():
			name = who + " ACK"
		}
		if name != "" {
			events = append(events, closeEvent{name, s.T})
		}
		if s.Has(tcpflag.FIN) {
			fin[byTund] = s.Seq + uint32(s.Len) + 1
		}
	}
	return events
}

// eventNames returns the names of c's close events.
func eventNames(c *Conversation) []string {
	var names []string
	for _, e := range closeEvents(c) {
		names = append(names, e.Name)
	}
	return names
}

// squeeze drops repeats of an event that follow it at once.
func squeeze(ev []string) []string {
	var out []string
	for _, e := range ev {
		if len(out) == 0 || out[len(out)-1] != e {
			out = append(out, e)
		}
	}
	return out
}

// oneConversation returns the only connection in segs.
func oneConversation(t *testing.T, segs []Segment) *Conversation {
	t.Helper()
	convs := conversations(segs)
	if len(convs) != 1 {
		t.Fatalf("%d connections on the wire, want 1", len(convs))
	}
	return convs[0]
}

// wantEvents checks the close of the only connection in segs.
func wantEvents(t *testing.T, segs []Segment, want ...string) *Conversation {
	t.Helper()
	c := oneConversation(t, segs)
	if got := eventNames(c); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("the close on the wire is %q, want %q:%s", got, want, c)
	}
	return c
}

// at returns the time of the n-th (from 0) close event of c called name.
func at(t *testing.T, c *Conversation, name string, n int) time.Time {
	t.Helper()
	for _, e := range closeEvents(c) {
		if e.Name == name {
			if n == 0 {
				return e.T
			}
			n--
		}
	}
	t.Fatalf("no %s #%d on the wire:%s", name, n+1, c)
	return time.Time{}
}

// observed lists, for each observation of r, the kernel socket's state
// (ss) and tund's (its /conns), "" where there was none.
func observed(r *scenario.Result) (kernel, tund []string) {
	for _, o := range r.Observations {
		k, td := "", ""
		if len(o.Kernel) > 0 {
			k = o.Kernel[0].State
		}
		if len(o.Tund) > 0 {
			td = o.Tund[0].State
		}
		kernel, tund = append(kernel, k), append(tund, td)
	}
	return kernel, tund
}

// TestScenarios runs each close-path scenario through the built binary and
// checks the three views of it: the segments on the wire (tund's pcap),
// tund's close record, and the states the kernel's socket showed in ss
// (beside tund's own table).
func TestScenarios(t *testing.T) {
	for _, c := range []struct {
		name              string
		kernel, tund      []string // states at each observation
		kind, initiator   string
		wire              func(t *testing.T, caps [][]Segment)
		record            func(t *testing.T, rec *closes.Record)
		records           func(t *testing.T, recs []*closes.Record) // for scenarios with several records
		numbers           func(t *testing.T, r *scenario.Result)
		recordless, multi bool
	}{
		{
			name:   "four-way",
			kernel: []string{"FIN-WAIT-2", "TIME-WAIT"}, tund: []string{"CLOSE-WAIT", ""},
			kind: closes.KindFourWay, initiator: closes.SidePeer,
			wire: func(t *testing.T, caps [][]Segment) {
				c := wantEvents(t, caps[0], "K FIN", "T ACK", "T FIN/ACK", "K ACK")
				if gap := at(t, c, "T FIN/ACK", 0).Sub(at(t, c, "T ACK", 0)); gap < 900*time.Millisecond {
					t.Errorf("tund's FIN came %v after its ACK, want the 1 s close-delay", gap)
				}
			},
		},
		{
			name:   "three-way",
			kernel: []string{"TIME-WAIT"}, tund: []string{""},
			kind: closes.KindThreeWay, initiator: closes.SidePeer,
			wire: func(t *testing.T, caps [][]Segment) { wantEvents(t, caps[0], "K FIN", "T FIN/ACK", "K ACK") },
		},
		{
			name:   "half-close",
			kernel: []string{"FIN-WAIT-2", "TIME-WAIT"}, tund: []string{"LAST-ACK|CLOSE-WAIT", ""},
			kind: closes.KindFourWay, initiator: closes.SidePeer,
			wire: func(t *testing.T, caps [][]Segment) {
				// squeeze: a retransmitted ACK of the FIN is still one event.
				c := oneConversation(t, caps[0])
				if ev := squeeze(eventNames(c)); strings.Join(ev, ", ") != "K FIN, T ACK, T FIN/ACK, K ACK" {
					t.Errorf("the close on the wire is %q, want K FIN, T ACK, T FIN/ACK, K ACK:%s", ev, c)
				}
				kFIN, tFIN := at(t, c, "K FIN", 0), at(t, c, "T FIN/ACK", 0)
				// Bytes by sequence range, so a retransmitted segment counts once.
				var isn, end uint32
				after := 0
				for _, s := range c.Segs {
					if s.Src.Addr() != tundAddr {
						continue
					}
					if s.Has(tcpflag.SYN) {
						isn, end = s.Seq+1, s.Seq+1
					}
					if e := s.Seq + uint32(s.Len); s.Len > 0 && int32(e-end) > 0 {
						if s.T.After(kFIN) && !s.T.After(tFIN) {
							after += int(e - end)
						}
						end = e
					}
				}
				total := int(end - isn)
				t.Logf("tund sent %d bytes, %d of them after the client's FIN", total, after)
				if total != 512<<10 || after == 0 {
					t.Errorf("tund sent %d bytes, %d after the client's FIN; want 524288, some after", total, after)
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				if r.Observations[0].Kernel[0].RecvQ == 0 {
					t.Errorf("the client's Recv-Q was empty in FIN-WAIT-2; want echo's answer arriving: %+v", r.Observations[0])
				}
			},
		},
		{
			name:   "lost-final-ack",
			kernel: []string{"LAST-ACK", "", ""}, tund: []string{"TIME-WAIT", "TIME-WAIT", ""},
			initiator: closes.SideTund,
			wire: func(t *testing.T, caps [][]Segment) {
				// The dropped ACK never reached the wire: the kernel's FIN is
				// there twice, and tund's ACK once, after the second.
				c := oneConversation(t, caps[0])
				ev := strings.Join(eventNames(c), ", ")
				if ev != "T FIN, K FIN/ACK, K FIN/ACK, T ACK" && ev != "T FIN, K ACK, K FIN/ACK, K FIN/ACK, T ACK" {
					t.Errorf("the close on the wire is %q, want tund's FIN, the kernel's FIN twice, one ACK from tund:%s", ev, c)
				}
			},
			record: func(t *testing.T, rec *closes.Record) {
				dropped := 0
				for _, s := range rec.Segments {
					if s.Fault == faults.DropFinalACK {
						dropped++
					}
				}
				if !rec.FinalACKLost || rec.FINRetransmits != 1 || dropped != 1 {
					t.Errorf("record: final ACK lost %v, %d FIN retransmissions, %d segments dropped by the fault; want true, 1, 1", rec.FinalACKLost, rec.FINRetransmits, dropped)
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				after := r.Numbers["time_wait_after_second_ack_seconds"]
				first := r.Numbers["time_wait_after_first_ack_seconds"]
				if after < 1.95 || first < after+0.15 {
					t.Errorf("TIME-WAIT ended %.3fs after the second ACK and %.3fs after the first; want 2 x MSL (2s) after the second", after, first)
				}
			},
		},
		{
			name:   "no-time-wait",
			kernel: []string{"LAST-ACK", ""}, tund: []string{"", ""},
			kind: closes.KindReset, initiator: closes.SideTund,
			wire: func(t *testing.T, caps [][]Segment) {
				c := oneConversation(t, caps[0])
				ev := strings.Join(eventNames(c), ", ")
				if ev != "T FIN, K FIN/ACK, K FIN/ACK, T RST" && ev != "T FIN, K ACK, K FIN/ACK, K FIN/ACK, T RST" {
					t.Errorf("the close on the wire is %q, want tund's FIN, the kernel's FIN twice, tund's RST:%s", ev, c)
				}
			},
			record: func(t *testing.T, rec *closes.Record) {
				if rec.ResetBy != closes.SideTund {
					t.Errorf("record: reset by %q, want tund", rec.ResetBy)
				}
			},
		},
		{
			name: "old-duplicate",
			// MSL 0, then TIME-WAIT: a scripted peer, no kernel socket.
			kernel: []string{"", ""}, tund: []string{"", "TIME-WAIT"},
			wire: oldDuplicateWire,
			records: func(t *testing.T, recs []*closes.Record) {
				if len(recs) != 2 {
					t.Fatalf("%d close records, want one per configuration (2)", len(recs))
				}
				for i, rec := range recs {
					if rec.Initiator != closes.SideTund || rec.Kind == closes.KindReset || rec.Remote.Port() != 40077 {
						t.Errorf("record %d: %s close started by %s with %v; want a close with FINs started by tund, with the peer's port 40077", i+1, rec.Kind, rec.Initiator, rec.Remote)
					}
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				n := r.Numbers
				if n["msl0_bytes_asked"] != 3 || n["msl0_bytes_answered"] != 5 || n["tw_bytes_answered"] != 3 {
					t.Errorf("numbers %v: want the MSL 0 connection, asking for 3 bytes, answered with the old request's 5, and the connection from TIME-WAIT with 3", n)
				}
			},
		},
		{
			name: "same-port-reconnect",
			// MSL 0; MSL 30s; MSL 30s with TIME-WAIT reuse. The server's
			// socket of tund's port 40000, and tund's side.
			kernel: []string{"LAST-ACK", "TIME-WAIT", "LAST-ACK", "LAST-ACK", "", "LAST-ACK", "LAST-ACK", "", "TIME-WAIT"},
			tund:   []string{"", "", "TIME-WAIT", "TIME-WAIT", "TIME-WAIT", "TIME-WAIT", "TIME-WAIT", "TIME-WAIT", ""},
			wire:   samePortWire,
			records: func(t *testing.T, recs []*closes.Record) {
				if len(recs) != 3 {
					t.Fatalf("%d close records, want one per configuration (3)", len(recs))
				}
				for i, rec := range recs {
					dropped := 0
					for _, s := range rec.Segments {
						if s.Fault == faults.DropFinalACK {
							dropped++
						}
					}
					if rec.Initiator != closes.SideTund || rec.Local.Port() != 40000 || dropped != 1 {
						t.Errorf("record %d: started by %s from %v, %d final ACKs dropped; want tund, port 40000, 1", i+1, rec.Initiator, rec.Local, dropped)
					}
				}
				// MSL 0: the record of the old connection ends with the new
				// SYN, the server's ACK of the old FIN, and tund's RST.
				var flow []string
				for _, s := range recs[0].Segments {
					flow = append(flow, s.From+" "+s.Flags)
				}
				if got := strings.Join(flow, ", "); recs[0].Kind != closes.KindReset || recs[0].ResetBy != closes.SideTund ||
					!strings.HasSuffix(got, "tund S, peer A, tund R") {
					t.Errorf("MSL 0 record: %s close reset by %q, segments %s; want a reset by tund ending in tund S, peer A, tund R", recs[0].Kind, recs[0].ResetBy, got)
				}
				// With TIME-WAIT: the server's FIN sent again and ACKed.
				for i, rec := range recs[1:] {
					if rec.Kind == closes.KindReset || rec.FINRetransmits != 1 || !rec.FinalACKLost {
						t.Errorf("record %d: %s close, %d FIN retransmissions, final ACK lost %v; want a close with FINs, 1, true", i+2, rec.Kind, rec.FINRetransmits, rec.FinalACKLost)
					}
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				n := r.Numbers
				t.Logf("numbers: %v", n)
				if n["msl0_syn_copies"] < 2 || n["msl0_syn_to_synack_ms"] > 500 {
					t.Errorf("MSL 0: the SYN went out %v times and was answered after %v ms; want it sent again at once after the RST (2 or more, well under the 1 s RTO)", n["msl0_syn_copies"], n["msl0_syn_to_synack_ms"])
				}
				if n["msl30_second_connection_reset_ms"] > 500 {
					t.Errorf("MSL 30s: the second connection was reset after %v ms, want at once", n["msl30_second_connection_reset_ms"])
				}
				if n["reuse_tries"] < 2 {
					t.Errorf("TIME-WAIT reuse: the reconnect succeeded at try %v, want the first tries refused (TIME-WAIT younger than 1 s)", n["reuse_tries"])
				}
			},
		},
		{
			name: "port-exhaustion", recordless: true, multi: true,
			wire: func(t *testing.T, caps [][]Segment) {
				if len(caps) != 3 {
					t.Fatalf("%d pcaps, want one per configuration (3)", len(caps))
				}
				for i, segs := range caps {
					syns := map[uint16]int{}
					for _, c := range conversations(segs) {
						if c.Client.Addr() != tundAddr {
							continue
						}
						syns[c.Client.Port()]++
						if c.Client.Port() < 40000 || c.Client.Port() > 40099 {
							t.Errorf("run %d: tund connected from port %d, outside --port-range", i+1, c.Client.Port())
						}
					}
					maxUse := 0
					for _, n := range syns {
						maxUse = max(maxUse, n)
					}
					// conversations() keys by 4-tuple, so a reused port is
					// one conversation: count SYNs instead.
					synCount := 0
					for _, s := range segs {
						if s.Src.Addr() == tundAddr && s.Flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN {
							synCount++
						}
					}
					t.Logf("run %d: %d SYNs from tund on %d ports", i+1, synCount, len(syns))
					switch i {
					case 0: // MSL 30s: each port once, and no more ports
						if synCount != 100 || len(syns) != 100 {
							t.Errorf("MSL 30s: %d SYNs on %d ports, want 100 on 100 (no port reused while in TIME-WAIT)", synCount, len(syns))
						}
					default: // ports used again
						if synCount <= 100 {
							t.Errorf("run %d: %d SYNs, want ports used again (more than 100)", i+1, synCount)
						}
					}
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				if len(r.Runs) != 3 {
					t.Fatalf("%d runs, want 3", len(r.Runs))
				}
				long, short, reuse := r.Runs[0], r.Runs[1], r.Runs[2]
				t.Logf("ok/s and errors: MSL 30s %.0f %d, MSL 250ms %.0f %d, reuse %.0f %d", long.PerSecond, long.Errors, short.PerSecond, short.Errors, reuse.PerSecond, reuse.Errors)
				if long.OK != 100 || long.Errors == 0 || long.TimeWait != 100 {
					t.Errorf("MSL 30s: %d ok, %d errors, %v in TIME-WAIT; want 100, some, 100", long.OK, long.Errors, long.TimeWait)
				}
				if short.OK < 2*long.OK || reuse.OK < 2*long.OK {
					t.Errorf("MSL 250ms gave %d, reuse %d connections; want at least twice MSL 30s's %d", short.OK, reuse.OK, long.OK)
				}
			},
		},
		{
			name:   "long-merge-window",
			kernel: []string{"FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"}, tund: []string{"CLOSE-WAIT", "CLOSE-WAIT", ""},
			kind: closes.KindFourWay, initiator: closes.SidePeer,
			wire: func(t *testing.T, caps [][]Segment) {
				c := oneConversation(t, caps[0])
				ev := eventNames(c)
				if len(ev) < 5 || ev[0] != "K FIN" || ev[1] != "K FIN" || ev[2] != "T ACK" || ev[len(ev)-2] != "T FIN/ACK" || ev[len(ev)-1] != "K ACK" {
					t.Errorf("the close on the wire is %q, want the kernel's FIN twice before tund's first ACK, then tund's FIN:%s", ev, c)
				}
				if wait := at(t, c, "T ACK", 0).Sub(at(t, c, "K FIN", 0)); wait < 200*time.Millisecond || wait > 300*time.Millisecond {
					t.Errorf("tund's ACK came %v after the client's FIN; want after the client's RTO (200 ms) and before the 300 ms window ends", wait)
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				if r.Numbers["merge_flushed"] != 1 {
					t.Errorf("merge flushed %v, want 1", r.Numbers["merge_flushed"])
				}
			},
		},
		{
			name:   "simultaneous",
			kernel: []string{"FIN-WAIT-1", "CLOSING", "TIME-WAIT"}, tund: []string{"CLOSING", "TIME-WAIT", "TIME-WAIT"},
			kind: closes.KindSimultaneous, initiator: closes.SideBoth,
			wire: func(t *testing.T, caps [][]Segment) {
				// Both FINs on the wire, neither acknowledging the other;
				// the kernel's ACKed last: by tund's ACK of its retransmitted
				// FIN, or by tund's own FIN sent again (also 300 ms late).
				c := oneConversation(t, caps[0])
				ev := eventNames(c)
				crossed := len(ev) >= 4 && ((ev[0] == "K FIN" && ev[1] == "T FIN") || (ev[0] == "T FIN" && ev[1] == "K FIN"))
				if !crossed || (ev[len(ev)-1] != "T ACK" && ev[len(ev)-1] != "T FIN/ACK") || slices.Contains(ev[:2], "T ACK") {
					t.Errorf("the close on the wire is %q, want both FINs first, neither acknowledging the other, and at the end tund acknowledging the kernel's FIN:%s", ev, c)
				}
			},
		},
		{
			name:   "close-wait-leak",
			kernel: []string{"FIN-WAIT-2", "", ""}, tund: []string{"CLOSE-WAIT", "CLOSE-WAIT", ""},
			kind: closes.KindReset, initiator: closes.SidePeer,
			wire: func(t *testing.T, caps [][]Segment) {
				c := wantEvents(t, caps[0], "K FIN", "T ACK", "T FIN/ACK", "K RST")
				if gap := at(t, c, "T FIN/ACK", 0).Sub(at(t, c, "T ACK", 0)); gap < 3500*time.Millisecond {
					t.Errorf("tund's FIN came %v after its ACK, want echo's 4 s", gap)
				}
			},
			numbers: func(t *testing.T, r *scenario.Result) {
				if w := r.Numbers["kernel_fin_wait2_seconds"]; w < 1.5 || w > 3.5 {
					t.Errorf("the kernel sat in FIN-WAIT-2 for %.2fs, want about its tcp_fin_timeout (2 s)", w)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, caps := runScenario(t, c.name)
			c.wire(t, caps)
			recordsAgreeWithWire(t, res, caps)
			if c.records != nil {
				c.records(t, res.Records)
			} else if !c.recordless {
				if len(res.Records) != 1 {
					t.Fatalf("%d close records, want 1", len(res.Records))
				}
				rec := res.Records[0]
				if (c.kind != "" && rec.Kind != c.kind) || !contains(strings.Split(c.initiator, "|"), rec.Initiator) {
					t.Errorf("record: %s close started by %s, want %s started by %s", rec.Kind, rec.Initiator, c.kind, c.initiator)
				}
				if c.record != nil {
					c.record(t, rec)
				}
			}
			kernel, tund := observed(res)
			if strings.Join(kernel, ",") != strings.Join(c.kernel, ",") {
				t.Errorf("ss showed the kernel's socket in %q, want %q", kernel, c.kernel)
			}
			if len(tund) != len(c.tund) {
				t.Errorf("tund's table showed %q, want %q", tund, c.tund)
			} else {
				for i := range tund {
					if !contains(strings.Split(c.tund[i], "|"), tund[i]) {
						t.Errorf("tund's table showed %q, want %q", tund, c.tund)
						break
					}
				}
			}
			if c.numbers != nil {
				c.numbers(t, res)
			}
			if t.Failed() {
				out, _ := json.MarshalIndent(res, "", "  ")
				t.Logf("result:\n%s", out)
			}
		})
	}
}

// recordsAgreeWithWire holds a scenario's records to its pcaps: each close
// tund recorded, of a kind the wire shows, is one that the capture alone
// classifies the same (kind and initiator, as the wire-truth tests do) on
// the same 4-tuple. A scenario's records are the connections of its story,
// not all that its pcaps hold; a record of a close that never completed on
// the wire, or of a policy, is the story's to check.
func recordsAgreeWithWire(t *testing.T, res *scenario.Result, caps [][]Segment) {
	t.Helper()
	type tuple struct{ tund, peer netip.AddrPort }
	wire := map[tuple][]string{}
	for _, segs := range caps {
		for _, c := range incarnations(segs) {
			kind, initiator, ok := classify(c, tundAddr)
			if !ok {
				continue
			}
			k := tuple{c.Server, c.Client}
			if c.Client.Addr() == tundAddr { // tund dialed
				k = tuple{c.Client, c.Server}
			}
			wire[k] = append(wire[k], kind+"/"+initiator)
		}
	}
	recorded := map[tuple][]string{}
	for _, r := range res.Records {
		switch r.Kind {
		case closes.KindFourWay, closes.KindThreeWay, closes.KindSimultaneous, closes.KindReset:
			k := tuple{r.Local, r.Remote}
			recorded[k] = append(recorded[k], r.Kind+"/"+r.Initiator)
		}
	}
	for k, rec := range recorded {
		left := slices.Clone(wire[k])
		for _, r := range rec {
			i := slices.Index(left, r)
			if i < 0 {
				t.Errorf("%v-%v: tund recorded %v, the capture shows %v", k.tund, k.peer, rec, wire[k])
				break
			}
			left = slices.Delete(left, i, i+1)
		}
	}
}

// samePortWire checks same-port-reconnect's three pcaps: the segments
// between tund's port 40000 and each configuration's server.
func samePortWire(t *testing.T, caps [][]Segment) {
	if len(caps) != 3 {
		t.Fatalf("%d pcaps, want one per configuration (3)", len(caps))
	}
	tundEnd := netip.AddrPortFrom(tundAddr, 40000)
	var runs [3][]Segment
	for i, segs := range caps {
		server := netip.MustParseAddrPort(kernV4 + ":" + strconv.Itoa(9000+i))
		for _, s := range segs {
			if (s.Src == tundEnd && s.Dst == server) || (s.Src == server && s.Dst == tundEnd) {
				runs[i] = append(runs[i], s)
			}
		}
	}
	// wireString prints a run for failures.
	wireString := func(segs []Segment) string {
		var b strings.Builder
		for _, s := range segs {
			b.WriteString("\n  " + s.String())
		}
		return b.String()
	}
	// isns lists tund's SYNs' sequence numbers, once each, in order, and
	// counts the SYNs.
	isns := func(segs []Segment) ([]uint32, int) {
		var out []uint32
		n := 0
		for _, s := range segs {
			if s.Src == tundEnd && s.Flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN {
				n++
				if !slices.Contains(out, s.Seq) {
					out = append(out, s.Seq)
				}
			}
		}
		return out, n
	}

	// MSL 0: after tund's FIN and the server's, tund's new SYN; the
	// server's pure ACK of tund's old FIN (challenge ACK); tund's RST at
	// that ACK's ack; the SYN again, and a SYN-ACK for it. The server's
	// FIN is never sent again.
	msl0 := runs[0]
	var oldFIN, serverFIN, challenge *Segment
	var newISN uint32
	rst, synAck := false, false
	for i := range msl0 {
		s := &msl0[i]
		fromTund := s.Src == tundEnd
		switch {
		case oldFIN == nil:
			if fromTund && s.Has(tcpflag.FIN) {
				oldFIN = s
			}
		case serverFIN == nil:
			if !fromTund && s.Has(tcpflag.FIN) {
				serverFIN = s
			}
		case !fromTund && s.Has(tcpflag.FIN) && s.Seq == serverFIN.Seq:
			t.Errorf("MSL 0: the server sent its old FIN again; want its LAST-ACK ended before:%s", wireString(msl0))
		case newISN == 0:
			if fromTund && s.Flags == tcpflag.SYN {
				newISN = s.Seq
			} else {
				t.Errorf("MSL 0: %s after the FINs, before tund's new SYN:%s", s, wireString(msl0))
			}
		case challenge == nil:
			if !fromTund {
				if !s.PureACK() || s.Ack != oldFIN.Seq+1 {
					t.Errorf("MSL 0: the server answered the new SYN with %s, want a pure ACK of tund's old FIN (ack %d):%s", s, oldFIN.Seq+1, wireString(msl0))
				}
				challenge = s
			}
		case !rst:
			if fromTund {
				if !s.Has(tcpflag.RST) || s.Seq != challenge.Ack {
					t.Errorf("MSL 0: tund answered the challenge ACK with %s, want a RST with seq %d:%s", s, challenge.Ack, wireString(msl0))
				}
				rst = true
			} else {
				t.Errorf("MSL 0: the server sent %s before tund's RST:%s", s, wireString(msl0))
			}
		case !synAck:
			if fromTund && s.Flags != tcpflag.SYN {
				t.Errorf("MSL 0: tund sent %s after its RST, before a SYN-ACK; want only its SYN again:%s", s, wireString(msl0))
			}
			if !fromTund {
				if s.Flags != tcpflag.SYN|tcpflag.ACK || s.Ack != newISN+1 {
					t.Errorf("MSL 0: the server sent %s after tund's RST, want a SYN-ACK of the new SYN:%s", s, wireString(msl0))
				}
				synAck = true
			}
		}
	}
	if !rst || !synAck {
		t.Errorf("MSL 0: the wire does not show new SYN, challenge ACK, RST, SYN-ACK:%s", wireString(msl0))
	}
	if ids, n := isns(msl0); len(ids) != 2 || n < 3 {
		t.Errorf("MSL 0: tund sent %d SYNs with ISNs %v; want two connections, the second's SYN sent again after the RST:%s", n, ids, wireString(msl0))
	}
	// Both directions of the second connection carried the 6-byte line.
	data := map[bool]int{}
	for _, s := range msl0 {
		if s.Len > 0 {
			data[s.Src == tundEnd] += s.Len
		}
	}
	if data[true] != 6 || data[false] != 6 {
		t.Errorf("MSL 0: %d bytes from tund, %d from the server; want the 6-byte line each way", data[true], data[false])
	}

	// With TIME-WAIT: the server's FIN twice, ACKed by tund after the
	// second, and no RST; MSL 30s: one connection only.
	for i, segs := range runs[1:] {
		var fins []Segment
		acked, resets := false, 0
		for _, s := range segs {
			switch {
			case s.Has(tcpflag.RST):
				resets++
			case s.Src != tundEnd && s.Has(tcpflag.FIN) && (len(fins) == 0 || fins[0].Seq == s.Seq):
				fins = append(fins, s)
			case s.Src == tundEnd && len(fins) > 0 && s.PureACK() && s.Ack == fins[0].Seq+1:
				acked = acked || len(fins) == 2
				if len(fins) < 2 {
					t.Errorf("run %d: tund's final ACK reached the wire before the server's FIN was sent again:%s", i+2, wireString(segs))
				}
			}
		}
		if len(fins) != 2 || !acked || resets != 0 {
			t.Errorf("run %d: the server's FIN %d times, ACKed by tund after the second %v, %d RSTs; want 2, true, 0:%s", i+2, len(fins), acked, resets, wireString(segs))
		}
	}
	if ids, n := isns(runs[1]); len(ids) != 1 || n != 1 {
		t.Errorf("MSL 30s: tund sent %d SYNs with ISNs %v; want one: the second dial must not reach the wire:%s", n, ids, wireString(runs[1]))
	}
	// Reuse: a second connection, a plain handshake, at least 1 s after
	// the server's retransmitted FIN.
	reuse := runs[2]
	ids, _ := isns(reuse)
	if len(ids) != 2 {
		t.Fatalf("reuse: tund's SYNs have ISNs %v; want two connections:%s", ids, wireString(reuse))
	}
	var lastFIN, syn2 time.Time
	for i, s := range reuse {
		if s.Src != tundEnd && s.Has(tcpflag.FIN) && syn2.IsZero() {
			lastFIN = s.T
		}
		if s.Src == tundEnd && s.Flags == tcpflag.SYN && s.Seq == ids[1] && syn2.IsZero() {
			syn2 = s.T
			if i+1 >= len(reuse) || reuse[i+1].Src == tundEnd || reuse[i+1].Flags != tcpflag.SYN|tcpflag.ACK {
				t.Errorf("reuse: the new SYN was not answered by a SYN-ACK first:%s", wireString(reuse))
			}
		}
	}
	if gap := syn2.Sub(lastFIN); gap < 980*time.Millisecond {
		t.Errorf("reuse: the new SYN went out %v after the server's last FIN reached TIME-WAIT, want 1 s or more:%s", gap, wireString(reuse))
	}
}

// oldDuplicateWire checks old-duplicate on the wire, from tund's two
// captures. The old duplicate is the peer's segment at the second
// request's sequence number that acknowledges the first connection's data,
// not the second connection's SYN-ACK. MSL 0: it comes after the new
// handshake and tund acknowledges its 56 bytes, so its data went to the
// application; the client's own request after it is a duplicate. TIME-WAIT:
// tund answers it with an ACK of the old connection's FIN and nothing
// more; a SYN inside the old sequence space gets an ACK of the old
// connection, one above it a SYN-ACK.
func oldDuplicateWire(t *testing.T, caps [][]Segment) {
	const dupSeq, dupLen, oldEnd = 100038, 56, 100095 // the peer's numbers (scenario/olddup.go)
	if len(caps) != 2 {
		t.Fatalf("%d captures, want 2 (MSL 0, TIME-WAIT)", len(caps))
	}
	peer := netip.MustParseAddr("198.18.0.77")
	fromPeer := func(s Segment) bool { return s.Src.Addr() == peer }
	// MSL 0.
	segs := caps[0]
	var synAck *Segment
	dup := -1
	for i, s := range segs {
		switch {
		case !fromPeer(s) && s.Has(tcpflag.SYN) && s.Ack == dupSeq:
			synAck = &segs[i]
		case synAck != nil && fromPeer(s) && s.Seq == dupSeq && s.Len == dupLen && s.Ack != synAck.Seq+1 && dup < 0:
			dup = i
		}
	}
	if synAck == nil || dup < 0 {
		t.Fatalf("MSL 0: no second connection at ISN %d with the old duplicate after its handshake:\n%s", dupSeq-1, segmentsString(segs))
	}
	if next := nextFrom(segs, dup, false, fromPeer); next == nil || next.Has(tcpflag.SYN|tcpflag.RST) || next.Ack != dupSeq+dupLen {
		t.Errorf("MSL 0: tund's answer to the old duplicate is %v, want an ACK of its %d bytes (ack %d): the new connection took them\n%s", next, dupLen, dupSeq+dupLen, segmentsString(segs))
	}
	// TIME-WAIT.
	segs = caps[1]
	var lowSYN, highSYN = -1, -1
	dup = -1
	for i, s := range segs {
		switch {
		case fromPeer(s) && s.Flags == tcpflag.SYN && s.Seq == dupSeq-1:
			lowSYN = i
		case fromPeer(s) && s.Flags == tcpflag.SYN && s.Seq > oldEnd:
			highSYN = i
		case fromPeer(s) && s.Seq == dupSeq && s.Len == dupLen && dup < 0 && i > 0 && hasFIN(segs[:i], fromPeer):
			dup = i
		}
	}
	if dup < 0 || lowSYN < dup || highSYN < lowSYN {
		t.Fatalf("TIME-WAIT: want the old duplicate after the close, then a SYN inside the old sequence space, then one above it:\n%s", segmentsString(segs))
	}
	if next := nextFrom(segs, dup, false, fromPeer); next == nil || next.Flags != tcpflag.ACK || next.Ack != oldEnd || next.Len != 0 {
		t.Errorf("TIME-WAIT: tund answered the old duplicate with %v, want a bare ACK of %d\n%s", next, oldEnd, segmentsString(segs))
	}
	if next := nextFrom(segs, lowSYN, false, fromPeer); next == nil || next.Flags != tcpflag.ACK || next.Ack != oldEnd {
		t.Errorf("TIME-WAIT: tund answered the SYN inside the old sequence space with %v, want an ACK of the old connection (%d)", next, oldEnd)
	}
	for _, s := range segs[lowSYN+1 : highSYN] {
		if !fromPeer(s) && s.Has(tcpflag.SYN) {
			t.Errorf("TIME-WAIT: tund answered the SYN inside the old sequence space with a SYN-ACK")
		}
	}
	if next := nextFrom(segs, highSYN, false, fromPeer); next == nil || next.Flags != tcpflag.SYN|tcpflag.ACK || next.Ack != segs[highSYN].Seq+1 {
		t.Errorf("TIME-WAIT: tund answered the SYN above the old sequence space with %v, want a SYN-ACK", next)
	}
}

// nextFrom returns the first segment after segs[i] whose fromPeer is
// peer, or nil.
func nextFrom(segs []Segment, i int, peer bool, fromPeer func(Segment) bool) *Segment {
	for j := i + 1; j < len(segs); j++ {
		if fromPeer(segs[j]) == peer {
			return &segs[j]
		}
	}
	return nil
}

// hasFIN reports whether some segment of segs from the peer is a FIN.
func hasFIN(segs []Segment, fromPeer func(Segment) bool) bool {
	for _, s := range segs {
		if fromPeer(s) && s.Has(tcpflag.FIN) {
			return true
		}
	}
	return false
}

// segmentsString lists segs one a line, for failures.
func segmentsString(segs []Segment) string {
	var b strings.Builder
	for _, s := range segs {
		fmt.Fprintf(&b, "  %v > %v %s seq %d ack %d len %d\n", s.Src, s.Dst, tcpflag.String(s.Flags), s.Seq, s.Ack, s.Len)
	}
	return b.String()
}
