package tests

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// The close-path faults (--drop-fin, --delay-fin, --no-fin, --abort,
// --loss-in, --loss-out) against kernel clients, checked on the wire with
// tcpdump on the TUN device, in tund's close records and in its metrics.
// The lost final ACK (--drop-final-ack) is the scenario tests'
// (scenario_test.go), which also read the kernel's side with ss.

// readAll reads c to EOF with a deadline, then closes it.
func readAll(t *testing.T, c *net.TCPConn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading to EOF: %v", err)
	}
	c.Close()
	return b
}

// serverFINs returns the indexes of the FINs tund sent in c.
func serverFINs(c *Conversation) []int {
	var fins []int
	for i, s := range c.Segs {
		if c.FromServer(s) && s.Has(tcpflag.FIN) {
			fins = append(fins, i)
		}
	}
	return fins
}

// onlyConversation returns the one connection in segs.
func onlyConversation(t *testing.T, segs []Segment) *Conversation {
	t.Helper()
	convs := conversations(segs)
	if len(convs) != 1 {
		t.Fatalf("%d connections captured, want 1", len(convs))
	}
	return convs[0]
}

// TestFaultDropFIN: with --drop-fin once, daytime's first FIN never reaches
// the wire; the one the client sees is gVisor's retransmission, at least
// its minimum RTO (200 ms) after the data. The record holds the dropped
// FIN, marked, with the same sequence number.
func TestFaultDropFIN(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime", "--drop-fin", "once")
	cap := capture(t, ns, "tund0", "tcp")
	c := ns.DialStack(t, 13)
	if line := readAll(t, c); len(line) == 0 {
		t.Fatal("daytime sent nothing")
	}
	conv := onlyConversation(t, stopWhen(cap, bothFINs(stackV4+":13")))
	fins := serverFINs(conv)
	if len(fins) != 1 {
		t.Fatalf("tund sent %d FINs on the wire, want 1 (the first was dropped):%s", len(fins), conv)
	}
	fin := conv.Segs[fins[0]]
	var data Segment
	for _, s := range conv.Segs[:fins[0]] {
		if conv.FromServer(s) && s.Len > 0 {
			data = s
		}
	}
	if gap := fin.T.Sub(data.T); gap < 200*time.Millisecond {
		t.Errorf("tund's FIN came %v after its data; a retransmission comes after 200 ms at least:%s", gap, conv)
	}
	rec := awaitRecord(t, ns, localAddr(c))
	if len(rec.Segments) == 0 || rec.Segments[0].Fault != "drop-fin" || rec.Segments[0].Seq != fin.Seq || rec.Initiator != "tund" {
		t.Errorf("record does not start with tund's dropped FIN at seq %d: %+v", fin.Seq, rec)
	}
	if n := metric(t, ns, `tund_faults_total{fault="drop-fin"}`); n != 1 {
		t.Errorf("drop-fin counted %v times, want 1", n)
	}
}

// TestFaultDelayFIN: with --delay-fin 300ms, daytime's FIN reaches the wire
// 300 ms after its data at least, and the record marks it.
func TestFaultDelayFIN(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime", "--delay-fin", "300ms")
	cap := capture(t, ns, "tund0", "tcp")
	c := ns.DialStack(t, 13)
	readAll(t, c)
	conv := onlyConversation(t, stopWhen(cap, bothFINs(stackV4+":13")))
	fins := serverFINs(conv)
	if len(fins) != 1 {
		t.Fatalf("tund sent %d FINs, want 1:%s", len(fins), conv)
	}
	var data Segment
	for _, s := range conv.Segs[:fins[0]] {
		if conv.FromServer(s) && s.Len > 0 {
			data = s
		}
	}
	if gap := conv.Segs[fins[0]].T.Sub(data.T); gap < 300*time.Millisecond {
		t.Errorf("tund's FIN came %v after its data, want 300 ms at least:%s", gap, conv)
	}
	rec := awaitRecord(t, ns, localAddr(c))
	if rec.Kind == "" || rec.Segments[0].Fault != "delay-fin" {
		t.Errorf("record does not mark the delayed FIN: %+v", rec)
	}
}

// TestFaultNoFIN: echo on port 707 with no-fin never sends its FIN: the
// kernel client that half-closed reads its echo and then waits in
// FIN-WAIT-2 with no EOF, while tund's side sits in LAST-ACK; plain echo on
// port 7 closes as usual.
func TestFaultNoFIN(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "echo,echo:707/no-fin")
	cap := capture(t, ns, "tund0", "tcp")
	for _, port := range []int{7, 707} {
		c := ns.DialStack(t, port)
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		b, err := io.ReadAll(c)
		if string(b) != "hi" {
			t.Fatalf("port %d: echo %q, want hi", port, b)
		}
		if port == 7 {
			if err != nil {
				t.Fatalf("port 7: %v, want EOF", err)
			}
			continue
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("port 707: read ended with %v, want no EOF for 1.5 s", err)
		}
		if err := waitState(c, time.Second, func(s uint8) bool { return s == tcpFinWait2 }); err != nil {
			t.Fatalf("port 707: the kernel client is not in FIN-WAIT-2: %v", err)
		}
		awaitState(t, ns, localAddr(c), "LAST-ACK")
	}
	for _, conv := range conversations(cap.Stop()) {
		if fins := serverFINs(conv); (len(fins) > 0) != (conv.Server.Port() == 7) {
			t.Errorf("port %d: tund sent %d FINs:%s", conv.Server.Port(), len(fins), conv)
		}
	}
	if n := metric(t, ns, `tund_faults_total{fault="no-fin"}`); n < 1 {
		t.Errorf("no-fin counted %v times, want at least 1", n)
	}
}

// tcpFinWait2 is FIN-WAIT-2 as tcpi_state gives it.
const tcpFinWait2 = 5

// TestFaultAbortFlag: --abort makes every service but http end with RST.
func TestFaultAbortFlag(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime,http", "--abort")
	cap := capture(t, ns, "tund0", "tcp")
	ns.Run("nc", "-d", "-w", "5", stackV4, "13")
	ns.MustRun("curl", "-sS", "-o", "/dev/null", "http://"+stackV4+"/")
	for _, conv := range conversations(cap.Stop()) {
		var fin, rst bool
		for _, s := range conv.Segs {
			if conv.FromServer(s) {
				fin = fin || s.Has(tcpflag.FIN)
				rst = rst || s.Has(tcpflag.RST)
			}
		}
		abort := conv.Server.Port() == 13
		if fin == abort || rst != abort {
			t.Errorf("port %d: tund sent FIN %v, RST %v; want RST only on daytime:%s", conv.Server.Port(), fin, rst, conv)
		}
	}
}

// TestFaultLoss: 10% random loss each way (--loss-in, --loss-out): 2 MB
// through echo come back intact, and the drops are counted.
func TestFaultLoss(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "echo", "--loss-in", "10%", "--loss-out", "0.1")
	// 2 MB: with the offloads tund sends 64 KB segments, and 300 KB made so
	// few that 10% loss-out dropped none in one run in twenty or so.
	want := randomBytes(2 << 20)
	c := ns.DialStack(t, 7)
	errc := make(chan error, 1)
	go func() {
		err := writeChunks(c, want)
		c.CloseWrite()
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo returned %d bytes, sha256 %x; want %d, %x", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	for _, dir := range []string{"in", "out"} {
		n := metric(t, ns, `tund_faults_total{fault="loss-`+dir+`"}`)
		t.Logf("loss-%s dropped %v segments", dir, n)
		if n < 1 {
			t.Errorf("loss-%s counted %v drops, want some", dir, n)
		}
	}
}
