package tests

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// metricSum reads tund's /metrics and adds up the samples of name whose
// labels contain every one of labels (each as written, such as
// `direction="sent"`).
func metricSum(t *testing.T, ns *NS, name string, labels ...string) float64 {
	t.Helper()
	out := ns.MustRun("curl", "-sS", "-m", "5", "http://127.0.0.1:9180/metrics")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	sum := 0.0
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(m[1], l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// wireCounts are tund's counters that describe the wire.
type wireCounts struct {
	sent, received, rstSent, rstReceived, closes float64
}

func readWireCounts(t *testing.T, ns *NS) wireCounts {
	t.Helper()
	return wireCounts{
		sent:        metricSum(t, ns, "tund_tcp_wire_segments_total", `direction="sent"`),
		received:    metricSum(t, ns, "tund_tcp_wire_segments_total", `direction="received"`),
		rstSent:     metricSum(t, ns, "tund_tcp_resets_total", `direction="sent"`),
		rstReceived: metricSum(t, ns, "tund_tcp_resets_total", `direction="received"`),
		closes:      metricSum(t, ns, "tund_tcp_closes_total"),
	}
}

// TestWireTruthCounters runs a mixed workload (curl, daytime, echo with the
// client's half-close, daytime ending in tund's RST) with tcpdump on tund0
// and compares tund's wire counters with the capture, exactly: TCP
// segments each way, RSTs each way, and one close record per connection.
// gVisor's own counts (tund_stack_tcp_*) are taken above tund's layers and
// are not expected to agree.
func TestWireTruthCounters(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "http,echo,daytime,daytime:1313/abort")
	before := readWireCounts(t, ns)
	stateCountsBefore := map[string]float64{}
	for _, state := range []string{"FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "CLOSE-WAIT", "LAST-ACK"} {
		stateCountsBefore[state] = metricSum(t, ns, "tund_tcp_close_state_seconds_count", `state="`+state+`"`)
	}
	cap := capture(t, ns, "tund0", "tcp")
	for i := 0; i < 30; i++ {
		ns.MustRun("curl", "-sS", "-o", "/dev/null", "http://"+stackV4+"/")
		ns.MustRun("nc", stackV4, "13")
		ns.MustRun("sh", "-c", fmt.Sprintf("printf hello | nc -N %s 7", stackV4))
		// The RST ends the connection: nc's error is the expected one.
		ns.Run("nc", stackV4, "1313")
	}
	// The last segments of the last closes may still be on their way:
	// the counts must stand still for 300 ms before they are compared.
	var quiet wireCounts
	for deadline, still := time.Now().Add(10*time.Second), 0; still < 3; time.Sleep(100 * time.Millisecond) {
		c := readWireCounts(t, ns)
		if c.sent == quiet.sent && c.received == quiet.received {
			still++
		} else {
			quiet, still = c, 0
		}
		if time.Now().After(deadline) {
			t.Fatal("the wire counters did not settle within 10 s")
		}
	}
	segs := cap.Stop()
	stack := netip.MustParseAddr(stackV4)
	var wire wireCounts
	for _, s := range segs {
		fromTund := s.Src.Addr() == stack
		switch {
		case fromTund && s.Has(tcpflag.RST):
			wire.rstSent++
		case !fromTund && s.Has(tcpflag.RST):
			wire.rstReceived++
		}
		if fromTund {
			wire.sent++
		} else {
			wire.received++
		}
	}
	wire.closes = float64(len(conversations(segs)))
	// A record is filed when its close completes; the last may lag.
	var got wireCounts
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		after := readWireCounts(t, ns)
		got = wireCounts{after.sent - before.sent, after.received - before.received,
			after.rstSent - before.rstSent, after.rstReceived - before.rstReceived, after.closes - before.closes}
		if got.closes >= wire.closes || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("the capture: %+v; tund's counters: %+v", wire, got)
	recs := closeRecords(t, ns)
	stampErrors(t, recs, segs)
	// Each stay of tund's side in a closing state that the records show
	// (a state entered, then left), and none other, is timed in
	// tund_tcp_close_state_seconds; TIME-WAIT is timed when it ends.
	stays := map[string]float64{}
	for _, r := range recs {
		state := ""
		for _, s := range r.Segments {
			if s.TundState == "" {
				continue
			}
			if state != "" {
				stays[state]++
			}
			state = s.TundState
		}
	}
	for _, state := range []string{"FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "CLOSE-WAIT", "LAST-ACK"} {
		timed := metricSum(t, ns, "tund_tcp_close_state_seconds_count", `state="`+state+`"`) - stateCountsBefore[state]
		if timed != stays[state] {
			t.Errorf("%s: %v stays timed, the records show %v", state, timed, stays[state])
		}
	}
	t.Logf("stays in the records, each timed once: %v", stays)
	for _, c := range []struct {
		what       string
		tund, want float64
	}{
		{"tund_tcp_wire_segments_total{direction=\"sent\"}", got.sent, wire.sent},
		{"tund_tcp_wire_segments_total{direction=\"received\"}", got.received, wire.received},
		{"tund_tcp_resets_total{direction=\"sent\"}", got.rstSent, wire.rstSent},
		{"tund_tcp_resets_total{direction=\"received\"}", got.rstReceived, wire.rstReceived},
		{"tund_tcp_closes_total (one per connection)", got.closes, wire.closes},
	} {
		if c.tund != c.want {
			t.Errorf("%s grew by %v; the capture on tund0 shows %v", c.what, c.tund, c.want)
		}
	}
	if wire.rstSent == 0 {
		t.Errorf("no RST from tund on the wire: the abort port did not abort")
	}
}

// incarnations splits segments by connection as conversations does, and
// also starts a new one where a SYN (no ACK) comes on a 4-tuple whose
// earlier connection has ended with a FIN or RST: under load a client port
// is used again within seconds.
func incarnations(segs []Segment) []*Conversation {
	byKey := map[[2]netip.AddrPort]*Conversation{}
	var out []*Conversation
	for _, s := range segs {
		c := byKey[[2]netip.AddrPort{s.Src, s.Dst}]
		if c == nil {
			c = byKey[[2]netip.AddrPort{s.Dst, s.Src}]
		}
		ended := c != nil && slices.ContainsFunc(c.Segs, func(x Segment) bool { return x.Has(tcpflag.FIN) || x.Has(tcpflag.RST) })
		if s.Flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN && (c == nil || ended) {
			c = &Conversation{Client: s.Src, Server: s.Dst}
			byKey[[2]netip.AddrPort{s.Src, s.Dst}] = c
			out = append(out, c)
		}
		if c != nil {
			c.Segs = append(c.Segs, s)
		}
	}
	return out
}

// classify tells a connection's close from the wire alone, as tund's
// records name it. A RST before both FINs are acknowledged makes it a
// reset (a RST after that is late). FINs that crossed (the second does not
// acknowledge the first) are simultaneous. Otherwise the close is three-way
// when the other side's first segment acknowledging the first FIN carries
// its FIN or data, four-way when it is a pure ACK. The initiator is the
// side of the first FIN or RST, or both when the other side's first FIN or
// RST crossed it: came after a RST, or does not acknowledge that FIN and
// is not the RST that answers it (no ACK, sequence number = its ACK field).
// ok is false for a connection that has not closed.
// stampErrors measures how far the times of the records' segments are from
// the capture's: a segment from the peer is stamped when tund reads it,
// after the kernel queued it to the device (where the capture stamps it);
// one of tund's, before tund writes it. A stamp on the wrong side of the
// wire's, by more than the clocks' reading allows, is an error; the rest is
// logged, the error that the state durations carry (README, "Seeing it").
func stampErrors(t *testing.T, recs []closeRecord, segs []Segment) {
	t.Helper()
	type key struct {
		src, dst netip.AddrPort
		flags    string
		seq, ack uint32
	}
	wire := map[key][]time.Time{}
	for _, s := range segs {
		k := key{s.Src, s.Dst, tcpflag.String(s.Flags), s.Seq, s.Ack}
		wire[k] = append(wire[k], s.T)
	}
	const slack = time.Millisecond // two reads of CLOCK_REALTIME, in different processes
	var lag [2][]time.Duration     // tund's segments (wire - stamp), the peer's (stamp - wire)
	for _, r := range recs {
		for _, s := range r.Segments {
			if s.Fault != "" {
				continue // dropped: never on the wire, or never read
			}
			k, i := key{r.Local, r.Remote, s.Flags, s.Seq, s.Ack}, 0
			if s.From == "peer" {
				k, i = key{r.Remote, r.Local, s.Flags, s.Seq, s.Ack}, 1
			}
			times := wire[k]
			if len(times) == 0 {
				continue // a capture of a later run of the 4-tuple, or before it began
			}
			d := times[0].Sub(s.At)
			if i == 1 {
				d = -d
			}
			wire[k] = times[1:]
			if d < -slack {
				t.Errorf("a segment of %v stamped %v on the wrong side of the wire (%s %s seq %d): tund's stamp %v, the capture's %v",
					r.Remote, -d, s.From, s.Flags, s.Seq, s.At, times[0])
			}
			lag[i] = append(lag[i], d)
		}
	}
	for i, who := range []string{"tund's segments: stamped before the wire by", "the peer's segments: stamped after the wire by"} {
		l := lag[i]
		if len(l) == 0 {
			t.Errorf("no record segment matched the capture (%s)", who)
			continue
		}
		slices.Sort(l)
		q := func(p float64) time.Duration { return l[int(p*float64(len(l)-1))] }
		t.Logf("%s median %v, p90 %v, p99 %v, max %v (%d segments)", who, q(.5), q(.9), q(.99), l[len(l)-1], len(l))
	}
}

// closeRetransmits counts, for each side of an incarnation (tund, peer),
// the FINs it sent again (the same FIN: same end of sequence) and the pure
// ACKs of the other side's FIN it sent after it had acknowledged that FIN
// once, as tund_tcp_close_retransmits_total counts them, from the wire.
func closeRetransmits(c *Conversation, tund netip.Addr) (n [2][2]int) {
	var (
		finSent, finAcked [2]bool
		fin               [2]uint32
	)
	for _, s := range c.Segs {
		from, to := 1, 0
		if s.Src.Addr() == tund {
			from, to = 0, 1
		}
		if finSent[to] && s.Has(tcpflag.ACK) && s.Ack >= fin[to]+1 {
			if finAcked[to] && s.Flags == tcpflag.ACK && s.Len == 0 {
				n[from][1]++
			}
			finAcked[to] = true
		}
		if s.Has(tcpflag.FIN) {
			end := s.Seq + uint32(s.Len)
			if finSent[from] && end == fin[from] {
				n[from][0]++
			}
			if !finSent[from] {
				finSent[from], fin[from] = true, end
			}
		}
	}
	return n
}

func classify(c *Conversation, tund netip.Addr) (kind, initiator string, ok bool) {
	side := func(s Segment) int {
		if s.Src.Addr() == tund {
			return 0
		}
		return 1
	}
	var (
		finSent, finAcked [2]bool
		fin               [2]uint32
		term              [2]*Segment // each side's first FIN or RST
		done              bool        // the kind is decided; later segments are late
	)
	for i, s := range c.Segs {
		from, to := side(s), 1-side(s)
		if (s.Has(tcpflag.FIN) || s.Has(tcpflag.RST)) && term[from] == nil {
			term[from] = &c.Segs[i]
		}
		switch {
		case done:
		case s.Has(tcpflag.RST):
			kind, done = "reset", true
		default:
			if finSent[to] && !finAcked[to] && s.Has(tcpflag.ACK) && s.Ack >= fin[to]+1 {
				finAcked[to] = true
				if kind == "" {
					kind = "four-way"
					if s.Has(tcpflag.FIN) || s.Len > 0 {
						kind = "three-way"
					}
				}
			}
			if s.Has(tcpflag.FIN) && !finSent[from] {
				finSent[from], fin[from] = true, s.Seq+uint32(s.Len)
				if finSent[to] && !finAcked[to] {
					kind = "simultaneous"
				}
			}
			done = finAcked[0] && finAcked[1]
		}
	}
	if !done {
		return "", "", false
	}
	names := [2]string{"tund", "peer"}
	a := 0
	if term[0] == nil || term[1] != nil && term[1].T.Before(term[0].T) {
		a = 1
	}
	first, other := term[a], term[1-a]
	switch {
	case other == nil:
		return kind, names[a], true
	case first.Has(tcpflag.RST):
		return kind, "both", true
	case other.Has(tcpflag.ACK) && other.Ack < first.Seq+uint32(first.Len)+1:
		return kind, "both", true
	case !other.Has(tcpflag.ACK) && !(other.Has(tcpflag.RST) && first.Has(tcpflag.ACK) && other.Seq == first.Ack):
		return kind, "both", true
	}
	return kind, names[a], true
}

// TestWireTruthCloses runs wrk with a new connection per request (tund's
// http closes first, and under load a quarter or more of the closes cross
// the client's FIN) with tcpdump on tund0, classifies every connection
// from the capture alone, and requires tund_tcp_closes_total to hold the
// same counts by kind and initiator.
func TestWireTruthCloses(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	before := closeCounts(t, ns)
	mergeOutcomes := func() (n [4]float64) {
		for i, o := range []string{"merged", "carried", "released", "flushed"} {
			n[i] = metricSum(t, ns, "tund_fin_ack_merge_total", `outcome="`+o+`"`)
		}
		return n
	}
	mergeBefore := mergeOutcomes()
	var beforeRetx [2][2]float64
	for side, sideName := range []string{"tund", "peer"} {
		for seg, segName := range []string{"FIN", "ACK"} {
			beforeRetx[side][seg] = metricSum(t, ns, "tund_tcp_close_retransmits_total", `side="`+sideName+`"`, `segment="`+segName+`"`)
		}
	}
	cap := capture(t, ns, "tund0", "tcp port 80")
	out := ns.MustRun("wrk", "-t2", "-c50", "-d3s", "-H", "Connection: close", "http://"+stackV4+"/")
	segs := cap.Stop()
	want := map[string]float64{}
	total := 0.0
	for _, c := range incarnations(segs) {
		kind, initiator, ok := classify(c, netip.MustParseAddr(stackV4))
		if !ok {
			t.Errorf("a connection that did not close:%s", c)
			continue
		}
		want[kind+"/"+initiator]++
		total++
	}
	got, _ := awaitCloses(t, ns, before, total, 10*time.Second)
	var wireRetx [2][2]float64 // side (tund, peer), segment (FIN, ACK)
	for _, c := range incarnations(segs) {
		r := closeRetransmits(c, netip.MustParseAddr(stackV4))
		for side := range r {
			for seg := range r[side] {
				wireRetx[side][seg] += float64(r[side][seg])
			}
		}
	}
	for side, sideName := range []string{"tund", "peer"} {
		for seg, segName := range []string{"FIN", "ACK"} {
			n := metricSum(t, ns, "tund_tcp_close_retransmits_total", `side="`+sideName+`"`, `segment="`+segName+`"`) - beforeRetx[side][seg]
			t.Logf("%s %ss sent again: %v on the wire, %v counted", sideName, segName, wireRetx[side][seg], n)
			if n != wireRetx[side][seg] {
				t.Errorf("%s %ss sent again: tund counted %v, the capture shows %v", sideName, segName, n, wireRetx[side][seg])
			}
		}
	}
	mergeAfter := mergeOutcomes()
	var merge [4]float64
	for i := range merge {
		merge[i] = mergeAfter[i] - mergeBefore[i]
	}
	// How tund first acknowledged each peer FIN that came before its own,
	// on the wire: with its FIN, with data, or alone. gVisor acknowledges a
	// FIN at once, so an ACK rides on a FIN or on data only when the merge
	// held it: merged and carried are exactly the wire's; released and
	// flushed are among the ACKs that went alone (with those it never held).
	var byFIN, byData, alone float64
	for _, c := range incarnations(segs) {
		var peerFIN *Segment
	segments:
		for i, s := range c.Segs {
			fromTund := s.Src.Addr() == netip.MustParseAddr(stackV4)
			switch {
			case peerFIN == nil && fromTund && s.Has(tcpflag.FIN):
				break segments // tund's FIN came first
			case peerFIN == nil && !fromTund && s.Has(tcpflag.FIN):
				peerFIN = &c.Segs[i]
			case peerFIN == nil || !fromTund || !s.Has(tcpflag.ACK) || s.Ack < peerFIN.Seq+uint32(peerFIN.Len)+1:
			case s.Has(tcpflag.FIN):
				byFIN++
				break segments
			case s.Len > 0:
				byData++
				break segments
			default:
				alone++
				break segments
			}
		}
	}
	t.Logf("the merge: %v merged, %v carried, %v released, %v flushed; the capture: the peer's FIN acknowledged by tund's FIN %v, by data %v, alone %v times",
		merge[0], merge[1], merge[2], merge[3], byFIN, byData, alone)
	if merge[0] != byFIN || merge[1] != byData || merge[2]+merge[3] > alone {
		t.Errorf("the merge's outcomes do not match the wire's")
	}
	stampErrors(t, closeRecords(t, ns), segs)
	t.Logf("wrk: %s", strings.Join(strings.Fields(out), " "))
	t.Logf("the capture: %d connections, %v", int(total), want)
	t.Logf("tund_tcp_closes_total: %v", got)
	if total < 1000 {
		t.Fatalf("only %v connections under load, want thousands", total)
	}
	for k := range mergeKeys(want, got) {
		if want[k] != got[k] {
			t.Errorf("%s: tund counted %v closes, the capture shows %v", k, got[k], want[k])
		}
	}
}

// closeCounts reads tund_tcp_closes_total by "kind/initiator".
func closeCounts(t *testing.T, ns *NS) map[string]float64 {
	t.Helper()
	out := ns.MustRun("curl", "-sS", "-m", "5", "http://127.0.0.1:9180/metrics")
	re := regexp.MustCompile(`(?m)^tund_tcp_closes_total\{initiator="([^"]*)",kind="([^"]*)"\} (\S+)$`)
	counts := map[string]float64{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatal(err)
		}
		counts[m[2]+"/"+m[1]] = v
	}
	return counts
}

// awaitCloses waits, at most timeout, until tund_tcp_closes_total has grown
// by total since before (a record is counted when its close completes, a
// reset once its initiator is final), and returns the growth by
// "kind/initiator" and in all.
func awaitCloses(t *testing.T, ns *NS, before map[string]float64, total float64, timeout time.Duration) (map[string]float64, float64) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		got, sum := map[string]float64{}, 0.0
		for k, v := range closeCounts(t, ns) {
			if d := v - before[k]; d != 0 {
				got[k], sum = d, sum+d
			}
		}
		if sum >= total || time.Now().After(deadline) {
			return got, sum
		}
	}
}

func mergeKeys(a, b map[string]float64) map[string]bool {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	return keys
}

// TestWireTruthLossIn: 120 small echoes through --loss-in 20% on one port.
// A segment that loss-in drops crossed the wire but never reached tund's
// stack: it is recorded, marked, with no effect on the close (once, a
// dropped ACK of tund's FIN ended the record, which the stack was still
// in LAST-ACK). So no marked segment changes a state, there is one record
// per connection on the wire, and none is a phantom close (the stack's
// next retransmission opening a second record, filed as a FIN-WAIT-2
// timeout) or unfinished.
func TestWireTruthLossIn(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "echo:7007/loss-in=0.2")
	before := closeCounts(t, ns)
	cap := capture(t, ns, "tund0", "tcp port 7007")
	const conns, parallel = 120, 12
	errs := make(chan error, conns)
	sem := make(chan struct{}, parallel)
	for i := 0; i < conns; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			out, err := ns.Run("sh", "-c", "printf hello | timeout 30 nc -N "+stackV4+" 7007")
			if err == nil && out != "hello" {
				err = fmt.Errorf("echo returned %q", out)
			}
			errs <- err
		}()
	}
	for i := 0; i < conns; i++ {
		if err := <-errs; err != nil {
			t.Errorf("an echo through 20%% loss-in: %v", err)
		}
	}
	segs := cap.Stop()
	streams := float64(len(incarnations(segs)))
	// The last closes end when their final ACK gets through the loss.
	got, n := awaitCloses(t, ns, before, streams, 15*time.Second)
	dropped := metricSum(t, ns, "tund_faults_total", `fault="loss-in"`)
	t.Logf("%v connections on the wire, loss-in dropped %v segments; closes: %v", streams, dropped, got)
	if n != streams {
		t.Errorf("%v close records for %v connections on the wire", n, streams)
	}
	for k, v := range got {
		if strings.HasPrefix(k, "fin-wait2-timeout/") || strings.HasPrefix(k, "unfinished/") {
			t.Errorf("%v closes of kind %s: phantom records of segments the stack never got", v, k)
		}
	}
	if dropped == 0 {
		t.Error("loss-in dropped nothing: the test proves nothing")
	}
	marked := 0
	for _, r := range closeRecords(t, ns) {
		for _, s := range r.Segments {
			if s.Fault != "loss-in" {
				continue
			}
			marked++
			if s.TundState != "" || s.PeerState != "" {
				t.Errorf("a segment loss-in dropped moved the close (tund to %q, peer to %q): %+v", s.TundState, s.PeerState, r)
			}
		}
	}
	if marked == 0 {
		t.Error("no segment of a close was dropped: the test proves nothing about records")
	}
}

// TestWireTruthFinalACK: 40 daytime closes with --drop-final-ack once. On
// the wire each client's FIN goes out twice (tund's first final ACK never
// left), and tund ACKs once, from TIME-WAIT. tund's counters must say the
// same: final ACKs lost, the peer's FINs sent again, and no ACK of tund's
// counted as sent again (the dropped one was never on the wire).
func TestWireTruthFinalACK(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime:1313/drop-final-ack=once")
	read := func() [3]float64 {
		return [3]float64{
			metricSum(t, ns, "tund_tcp_final_ack_lost_total"),
			metricSum(t, ns, "tund_tcp_close_retransmits_total", `side="peer"`, `segment="FIN"`),
			metricSum(t, ns, "tund_tcp_close_retransmits_total", `side="tund"`, `segment="ACK"`),
		}
	}
	before := read()
	cap := capture(t, ns, "tund0", "tcp port 1313")
	const conns = 40
	for i := 0; i < conns; i++ {
		ns.MustRun("nc", stackV4, "1313")
	}
	// Each client sends its FIN again after its RTO; the counts settle
	// when the last one has been ACKed.
	var got [3]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		after := read()
		got = [3]float64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}
		if got[1] >= conns || time.Now().After(deadline) {
			break
		}
	}
	segs := cap.Stop()
	again, tundACKs := 0, 0
	for _, c := range incarnations(segs) {
		fins := 0
		for _, s := range c.Segs {
			if !c.FromServer(s) && s.Has(tcpflag.FIN) {
				fins++
			}
		}
		if fins > 1 {
			again += fins - 1
		}
		cf := c.firstFIN(false)
		for _, s := range c.Segs[max(cf, 0):] {
			if cf >= 0 && c.FromServer(s) && s.PureACK() && s.Ack == c.Segs[cf].Seq+uint32(c.Segs[cf].Len)+1 {
				tundACKs++
			}
		}
	}
	t.Logf("the capture: %d FINs sent again by the clients, %d ACKs of them by tund; tund: final ACK lost %v, peer FINs again %v, tund ACKs again %v",
		again, tundACKs, got[0], got[1], got[2])
	if again != conns || tundACKs != conns {
		t.Errorf("on the wire %d FINs again and %d ACKs for %d closes, want one each per close", again, tundACKs, conns)
	}
	if got != [3]float64{float64(again), float64(again), 0} {
		t.Errorf("tund counted final ACKs lost %v, peer FINs sent again %v, its own ACKs sent again %v; the wire shows %d, %d, 0",
			got[0], got[1], got[2], again, again)
	}
}

// TestWireTruthRetransmits: 300 short closes through 10% random loss each
// way on the TUN device (iptables), half of them closed by the peer first
// (echo), half by tund first (daytime). Loss makes both sides send FINs
// again, and ACK again the FINs the other side sent again, at any moment of
// the close and after it completed. tund_tcp_close_retransmits_total must
// count, side by side, what the capture shows.
func TestWireTruthRetransmits(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	read := func() (n [2][2]float64) {
		for side, sideName := range []string{"tund", "peer"} {
			for seg, segName := range []string{"FIN", "ACK"} {
				n[side][seg] = metricSum(t, ns, "tund_tcp_close_retransmits_total", `side="`+sideName+`"`, `segment="`+segName+`"`)
			}
		}
		return n
	}
	before := read()
	resentBefore := metricSum(t, ns, "tund_tcp_wire_retransmits_total")
	cap := capture(t, ns, "tund0", "tcp port 7 or tcp port 13")
	addLoss(t, ns, "tund0", 0.1)
	const conns = 150
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for i := 0; i < 2*conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if i%2 == 0 {
				ns.Run("sh", "-c", "printf hello | nc -N -w 10 "+stackV4+" 7")
			} else {
				ns.Run("nc", "-w", "10", stackV4, "13")
			}
		}()
	}
	wg.Wait()
	// The last retransmissions come one RTO or two after the last close:
	// the wire is quiet when tund has sent and read nothing for 3 s.
	quiet := func() float64 { return metricSum(t, ns, "tund_tcp_wire_segments_total") }
	for last, deadline := quiet(), time.Now().Add(30*time.Second); ; {
		time.Sleep(3 * time.Second)
		now := quiet()
		if now == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wire never went quiet: %v segments and counting", now)
		}
		last = now
	}
	segs := cap.Stop()
	after := read()
	var wire [2][2]float64
	for _, c := range incarnations(segs) {
		r := closeRetransmits(c, netip.MustParseAddr(stackV4))
		for side := range r {
			for seg := range r[side] {
				wire[side][seg] += float64(r[side][seg])
			}
		}
	}
	total := 0.0
	for side, sideName := range []string{"tund", "peer"} {
		for seg, segName := range []string{"FIN", "ACK"} {
			got := after[side][seg] - before[side][seg]
			total += wire[side][seg]
			t.Logf("%s %ss sent again: %v on the wire, %v counted", sideName, segName, wire[side][seg], got)
			if got != wire[side][seg] {
				t.Errorf("%s %ss sent again: tund counted %v, the capture shows %v", sideName, segName, got, wire[side][seg])
			}
		}
	}
	if total == 0 {
		t.Error("no FIN or ACK sent again on the wire: the test proves nothing")
	}
	// Every segment of data or FIN that tund sent again, by any timer.
	resent := 0
	for _, c := range incarnations(segs) {
		resent += resentByTund(c, netip.MustParseAddr(stackV4))
	}
	got := metricSum(t, ns, "tund_tcp_wire_retransmits_total") - resentBefore
	t.Logf("tund's data and FIN segments sent again: %v on the wire, %v counted", resent, got)
	if got != float64(resent) {
		t.Errorf("tund_tcp_wire_retransmits_total counted %v, the capture shows %v segments sent again", got, resent)
	}
}

// resentByTund counts tund's segments in an incarnation that carry data or
// a FIN and end at or below the end of what tund had sent before: segments
// sent again. (A SYN|ACK sent again is the handshake's, not counted.)
func resentByTund(c *Conversation, tund netip.Addr) int {
	n, sent := 0, false
	var end uint32
	for _, s := range c.Segs {
		if s.Src.Addr() != tund || s.Has(tcpflag.SYN) || s.Has(tcpflag.RST) {
			continue
		}
		e := s.Seq + uint32(s.Len)
		if s.Has(tcpflag.FIN) {
			e++
		}
		if e == s.Seq { // a pure ACK
			continue
		}
		if sent && int32(e-end) <= 0 {
			n++
		}
		if !sent || int32(e-end) > 0 {
			end, sent = e, true
		}
	}
	return n
}
