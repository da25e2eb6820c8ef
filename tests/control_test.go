package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tund/tund/client"
	"github.com/tund/tund/internal/serve"
	"github.com/tund/tund/internal/tcpflag"
	"golang.org/x/sys/unix"
)

// controlClient returns a client of the admin API of the tund in ns, its
// sockets made inside the namespace, as a test suite's would be.
func controlClient(ns *NS) *client.Client {
	c := client.New("127.0.0.1:9180")
	c.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return ns.Dial(network, addr) },
	}}
	return c
}

// mustSet changes knobs stack-wide (port 0) or on port, failing the test
// if tund refuses.
func mustSet(t *testing.T, api *client.Client, port uint16, knobs client.Knobs) {
	t.Helper()
	var err error
	if port == 0 {
		_, err = api.Set(context.Background(), knobs)
	} else {
		_, err = api.SetPort(context.Background(), port, knobs)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// awaitClose waits for the close record of the connection from peer that
// satisfies ok (client.WaitCloseWhere), failing the test if none comes.
func awaitClose(t *testing.T, api *client.Client, peer netip.AddrPort, ok func(*client.Close) bool) *client.Close {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rec, err := api.WaitCloseWhere(ctx, peer, ok)
	if err != nil {
		t.Fatalf("the close of %v: %v (last record %+v)", peer, err, rec)
	}
	return rec
}

// hasFault reports whether a segment of rec was taken by fault.
func hasFault(rec *client.Close, fault string) bool {
	return slices.ContainsFunc(rec.Segments, func(s client.Segment) bool { return s.Fault == fault })
}

// daytimeClose reads daytime to its end (tund's FIN) and closes the
// client's side, returning once tund has acknowledged the client's FIN
// (the client left LAST-ACK): tund is then in TIME-WAIT.
func daytimeClose(t *testing.T, conn *net.TCPConn) {
	t.Helper()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatal(err)
	}
	conn.CloseWrite()
	if err := waitState(conn, 10*time.Second, func(s uint8) bool { return s != tcpLastAck }); err != nil {
		t.Fatal(err)
	}
}

// TestLiveFault sets drop-final-ack=once on daytime's port while tund runs:
// the next connection's final ACK is lost on the wire (the client's FIN
// twice, tund's ACK only after the second), and once the port is cleared
// the next is not.
func TestLiveFault(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime,echo")
	api := controlClient(ns)
	cap := capture(t, ns, "tund0", "tcp port 13")

	mustSet(t, api, 13, client.Knobs{"drop-final-ack": "once"})
	struck := ns.DialStack(t, 13)
	daytimeClose(t, struck)
	rec := awaitClose(t, api, localAddr(struck), func(c *client.Close) bool { return c.FinalACKLost })
	if !hasFault(rec, "drop-final-ack") || rec.FINRetransmits != 1 {
		t.Errorf("record of the struck close: fault %v, %d FINs sent again; want drop-final-ack, 1", hasFault(rec, "drop-final-ack"), rec.FINRetransmits)
	}
	if _, err := api.ClearPort(context.Background(), 13); err != nil {
		t.Fatal(err)
	}
	clean := ns.DialStack(t, 13)
	daytimeClose(t, clean)
	if rec := awaitClose(t, api, localAddr(clean), func(*client.Close) bool { return true }); rec.FinalACKLost || rec.FINRetransmits != 0 {
		t.Errorf("after clearing the port: %+v, want no loss", rec)
	}

	for _, c := range conversations(cap.Stop()) {
		client := c.Client
		finEnd, fins, acks, ackedAfter := uint32(0), 0, 0, 0
		for _, s := range c.Segs {
			switch {
			case s.Src == client && s.Has(tcpflag.FIN):
				fins++
				finEnd = s.Seq + uint32(s.Len) + 1
			case s.Src != client && s.PureACK() && fins > 0 && s.Ack == finEnd:
				acks++
				if fins == 2 {
					ackedAfter++
				}
			}
		}
		want := [3]int{1, 1, 0}
		if client == localAddr(struck) {
			want = [3]int{2, 1, 1}
		}
		t.Logf("%v: the client's FIN %d times, tund's ACK of it %d times (%d after the second FIN)", client, fins, acks, ackedAfter)
		if [3]int{fins, acks, ackedAfter} != want {
			t.Errorf("%v: FIN %d, ACK %d, after the second FIN %d; want %v:%s", client, fins, acks, ackedAfter, want, c)
		}
	}
}

// TestLiveMergeWindow changes echo's FIN/ACK merge window while tund runs:
// at 0 the ACK of the client's FIN leaves alone (a four-way close), at
// 200ms it rides on tund's FIN (three-way), on the wire, for connections
// opened after the change and for those open across it.
func TestLiveMergeWindow(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "echo")
	api := controlClient(ns)
	cap := capture(t, ns, "tund0", "tcp port 7")
	closeEcho := func(c *net.TCPConn) {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if b, err := io.ReadAll(c); err != nil || string(b) != "x" {
			t.Fatalf("echo: %q %v", b, err)
		}
	}
	want := map[netip.AddrPort]string{}
	across := ns.DialStack(t, 7) // open before the change
	mustSet(t, api, 7, client.Knobs{"fin-ack-merge": "0"})
	after := ns.DialStack(t, 7)
	for _, c := range []*net.TCPConn{across, after} {
		closeEcho(c)
		want[localAddr(c)] = "separate"
	}
	across = ns.DialStack(t, 7)
	mustSet(t, api, 7, client.Knobs{"fin-ack-merge": "200ms"})
	after = ns.DialStack(t, 7)
	for _, c := range []*net.TCPConn{across, after} {
		closeEcho(c)
		want[localAddr(c)] = "merged"
	}
	convs := conversations(cap.Stop())
	if len(convs) != 4 {
		t.Fatalf("%d connections on the wire, want 4", len(convs))
	}
	for _, c := range convs {
		if got := mergeVerdict(t, c); got != want[c.Client] {
			t.Errorf("%v: the ACK of the client's FIN %s, want %s:%s", c.Client, got, want[c.Client], c)
		}
	}
}

// TestLiveChangesUnderLoad changes settings 1,000 times a second, stack-wide
// and on the http port, while wrk opens a connection per request: no
// request fails, and no RST crosses the wire (none of the settings changed
// calls for one: only wrk's own, as it stops).
func TestLiveChangesUnderLoad(t *testing.T) {
	const (
		rate = 1000
		run  = 5 * time.Second
	)
	ns := newNS(t)
	td := startTund(t, ns, "--serve", "http")
	api := controlClient(ns)
	api.HTTPClient.Transport.(*http.Transport).MaxIdleConnsPerHost = 8
	cap := capture(t, ns, "tund0", "tcp port 80 and tcp[tcpflags] & tcp-rst != 0")

	changes := []struct {
		port  uint16
		knobs client.Knobs
	}{
		{0, client.Knobs{"fin-ack-merge": "0"}},
		{80, client.Knobs{"fin-ack-merge": "100ms", "delay-fin": "1ms"}},
		{0, client.Knobs{"drop-final-ack": "once", "fin-ack-merge": "40ms"}},
		{80, client.Knobs{"delay-fin": "0s", "drop-fin": "0.01"}},
		{0, client.Knobs{"drop-final-ack": "off", "half-close": "close"}},
		{80, client.Knobs{"drop-fin": "off", "fin-ack-merge": "0"}},
		{0, client.Knobs{"half-close": "allow", "fin-wait2": "30s"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	// Change k is due at start + k/rate; a writer that falls behind
	// catches up at once, so the rate holds unless tund's API cannot.
	start := time.Now()
	var next, made atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				due := start.Add(time.Duration(k) * time.Second / rate)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(due)):
				}
				c := changes[k%int64(len(changes))]
				var err error
				if c.port == 0 {
					_, err = api.Set(context.Background(), c.knobs)
				} else {
					_, err = api.SetPort(context.Background(), c.port, c.knobs)
				}
				if err != nil {
					failed.Store(&err)
					cancel()
					return
				}
				made.Add(1)
			}
		}()
	}
	out := ns.MustRun("wrk", "-t2", "-c20", "-d"+run.String(), "--timeout", "5s", "-H", "Connection: close", "http://"+stackV4+"/")
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("a change was refused: %v", *err)
	}
	s := parseWrk(t, out)
	n := made.Load()
	t.Logf("%d changes in %v (%.0f a second) while wrk made %d requests", n, run, float64(n)/run.Seconds(), s.requests)
	if s.requests < 1000 || s.socketErrors != "" || s.non2xx != 0 {
		t.Errorf("wrk: %d requests, %q, %d non-2xx:\n%s", s.requests, s.socketErrors, s.non2xx, out)
	}
	if n < int64(0.9*rate*run.Seconds()) {
		t.Errorf("%d changes in %v: tund's API took fewer than 90%% of %d a second", n, run, rate)
	}
	settings, err := api.Settings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if settings.Generation != uint64(n) {
		t.Errorf("generation %d after %d changes", settings.Generation, n)
	}
	// wrk resets the connections it still has open when its time is up;
	// any other RST, and any RST of tund's, no setting explains.
	wrkEnd := start.Add(run - 100*time.Millisecond)
	atEnd := 0
	for _, r := range cap.Stop() {
		if r.Src.Port() != 80 && r.T.After(wrkEnd) {
			atEnd++
			continue
		}
		t.Errorf("a RST that no setting explains: %v", r)
	}
	t.Logf("%d RSTs of wrk's as it stopped", atEnd)
	if !td.Alive() {
		t.Fatal("tund died")
	}
}

// accepted connects to port of tund's stack and returns once the service
// has accepted the connection (it has answered), so that the connection
// took the options in force before what the test changes next: echo
// echoes a byte, the others (daytime, chargen) send first.
func accepted(t *testing.T, ns *NS, port int) *net.TCPConn {
	t.Helper()
	c := ns.DialStack(t, port)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if port == 7 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("port %d: no answer: %v", port, err)
	}
	return c
}

// TestLiveReaches checks, knob by knob, which connections a change reaches
// (README, "Driving tund from a test suite"): one opened before the change
// and one after, on one tund that each case resets first.
func TestLiveReaches(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "echo,discard,daytime,chargen,http")
	api := controlClient(ns)
	ctx := context.Background()
	reset := func(t *testing.T) {
		if _, err := api.Reset(ctx); err != nil {
			t.Fatal(err)
		}
	}
	echoOnce := func(t *testing.T, c *net.TCPConn, msg string) error {
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		defer c.SetDeadline(time.Time{})
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		b := make([]byte, len(msg))
		_, err := io.ReadFull(c, b)
		return err
	}

	t.Run("max-conns new only", func(t *testing.T) {
		reset(t)
		a, b := ns.DialStack(t, 7), ns.DialStack(t, 7)
		for _, c := range []*net.TCPConn{a, b} {
			if err := echoOnce(t, c, "hi"); err != nil {
				t.Fatal(err)
			}
		}
		mustSet(t, api, 0, client.Knobs{"max-conns": "2"})
		// The reset follows the handshake at once: it may reach the
		// client before its connect returns.
		c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "7"))
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a third connection with max-conns 2: %v, want a reset", err)
		}
		for _, c := range []*net.TCPConn{a, b} {
			if err := echoOnce(t, c, "still"); err != nil {
				t.Errorf("a connection open before max-conns was lowered: %v", err)
			}
		}
		a.Close()
		b.Close()
	})

	t.Run("abort new only", func(t *testing.T) {
		reset(t)
		before := accepted(t, ns, 7)
		mustSet(t, api, 7, client.Knobs{"abort": "true"})
		after := ns.DialStack(t, 7)
		for _, c := range []*net.TCPConn{before, after} {
			c.CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
		}
		if _, err := io.ReadAll(before); err != nil {
			t.Errorf("opened before abort was set: %v, want tund's FIN", err)
		}
		if _, err := io.ReadAll(after); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("opened after abort was set: %v, want a reset", err)
		}
	})

	t.Run("half-close new only", func(t *testing.T) {
		reset(t)
		before := accepted(t, ns, 19)
		mustSet(t, api, 19, client.Knobs{"half-close": "close"})
		after := ns.DialStack(t, 19)
		before.CloseWrite()
		after.CloseWrite()
		after.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, after); err != nil {
			t.Fatalf("chargen opened after half-close=close: %v, want tund's FIN", err)
		}
		// chargen goes on for the one opened before: half-close allow.
		before.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := io.CopyN(io.Discard, before, 1<<20); err != nil {
			t.Errorf("chargen opened before half-close=close sent %d bytes after the client's FIN: %v", n, err)
		}
		before.Close()
	})

	t.Run("close-delay new only", func(t *testing.T) {
		reset(t)
		before := accepted(t, ns, 7)
		mustSet(t, api, 7, client.Knobs{"close-delay": "1s"})
		after := ns.DialStack(t, 7)
		took := func(c *net.TCPConn) time.Duration {
			start := time.Now()
			c.CloseWrite()
			c.SetReadDeadline(start.Add(5 * time.Second))
			if _, err := io.ReadAll(c); err != nil {
				t.Fatal(err)
			}
			return time.Since(start)
		}
		if d := took(before); d > 500*time.Millisecond {
			t.Errorf("opened before close-delay 1s: tund's FIN %v after the client's", d)
		}
		if d := took(after); d < 900*time.Millisecond {
			t.Errorf("opened after close-delay 1s: tund's FIN %v after the client's, want 1s", d)
		}
	})

	t.Run("fin-wait2 new only", func(t *testing.T) {
		reset(t)
		before := accepted(t, ns, 13)
		mustSet(t, api, 13, client.Knobs{"fin-wait2": "1s"})
		after := ns.DialStack(t, 13)
		for _, c := range []*net.TCPConn{before, after} {
			io.ReadAll(c) // tund's FIN; the client never sends its own
		}
		if rec := awaitClose(t, api, localAddr(after), func(*client.Close) bool { return true }); rec.Kind != client.KindFinWait2Timeout {
			t.Errorf("opened after fin-wait2 1s: %s, want %s", rec.Kind, client.KindFinWait2Timeout)
		}
		if got := connState(t, ns, localAddr(before)); got != "FIN-WAIT-2" {
			t.Errorf("opened before fin-wait2 1s: tund's side %q after the other timed out, want FIN-WAIT-2", got)
		}
		before.Close()
	})

	t.Run("msl new TIME-WAITs only", func(t *testing.T) {
		reset(t)
		before := ns.DialStack(t, 13)
		daytimeClose(t, before)
		awaitState(t, ns, localAddr(before), "TIME-WAIT")
		mustSet(t, api, 0, client.Knobs{"msl": "500ms"})
		after := ns.DialStack(t, 13)
		daytimeClose(t, after)
		awaitState(t, ns, localAddr(after), "") // 2 x MSL = 1s
		if got := connState(t, ns, localAddr(before)); got != "TIME-WAIT" {
			t.Errorf("in TIME-WAIT before msl was lowered: %q after the other ended, want TIME-WAIT", got)
		}
	})

	t.Run("time-wait-rst TIME-WAITs under way too", func(t *testing.T) {
		reset(t)
		c := ns.DialStack(t, 13)
		daytimeClose(t, c)
		peer := localAddr(c)
		awaitState(t, ns, peer, "TIME-WAIT")
		rec := awaitClose(t, api, peer, func(*client.Close) bool { return true })
		i := slices.IndexFunc(rec.Segments, func(s client.Segment) bool { return s.From == "peer" && strings.Contains(s.Flags, "F") })
		if i < 0 {
			t.Fatalf("no FIN of the client in %+v", rec)
		}
		mustSet(t, api, 0, client.Knobs{"time-wait-rst": "close"})
		hping(t, ns, "-k", "-s", strconv.Itoa(int(peer.Port())), "-p", "13", "-R", "-M", strconv.FormatUint(uint64(rec.Segments[i].Seq+1), 10), stackV4)
		awaitState(t, ns, peer, "")
	})

	t.Run("delayed-ack new only", func(t *testing.T) {
		reset(t)
		cap := capture(t, ns, "tund0", "tcp port 9")
		before := ns.DialStack(t, 9)
		// Under Linux's 200 ms minimum RTO, or the client sends the
		// segment again before the ACK comes.
		mustSet(t, api, 0, client.Knobs{"delayed-ack": "100ms"})
		after := ns.DialStack(t, 9)
		for _, c := range []*net.TCPConn{before, after} {
			if _, err := c.Write([]byte("small request")); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*net.TCPConn{before, after} {
			if err := waitUnacked(c, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		delay := map[netip.AddrPort]time.Duration{}
		for _, c := range conversations(cap.Stop()) {
			var sent time.Time
			for _, s := range c.Segs {
				switch {
				case s.Src == c.Client && s.Len > 0 && sent.IsZero():
					sent = s.T
				case s.Src != c.Client && !sent.IsZero() && s.Has(tcpflag.ACK):
					delay[c.Client] = s.T.Sub(sent)
				}
			}
		}
		t.Logf("tund's ACK of a small segment: %v opened before delayed-ack 100ms, %v after", delay[localAddr(before)], delay[localAddr(after)])
		if d := delay[localAddr(before)]; d > 50*time.Millisecond {
			t.Errorf("opened before delayed-ack 100ms: ACKed after %v, want at once", d)
		}
		if d := delay[localAddr(after)]; d < 90*time.Millisecond || d > 190*time.Millisecond {
			t.Errorf("opened after delayed-ack 100ms: ACKed after %v, want 100ms", d)
		}
	})

	// The faults act on every segment from the change on, so each is set
	// on a connection already open.
	t.Run("drop-fin open too", func(t *testing.T) {
		reset(t)
		c := ns.DialStack(t, 7)
		mustSet(t, api, 7, client.Knobs{"drop-fin": "once"})
		c.CloseWrite()
		io.ReadAll(c)
		// The dropped FIN never reached the wire: the one sent again is the
		// first the client saw.
		rec := awaitClose(t, api, localAddr(c), func(*client.Close) bool { return true })
		fins := 0
		for _, s := range rec.Segments {
			if s.From == client.SideTund && strings.Contains(s.Flags, "F") {
				fins++
			}
		}
		if !hasFault(rec, "drop-fin") || fins != 2 {
			t.Errorf("record %+v: want tund's FIN dropped and sent again", rec)
		}
	})
	t.Run("delay-fin open too", func(t *testing.T) {
		reset(t)
		c := ns.DialStack(t, 7)
		mustSet(t, api, 7, client.Knobs{"delay-fin": "300ms"})
		start := time.Now()
		c.CloseWrite()
		io.ReadAll(c)
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Errorf("tund's FIN came %v after the client's, want 300ms later", d)
		}
		if rec := awaitClose(t, api, localAddr(c), func(*client.Close) bool { return true }); !hasFault(rec, "delay-fin") {
			t.Errorf("record %+v: want tund's FIN delayed", rec)
		}
	})
	t.Run("drop-final-ack open too", func(t *testing.T) {
		// A keep-alive HTTP connection, open across the change, that tund
		// closes after it: the final ACK follows a FIN sent after the
		// change (the fault knows a final ACK by the FIN before it).
		reset(t)
		c := ns.DialStack(t, 80)
		get := func(header string) {
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: tund\r\n" + header + "\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		get("")
		resp, err := http.ReadResponse(bufio.NewReader(io.LimitReader(c, 1<<20)), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mustSet(t, api, 80, client.Knobs{"drop-final-ack": "once"})
		get("Connection: close\r\n")
		daytimeClose(t, c) // reads to tund's FIN, closes, awaits the ACK
		awaitClose(t, api, localAddr(c), func(c *client.Close) bool { return c.FinalACKLost })
	})
	// Set, the fault holds the segments back; cleared, they go through.
	for _, f := range []struct {
		knob, on, off string
		step          func(c *net.TCPConn) error
	}{
		{"no-fin", "true", "false", func(c *net.TCPConn) error { c.CloseWrite(); _, err := io.ReadAll(c); return err }},
		{"loss-in", "1", "0", func(c *net.TCPConn) error { return echoOnce(t, c, "in") }},
		{"loss-out", "1", "0", func(c *net.TCPConn) error { return echoOnce(t, c, "out") }},
	} {
		t.Run(f.knob+" open too", func(t *testing.T) {
			reset(t)
			c := ns.DialStack(t, 7)
			mustSet(t, api, 7, client.Knobs{f.knob: f.on})
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			done := make(chan error, 1)
			go func() { done <- f.step(c) }()
			if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("%s=%s on an open connection: %v, want nothing through", f.knob, f.on, err)
			}
			mustSet(t, api, 7, client.Knobs{f.knob: f.off})
			// What was held back is sent again (RTO) and now gets through.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var err error
			switch f.knob {
			case "no-fin":
				_, err = io.ReadAll(c)
			default:
				b := make([]byte, 16)
				var n int
				n, err = c.Read(b)
				if err == nil && n == 0 {
					err = io.ErrUnexpectedEOF
				}
			}
			if err != nil {
				t.Errorf("%s cleared: %v, want what it held back", f.knob, err)
			}
		})
	}
}

// waitUnacked waits until the kernel socket has nothing unacknowledged.
func waitUnacked(c *net.TCPConn, timeout time.Duration) error {
	return waitTCPInfo(c, timeout, func(i *unix.TCPInfo) bool { return i.Unacked == 0 })
}

// kernelEcho runs an echo server on a kernel socket at addr in ns until the
// test ends.
func kernelEcho(t *testing.T, ns *NS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serve.Each(ln, 0, func(c net.Conn) { io.Copy(c, c) })
}

// TestLiveCLI drives a running tund with tund set, get, reset and proxy,
// as a user at a shell would: a proxy added at run time carries a kernel
// client to a kernel server; removed, it takes no new connection, while
// the pair open across the removal goes on until its peers close (within
// --drain); a refused change exits 1 and changes nothing.
func TestLiveCLI(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "echo")
	kernelEcho(t, ns, "127.0.0.1:7100")
	tund := func(args ...string) (string, error) { return ns.Run(tundBin, args...) }

	if out, err := tund("proxy", "add", "7007=127.0.0.1:7100", "fin-ack-merge=0"); err != nil || !strings.Contains(out, "port 7007: proxy to 127.0.0.1:7100 started") {
		t.Fatalf("tund proxy add: %v\n%s", err, out)
	}
	if out := ns.MustRun("sh", "-c", "printf 'through the proxy' | nc -N "+stackV4+" 7007"); out != "through the proxy" {
		t.Errorf("through a proxy added at run time: %q", out)
	}
	open := ns.DialStack(t, 7007)
	if out, err := tund("proxy", "rm", "7007"); err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("tund proxy rm: %v\n%s", err, out)
	}
	if out, err := ns.Run("sh", "-c", "printf x | nc -N -w 2 "+stackV4+" 7007"); err == nil && out != "" {
		t.Errorf("a removed proxy answered: %q", out)
	}
	// The port can be served again at once, its old pair still open.
	if out, err := tund("proxy", "add", "7007=127.0.0.1:7100"); err != nil {
		t.Errorf("tund proxy add, again, while a pair of the removed proxy is open: %v\n%s", err, out)
	}
	if out := ns.MustRun("sh", "-c", "printf again | nc -N "+stackV4+" 7007"); out != "again" {
		t.Errorf("through the proxy added again: %q", out)
	}
	if out, err := tund("proxy", "rm", "7007"); err != nil {
		t.Fatalf("tund proxy rm: %v\n%s", err, out)
	}
	open.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := open.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 5); func() error { _, err := io.ReadFull(open, b); return err }() != nil || string(b) != "still" {
		t.Errorf("the pair open across the proxy's removal: %q", b)
	}
	open.Close()

	out, err := tund("set", "--port", "7", "fin-ack-merge=0", "msl=1s")
	if err == nil || !strings.Contains(out+err.Error(), "stack-wide only") {
		t.Errorf("tund set --port 7 msl=1s: %v, want exit 1 saying msl is stack-wide only\n%s", err, out)
	}
	if out, err := tund("set", "--port", "7", "fin-ack-merge=0"); err != nil || !strings.Contains(out, "fin-ack-merge: 40ms -> 0s (port 7") {
		t.Errorf("tund set --port 7 fin-ack-merge=0: %v\n%s", err, out)
	}
	out = ns.MustRun(tundBin, "get", "--json")
	var s client.Settings
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Generation != 5 || s.Port(7).Settings["fin-ack-merge"] != "0s" || s.Port(7).Settings["msl"] != "" || s.Port(7007) != nil {
		t.Errorf("tund get --json after the changes: %+v", s)
	}
	if out, err := tund("reset"); err != nil || !strings.Contains(out, "generation 6") {
		t.Errorf("tund reset: %v\n%s", err, out)
	}
}

// TestAdminWrites: the API that changes settings is never reachable through
// the TUN device, for writes as for reads, nor through a proxy to it (one
// is refused, at run time and at start); published beyond loopback
// without --admin-token, tund says at start that writes are open; with it,
// a write without the token is refused and tund's CLI sends it from
// --token-file.
func TestAdminWrites(t *testing.T) {
	patch := func(ns *NS, addr string, header ...string) (string, error) {
		args := []string{"-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH", "-d", `{"drop-fin":"once"}`}
		for _, h := range header {
			args = append(args, "-H", h)
		}
		return ns.Run("curl", append(args, "http://"+addr+"/settings")...)
	}
	t.Run("open", func(t *testing.T) {
		ns := newNS(t)
		td := startTund(t, ns, "--admin", "0.0.0.0:9180")
		if !strings.Contains(td.Logs(), "admin writes are open") {
			t.Errorf("published without a token, tund did not say that writes are open:\n%s", td.Logs())
		}
		for _, addr := range []string{kernV4 + ":9180", stackV4 + ":9180"} {
			if code, err := patch(ns, addr); err == nil {
				t.Errorf("a write through the TUN device, to %s, was answered %s", addr, code)
			}
		}
		if code, err := patch(ns, "127.0.0.1:9180"); err != nil || code != "200" {
			t.Errorf("a write on loopback: %s %v, want 200", code, err)
		}
		// A proxy to the admin server would carry the TUN side to it.
		for _, target := range []string{"127.0.0.1:9180", kernV4 + ":9180"} {
			out, _ := ns.Run("curl", "-sS", "-m", "3", "-X", "POST", "-d", `{"port": 9999, "target": "`+target+`"}`, "http://127.0.0.1:9180/proxies")
			if !strings.Contains(out, `"field":"target"`) {
				t.Errorf("a proxy to the admin server at %s: %s, want refused", target, out)
			}
		}
		if code, err := patch(ns, stackV4+":9999"); err == nil {
			t.Errorf("a write through port 9999 of the stack was answered %s", code)
		}
	})
	t.Run("proxy flag", func(t *testing.T) {
		ns := newNS(t)
		status, out := runTund(t, ns, nil, "--serve", "echo,proxy:9999=127.0.0.1:9180")
		if status != 2 || !strings.Contains(out, "admin server") {
			t.Errorf("--serve proxy:9999=127.0.0.1:9180: exit %d, want 2 naming the admin server:\n%s", status, out)
		}
		noTunLeft(t, ns)
	})
	t.Run("token", func(t *testing.T) {
		ns := newNS(t)
		file := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		td := startTund(t, ns, "--admin", "0.0.0.0:9180", "--admin-token", file)
		if strings.Contains(td.Logs(), "admin writes are open") {
			t.Errorf("with a token, tund says writes are open:\n%s", td.Logs())
		}
		if code, _ := patch(ns, "127.0.0.1:9180"); code != "401" {
			t.Errorf("a write without the token: %s, want 401", code)
		}
		if code, _ := patch(ns, "127.0.0.1:9180", "Authorization: Bearer s3cret"); code != "200" {
			t.Errorf("a write with the token: %s, want 200", code)
		}
		if out, err := ns.Run(tundBin, "set", "--token-file", file, "drop-fin=off"); err != nil || !strings.Contains(out, "drop-fin: once -> off") {
			t.Errorf("tund set --token-file: %v\n%s", err, out)
		}
		if _, err := ns.Run(tundBin, "set", "drop-fin=once"); err == nil {
			t.Error("tund set without the token succeeded")
		}
	})
}
