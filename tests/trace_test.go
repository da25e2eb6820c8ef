package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// closeRecord is a record of /closes, as tund's JSON gives it.
type closeRecord struct {
	ID             uint64
	Local, Remote  netip.AddrPort
	Initiator      string
	Kind           string
	ResetBy        string `json:"reset_by"`
	FINRetransmits int    `json:"fin_retransmits"`
	ACKRetransmits int    `json:"ack_retransmits"`
	FinalACKLost   bool   `json:"final_ack_lost"`
	Segments       []struct {
		At        time.Time
		From      string
		Flags     string
		Seq       uint32
		Ack       uint32
		Len       int
		Fault     string
		TundState string `json:"tund_state"`
		PeerState string `json:"peer_state"`
	}
}

func closeRecords(t *testing.T, ns *NS) []closeRecord {
	t.Helper()
	out := ns.MustRun("curl", "-sS", "-m", "5", "http://127.0.0.1:9180/closes")
	var recs []closeRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("/closes: %v: %s", err, out)
	}
	return recs
}

// awaitRecord polls /closes until there is a record for the client at
// remote (records end when a close completes, which the test cannot await).
func awaitRecord(t *testing.T, ns *NS, remote netip.AddrPort) closeRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range closeRecords(t, ns) {
			if r.Remote == remote {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no close record for %v after 10 s", remote)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agree checks that tund's record of a close lists, direction by
// direction, the segments that tcpdump saw: an unbroken run of the wire's
// segments, starting near the first FIN or RST. Near, not at: tcpdump sees
// a peer's FIN before tund reads it and tund's segments after tund wrote
// them, so segments that tund sent while the FIN was on its way in are on
// the wire after the FIN but in tund's view before it (a streaming service
// like chargen can have dozens in that gap).
const inFlightSlack = 64

func agree(t *testing.T, rec closeRecord, conv *Conversation) {
	t.Helper()
	start := -1
	for i, s := range conv.Segs {
		if s.Has(tcpflag.FIN) || s.Has(tcpflag.RST) {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatalf("no FIN or RST captured:%s", conv)
	}
	wire := map[string][]string{}
	firstAfterStart := map[string]int{}
	for i, s := range conv.Segs {
		from := "peer"
		if conv.FromServer(s) {
			from = "tund"
		}
		if _, ok := firstAfterStart[from]; !ok && i >= start {
			firstAfterStart[from] = len(wire[from])
		}
		wire[from] = append(wire[from], fmt.Sprintf("%s seq=%d ack=%d len=%d", tcpflag.String(s.Flags), s.Seq, s.Ack, s.Len))
	}
	recorded := map[string][]string{}
	for _, s := range rec.Segments {
		recorded[s.From] = append(recorded[s.From], fmt.Sprintf("%s seq=%d ack=%d len=%d", s.Flags, s.Seq, s.Ack, s.Len))
	}
	for _, side := range []string{"tund", "peer"} {
		w, r := wire[side], recorded[side]
		if len(r) == 0 {
			continue
		}
		found := false
		for i := 0; i+len(r) <= len(w) && !found; i++ {
			found = strings.Join(w[i:i+len(r)], "\n") == strings.Join(r, "\n") && i <= firstAfterStart[side]+inFlightSlack
		}
		if !found {
			from := max(0, firstAfterStart[side]-3)
			t.Errorf("%s's segments: tund recorded\n  %s\nthe wire shows\n  %s", side, strings.Join(r, "\n  "), strings.Join(w[from:], "\n  "))
		}
	}
}

// TestCloseRecords runs each close scenario against tund with kernel
// clients and checks that tund's record (kind, initiator) is right and
// agrees with tcpdump on the same TUN device, segment for segment. The
// TIME-WAIT scenario with a replayed FIN is in TestTimeWaitReplayedFIN.
func TestCloseRecords(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--fin-wait2", "1s", "--serve",
		"echo,echo:1007/fin-ack-merge=0,daytime,daytime:1313,daytime:1314/abort,chargen/half-close=close")
	cap := capture(t, ns, "tund0", "tcp")
	dial := func(port int) *net.TCPConn { return ns.DialStack(t, port) }
	type scenario struct {
		name, kind, initiator, resetBy string
		client                         netip.AddrPort
	}
	var scenarios []scenario
	echo := func(name string, port int, kind string) {
		c := dial(port)
		c.Write([]byte("hello"))
		c.CloseWrite()
		io.ReadAll(c)
		scenarios = append(scenarios, scenario{name, kind, "peer", "", localAddr(c)})
	}
	echo("three-way (merged)", 7, "three-way")
	echo("four-way", 1007, "four-way")

	c := dial(13) // tund closes first
	io.ReadAll(c)
	c.CloseWrite()
	scenarios = append(scenarios, scenario{"tund first", "", "tund", "", localAddr(c)})

	// abort: tund resets at once, often before connect returns, so the
	// client's address is chosen here rather than read off the socket.
	resetClient := netip.MustParseAddrPort(kernV4 + ":31999")
	ns.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(resetClient), Timeout: 5 * time.Second}
		if c, err := d.Dial("tcp", net.JoinHostPort(stackV4, "1314")); err == nil {
			io.ReadAll(c)
			c.Close()
		}
		return nil
	})
	scenarios = append(scenarios, scenario{"reset", "reset", "tund", "tund", resetClient})

	c = dial(19) // half-close policy close
	c.CloseWrite()
	io.Copy(io.Discard, c)
	scenarios = append(scenarios, scenario{"half-close policy", "half-close-policy", "peer", "", localAddr(c)})

	// Simultaneous: tund's FIN is held back from the client until its own
	// FIN has crossed it.
	allowFIN := iptables(t, ns, "INPUT", "-i", "tund0", "-p", "tcp", "--sport", "1313", "--tcp-flags", "FIN", "FIN", "-j", "DROP")
	c = dial(1313)
	awaitState(t, ns, localAddr(c), "FIN-WAIT-1")
	c.CloseWrite()
	awaitState(t, ns, localAddr(c), "CLOSING")
	allowFIN()
	scenarios = append(scenarios, scenario{"simultaneous", "simultaneous", "both", "", localAddr(c)})

	// FIN-WAIT-2 timeout: the client's FIN comes after tund gave up.
	c = dial(13)
	io.ReadAll(c)
	awaitState(t, ns, localAddr(c), "FIN-WAIT-2")
	awaitState(t, ns, localAddr(c), "") // --fin-wait2 1s
	c.CloseWrite()
	scenarios = append(scenarios, scenario{"FIN-WAIT-2 timeout", "fin-wait2-timeout", "tund", "tund", localAddr(c)})

	recs := map[netip.AddrPort]closeRecord{}
	for _, s := range scenarios {
		recs[s.client] = awaitRecord(t, ns, s.client)
	}
	segs := cap.Stop()
	for _, s := range scenarios {
		rec := recs[s.client]
		t.Logf("%s: tund recorded a %s close started by %s (%d segments)", s.name, rec.Kind, rec.Initiator, len(rec.Segments))
		if (s.kind != "" && rec.Kind != s.kind) || rec.Initiator != s.initiator || rec.ResetBy != s.resetBy {
			t.Errorf("%s: recorded %s by %s (reset by %q), want %s by %s (reset by %q)", s.name, rec.Kind, rec.Initiator, rec.ResetBy, s.kind, s.initiator, s.resetBy)
		}
		agree(t, rec, segmentsOf(t, segs, s.client))
	}
}
