package tests

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// wrkSummary is what a wrk user reads off its report.
type wrkSummary struct {
	requests     int
	socketErrors string // the "Socket errors" line, empty when wrk printed none
	non2xx       int
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkErrors   = regexp.MustCompile(`Socket errors:.*`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(t *testing.T, out string) wrkSummary {
	t.Helper()
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no request count in wrk's report:\n%s", out)
	}
	var s wrkSummary
	s.requests, _ = strconv.Atoi(m[1])
	s.socketErrors = wrkErrors.FindString(out)
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		s.non2xx, _ = strconv.Atoi(m[1])
	}
	return s
}

// TestLoad drives tund's HTTP service from the kernel side with wrk and ab,
// keep-alive and a new connection per request, and checks what their
// reports say: every request answered with 2xx, no socket error, no timeout.
// Throughput is not asserted here: scripts/bench measures it.
func TestLoad(t *testing.T) {
	ns := newNS(t)
	td := startTund(t, ns)
	url := "http://" + stackV4 + "/"

	for _, w := range []struct {
		name string
		args []string
	}{
		{"wrk keep-alive c100", []string{"-c100"}},
		{"wrk connection-close c50", []string{"-c50", "-H", "Connection: close"}},
	} {
		t.Run(w.name, func(t *testing.T) {
			args := append([]string{"-t2", "-d5s", "--timeout", "5s"}, w.args...)
			out := ns.MustRun("wrk", append(args, url)...)
			s := parseWrk(t, out)
			t.Logf("%s: %d requests in 5 s", w.name, s.requests)
			if s.requests < 1000 || s.socketErrors != "" || s.non2xx != 0 {
				t.Errorf("%s: %d requests, %q, %d non-2xx:\n%s", w.name, s.requests, s.socketErrors, s.non2xx, out)
			}
		})
	}
	t.Run("ab n5000 c20", func(t *testing.T) {
		out := ns.MustRun("ab", "-q", "-n", "5000", "-c", "20", "-s", "10", url)
		for _, want := range []string{"Complete requests:      5000", "Failed requests:        0"} {
			if !strings.Contains(out, want) {
				t.Errorf("ab report lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "Non-2xx responses") {
			t.Errorf("ab saw non-2xx responses:\n%s", out)
		}
		if m := regexp.MustCompile(`Requests per second:\s+(\S+)`).FindStringSubmatch(out); m != nil {
			t.Logf("ab -n5000 -c20: %s requests/s", m[1])
		}
	})
	if !td.Alive() {
		t.Fatal("tund died under load")
	}
}
