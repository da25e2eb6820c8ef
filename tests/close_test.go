package tests

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tund/tund/internal/serve"
	"github.com/tund/tund/internal/tcpflag"
	"golang.org/x/sys/unix"
)

// mergeVerdict says how the ACK of the client's FIN left tund in c: alone
// before tund's FIN ("separate"), or carried by tund's FIN or data
// ("merged"). It fails the test if the close is not a client-first close.
func mergeVerdict(t *testing.T, c *Conversation) string {
	t.Helper()
	cf := c.firstFIN(false)
	sf := c.firstFIN(true)
	if cf < 0 || sf < 0 || sf < cf {
		t.Fatalf("want a close that the client starts, got:%s", c)
	}
	finEnd := c.Segs[cf].Seq + uint32(c.Segs[cf].Len) + 1
	for _, s := range c.Segs[cf+1 : sf] {
		if c.FromServer(s) && s.PureACK() && s.Ack == finEnd {
			return "separate"
		}
	}
	if c.Segs[sf].Ack != finEnd || !c.Segs[sf].Has(tcpflag.ACK) {
		t.Fatalf("tund's FIN does not acknowledge the client's FIN:%s", c)
	}
	return "merged"
}

// TestFINACKMerge checks on the wire that closes the kernel client starts
// (nc -N on echo; curl ending keep-alive connections) take three segments
// with --fin-ack-merge 40ms, never showing a pure ACK of the client's FIN
// before tund's FIN, and four with --fin-ack-merge 0, always showing one.
// A per-service override (echo/fin-ack-merge=0) applies to its port only.
func TestFINACKMerge(t *testing.T) {
	for _, c := range []struct {
		args       []string
		echo, http string
	}{
		{[]string{"--fin-ack-merge", "40ms"}, "merged", "merged"},
		{[]string{"--fin-ack-merge", "0"}, "separate", "separate"},
		{[]string{"--fin-ack-merge", "40ms", "--serve", "http,echo/fin-ack-merge=0"}, "separate", "merged"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			ns := newNS(t)
			startTund(t, ns, c.args...)
			cap := capture(t, ns, "tund0", "tcp")
			for i := 0; i < 5; i++ {
				if out := ns.MustRun("sh", "-c", fmt.Sprintf("printf 'close %d' | nc -N %s 7", i, stackV4)); out != fmt.Sprintf("close %d", i) {
					t.Fatalf("echo: %q", out)
				}
			}
			// curl keeps the connection alive across its two requests and
			// closes it when it exits.
			for i := 0; i < 3; i++ {
				ns.MustRun("curl", "-sS", "-m", "5", "-o", "/dev/null", "-o", "/dev/null", "http://"+stackV4+"/", "http://"+stackV4+"/bytes/100")
			}
			convs := conversations(cap.Stop())
			counts := map[string]int{}
			for _, conv := range convs {
				want := c.echo
				if conv.Server.Port() == 80 {
					want = c.http
				}
				if got := mergeVerdict(t, conv); got != want {
					t.Errorf("port %d: ACK of the client's FIN %s, want %s:%s", conv.Server.Port(), got, want, conv)
				}
				counts[strconv.Itoa(int(conv.Server.Port()))]++
			}
			if counts["7"] != 5 || counts["80"] != 3 {
				t.Errorf("captured %v connections per port, want 5 on 7 and 3 on 80", counts)
			}
		})
	}
}

// TestHalfClosePolicy has a client half-close at once on chargen
// (nc -N </dev/null) and checks each --half-close policy: allow keeps
// streaming (5 MB arrive), close ends the connection at the client's FIN,
// 1s streams for about a second after it, then ends the connection.
func TestHalfClosePolicy(t *testing.T) {
	t.Run("allow", func(t *testing.T) {
		ns := newNS(t)
		startTund(t, ns, "--half-close", "allow")
		out := ns.MustRun("sh", "-c", fmt.Sprintf("nc -N %s 19 </dev/null | head -c 5000000 | wc -c", stackV4))
		if strings.TrimSpace(out) != "5000000" {
			t.Errorf("got %s bytes after the half-close, want 5000000", out)
		}
		if n := metric(t, ns, `tund_half_close_actions_total{action="allowed"}`); n != 1 {
			t.Errorf("half-close allowed counted %v times, want 1", n)
		}
	})
	for _, c := range []struct {
		policy, action string
		min, max       time.Duration // from the client's FIN to tund's FIN
	}{
		{"close", "closed", 0, 200 * time.Millisecond},
		{"1s", "timeout", 900 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(c.policy, func(t *testing.T) {
			ns := newNS(t)
			startTund(t, ns, "--serve", "chargen/half-close="+c.policy)
			cap := capture(t, ns, "tund0", "tcp")
			out := ns.MustRun("sh", "-c", fmt.Sprintf("timeout 20 nc -N %s 19 </dev/null | wc -c", stackV4))
			convs := conversations(cap.Stop())
			if len(convs) != 1 {
				t.Fatalf("%d connections captured, want 1", len(convs))
			}
			conv := convs[0]
			cf, sf := conv.firstFIN(false), conv.firstFIN(true)
			if cf < 0 || sf < 0 {
				t.Fatalf("want FINs from both sides:%s", conv)
			}
			gap := conv.Segs[sf].T.Sub(conv.Segs[cf].T)
			t.Logf("policy %s: %s bytes arrived, tund's FIN %v after the client's", c.policy, strings.TrimSpace(out), gap)
			if gap < c.min || gap > c.max {
				t.Errorf("tund's FIN came %v after the client's, want within [%v, %v]", gap, c.min, c.max)
			}
			if n := metric(t, ns, `tund_half_close_actions_total{action="`+c.action+`"}`); n != 1 {
				t.Errorf("half-close %s counted %v times, want 1", c.action, n)
			}
			if n := metric(t, ns, `tund_tcp_closes_total{initiator="peer",kind="half-close-policy"}`); n != 1 {
				t.Errorf("closes of kind half-close-policy: %v, want 1", n)
			}
			for i, s := range conv.Segs {
				if s.Has(tcpflag.RST) && conv.FromServer(s) {
					tail := &Conversation{Client: conv.Client, Server: conv.Server, Segs: conv.Segs[max(0, i-12) : i+1]}
					t.Errorf("tund sent RST where a graceful close is due; the segments before it:%s", tail)
				}
			}
		})
	}
}

// TestFinWait2 has tund close first (daytime) while the client, a kernel
// socket, stays half-open for 3 s and then sends its FIN. With --fin-wait2
// 1s tund has given up on the connection and answers RST; with 10s it
// ACKs the FIN (and goes to TIME-WAIT).
func TestFinWait2(t *testing.T) {
	for _, c := range []struct {
		timeout string
		rst     bool
	}{{"1s", true}, {"10s", false}} {
		t.Run(c.timeout, func(t *testing.T) {
			ns := newNS(t)
			startTund(t, ns, "--fin-wait2", c.timeout)
			cap := capture(t, ns, "tund0", "tcp port 13")
			conn, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "13"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.ReadAll(conn); err != nil { // the line, then tund's FIN
				t.Fatal(err)
			}
			// The half-open time is the scenario, not a synchronisation.
			time.Sleep(3 * time.Second)
			if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// tund's answer, RST or ACK, takes the kernel socket out of
			// LAST-ACK; the socket API has no event for that, so its state
			// is polled.
			if err := waitState(conn.(*net.TCPConn), 5*time.Second, func(s uint8) bool { return s != tcpLastAck }); err != nil {
				t.Error(err)
			}
			segs := cap.Stop()
			convs := conversations(segs)
			if len(convs) != 1 {
				t.Fatalf("%d connections captured, want 1", len(convs))
			}
			conv := convs[0]
			cf := conv.firstFIN(false)
			if cf < 0 {
				t.Fatalf("no FIN from the client:%s", conv)
			}
			finEnd := conv.Segs[cf].Seq + 1
			var answer *Segment
			for i := cf + 1; i < len(conv.Segs); i++ {
				if conv.FromServer(conv.Segs[i]) {
					answer = &conv.Segs[i]
					break
				}
			}
			switch {
			case answer == nil:
				t.Errorf("tund did not answer the client's FIN:%s", conv)
			case c.rst && !answer.Has(tcpflag.RST):
				t.Errorf("want RST after the FIN-WAIT-2 timeout, got %v:%s", answer, conv)
			case !c.rst && !(answer.PureACK() && answer.Ack == finEnd):
				t.Errorf("want a pure ACK of the FIN (ack %d), got %v:%s", finEnd, answer, conv)
			}
		})
	}
}

// tcpLastAck is LAST-ACK as tcpi_state gives it (include/net/tcp_states.h).
const tcpLastAck = 9

// waitState polls the kernel socket's TCP state (TCP_INFO) every 5 ms
// until done accepts it or the timeout passes.
func waitState(c *net.TCPConn, timeout time.Duration, done func(uint8) bool) error {
	return waitTCPInfo(c, timeout, func(i *unix.TCPInfo) bool { return done(i.State) })
}

// waitTCPInfo polls the kernel socket's TCP_INFO every 5 ms until done
// accepts it or the timeout passes.
func waitTCPInfo(c *net.TCPConn, timeout time.Duration, done func(*unix.TCPInfo) bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		var info *unix.TCPInfo
		var serr error
		rc.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if serr != nil {
			return serr
		}
		if done(info) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("socket still in TCP state " + strconv.Itoa(int(info.State)) + " after " + timeout.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAbortiveClose checks the per-service abort option on the wire:
// daytime/abort ends its connections with RST and no FIN, where plain
// daytime sends FIN.
func TestAbortiveClose(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime,daytime:1313/abort")
	cap := capture(t, ns, "tund0", "tcp")
	for _, port := range []string{"13", "1313"} {
		// nc reports the reset; its output and status do not matter here.
		ns.Run("nc", "-d", "-w", "5", stackV4, port)
	}
	convs := conversations(cap.Stop())
	if len(convs) != 2 {
		t.Fatalf("%d connections captured, want 2", len(convs))
	}
	for _, c := range convs {
		var fin, rst bool
		for _, s := range c.Segs {
			if c.FromServer(s) {
				fin = fin || s.Has(tcpflag.FIN)
				rst = rst || s.Has(tcpflag.RST)
			}
		}
		abort := c.Server.Port() == 1313
		if fin == abort || rst != abort {
			t.Errorf("port %d: tund sent FIN %v, RST %v; want abort=%v:%s", c.Server.Port(), fin, rst, abort, c)
		}
	}
	// The RST is counted as an abort; a SYN to a closed port draws one
	// counted as refused.
	ns.Run("nc", "-z", "-w", "2", stackV4, "1999")
	for reason, want := range map[string]float64{"abort": 1, "refused": 1} {
		if n := metric(t, ns, `tund_tcp_resets_total{direction="sent",reason="`+reason+`"}`); n != want {
			t.Errorf("RSTs sent for %s: %v, want %v", reason, n, want)
		}
	}
}

// TestMergeWindowBeyondRTO shows the cost of a merge window longer than
// the peer's retransmission timeout (200 ms at least on Linux): discard
// stays in CLOSE-WAIT for 1 s (close-delay), so no FIN of tund's comes to
// carry the ACK. With a 300 ms window the kernel client retransmits its FIN
// before the ACK comes, tund sends the held ACK at once on that
// retransmission, and counts it as flushed; with 40 ms the ACK goes out
// alone at the end of the window, before any retransmission (released).
func TestMergeWindowBeyondRTO(t *testing.T) {
	for _, c := range []struct {
		window     string
		clientFINs int
		outcome    string
	}{{"300ms", 2, "flushed"}, {"40ms", 1, "released"}} {
		t.Run(c.window, func(t *testing.T) {
			ns := newNS(t)
			startTund(t, ns, "--serve", "discard/close-delay=1s/fin-ack-merge="+c.window)
			cap := capture(t, ns, "tund0", "tcp")
			// No data before the FIN: the peer's FIN is alone in flight,
			// under its RTO (200 ms) and its tail loss probe (2 x SRTT +
			// 200 ms, RFC 8985).
			ns.MustRun("sh", "-c", fmt.Sprintf("nc -N %s 9 </dev/null", stackV4))
			convs := conversations(cap.Stop())
			if len(convs) != 1 {
				t.Fatalf("%d connections captured, want 1", len(convs))
			}
			conv := convs[0]
			fins := 0
			for _, s := range conv.Segs {
				if !conv.FromServer(s) && s.Has(tcpflag.FIN) {
					fins++
				}
			}
			if fins != c.clientFINs {
				t.Errorf("the client sent its FIN %d times, want %d:%s", fins, c.clientFINs, conv)
			}
			if v := metric(t, ns, `tund_fin_ack_merge_total{outcome="`+c.outcome+`"}`); v != 1 {
				t.Errorf("tund_fin_ack_merge_total{outcome=%q} = %v, want 1", c.outcome, v)
			}
		})
	}
}

// TestMergeNoFINRetransmits: with default flags, no Linux client sends its
// FIN again because tund held an ACK, in 1,000 closes that the clients
// start (but daytime's, which tund starts) through echo, http, daytime and
// a proxy to a kernel server that answers 30 ms after the request, counted
// on the wire; and the closes of echo and the proxy still take three
// segments. The client's request and FIN arrive together, unacknowledged:
// were the data's ACK held with the FIN's, the client would have two
// segments in flight and probe for the tail (RFC 8985) after 2 x SRTT, a
// few milliseconds, well before the proxy's answer.
func TestMergeNoFINRetransmits(t *testing.T) {
	const each = 250
	ns := newNS(t)
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:7100"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve.Each(ln, 10*time.Second, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		time.Sleep(30 * time.Millisecond) // a server that takes its time
		c.Write(b)
	})
	startTund(t, ns, "--serve", "echo,http,daytime,proxy:7007=127.0.0.1:7100")
	cap := capture(t, ns, "tund0", "tcp[tcpflags] & (tcp-fin|tcp-syn) != 0 or src port 7 or src port 7007")
	request := map[int]string{7: "hello", 80: "GET / HTTP/1.1\r\nHost: tund\r\n\r\n", 13: "", 7007: "hello"}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for port, req := range request {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, strconv.Itoa(port)))
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if req != "" {
					c.Write([]byte(req))
					c.(*net.TCPConn).CloseWrite()
				}
				_, err = io.ReadAll(c)
				c.Close()
				if err != nil {
					errs <- fmt.Errorf("port %d: %w", port, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A client's FIN sent again by its tail loss probe goes before tund's
	// FIN arrives, which each client has read: the capture holds them all.
	convs := conversations(cap.Stop())
	if len(convs) != 4*each {
		t.Fatalf("%d connections captured, want %d", len(convs), 4*each)
	}
	again, merged := map[uint16]int{}, map[uint16]int{}
	for _, c := range convs {
		fins := 0
		for _, s := range c.Segs {
			if !c.FromServer(s) && s.Has(tcpflag.FIN) {
				fins++
			}
		}
		if fins > 1 {
			again[c.Server.Port()]++
			if again[c.Server.Port()] == 1 {
				t.Logf("the client sent its FIN %d times:%s", fins, c)
			}
		}
		if p := c.Server.Port(); (p == 7 || p == 7007) && mergeVerdict(t, c) == "merged" {
			merged[p]++
		}
	}
	t.Logf("client FINs sent again, by port: %v; three-way closes: echo %d, proxy %d of %d each; data ACKed before a held FIN ACK: %v",
		again, merged[7], merged[7007], each, metric(t, ns, `tund_fin_ack_merge_total{outcome="data-acked"}`))
	if len(again) > 0 {
		t.Errorf("clients sent their FIN again in %v closes (by port), want none", again)
	}
	if merged[7] != each || merged[7007] != each {
		t.Errorf("three-way closes: echo %d, proxy %d, want %d each", merged[7], merged[7007], each)
	}
}
