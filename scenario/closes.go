package scenario

import (
	"bytes"
	"fmt"
	"net"
	"time"

	"github.com/tund/tund/stack/closes"
)

// fourWay: the kernel client closes first; echo lingers in CLOSE-WAIT for
// a second, so the four segments are far apart and the kernel's
// FIN-WAIT-2 can be seen.
var fourWay = &Scenario{
	Name:  "four-way",
	Title: "four-way close: FIN, ACK, FIN, ACK",
	run: func(e *Env) error {
		if err := e.startTund("--serve", "echo/close-delay=1s", "--fin-ack-merge", "0"); err != nil {
			return err
		}
		c, err := e.dialStack(7)
		if err != nil {
			return err
		}
		defer c.Close()
		client := localAddr(c)
		if err := exchange(c, "hello\n"); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		if err := e.awaitKernel(client, c.RemoteAddr().(*net.TCPAddr).AddrPort(), "FIN-WAIT-2", 2*time.Second); err != nil {
			return err
		}
		if err := e.observe("the client's FIN is ACKed; echo waits 1 s before closing", is(client)); err != nil {
			return err
		}
		if _, err := readToEOF(c, 5*time.Second); err != nil {
			return err
		}
		return closeDone(e, c, closes.KindFourWay, closes.SidePeer)
	},
	explain: `The kernel client shut down its sending side: its FIN took it to
FIN-WAIT-1, and tund's stack ACKed the FIN at once (--fin-ack-merge 0
lets no ACK wait), which took the client to FIN-WAIT-2 and tund to
CLOSE-WAIT (RFC 9293 §3.6, "Case 1: Local user initiates the close").
echo stayed open for its close-delay of 1 s, as a slow application would,
then closed: its FIN took tund to LAST-ACK and the client to TIME-WAIT,
where it stays 2 x MSL (60 s on Linux, RFC 9293 §3.4.2); the client's ACK
of that FIN closed tund's side. Four segments, because the ACK of the
first FIN could not wait for the second.`,
}

// threeWay: the same close with tund's default merge window: echo closes
// within microseconds of the client's FIN, so the ACK rides on tund's FIN.
var threeWay = &Scenario{
	Name:  "three-way",
	Title: "three-way close: FIN, FIN|ACK, ACK (the ACK of the first FIN rides on the second)",
	run: func(e *Env) error {
		if err := e.startTund("--serve", "echo"); err != nil {
			return err
		}
		c, err := e.dialStack(7)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := exchange(c, "hello\n"); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		if _, err := readToEOF(c, 5*time.Second); err != nil {
			return err
		}
		return closeDone(e, c, closes.KindThreeWay, closes.SidePeer)
	},
	explain: `The kernel client closed first. gVisor alone ACKs a FIN at once,
but tund holds that pure ACK for up to --fin-ack-merge (40 ms by default,
Linux's minimum delayed-ACK time): echo read EOF and closed within
microseconds, so tund's FIN went out inside the window carrying the ACK,
and the held ACK was dropped. The close took three segments, FIN, FIN|ACK,
ACK, as RFC 9293 §3.6 allows and as a Linux server usually closes. The
client, which sent the first FIN, is in TIME-WAIT; tund's side is gone.`,
}

// halfClose: the client sends its request and shuts down its sending side
// at once; echo still has most of the answer to send, and sends it, then
// closes.
var halfClose = &Scenario{
	Name:  "half-close",
	Title: "half-close: the client stops sending, the server finishes its data, then closes",
	run: func(e *Env) error {
		if err := e.startTund("--serve", "echo", "--fin-ack-merge", "0", "--half-close", "allow"); err != nil {
			return err
		}
		c, err := e.dialStack(7)
		if err != nil {
			return err
		}
		defer c.Close()
		client, server := localAddr(c), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		// 512 KB: more than the client's receive buffer holds before it
		// reads (128 KB by default), so most of echo's answer is still in
		// tund when the client's FIN goes out.
		msg := bytes.Repeat([]byte("0123456789abcdef"), 32<<10)
		wrote := make(chan error, 1)
		go func() {
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Write(msg)
			if err == nil {
				err = c.CloseWrite()
			}
			wrote <- err
		}()
		select {
		case err := <-wrote:
			if err != nil {
				return fmt.Errorf("sending the request and the FIN: %w", err)
			}
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%w: the client could not send 512 KB and its FIN within 10 s", errExpected)
		}
		if err := e.awaitKernel(client, server, "FIN-WAIT-2", 5*time.Second); err != nil {
			return err
		}
		// echo closes as soon as it has handed all of its answer to the
		// stack: gVisor then counts its side as LAST-ACK, though the FIN
		// goes on the wire only behind the data.
		if err := e.await("tund's side in CLOSE-WAIT or LAST-ACK", 5*time.Second, func() (bool, error) {
			st, err := e.tundState(client)
			return st == "CLOSE-WAIT" || st == "LAST-ACK", err
		}); err != nil {
			return err
		}
		if err := e.observe("the client has sent its request and its FIN; it has read nothing yet", is(client)); err != nil {
			return err
		}
		got, err := readToEOF(c, 10*time.Second)
		if err != nil {
			return err
		}
		e.res.Numbers["bytes_sent_before_fin"] = float64(len(msg))
		e.res.Numbers["bytes_received_after_fin"] = float64(len(got))
		if err := expect(bytes.Equal(got, msg), "echo's answer after the half-close: %d bytes, want the %d sent", len(got), len(msg)); err != nil {
			return err
		}
		return closeDone(e, c, closes.KindFourWay, closes.SidePeer)
	},
	explain: `The client wrote a 512 KB request and shut down its sending side
(shutdown(SHUT_WR), a half-close): its FIN went out behind the data, tund
ACKed it once all the data had arrived, and the client sat in FIN-WAIT-2
while tund's side was in CLOSE-WAIT. A FIN only says "I will send no
more" (RFC 9293 §3.6): the other direction stays open, so echo went on
sending its answer (ss shows it piling up in the client's Recv-Q) and the
client read all 512 KB after its own FIN. echo closed once it had handed
the last of its answer to the stack, which gVisor shows as LAST-ACK at
once; its FIN went on the wire behind the data and ended the client's
FIN-WAIT-2 in TIME-WAIT.`,
}

// closeDone checks the end of a close the client started: the kernel in
// TIME-WAIT, tund's side gone, and tund's record of the given kind.
func closeDone(e *Env, c *net.TCPConn, kind, initiator string) error {
	client, server := localAddr(c), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	rec, err := e.record(client, false, 5*time.Second, nil)
	if err != nil {
		return err
	}
	e.addRecord(rec)
	if err := e.awaitKernel(client, server, "TIME-WAIT", 2*time.Second); err != nil {
		return err
	}
	if err := e.awaitTund(client, "", 2*time.Second); err != nil {
		return err
	}
	if err := e.observe("after the close", is(client)); err != nil {
		return err
	}
	return expect(rec.Kind == kind && rec.Initiator == initiator,
		"tund recorded a %s close started by %s, want %s started by %s", rec.Kind, rec.Initiator, kind, initiator)
}
