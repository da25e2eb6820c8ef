package tests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// addLoss drops packets at random with probability p in both directions of
// dev, inside ns: iptables' statistic match, since this kernel has no netem.
func addLoss(t *testing.T, ns *NS, dev string, p float64) {
	t.Helper()
	prob := fmt.Sprint(p)
	ns.MustRun("iptables", "-A", "OUTPUT", "-o", dev, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP")
	ns.MustRun("iptables", "-A", "INPUT", "-i", dev, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP")
}

// TestNoResetUnderLoss checks that loss never turns a graceful close into a
// reset: with 5% of packets dropped in each direction, 150 daytime closes
// that tund starts end without a RST from tund, and 24 echo transfers of
// 300 KB come back intact, with no RST from tund before their close
// completed. (RST in a close that should be graceful is the
// gVisor defect that third_party/gvisor-patches/0002 fixes.)
func TestNoResetUnderLoss(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--serve", "daytime,echo")
	addLoss(t, ns, "tund0", 0.05)
	cap := capture(t, ns, "tund0", "tcp")

	const closes, transfers, workers = 150, 24, 10
	var wg sync.WaitGroup
	errs := make(chan error, closes+transfers)
	jobs := make(chan func() error)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if err := job(); err != nil {
					errs <- err
				}
			}
		}()
	}
	daytime := func() error {
		c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "13"))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			return fmt.Errorf("daytime: %w", err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		// The close is over for the client when tund's last ACK takes its
		// socket out of LAST-ACK (loss may need retransmissions first).
		return waitState(c.(*net.TCPConn), 60*time.Second, func(s uint8) bool { return s != tcpLastAck })
	}
	echo := func() error {
		data := make([]byte, 300<<10)
		rand.Read(data)
		c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "7"))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(120 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("echo: %d bytes back, sha256 %x, want %d bytes, %x", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
		}
		return nil
	}
	start := time.Now()
	for i := 0; i < closes+transfers; i++ {
		if i%7 == 0 && i/7 < transfers {
			jobs <- echo
		} else {
			jobs <- daytime
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	segs := cap.Stop()
	var rsts []Segment
	sent := 0
	for _, s := range segs {
		if s.Src.Addr().String() == stackV4 {
			sent++
			if s.Has(tcpflag.RST) {
				rsts = append(rsts, s)
			}
		}
	}
	t.Logf("%d daytime closes and %d echo transfers under 5%% loss in %v; tund sent %d segments, %d RST",
		closes, transfers, time.Since(start).Round(time.Millisecond), sent, len(rsts))
	for _, c := range conversations(segs) {
		for i, s := range c.Segs {
			if !s.Has(tcpflag.RST) || !c.FromServer(s) {
				continue
			}
			if lateAfterPassiveClose(c, i) {
				// The client closed first and both FINs were ACKed:
				// tund's LAST-ACK had ended, and a late duplicate (the
				// ACK of a segment sent twice in recovery) found no
				// connection, as it would on Linux. The close itself
				// was graceful on both sides.
				t.Logf("a RST after a completed close, for a late segment (allowed):%s", c)
				break
			}
			t.Errorf("tund reset a connection that should close gracefully:%s", c)
			break
		}
	}
}

// lateAfterPassiveClose reports whether, before segment i of c, the client
// had sent the first FIN and both FINs had been acknowledged: the close was
// complete, with tund as the passive closer, which keeps no TIME-WAIT.
// When tund closed first, its TIME-WAIT must answer late segments without
// a RST, so this never holds then.
func lateAfterPassiveClose(c *Conversation, i int) bool {
	cf, sf := c.firstFIN(false), c.firstFIN(true)
	if cf < 0 || sf < 0 || cf > sf || sf > i {
		return false
	}
	clientFINEnd := c.Segs[cf].Seq + uint32(c.Segs[cf].Len) + 1
	serverFINEnd := c.Segs[sf].Seq + uint32(c.Segs[sf].Len) + 1
	var clientAcked, serverAcked bool
	for _, s := range c.Segs[:i] {
		if !s.Has(tcpflag.ACK) {
			continue
		}
		if c.FromServer(s) && int32(s.Ack-clientFINEnd) >= 0 {
			clientAcked = true
		}
		if !c.FromServer(s) && int32(s.Ack-serverFINEnd) >= 0 {
			serverAcked = true
		}
	}
	return clientAcked && serverAcked
}
