package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// TestTimeWaitReplayedFIN checks TIME-WAIT and --msl on the wire. tund
// closes first (daytime) with --msl 1s, so its TIME-WAIT lasts 2 s from the
// client's FIN. Copies of that FIN, crafted with hping3 as if the final ACK
// had been lost, are replayed at 1 s (ACKed, and 2 x MSL starts again), at
// 2.6 s (still inside the restarted TIME-WAIT: ACKed) and at 5.4 s (past
// 2.6 s + 2 s: the connection is gone, no ACK). With --msl 0 there is no
// TIME-WAIT: a FIN replayed at 0.3 s is answered with RST, not an ACK, and
// both are added to the close's record (late segments of a close that
// ended, not a close of their own).
// Both ways of keeping TIME-WAIT (--time-wait compact, the default, and
// full, gVisor's endpoint) must look the same on the wire.
func TestTimeWaitReplayedFIN(t *testing.T) {
	for _, c := range []struct {
		msl, keep string
		offsets   []time.Duration
		acked     []bool
		late      int // replays added to the record as late segments
	}{
		{"1s", "compact", []time.Duration{1000 * time.Millisecond, 2600 * time.Millisecond, 5400 * time.Millisecond}, []bool{true, true, false}, 0},
		{"1s", "full", []time.Duration{1000 * time.Millisecond, 2600 * time.Millisecond, 5400 * time.Millisecond}, []bool{true, true, false}, 0},
		{"0", "compact", []time.Duration{300 * time.Millisecond}, []bool{false}, 1},
	} {
		t.Run("msl "+c.msl+" "+c.keep, func(t *testing.T) {
			replayFINs(t, []string{"--msl", c.msl, "--time-wait", c.keep}, c.offsets, c.acked, c.late)
		})
	}
}

func replayFINs(t *testing.T, args []string, offsets []time.Duration, wantACKed []bool, late int) {
	ns := newNS(t)
	startTund(t, ns, append(args, "--serve", "daytime")...)
	first := capture(t, ns, "tund0", "tcp port 13")
	conn, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "13"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := waitState(conn.(*net.TCPConn), 5*time.Second, func(s uint8) bool { return s != tcpLastAck }); err != nil {
		t.Fatal(err)
	}
	convs := conversations(first.Stop())
	if len(convs) != 1 {
		t.Fatalf("%d connections captured, want 1", len(convs))
	}
	c := convs[0]
	cf, sf := c.firstFIN(false), c.firstFIN(true)
	if cf < 0 || sf < 0 || sf > cf {
		t.Fatalf("want tund to close first:%s", c)
	}
	clientFIN, tundFIN := c.Segs[cf], c.Segs[sf]
	t0 := clientFIN.T // tund enters TIME-WAIT when this FIN arrives

	replays := capture(t, ns, "tund0", "tcp port 13")
	for _, at := range offsets {
		// Waiting for the moment is the scenario, not a synchronisation.
		time.Sleep(time.Until(t0.Add(at)))
		hping(t, ns, "-k", "-s", strconv.Itoa(int(c.Client.Port())), "-p", "13",
			"-F", "-A", "-M", fmt.Sprint(clientFIN.Seq), "-L", fmt.Sprint(tundFIN.Seq+1), "-w", "64240", stackV4)
	}
	segs := replays.Stop()

	// Pair each replayed FIN with what tund sent before the next one.
	var answers [][]Segment
	for _, s := range segs {
		switch {
		case s.Src == c.Client && s.Has(tcpflag.FIN):
			answers = append(answers, nil)
		case s.Src == c.Server && len(answers) > 0:
			answers[len(answers)-1] = append(answers[len(answers)-1], s)
		}
	}
	if len(answers) != len(offsets) {
		t.Fatalf("captured %d replayed FINs, want %d: %v", len(answers), len(offsets), segs)
	}
	acks := 0
	for i, want := range wantACKed {
		acked := false
		for _, s := range answers[i] {
			acked = acked || (s.PureACK() && s.Ack == clientFIN.Seq+1)
		}
		t.Logf("FIN replayed at %v: tund answered %v", offsets[i], answers[i])
		if acked != want {
			t.Errorf("FIN replayed at %v: ACKed %v, want %v (answers %v)", offsets[i], acked, want, answers[i])
		}
		if acked {
			acks++
		}
	}

	// tund's record of the close: the replays it ACKed in TIME-WAIT are
	// added to it (the final ACK was lost), segment for segment as the
	// wire shows them; a replay after TIME-WAIT is a new close that tund
	// resets, not knowing the connection any more, unless it comes within
	// 3 s of a close that left no TIME-WAIT: then it and tund's RST are
	// late segments of that close.
	var closeRec *closeRecord
	resets := 0
	for _, r := range closeRecords(t, ns) {
		switch {
		case r.Remote != c.Client:
		case r.Kind == "reset" && r.Initiator == "peer" && r.ResetBy == "tund":
			resets++
		case closeRec == nil && r.Initiator == "tund":
			closeRec = &r
		default:
			t.Errorf("unexpected record %+v", r)
		}
	}
	if closeRec == nil {
		t.Fatal("no record of the close")
	}
	t.Logf("record: %s close, final ACK lost %v, %d FIN and %d ACK retransmissions, %d segments",
		closeRec.Kind, closeRec.FinalACKLost, closeRec.FINRetransmits, closeRec.ACKRetransmits, len(closeRec.Segments))
	// Every replay the record takes is the peer's FIN sent again.
	if closeRec.FinalACKLost != (acks > 0) || closeRec.FINRetransmits != acks+late || closeRec.ACKRetransmits != acks || resets != len(offsets)-acks-late {
		t.Errorf("record says final ACK lost %v, %d FIN and %d ACK retransmissions, %d resets; want %v, %d, %d, %d",
			closeRec.FinalACKLost, closeRec.FINRetransmits, closeRec.ACKRetransmits, resets, acks > 0, acks+late, acks, len(offsets)-acks-late)
	}
	peerFINs, tundRSTs := 0, 0
	for _, s := range closeRec.Segments {
		switch {
		case s.From == "peer" && strings.Contains(s.Flags, "F"):
			peerFINs++
		case s.From == "tund" && strings.Contains(s.Flags, "R"):
			tundRSTs++
		}
	}
	if peerFINs != 1+acks+late || tundRSTs != late {
		t.Errorf("the record holds %d FINs of the client and %d RSTs of tund's; want %d and %d", peerFINs, tundRSTs, 1+acks+late, late)
	}
	whole := *c
	whole.Segs = append([]Segment(nil), c.Segs...)
	for _, s := range segs { // the replays' capture has no SYN to find them by
		if s.Src == c.Client || s.Dst == c.Client {
			whole.Segs = append(whole.Segs, s)
		}
	}
	agree(t, *closeRec, &whole)
	if got := metric(t, ns, "tund_tcp_final_ack_lost_total"); got != float64(acks) {
		t.Errorf("tund_tcp_final_ack_lost_total = %v, want %d", got, acks)
	}
}

// TestTimeWaitRST checks --time-wait-rst on the wire. tund closes first
// (daytime) and sits in TIME-WAIT; hping3 sends an RST at RCV.NXT from the
// client's port, then a copy of the client's FIN. With ignore (RFC 1337)
// the connection stays in TIME-WAIT and the FIN is ACKed; with close (RFC
// 9293, Linux's default) the RST ends it and the FIN draws a RST.
func TestTimeWaitRST(t *testing.T) {
	for _, c := range []struct {
		policy string
		acked  bool
	}{{"ignore", true}, {"close", false}} {
		t.Run(c.policy, func(t *testing.T) {
			ns := newNS(t)
			startTund(t, ns, "--time-wait-rst", c.policy, "--serve", "daytime")
			first := capture(t, ns, "tund0", "tcp port 13")
			conn, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "13"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.ReadAll(conn)
			conn.(*net.TCPConn).CloseWrite()
			if err := waitState(conn.(*net.TCPConn), 5*time.Second, func(s uint8) bool { return s != tcpLastAck }); err != nil {
				t.Fatal(err)
			}
			client := localAddr(conn)
			awaitState(t, ns, client, "TIME-WAIT")
			convs := conversations(first.Stop())
			conv := convs[0]
			clientFIN, tundFIN := conv.Segs[conv.firstFIN(false)], conv.Segs[conv.firstFIN(true)]

			replay := capture(t, ns, "tund0", "tcp port 13")
			port := strconv.Itoa(int(client.Port()))
			hping(t, ns, "-k", "-s", port, "-p", "13", "-R", "-M", fmt.Sprint(clientFIN.Seq+1), stackV4)
			if c.policy == "close" {
				awaitState(t, ns, client, "")
			}
			hping(t, ns, "-k", "-s", port, "-p", "13", "-F", "-A",
				"-M", fmt.Sprint(clientFIN.Seq), "-L", fmt.Sprint(tundFIN.Seq+1), "-w", "64240", stackV4)
			segs := replay.Stop()
			acked, reset, sentRST := false, false, false
			for _, s := range segs {
				sentRST = sentRST || (s.Src == client && s.Has(tcpflag.RST))
				if s.Src.Port() == 13 {
					acked = acked || (s.PureACK() && s.Ack == clientFIN.Seq+1)
					reset = reset || s.Has(tcpflag.RST)
				}
			}
			if !sentRST {
				t.Fatalf("the crafted RST is not in the capture: %v", segs)
			}
			t.Logf("--time-wait-rst %s: replayed FIN after the RST ACKed %v, reset %v", c.policy, acked, reset)
			if acked != c.acked || reset == c.acked {
				t.Errorf("replayed FIN after the RST: ACKed %v, RST %v; want ACKed %v:\n%v", acked, reset, c.acked, segs)
			}
			if got := connState(t, ns, client); (got == "TIME-WAIT") != c.acked {
				t.Errorf("tund's side after the RST: %q", got)
			}
		})
	}
}

// hping sends one crafted segment with hping3 from ns. hping3 exits 1 when
// nothing answers, which is a result here, not a failure: the capture
// judges what tund did.
func hping(t *testing.T, ns *NS, args ...string) {
	t.Helper()
	out, err := ns.Command(context.Background(), "hping3", append([]string{"-q", "-c", "1"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("hping3 %v: %v\n%s", args, err, out)
	}
}
