package scenario

import (
	"net/netip"
	"testing"
)

// TestParseSS reads real `ss -tanoH` lines: established, the timer
// column, TIME-WAIT, IPv6 and mapped addresses, listeners, a scoped
// address.
func TestParseSS(t *testing.T) {
	out := `ESTAB      0      0        198.18.0.1:57100     198.18.0.2:7     timer:(keepalive,14sec,0)
FIN-WAIT-2 0      0        198.18.0.1:54280     198.18.0.2:7     timer:(timewait,1.940ms,0)
TIME-WAIT  0      0        198.18.0.1:57116     198.18.0.2:7     timer:(timewait,59sec,0)
LAST-ACK   1      1        [2001:2::1]:40650    [2001:2::2]:13
CLOSE-WAIT 524288 0        [::ffff:198.18.0.1]:9000 [::ffff:198.18.0.2]:40000
LISTEN     0      4096     *:9000              *:*
LISTEN     0      4096     127.0.0.53%lo:53    0.0.0.0:*
`
	got, err := parseSS(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{State: "ESTAB", Local: netip.MustParseAddrPort("198.18.0.1:57100"), Peer: netip.MustParseAddrPort("198.18.0.2:7"), Timer: "timer:(keepalive,14sec,0)"},
		{State: "FIN-WAIT-2", Local: netip.MustParseAddrPort("198.18.0.1:54280"), Peer: netip.MustParseAddrPort("198.18.0.2:7"), Timer: "timer:(timewait,1.940ms,0)"},
		{State: "TIME-WAIT", Local: netip.MustParseAddrPort("198.18.0.1:57116"), Peer: netip.MustParseAddrPort("198.18.0.2:7"), Timer: "timer:(timewait,59sec,0)"},
		{State: "LAST-ACK", RecvQ: 1, SendQ: 1, Local: netip.MustParseAddrPort("[2001:2::1]:40650"), Peer: netip.MustParseAddrPort("[2001:2::2]:13")},
		{State: "CLOSE-WAIT", RecvQ: 524288, Local: netip.MustParseAddrPort("198.18.0.1:9000"), Peer: netip.MustParseAddrPort("198.18.0.2:40000")},
		{State: "LISTEN", SendQ: 4096, Local: netip.MustParseAddrPort("[::]:9000"), Peer: netip.MustParseAddrPort("[::]:0")},
		{State: "LISTEN", SendQ: 4096, Local: netip.MustParseAddrPort("127.0.0.53:53"), Peer: netip.MustParseAddrPort("0.0.0.0:0")},
	}
	if len(got) != len(want) {
		t.Fatalf("%d sockets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i+1, got[i], want[i])
		}
	}
	o := Observation{Kernel: got}
	if s := o.KernelState(want[3].Local, want[3].Peer); s != "LAST-ACK" {
		t.Errorf("KernelState: %q, want LAST-ACK", s)
	}
	if s := o.KernelState(want[3].Peer, want[3].Local); s != "" {
		t.Errorf("KernelState of the reversed pair: %q, want none", s)
	}
}

// TestParseSSErrors: a line that is not ss's is an error, not a socket.
func TestParseSSErrors(t *testing.T) {
	for _, line := range []string{
		"ESTAB 0 0 198.18.0.1:1",
		"ESTAB x 0 198.18.0.1:1 198.18.0.2:2",
		"ESTAB 0 0 198.18.0.1 198.18.0.2:2",
		"ESTAB 0 0 198.18.0.1:70000 198.18.0.2:2",
		"ESTAB 0 0 nohost:1 198.18.0.2:2",
	} {
		if _, err := parseSS(line); err == nil {
			t.Errorf("parseSS(%q): no error", line)
		}
	}
}

// TestWrap folds an explanation into indented lines within the width.
func TestWrap(t *testing.T) {
	got := wrap("one two three\nfour five\n\nsix", 12, "  ")
	want := "  one two\n  three four\n  five\n\n  six"
	if got != want {
		t.Errorf("wrap:\n%q\nwant\n%q", got, want)
	}
}
