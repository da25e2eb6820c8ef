package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metric returns the value of one sample in tund's /metrics, e.g.
// metric(t, ns, `tund_tcp_connections{state="TIME-WAIT"}`).
func metric(t *testing.T, ns *NS, sample string) float64 {
	t.Helper()
	out := ns.MustRun("curl", "-sS", "-m", "5", "http://127.0.0.1:9180/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in /metrics", sample)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAdmin checks the admin server as a user reads it: the TIME-WAIT gauge
// rises when tund closes first and falls back to 0 after 2 x MSL; `tund
// conns` lists the connection; the merge counters move; the server is not
// reachable through the TUN device; --pcap writes a file tcpdump reads.
func TestAdmin(t *testing.T) {
	ns := newNS(t)
	pcap := filepath.Join(t.TempDir(), "tund.pcap")
	startTund(t, ns, "--msl", "1s", "--pcap", pcap)
	const tw = `tund_tcp_connections{state="TIME-WAIT"}`
	if v := metric(t, ns, `tund_tcp_connections{state="LISTEN"}`); v != 5 {
		t.Errorf("LISTEN = %v, want 5 (one per service)", v)
	}
	if v := metric(t, ns, tw); v != 0 {
		t.Fatalf("TIME-WAIT = %v before any close", v)
	}
	ns.MustRun("nc", "-d", "-w", "5", stackV4, "13")
	closed := time.Now()
	if v := metric(t, ns, tw); v != 1 {
		t.Errorf("TIME-WAIT = %v after tund closed first, want 1", v)
	}
	if out := ns.MustRun(tundBin, "conns"); !regexp.MustCompile(`TIME-WAIT\s+198\.18\.0\.2:13\s+198\.18\.0\.1:\d+`).MatchString(out) {
		t.Errorf("tund conns does not list the TIME-WAIT connection:\n%s", out)
	}
	// TIME-WAIT ends on a timer, which has no event to await: poll.
	for metric(t, ns, tw) != 0 {
		if time.Since(closed) > 5*time.Second {
			t.Fatalf("TIME-WAIT still %v after 5 s with --msl 1s", metric(t, ns, tw))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gone := time.Since(closed); gone < 1800*time.Millisecond {
		t.Errorf("TIME-WAIT ended %v after the close, before 2 x MSL = 2 s", gone)
	} else {
		t.Logf("TIME-WAIT gauge back to 0 %v after the close (2 x MSL = 2 s)", gone.Round(time.Millisecond))
	}

	// The time tund spent in TIME-WAIT, measured off the wire: from the
	// client's FIN to 2 x MSL after tund's last ACK, counted once the
	// tracer's sweep (every 2.5 s) sees it end.
	const twCount, twSum = `tund_tcp_close_state_seconds_count{state="TIME-WAIT"}`, `tund_tcp_close_state_seconds_sum{state="TIME-WAIT"}`
	for metric(t, ns, twCount) != 1 {
		if time.Since(closed) > 8*time.Second {
			t.Fatalf("%s = %v 8 s after the close, want 1", twCount, metric(t, ns, twCount))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sum := metric(t, ns, twSum); sum < 1.99 || sum > 2.1 {
		t.Errorf("TIME-WAIT lasted %v s by the histogram, want 2 x MSL = 2 s", sum)
	}
	if n := metric(t, ns, `tund_tcp_close_state_seconds_count{state="FIN-WAIT-1"}`); n != 1 {
		t.Errorf("FIN-WAIT-1 observed %v times, want 1", n)
	}

	before := metric(t, ns, `tund_fin_ack_merge_total{outcome="carried"}`) + metric(t, ns, `tund_fin_ack_merge_total{outcome="merged"}`)
	ns.MustRun("sh", "-c", fmt.Sprintf("printf x | nc -N %s 7", stackV4))
	after := metric(t, ns, `tund_fin_ack_merge_total{outcome="carried"}`) + metric(t, ns, `tund_fin_ack_merge_total{outcome="merged"}`)
	if after != before+1 {
		t.Errorf("merge counters went from %v to %v after one client-first close, want +1", before, after)
	}

	for _, addr := range []string{stackV4, kernV4} {
		if out, err := ns.Run("curl", "-sS", "-m", "3", "http://"+addr+":9180/metrics"); err == nil {
			t.Errorf("the admin server answered on %s:9180: %.80s", addr, out)
		}
	}

	out := ns.MustRun("tcpdump", "-nn", "-r", pcap, "tcp port 13")
	if !strings.Contains(out, "198.18.0.2.13 > 198.18.0.1") || !strings.Contains(out, "Flags [F.]") {
		t.Errorf("the pcap lacks the daytime close:\n%s", out)
	}
	if st, err := os.Stat(pcap); err != nil || st.Size() == 0 {
		t.Errorf("pcap file: %v", err)
	}
}

// TestAdminWildcard: bound to 0.0.0.0 (to publish it from a container) the
// admin server answers on loopback and resets a connection made to the TUN
// device's own address; bound to that address, tund refuses to start.
func TestAdminWildcard(t *testing.T) {
	ns := newNS(t)
	status, out := runTund(t, ns, nil, "--admin", kernV4+":9180")
	if status != 1 || !strings.Contains(out, "is an address of the TUN device") {
		t.Errorf("--admin %s:9180: exit %d, want 1 saying it is the device's address:\n%s", kernV4, status, out)
	}
	noTunLeft(t, ns)
	startTund(t, ns, "--admin", "0.0.0.0:9180")
	if out := ns.MustRun("curl", "-sS", "-m", "5", "http://127.0.0.1:9180/metrics"); !strings.Contains(out, "tund_tcp_established_closed_total") {
		t.Errorf("the admin server on loopback answered %.80q, want tund's metrics", out)
	}
	for _, addr := range []string{kernV4, stackV4} {
		out, err := ns.Run("curl", "-sS", "-m", "3", "http://"+addr+":9180/metrics")
		if err == nil {
			t.Errorf("the admin server answered at %s:9180: %.80s", addr, out)
		}
	}
}
