package scenario

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/tund/tund/stack/closes"
)

// lostFinalACK: tund closes first (daytime) and its final ACK is dropped;
// the kernel, in LAST-ACK, retransmits its FIN, and tund, in TIME-WAIT,
// ACKs it again and restarts 2 x MSL.
var lostFinalACK = &Scenario{
	Name:  "lost-final-ack",
	Title: "the final ACK is lost: the peer retransmits its FIN, TIME-WAIT ACKs it again and restarts 2 x MSL",
	run: func(e *Env) error {
		const msl = time.Second
		if err := e.startTund("--serve", "daytime", "--msl", msl.String(), "--drop-final-ack", "once"); err != nil {
			return err
		}
		c, err := lastAck(e, "tund's final ACK was dropped: the client waits in LAST-ACK, tund is in TIME-WAIT")
		if err != nil {
			return err
		}
		defer c.Close()
		client := localAddr(c)
		soErr, err := awaitClosed(e, c)
		if err != nil {
			return err
		}
		if soErr != nil {
			return expect(false, "the client's socket ended with %v; the retransmitted FIN should have been ACKed", soErr)
		}
		rec, err := e.record(client, false, 5*time.Second, func(r *closes.Record) bool { return r.FINRetransmits > 0 })
		if err != nil {
			return err
		}
		e.addRecord(rec)
		if err := e.observe("the retransmitted FIN was ACKed: the client's socket is closed; tund's TIME-WAIT started again", is(client)); err != nil {
			return err
		}
		if err := e.awaitTund(client, "", 4*2*msl); err != nil {
			return err
		}
		gone := time.Now()
		if err := e.observe("tund's TIME-WAIT is over", is(client)); err != nil {
			return err
		}
		first, second := finalACKs(rec)
		if err := expect(first != nil && second != nil, "the record shows no dropped final ACK followed by a second one"); err != nil {
			return err
		}
		afterFirst, afterSecond := gone.Sub(first.At), gone.Sub(second.At)
		e.res.Numbers["msl_seconds"] = msl.Seconds()
		e.res.Numbers["time_wait_after_first_ack_seconds"] = afterFirst.Seconds()
		e.res.Numbers["time_wait_after_second_ack_seconds"] = afterSecond.Seconds()
		e.res.Numbers["peer_fin_retransmits"] = float64(rec.FINRetransmits)
		e.note("Here the second ACK went out %v after the first, and tund's TIME-WAIT ended %v after the second (2 x MSL = %v), %v after the first.",
			second.At.Sub(first.At).Round(time.Millisecond), afterSecond.Round(time.Millisecond), 2*msl, afterFirst.Round(time.Millisecond))
		// tund's table is polled every few ms: TIME-WAIT is seen to end a
		// little after it does, never before.
		return expect(afterSecond >= 2*msl-50*time.Millisecond,
			"tund's TIME-WAIT ended %v after its second ACK, before 2 x MSL (%v): it did not restart", afterSecond, 2*msl)
	},
	explain: `daytime sent its line and closed first (FIN-WAIT-1); the kernel client
read to EOF and closed too, and its FIN took tund to TIME-WAIT. tund's
ACK of that FIN, the final ACK, was dropped (--drop-final-ack once), so
the client stayed in LAST-ACK: its FIN was never acknowledged. After its
retransmission timeout (200 ms at least on Linux, RFC 6298) it sent the
FIN again. This is what TIME-WAIT is for (RFC 9293 §3.4.2, §3.10.7.4):
tund still knew the connection, ACKed the FIN again, and restarted its
2 x MSL timer, so the client closed cleanly.`,
}

// noTimeWait: the same loss with --msl 0: tund forgets the connection at
// once, and answers the retransmitted FIN with RST.
var noTimeWait = &Scenario{
	Name:  "no-time-wait",
	Title: "no TIME-WAIT (MSL 0) and a lost final ACK: the peer in LAST-ACK gets a RST for its retransmitted FIN",
	run: func(e *Env) error {
		if err := e.startTund("--serve", "daytime", "--msl", "0", "--drop-final-ack", "once"); err != nil {
			return err
		}
		c, err := lastAck(e, "tund's final ACK was dropped: the client waits in LAST-ACK; tund, with no TIME-WAIT, has forgotten the connection")
		if err != nil {
			return err
		}
		defer c.Close()
		client := localAddr(c)
		if st, err := e.tundState(client); err != nil || st != "" {
			return errors.Join(err, expect(st == "", "tund's side is %s with --msl 0, want no connection", st))
		}
		soErr, err := awaitClosed(e, c)
		if err != nil {
			return err
		}
		e.note("The client's socket error (SO_ERROR) afterwards: %v.", errString(soErr))
		rec, err := e.record(client, false, 5*time.Second, func(r *closes.Record) bool { return r.Kind == closes.KindReset })
		if err != nil {
			return err
		}
		e.addRecord(rec)
		if err := e.observe("the retransmitted FIN drew tund's RST: the client's socket is closed, with an error", is(client)); err != nil {
			return err
		}
		if err := expect(rec.ResetBy == closes.SideTund, "the record says the RST came from %s, want tund", rec.ResetBy); err != nil {
			return err
		}
		return expect(errors.Is(soErr, syscall.ECONNRESET), "the client's socket error is %v, want ECONNRESET", errString(soErr))
	},
	explain: `As in lost-final-ack, daytime closed first and tund's final ACK was
dropped, leaving the kernel client in LAST-ACK. But with --msl 0 there is
no TIME-WAIT: tund freed the connection the moment it sent that ACK. When
the client retransmitted its FIN, tund had no connection for it and
answered with RST (RFC 9293 §3.10.7.1: a segment for a CLOSED connection
draws a reset), so a close that both applications completed correctly ends
with an error on the client's side (ECONNRESET on its socket) instead of an
ACK. The same missing state lets the 4-tuple be reused at once: a new
connection from tund's port would meet the old LAST-ACK socket on the peer
(Linux answers such a SYN with a challenge ACK, RFC 5961 §4; scenario
same-port-reconnect shows it on the wire), and old
duplicates of the previous connection could be taken for new data. Compare
lost-final-ack, where TIME-WAIT ACKs the retransmission.`,
}

// lastAck has daytime close first, the kernel client read to EOF and
// close too, and waits until ss shows the client in LAST-ACK (tund's
// final ACK being dropped); it records an observation labelled label.
func lastAck(e *Env, label string) (*net.TCPConn, error) {
	c, err := e.dialStack(13)
	if err != nil {
		return nil, err
	}
	line, err := readToEOF(c, 5*time.Second)
	if err == nil && !strings.HasSuffix(string(line), "\n") {
		err = fmt.Errorf("%w: daytime sent %q, want a line", errExpected, line)
	}
	if err == nil {
		err = c.CloseWrite()
	}
	if err == nil {
		// LAST-ACK lasts one RTO of the kernel's (about 200 ms).
		client, server := localAddr(c), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		err = e.observeWhen(label, is(client), time.Second, func(o Observation) bool { return o.KernelState(client, server) == "LAST-ACK" })
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// awaitClosed waits until the kernel socket leaves LAST-ACK for CLOSED
// (its FIN is retransmitted after its RTO and answered), and returns the
// error the socket reported, if any: reading SO_ERROR clears it, so the
// first one seen is kept.
func awaitClosed(e *Env, c *net.TCPConn) (soErr error, err error) {
	err = e.await("the client's retransmitted FIN answered (LAST-ACK to CLOSED)", 5*time.Second, func() (bool, error) {
		st, serr, err := tcpInfo(c)
		if soErr == nil {
			soErr = serr
		}
		return st == tcpClose, err
	})
	return soErr, err
}

// finalACKs returns tund's first ACK of the peer's FIN (the one the fault
// dropped) and the last one.
func finalACKs(rec *closes.Record) (first, last *closes.Segment) {
	var peerFIN uint32
	seen := false
	for i := range rec.Segments {
		s := &rec.Segments[i]
		switch {
		case s.From == closes.SidePeer && strings.Contains(s.Flags, "F"):
			peerFIN, seen = s.Seq+uint32(s.Len), true
		case seen && s.From == closes.SideTund && s.Flags == "A" && s.Len == 0 && s.Ack == peerFIN+1:
			if first == nil {
				first = s
			}
			last = s
		}
	}
	if first == last {
		return first, nil
	}
	return first, last
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
