package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// The tests of --dial (tund as the client of kernel servers) and of the
// proxy service (tund's stack in front of a kernel server). The kernel
// peers are Go sockets made inside the test's namespace, nc and curl.

// fwdTimeout bounds every exchange of these tests: a splice that loses a
// FIN shows as a deadline, not as a hung test.
const fwdTimeout = 30 * time.Second

// listenIn opens a kernel TCP listener in ns, closed when the test ends.
func listenIn(t *testing.T, ns *NS, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// serveOne accepts one connection on ln and runs f on it in a goroutine;
// the channel gives f's error (or the accept's) and is closed after it.
func serveOne(ln *net.TCPListener, f func(c *net.TCPConn) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer close(done)
		ln.SetDeadline(time.Now().Add(fwdTimeout))
		c, err := ln.AcceptTCP()
		if err != nil {
			done <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(fwdTimeout))
		done <- f(c)
	}()
	return done
}

// dialIn connects from ns with the kernel's TCP, with fwdTimeout as the
// connection's deadline; it is closed when the test ends.
func dialIn(t *testing.T, ns *NS, addr string) *net.TCPConn {
	t.Helper()
	c, err := ns.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(fwdTimeout))
	return c.(*net.TCPConn)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// writeChunks writes b in 64 KiB pieces: a sender that goes on for a while.
func writeChunks(c net.Conn, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), 64<<10)
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// stopWhen stops the capture once it holds what done looks for, or after
// 5 s: the segments awaited are the end of what the test checks, and some
// of them (tund's side towards a server) may still be on their way when the
// client is done.
func stopWhen(c *Capture, done func([]Segment) bool) []Segment {
	c.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if segs, _, err := readPcap(c.file); err == nil && done(segs) {
			break
		}
	}
	return c.Stop()
}

// bothFINs looks for a FIN from each side of the connection to server.
func bothFINs(server string) func([]Segment) bool {
	want := netip.MustParseAddrPort(server)
	return func(segs []Segment) bool {
		var fromServer, toServer bool
		for _, s := range segs {
			fromServer = fromServer || (s.Src == want && s.Has(tcpflag.FIN))
			toServer = toServer || (s.Dst == want && s.Has(tcpflag.FIN))
		}
		return fromServer && toServer
	}
}

// rstSeen looks for a RST on the connection to server.
func rstSeen(server string) func([]Segment) bool {
	want := netip.MustParseAddrPort(server)
	return func(segs []Segment) bool {
		for _, s := range segs {
			if (s.Src == want || s.Dst == want) && s.Has(tcpflag.RST) {
				return true
			}
		}
		return false
	}
}

// conversationTo returns the one connection to server in segs.
func conversationTo(t *testing.T, segs []Segment, server string) *Conversation {
	t.Helper()
	want := netip.MustParseAddrPort(server)
	var found []*Conversation
	for _, c := range conversations(segs) {
		if c.Server == want {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d connections to %s captured on tund0, want 1", len(found), server)
	}
	return found[0]
}

// finAt checks that side's first FIN (the server's or the client's) ends
// exactly n bytes of data after its SYN, i.e. that everything sent before
// the FIN was n bytes, and returns its index.
func finAt(t *testing.T, c *Conversation, server bool, n int) int {
	t.Helper()
	i := c.firstFIN(server)
	if i < 0 {
		t.Fatalf("no FIN from the %s:%s", side(server), c)
	}
	for _, s := range c.Segs {
		if s.Has(tcpflag.SYN) && c.FromServer(s) == server {
			if got := c.Segs[i].Seq + uint32(c.Segs[i].Len) - s.Seq - 1; got != uint32(n) {
				t.Errorf("the %s's FIN comes after %d bytes, want %d", side(server), got, n)
			}
			return i
		}
	}
	t.Fatalf("no SYN from the %s:%s", side(server), c)
	return -1
}

func side(server bool) string {
	if server {
		return "server"
	}
	return "client"
}

// payload sums the data bytes that side sent in segs.
func payload(c *Conversation, segs []Segment, server bool) int {
	n := 0
	for _, s := range segs {
		if c.FromServer(s) == server {
			n += s.Len
		}
	}
	return n
}

// noRST fails the test if the conversation has a RST, but for one: after
// both FINs were acknowledged, the passive closer has no connection any
// more, and a stray segment that reaches it then (a duplicate ACK that a
// forwarding path reordered, seen once through a Docker bridge) draws a
// RST that answers it (RFC 9293 §3.10.7.1: no ACK, the segment's ACK field
// as its sequence number), from Linux as from tund.
func noRST(t *testing.T, c *Conversation) {
	t.Helper()
	var fin [2]uint32
	var finSent, finAcked [2]bool
	side := func(s Segment) int {
		if c.FromServer(s) {
			return 1
		}
		return 0
	}
	for i, s := range c.Segs {
		from, to := side(s), 1-side(s)
		if s.Has(tcpflag.RST) {
			answers := i > 0 && side(c.Segs[i-1]) == to && !s.Has(tcpflag.ACK) && s.Seq == c.Segs[i-1].Ack
			if !(finAcked[0] && finAcked[1] && answers) {
				t.Errorf("RST in a graceful close:%s", c)
			}
			return
		}
		if finSent[to] && s.Has(tcpflag.ACK) && s.Ack == fin[to]+1 {
			finAcked[to] = true
		}
		if s.Has(tcpflag.FIN) && !finSent[from] {
			finSent[from], fin[from] = true, s.Seq+uint32(s.Len)
		}
	}
}

// sentBy reports whether side sent a segment with flag in c.
func sentBy(c *Conversation, server bool, flag uint8) bool {
	for _, s := range c.Segs {
		if c.FromServer(s) == server && s.Has(flag) {
			return true
		}
	}
	return false
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// resetAfterConnect connects to addr from ns and expects the connection,
// once established, to be reset: reading fails with ECONNRESET (after any
// data that came before the RST), or the connect itself does when the RST
// comes before the kernel reports the handshake done.
func resetAfterConnect(ns *NS, addr string) error {
	c, err := ns.Dial("tcp", addr)
	if err != nil {
		if isReset(err) {
			return nil
		}
		return fmt.Errorf("connecting to %s: %v; want it established, then reset", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(fwdTimeout))
	if got, err := io.ReadAll(c); !isReset(err) {
		return fmt.Errorf("read %q, %v; want ECONNRESET", got, err)
	}
	return nil
}

// TestDialData carries 1 MB each way through --dial, over IPv4 and IPv6:
// nc -N connects to the kernel listener, sends a file and half-closes; the
// kernel server at the TUN's kernel address reads it to the end, answers
// with another 1 MB and closes. Both sha256 sums must match, and the
// connection to the server must have crossed tund0 from tund's stack.
func TestDialData(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--dial", "127.0.0.1:7000=198.18.0.1:9000", "--dial", "[::1]:7006=[2001:2::1]:9006")
	for _, c := range []struct{ name, listen, server, stackAddr string }{
		{"IPv4", "127.0.0.1:7000", "198.18.0.1:9000", stackV4},
		{"IPv6", "[::1]:7006", "[2001:2::1]:9006", stackV6},
	} {
		t.Run(c.name, func(t *testing.T) {
			up, down := randomBytes(1<<20), randomBytes(1<<20)
			dir := t.TempDir()
			in, out := filepath.Join(dir, "up"), filepath.Join(dir, "down")
			if err := os.WriteFile(in, up, 0o600); err != nil {
				t.Fatal(err)
			}
			cap := capture(t, ns, "tund0", "tcp")
			ln := listenIn(t, ns, c.server)
			var got []byte
			served := serveOne(ln, func(sc *net.TCPConn) error {
				var err error
				if got, err = io.ReadAll(sc); err != nil {
					return err
				}
				return writeChunks(sc, down)
			})
			host, port, _ := net.SplitHostPort(c.listen)
			ns.MustRun("sh", "-c", fmt.Sprintf("nc -N -w 30 %s %s < %s > %s", host, port, in, out))
			if err := <-served; err != nil {
				t.Fatalf("server: %v", err)
			}
			if sha256.Sum256(got) != sha256.Sum256(up) {
				t.Errorf("the server got %d bytes, not the 1 MB the client sent", len(got))
			}
			back, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(back) != sha256.Sum256(down) {
				t.Errorf("the client got %d bytes, not the 1 MB the server sent", len(back))
			}
			conv := conversationTo(t, stopWhen(cap, bothFINs(c.server)), c.server)
			syn := conv.Segs[0]
			if syn.Src.Addr() != netip.MustParseAddr(c.stackAddr) || syn.Flags&(tcpflag.SYN|tcpflag.ACK) != tcpflag.SYN {
				t.Errorf("the connection to %s was not opened by tund's stack (%s): %v", c.server, c.stackAddr, syn)
			}
			finAt(t, conv, false, len(up))
			finAt(t, conv, true, len(down))
			noRST(t, conv)
		})
	}
}

// halfClose runs one half-close across a splice: a kernel client connects
// to clientAddr, which carries it (through tund) to the kernel server
// listening on serverAddr; tund0 carries the connection to wireServer.
//
// clientFirst: the client sends 1 MB and half-closes; the server reads to
// the end, then sends 1 MB in 64 KiB writes and closes. Otherwise the
// server sends first and half-closes, and the client, once it has read
// everything, sends its 1 MB. Every byte must arrive, and on tund0 the
// first FIN must come before any data of the other direction, which all
// flows after it.
//
// The client, the server and tund0 may each be in a namespace of its own
// (containers); wire is the one that holds tund0.
func halfClose(t *testing.T, client, server, wire *NS, clientAddr, serverAddr, wireServer string, clientFirst bool) {
	first, second := randomBytes(1<<20), randomBytes(1<<20)
	cap := capture(t, wire, "tund0", "tcp")
	ln := listenIn(t, server, serverAddr)
	var serverGot []byte
	served := serveOne(ln, func(c *net.TCPConn) error {
		var err error
		if clientFirst {
			if serverGot, err = io.ReadAll(c); err != nil {
				return fmt.Errorf("reading the client's data: %w", err)
			}
			return writeChunks(c, second)
		}
		if err := writeChunks(c, first); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		if serverGot, err = io.ReadAll(c); err != nil {
			return fmt.Errorf("reading the client's data after half-closing: %w", err)
		}
		return nil
	})
	c := dialIn(t, client, clientAddr)
	var clientGot []byte
	var err error
	if clientFirst {
		if err := writeChunks(c, first); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if clientGot, err = io.ReadAll(c); err != nil {
			t.Fatalf("client reading after its half-close: %v", err)
		}
	} else {
		if clientGot, err = io.ReadAll(c); err != nil {
			t.Fatalf("client reading: %v", err)
		}
		if err := writeChunks(c, second); err != nil {
			t.Fatalf("client sending after the server's FIN: %v", err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	toServer, toClient := first, second
	if !clientFirst {
		toServer, toClient = second, first
	}
	if !bytes.Equal(serverGot, toServer) {
		t.Errorf("the server got %d bytes, not the %d the client sent", len(serverGot), len(toServer))
	}
	if !bytes.Equal(clientGot, toClient) {
		t.Errorf("the client got %d bytes, not the %d the server sent", len(clientGot), len(toClient))
	}
	conv := conversationTo(t, stopWhen(cap, bothFINs(wireServer)), wireServer)
	// On tund0 the side that closes first is the wire client when the
	// kernel client closes first, whichever of tund and the kernel it is.
	firstSide := !clientFirst
	f := finAt(t, conv, firstSide, len(first))
	s := finAt(t, conv, !firstSide, len(second))
	if s < f {
		t.Errorf("the second FIN came before the first:%s", conv)
	}
	if n := payload(conv, conv.Segs[:f], !firstSide); n != 0 {
		t.Errorf("%d bytes flowed the other way before the first FIN, want 0", n)
	}
	if n := payload(conv, conv.Segs[f:], !firstSide); n < len(second) {
		t.Errorf("%d bytes flowed the other way after the first FIN, want %d", n, len(second))
	}
	noRST(t, conv)
}

// TestDialHalfClose: half-close crosses --dial in both directions.
func TestDialHalfClose(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--dial", "127.0.0.1:7000=198.18.0.1:9000")
	t.Run("client first", func(t *testing.T) {
		halfClose(t, ns, ns, ns, "127.0.0.1:7000", "198.18.0.1:9000", "198.18.0.1:9000", true)
	})
	t.Run("server first", func(t *testing.T) {
		halfClose(t, ns, ns, ns, "127.0.0.1:7000", "198.18.0.1:9000", "198.18.0.1:9000", false)
	})
}

// TestProxyHalfClose: half-close crosses the proxy in both directions.
func TestProxyHalfClose(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "proxy:8080=127.0.0.1:8081")
	t.Run("client first", func(t *testing.T) {
		halfClose(t, ns, ns, ns, stackV4+":8080", "127.0.0.1:8081", stackV4+":8080", true)
	})
	t.Run("server first", func(t *testing.T) {
		halfClose(t, ns, ns, ns, stackV4+":8080", "127.0.0.1:8081", stackV4+":8080", false)
	})
}

// resetCase is one RST crossing a splice: after a round trip of "ping",
// one kernel end aborts (SO_LINGER 0); the other, blocked in a read, must
// get ECONNRESET.
type resetCase struct {
	name                   string
	clientAddr, serverAddr string
	wireServer             string // the connection on tund0
	serverAborts           bool
	tundIsWireClient       bool // tund's stack opened the connection on tund0 (--dial)
}

func (rc resetCase) run(t *testing.T, ns *NS) {
	cap := capture(t, ns, "tund0", "tcp")
	ln := listenIn(t, ns, rc.serverAddr)
	served := serveOne(ln, func(c *net.TCPConn) error {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("reading the ping: %w", err)
		}
		if _, err := c.Write([]byte("pong")); err != nil {
			return err
		}
		if rc.serverAborts {
			c.SetLinger(0)
			return c.Close()
		}
		n, err := c.Read(buf)
		if !isReset(err) {
			return fmt.Errorf("after the client's abort the server's read returned %d, %v; want ECONNRESET", n, err)
		}
		return nil
	})
	c := dialIn(t, ns, rc.clientAddr)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	// The pong says that the splice stands end to end.
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading the pong: %v", err)
	}
	if rc.serverAborts {
		n, err := c.Read(buf)
		if !isReset(err) {
			t.Errorf("after the server's abort the client's read returned %d, %v; want ECONNRESET", n, err)
		}
	} else {
		c.SetLinger(0)
		c.Close()
	}
	if err := <-served; err != nil {
		t.Error(err)
	}
	conv := conversationTo(t, stopWhen(cap, rstSeen(rc.wireServer)), rc.wireServer)
	// The RST on tund0 comes from the side that aborted, or from tund
	// carrying it on; either way no FIN goes where a RST is due.
	tundSide := !rc.tundIsWireClient // FromServer of tund's segments
	// The peer that aborted is the one across tund0 from tund: the
	// server for --dial, the client for the proxy.
	abortedOnWire := rc.serverAborts == rc.tundIsWireClient
	switch {
	case abortedOnWire && !sentBy(conv, !tundSide, tcpflag.RST):
		t.Errorf("no RST on tund0 from the peer that aborted:%s", conv)
	case !abortedOnWire && !sentBy(conv, tundSide, tcpflag.RST):
		t.Errorf("tund did not send RST on tund0:%s", conv)
	}
	if sentBy(conv, tundSide, tcpflag.FIN) {
		t.Errorf("tund sent FIN where a RST crossed:%s", conv)
	}
}

// TestDialReset: an abort on either side of --dial reaches the other side
// as a reset, and a target that refuses resets the client.
func TestDialReset(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--dial", "127.0.0.1:7000=198.18.0.1:9000,127.0.0.1:7001=198.18.0.1:9001")
	for _, rc := range []resetCase{
		{name: "client aborts", serverAborts: false},
		{name: "server aborts", serverAborts: true},
	} {
		rc.clientAddr, rc.serverAddr, rc.wireServer, rc.tundIsWireClient = "127.0.0.1:7000", "198.18.0.1:9000", "198.18.0.1:9000", true
		t.Run(rc.name, func(t *testing.T) { rc.run(t, ns) })
	}
	t.Run("target refuses", func(t *testing.T) {
		cap := capture(t, ns, "tund0", "tcp port 9001")
		// Nothing listens on 198.18.0.1:9001.
		if err := resetAfterConnect(ns, "127.0.0.1:7001"); err != nil {
			t.Error(err)
		}
		conv := conversationTo(t, stopWhen(cap, rstSeen("198.18.0.1:9001")), "198.18.0.1:9001")
		if !sentBy(conv, true, tcpflag.RST) {
			t.Errorf("the kernel did not refuse tund's SYN:%s", conv)
		}
	})
}

// TestProxyReset: an abort on either side of the proxy reaches the other
// side as a reset, and a target that refuses resets the client.
func TestProxyReset(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "proxy:8080=127.0.0.1:8081,proxy:8082=127.0.0.1:8083")
	for _, rc := range []resetCase{
		{name: "client aborts", serverAborts: false},
		{name: "server aborts", serverAborts: true},
	} {
		rc.clientAddr, rc.serverAddr, rc.wireServer = stackV4+":8080", "127.0.0.1:8081", stackV4+":8080"
		t.Run(rc.name, func(t *testing.T) { rc.run(t, ns) })
	}
	t.Run("target refuses", func(t *testing.T) {
		cap := capture(t, ns, "tund0", "tcp port 8082")
		// Nothing listens on 127.0.0.1:8083.
		if err := resetAfterConnect(ns, stackV4+":8082"); err != nil {
			t.Error(err)
		}
		conv := conversationTo(t, stopWhen(cap, rstSeen(stackV4+":8082")), stackV4+":8082")
		if !sentBy(conv, true, tcpflag.RST) || sentBy(conv, true, tcpflag.FIN) {
			t.Errorf("want a RST and no FIN from tund:%s", conv)
		}
	})
}

// TestProxyHTTP puts the proxy in front of a real HTTP server (tund
// bench-server, on a kernel socket) and checks what curl gets through it
// over IPv4 and IPv6: 10 MB of the documented pattern.
func TestProxyHTTP(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "proxy:8080=127.0.0.1:8081")
	ctx, cancel := context.WithCancel(context.Background())
	srv := ns.Command(ctx, tundBin, "bench-server", "--listen", "127.0.0.1:8081")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); srv.Wait() })
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if !strings.Contains(line, "serving on 127.0.0.1:8081") {
		t.Fatalf("bench-server did not start: %q %v", line, err)
	}
	const n = 10_000_000
	want := make([]byte, n)
	for i := range want {
		want[i] = 'a' + byte(i%(64<<10)%26)
	}
	for _, host := range []string{stackV4, "[" + stackV6 + "]"} {
		file := filepath.Join(t.TempDir(), "bytes")
		out := ns.MustRun("curl", "-sS", "-m", "60", "-o", file, "-w", "%{http_code} %{size_download}",
			fmt.Sprintf("http://%s:8080/bytes/%d", host, n))
		if out != fmt.Sprintf("200 %d", n) {
			t.Errorf("GET /bytes/%d through the proxy over %s: curl says %q", n, host, out)
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Errorf("over %s: %d bytes, not the documented pattern", host, len(got))
		}
	}
}

// TestProxyOptions checks the service options on the proxy's stack side:
// /abort turns the FIN that carries the server's close into a RST, and
// /half-close=close ends both connections at the client's FIN while the
// server still streams.
func TestProxyOptions(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "proxy:8080=127.0.0.1:8081/abort,proxy:8090=127.0.0.1:8091/half-close=close")
	t.Run("abort", func(t *testing.T) {
		cap := capture(t, ns, "tund0", "tcp port 8080")
		ln := listenIn(t, ns, "127.0.0.1:8081")
		served := serveOne(ln, func(c *net.TCPConn) error {
			_, err := c.Write([]byte("bye"))
			return err // and close: FIN
		})
		if err := resetAfterConnect(ns, stackV4+":8080"); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Fatalf("server: %v", err)
		}
		conv := conversationTo(t, stopWhen(cap, rstSeen(stackV4+":8080")), stackV4+":8080")
		if !sentBy(conv, true, tcpflag.RST) || sentBy(conv, true, tcpflag.FIN) {
			t.Errorf("want a RST and no FIN from tund:%s", conv)
		}
	})
	t.Run("half-close=close", func(t *testing.T) {
		cap := capture(t, ns, "tund0", "tcp port 8090")
		ln := listenIn(t, ns, "127.0.0.1:8091")
		served := serveOne(ln, func(c *net.TCPConn) error {
			// Stream until the proxy goes away.
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					if isReset(err) || errors.Is(err, syscall.EPIPE) {
						return nil
					}
					return fmt.Errorf("streaming server: %w", err)
				}
			}
		})
		c := dialIn(t, ns, stackV4+":8090")
		if _, err := c.Write([]byte("go")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("the client read %d bytes, then %v; want EOF", len(got), err)
		}
		if err := <-served; err != nil {
			t.Fatalf("server: %v", err)
		}
		conv := conversationTo(t, stopWhen(cap, bothFINs(stackV4+":8090")), stackV4+":8090")
		cf, sf := conv.firstFIN(false), conv.firstFIN(true)
		if cf < 0 || sf < 0 || sf < cf {
			t.Fatalf("want the client's FIN, then tund's:%s", conv)
		}
		if gap := conv.Segs[sf].T.Sub(conv.Segs[cf].T); gap > 200*time.Millisecond {
			t.Errorf("tund's FIN came %v after the client's, want at once", gap)
		}
		if sentBy(conv, true, tcpflag.RST) {
			t.Errorf("tund sent RST where half-close=close closes with FIN:%s", conv)
		}
	})
}

// TestDialBadInput checks that bad --dial and proxy arguments, and a
// listen address that cannot be bound, exit non-zero with a message and
// leave no device.
func TestDialBadInput(t *testing.T) {
	ns := newNS(t)
	listenIn(t, ns, "127.0.0.1:7777") // for "listen in use"
	for _, c := range []struct {
		name   string
		args   []string
		status int
		want   string
	}{
		{"no target", []string{"--dial", "foo"}, 2, `tund: --dial "foo": want LISTEN=TARGET`},
		{"listen only", []string{"--dial", "127.0.0.1:7000"}, 2, "want LISTEN=TARGET"},
		{"listen port", []string{"--dial", "127.0.0.1:70000=198.18.0.1:9000"}, 2, `port "70000" is not a number in [1, 65535]`},
		{"target port", []string{"--dial", "127.0.0.1:7000=198.18.0.1:0"}, 2, `port "0" is not a number in [1, 65535]`},
		{"target name", []string{"--dial", "127.0.0.1:7000=example.com:80"}, 2, `target "example.com:80": want IP:PORT`},
		{"no IPv6 to dial from", []string{"--addr", "198.18.0.2", "--dial", "127.0.0.1:7000=[2001:2::1]:80"}, 2, "no IPv6 address"},
		{"listen twice", []string{"--dial", "127.0.0.1:7000=198.18.0.1:1", "--dial", "127.0.0.1:7000=198.18.0.1:2"}, 2, "already a --dial listen address"},
		{"listen not local", []string{"--dial", "192.0.2.1:7000=198.18.0.1:9000"}, 1, "tund: --dial 192.0.2.1:7000=198.18.0.1:9000: listen tcp 192.0.2.1:7000: bind: cannot assign requested address"},
		{"listen in use", []string{"--dial", "127.0.0.1:7777=198.18.0.1:9000"}, 1, "address already in use"},
		{"proxy without target", []string{"--serve", "proxy:8080"}, 2, "service proxy needs a port and a target"},
		{"proxy without port", []string{"--serve", "proxy=127.0.0.1:80"}, 2, "service proxy needs a port and a target"},
		{"target on echo", []string{"--serve", "echo:7=127.0.0.1:80"}, 2, `service "echo" takes no target`},
		{"proxy target port", []string{"--serve", "proxy:8080=127.0.0.1:99999"}, 2, `port "99999" is not a number in [1, 65535]`},
		{"proxy target name", []string{"--serve", "proxy:8080=localhost:80"}, 2, `target "localhost:80": want IP:PORT`},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out := runTund(t, ns, nil, c.args...)
			if status != c.status || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want %d, with output containing %q; got:\n%s", status, c.status, c.want, out)
			}
			noTunLeft(t, ns)
		})
	}
}
