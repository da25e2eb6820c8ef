package tests

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
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
		case fromTund && s.Has(flagRST):
			wire.rstSent++
		case !fromTund && s.Has(flagRST):
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
