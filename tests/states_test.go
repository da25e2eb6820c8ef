package tests

import (
	"bufio"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// connState returns tund's state for the connection whose peer is remote,
// from its admin server, or "" if tund has no such connection.
func connState(t *testing.T, ns *NS, remote netip.AddrPort) string {
	t.Helper()
	out := ns.MustRun("curl", "-sS", "-m", "5", "http://127.0.0.1:9180/conns?format=json")
	var conns []struct {
		State  string
		Remote string
	}
	if err := json.Unmarshal([]byte(out), &conns); err != nil {
		t.Fatalf("/conns: %v: %s", err, out)
	}
	for _, c := range conns {
		if c.Remote == remote.String() {
			return c.State
		}
	}
	return ""
}

// awaitState polls tund's connection table until the connection with peer
// remote is in state want. States change on timers and on segments the test
// cannot see from its sockets, so polling is the only way to wait.
func awaitState(t *testing.T, ns *NS, remote netip.AddrPort, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := connState(t, ns, remote)
		if got == want {
			t.Logf("tund's side of %v: %s", remote, want)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tund's side of %v is %q after 10 s, want %s", remote, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// iptables adds a rule in ns and removes it when the test ends, or earlier
// through the returned function.
func iptables(t *testing.T, ns *NS, rule ...string) (remove func()) {
	t.Helper()
	ns.MustRun("iptables", append([]string{"-A"}, rule...)...)
	done := false
	remove = func() {
		if !done {
			done = true
			ns.MustRun("iptables", append([]string{"-D"}, rule...)...)
		}
	}
	t.Cleanup(remove)
	return remove
}

func localAddr(c net.Conn) netip.AddrPort {
	return c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// segmentsOf returns the captured conversation of the client at client.
func segmentsOf(t *testing.T, segs []Segment, client netip.AddrPort) *Conversation {
	t.Helper()
	for _, c := range conversations(segs) {
		if c.Client == client {
			return c
		}
	}
	t.Fatalf("no captured connection from %v", client)
	return nil
}

// TestClosingStates drives tund's side of a connection through every
// closing state of RFC 9293 §3.3.2 with a kernel client, reads each state
// off tund's connection table, and checks the segments that led to it on
// the wire. iptables rules in the namespace hold a state where the kernel
// would leave it within microseconds.
func TestClosingStates(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime,daytime:1313,discard/close-delay=2s/fin-ack-merge=0")
	cap := capture(t, ns, "tund0", "tcp")
	dial := func(port int) *net.TCPConn { return ns.DialStack(t, port) }

	// Active close: FIN-WAIT-2, then TIME-WAIT. tund's FIN is ACKed by the
	// client, which closes later.
	active := dial(13)
	if _, err := bufio.NewReader(active).ReadString(0); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("daytime: want the line, then EOF: %v", err)
	}
	awaitState(t, ns, localAddr(active), "FIN-WAIT-2")
	active.CloseWrite()
	awaitState(t, ns, localAddr(active), "TIME-WAIT")

	// Passive close: CLOSE-WAIT while discard lingers, then LAST-ACK while
	// the client's ACK of tund's FIN is dropped on its way out.
	passive := dial(9)
	passive.CloseWrite()
	awaitState(t, ns, localAddr(passive), "CLOSE-WAIT")
	allowACK := iptables(t, ns, "OUTPUT", "-o", "tund0", "-p", "tcp", "--dport", "9", "-j", "DROP")
	awaitState(t, ns, localAddr(passive), "LAST-ACK")
	allowACK()
	// tund's retransmitted FIN is ACKed and the connection is gone.
	awaitState(t, ns, localAddr(passive), "")

	// FIN-WAIT-1, then CLOSING, the simultaneous close: tund's FIN is
	// dropped before the client sees it, so it stays unacknowledged; then
	// the client's FIN crosses it, and tund, in FIN-WAIT-1, receives a FIN
	// that does not acknowledge its own.
	allowFIN := iptables(t, ns, "INPUT", "-i", "tund0", "-p", "tcp", "--sport", "1313", "--tcp-flags", "FIN", "FIN", "-j", "DROP")
	simul := dial(1313)
	if line, err := bufio.NewReader(simul).ReadString('\n'); err != nil || !strings.HasSuffix(line, "-UTC\r\n") {
		t.Fatalf("daytime line: %q %v", line, err)
	}
	awaitState(t, ns, localAddr(simul), "FIN-WAIT-1")
	simul.CloseWrite()
	awaitState(t, ns, localAddr(simul), "CLOSING")
	allowFIN()
	awaitState(t, ns, localAddr(simul), "TIME-WAIT")

	segs := cap.Stop()
	check := func(name string, c *Conversation, want ...string) {
		// want is the order of closing segments, each "tund FIN", "client
		// FIN", "tund ACK of FIN" or "client ACK of FIN".
		t.Helper()
		var got []string
		var tundFIN, clientFIN *Segment
		for i := range c.Segs {
			s := &c.Segs[i]
			from, other := "client", "tund"
			own, theirs := &clientFIN, tundFIN
			if c.FromServer(*s) {
				from, other = "tund", "client"
				own, theirs = &tundFIN, clientFIN
			}
			if theirs != nil && s.Has(tcpflag.ACK) && s.Ack == theirs.Seq+uint32(theirs.Len)+1 && !contains(got, from+" ACK of "+other+" FIN") {
				got = append(got, from+" ACK of "+other+" FIN")
			}
			if s.Has(tcpflag.FIN) && *own == nil {
				*own = s
				got = append(got, from+" FIN")
			}
		}
		if strings.Join(got, ", ") != strings.Join(want, ", ") {
			t.Errorf("%s: closing segments %q, want %q:%s", name, got, want, c)
		}
	}
	check("FIN-WAIT-2, TIME-WAIT", segmentsOf(t, segs, localAddr(active)),
		"tund FIN", "client ACK of tund FIN", "client FIN", "tund ACK of client FIN")
	check("CLOSE-WAIT, LAST-ACK", segmentsOf(t, segs, localAddr(passive)),
		"client FIN", "tund ACK of client FIN", "tund FIN", "client ACK of tund FIN")
	// tund's first FIN never reached the client (dropped after the capture
	// point) and the client's FIN does not acknowledge it.
	check("FIN-WAIT-1, CLOSING, TIME-WAIT", segmentsOf(t, segs, localAddr(simul)),
		"tund FIN", "client FIN", "tund ACK of client FIN", "client ACK of tund FIN")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
