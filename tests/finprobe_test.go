package tests

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// TestFINNotResentUnderLoad: under wrk with Connection: close, where the
// http service closes every connection after its reply, no FIN of tund's
// goes out again before the peer's delayed ACK of it could be due (200 ms,
// RFC 8985 §7.2's worst case; patch 0014). Before the patch about one FIN
// in 1,100 was sent again some 10 ms after the first: tund read the ACK of
// its reply late and its tail loss probe fired first.
func TestFINNotResentUnderLoad(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	cap := capture(t, ns, "tund0", "tcp port 80 and tcp[13] & 1 != 0")
	out := ns.MustRun("wrk", "-t2", "-c50", "-d5s", "-H", "Connection: close", "http://"+stackV4+"/")
	segs := cap.Stop()
	server := netip.MustParseAddrPort(stackV4 + ":80")
	type fin struct {
		peer netip.AddrPort
		seq  uint32
	}
	first := map[fin]time.Time{}
	again, early := 0, 0
	for _, s := range segs {
		if s.Src != server || !s.Has(tcpflag.FIN) {
			continue
		}
		k := fin{s.Dst, s.Seq}
		t0, seen := first[k]
		if !seen {
			first[k] = s.T
			continue
		}
		again++
		if gap := s.T.Sub(t0); gap < 200*time.Millisecond {
			early++
			if early <= 5 {
				t.Errorf("tund's FIN to %v (seq %d) went out again %v after the first", s.Dst, s.Seq, gap.Round(100*time.Microsecond))
			}
		}
	}
	t.Logf("wrk: %s", strings.Join(strings.Fields(out), " "))
	t.Logf("tund sent %d FINs, %d of them again, %d within 200 ms", len(first), again, early)
	if len(first) < 1000 {
		t.Fatalf("only %d closes under load, want thousands; wrk said:\n%s", len(first), out)
	}
	if early > 0 {
		t.Errorf("%d of %d FINs were sent again before the peer's delayed ACK could be due", early, len(first))
	}
}
