package tests

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tund/tund/internal/pcapfile"
	"github.com/tund/tund/internal/tcpflag"
)

// Segment is one TCP segment seen on the wire.
type Segment = pcapfile.Segment

// Capture is a tcpdump running on a device of a namespace.
type Capture struct {
	t      *testing.T
	ns     *NS
	file   string
	cmd    interface{ Wait() error }
	stop   func()
	exited <-chan struct{}
	lines  []string // tcpdump's stderr, complete once exited is closed
}

// markAddr is where Stop sends its marker: an address routed into tund0 that
// tund does not own, so that tund drops the datagram unanswered.
var markAddr = netip.AddrPortFrom(netip.MustParseAddr("198.18.0.254"), 9)

// capture starts tcpdump on dev in ns with filter and returns once tcpdump
// says it is listening, so that no segment of what follows is missed.
func capture(t *testing.T, ns *NS, dev, filter string) *Capture {
	t.Helper()
	file := filepath.Join(t.TempDir(), "capture.pcap")
	ctx, cancel := context.WithCancel(context.Background())
	filter = fmt.Sprintf("(%s) or (udp and dst host %v and dst port %d)", filter, markAddr.Addr(), markAddr.Port())
	// A 4 MiB ring (-B, in KiB): with the default one tcpdump drops
	// packets under a load such as wrk's (../shared notes: 1,464 lost).
	cmd := ns.Command(ctx, "tcpdump", "-i", dev, "--immediate-mode", "-U", "-n", "-s", "128", "-B", "4096", "-w", file, filter)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	listening, exited := make(chan struct{}), make(chan struct{})
	c := &Capture{t: t, ns: ns, file: file, cmd: cmd, stop: cancel, exited: exited}
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.lines = append(c.lines, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
			}
		}
	}()
	select {
	case <-listening:
	case <-exited:
		t.Fatalf("tcpdump stopped before listening: %s", strings.Join(c.lines, "\n"))
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("tcpdump not listening after 10s")
	}
	t.Cleanup(func() { c.stop(); cmd.Wait() })
	return c
}

// Stop ends the capture and returns its TCP segments.
//
// Every segment the test has seen the effect of has passed the kernel's tap
// on the device, but tcpdump may not have read it yet from the capture ring:
// stopped at once, it would lose the last few. So Stop first sends a UDP
// datagram to markAddr through the device and waits until tcpdump has
// written it, which it does only after all that the ring held before it.
// A capture whose tcpdump has already ended (the device was removed) has
// nothing left to read.
func (c *Capture) Stop() []Segment {
	c.t.Helper()
	select {
	case <-c.exited:
	default:
		if err := c.mark(); err != nil {
			c.t.Fatalf("capture on %s: %v", c.file, err)
		}
	}
	c.stop()
	c.cmd.Wait()
	<-c.exited
	// A capture that lost packets cannot judge the wire: a missing segment
	// would read as one tund never sent. tcpdump counts its losses when it
	// is stopped (not when its device went away: then it says nothing).
	for _, line := range c.lines {
		if n, _, ok := strings.Cut(line, " packets dropped by kernel"); ok && strings.TrimSpace(n) != "0" {
			c.t.Fatalf("the capture is incomplete: tcpdump says %q", line)
		}
	}
	segs, _, err := readPcap(c.file)
	if err != nil {
		c.t.Fatalf("reading the capture: %v", err)
	}
	return segs
}

// mark sends the marker and waits for tcpdump to write it. It sends again
// every 50 ms: a test's own loss (an iptables DROP on the device) may take
// any one copy, and the write then fails with EPERM.
func (c *Capture) mark() error {
	conn, err := c.ns.Dial("udp", markAddr.String())
	if errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ENODEV) {
		return nil // the device went away: tcpdump is ending by itself
	}
	if err != nil {
		return fmt.Errorf("sending the marker: %w", err)
	}
	defer conn.Close()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	var sent time.Time
	for {
		if time.Since(sent) >= 50*time.Millisecond {
			sent = time.Now()
			_, err := conn.Write([]byte("mark"))
			switch {
			case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ENODEV):
				return nil
			case err != nil && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOBUFS):
				return fmt.Errorf("sending the marker: %w", err)
			}
		}
		if _, marked, err := readPcap(c.file); err == nil && marked {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("tcpdump did not write the marker within 10s")
		}
		select {
		case <-tick.C:
		case <-c.exited:
			return nil
		}
	}
}

// readPcap reads a capture (tcpdump's, raw IP for a TUN device or Linux
// cooked for "any", or tund's --pcap) and returns its TCP segments, and
// whether it holds Stop's marker. mark and stopWhen read a capture that
// tcpdump is still writing, so a record cut short at the end is no error:
// the next read has it whole.
func readPcap(file string) (segs []Segment, marked bool, err error) {
	pkts, err := pcapfile.ReadFile(file)
	if err != nil && !errors.Is(err, pcapfile.ErrTruncated) {
		return nil, false, err
	}
	return pcapfile.Segments(pkts), slices.ContainsFunc(pkts, isMarker), nil
}

// isMarker reports an IPv4 UDP datagram to markAddr.
func isMarker(p pcapfile.Packet) bool {
	pkt := p.Data
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != 17 {
		return false
	}
	ihl := int(pkt[0]&0xf) * 4
	if len(pkt) < ihl+4 {
		return false
	}
	dst, _ := netip.AddrFromSlice(pkt[16:20])
	return netip.AddrPortFrom(dst, binary.BigEndian.Uint16(pkt[ihl+2:])) == markAddr
}

// Conversation is the segments of one connection, in capture order.
type Conversation struct {
	Client, Server netip.AddrPort
	Segs           []Segment
}

// conversations splits segments by connection, keyed by the client side
// (the side that sent the SYN); connections whose SYN was not captured are
// left out.
func conversations(segs []Segment) []*Conversation {
	byKey := map[[2]netip.AddrPort]*Conversation{}
	var out []*Conversation
	for _, s := range segs {
		key := [2]netip.AddrPort{s.Src, s.Dst}
		if c, ok := byKey[key]; ok {
			c.Segs = append(c.Segs, s)
			continue
		}
		if c, ok := byKey[[2]netip.AddrPort{s.Dst, s.Src}]; ok {
			c.Segs = append(c.Segs, s)
			continue
		}
		if s.Flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN {
			c := &Conversation{Client: s.Src, Server: s.Dst, Segs: []Segment{s}}
			byKey[key] = c
			out = append(out, c)
		}
	}
	return out
}

// FromServer reports whether s was sent by the conversation's server.
func (c *Conversation) FromServer(s Segment) bool { return s.Src == c.Server }

// String is the conversation as tcpdump would print it, for failures.
func (c *Conversation) String() string {
	var b strings.Builder
	for _, s := range c.Segs {
		b.WriteString("\n  " + s.String())
	}
	return b.String()
}

// firstFIN returns the index of the first FIN sent by the server (server
// true) or the client, or -1.
func (c *Conversation) firstFIN(server bool) int {
	for i, s := range c.Segs {
		if s.Has(tcpflag.FIN) && c.FromServer(s) == server {
			return i
		}
	}
	return -1
}
