package conform

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/rawpeer"
)

// wait is how long a peer waits for an answer that should come at once
// (a delayed ACK included).
const wait = 2 * time.Second

const (
	fin = header.TCPFlagFin
	syn = header.TCPFlagSyn
	rst = header.TCPFlagRst
	psh = header.TCPFlagPsh
	ack = header.TCPFlagAck
)

func has(s rawpeer.Segment, f header.TCPFlags) bool { return s.Flags&f != 0 }

// acks reports a segment that acknowledges n.
func acks(n uint32) func(rawpeer.Segment) bool {
	return func(s rawpeer.Segment) bool { return has(s, ack) && s.Ack == n }
}

func isFIN(s rawpeer.Segment) bool { return has(s, fin) }
func isRST(s rawpeer.Segment) bool { return has(s, rst) }

// The servers most cases share: what the application does decides which
// side closes first.
func closeAtOnce(c Conn)    { c.Close() }
func drainThenClose(c Conn) { io.Copy(io.Discard, c); c.Close() }
func hello(c Conn)          { c.Write([]byte("hello\n")); c.Close() }

// A step is one move of a case's peer; script plays steps in order and
// stops at the first that fails, so that most cases read as the sequence
// of segments they are about.
type step func(x *Exchange) error

func script(steps ...step) func(*Exchange) error {
	return func(x *Exchange) error {
		for _, s := range steps {
			if err := s(x); err != nil {
				return err
			}
		}
		return x.soft
	}
}

// soft runs s and lets the script go on if it fails: the case still fails
// with s's error, once the rest has been played.
func soft(s step) step {
	return func(x *Exchange) error {
		if err := s(x); err != nil && x.soft == nil {
			x.soft = err
		}
		return nil
	}
}

// connect makes the handshake from peerISS.
func connect(x *Exchange) error { return x.Connect(peerISS) }

// send sends a segment at SndNxt (see Exchange.Send).
func send(flags header.TCPFlags, payload []byte) step {
	return func(x *Exchange) error { return x.Send(flags, payload) }
}

// sendOff sends a segment off SndNxt by off, leaving SndNxt as it is:
// a RST or SYN where the server does not expect it, or data out of the
// window.
func sendOff(flags header.TCPFlags, off uint32, payload []byte) step {
	return func(x *Exchange) error {
		_, err := x.SendAt(flags, x.SndNxt+off, x.RcvNxt, payload)
		return err
	}
}

// keep sends a segment like send and keeps its packet, for replay.
func keep(flags header.TCPFlags, payload []byte) step {
	return func(x *Exchange) error {
		b, err := x.SendAt(flags, x.SndNxt, x.RcvNxt, payload)
		x.Kept = b
		x.SndNxt += uint32(len(payload))
		if flags&fin != 0 {
			x.SndNxt++
		}
		return err
	}
}

// replay sends the kept packet again.
func replay(x *Exchange) error { return x.Replay(x.Kept) }

// expect waits for the server's segment that ok accepts (seeing the
// exchange as it is then).
func expect(what string, ok func(x *Exchange, s rawpeer.Segment) bool) step {
	return func(x *Exchange) error {
		_, err := x.Expect(what, wait, func(s rawpeer.Segment) bool { return ok(x, s) })
		return err
	}
}

// acked accepts a segment that acknowledges all the peer sent.
func acked(x *Exchange, s rawpeer.Segment) bool { return acks(x.SndNxt)(s) }

var (
	expectFIN = expect("the server's FIN", func(_ *Exchange, s rawpeer.Segment) bool { return isFIN(s) })
	expectRST = expect("RST", func(_ *Exchange, s rawpeer.Segment) bool { return isRST(s) })
	// expectReset stops at a FIN too, which noFIN then reports.
	expectReset = expect("RST", func(_ *Exchange, s rawpeer.Segment) bool { return isRST(s) || isFIN(s) })
)

func expectAcked(what string) step { return expect(what, acked) }

// quiet fails if the server sends anything within d.
func quiet(d time.Duration, when string) step {
	return func(x *Exchange) error {
		got, err := x.Quiet(d)
		if err == nil && len(got) > 0 {
			return fmt.Errorf("the server sent %d segment(s) %s, the first %s", len(got), when, x.Log[len(x.Log)-len(got)])
		}
		return err
	}
}

// toTimeWait plays a close that the server starts (its application closes
// at once) to TIME-WAIT on the server: its FIN, the peer's ACK and FIN
// (kept, to replay), its final ACK.
var toTimeWait = script(connect, expectFIN, send(ack, nil), keep(fin|ack, nil), expectAcked("the final ACK"))

// noFIN fails if the server sent a FIN.
func noFIN(x *Exchange) error {
	for _, s := range x.Log {
		if s.From == "server" && bytes.ContainsRune([]byte(s.Flags), 'F') {
			return fmt.Errorf("the server sent %s", s)
		}
	}
	return nil
}

// Cases returns every case, in the report's order.
func Cases() []*Case {
	cs := baseCases()
	cs = append(cs, shutdownCases()...)
	return append(cs, challengeCases()...)
}

func baseCases() []*Case {
	return []*Case{
		{
			Name: "close-then-fin", Port: 7101,
			Title:  "the server closes after writing; the peer ACKs, then sends its FIN (packetdrill close/close-local-close-then-remote-fin)",
			Rule:   "the server's FIN follows its data, and the peer's FIN gets the final ACK (RFC 9293 §3.6, case 1)",
			Server: hello,
			Play:   script(connect, expectFIN, send(ack, nil), send(fin|ack, nil), expectAcked("the final ACK")),
		},
		{
			Name: "fin-then-close", Port: 7102,
			Title:  "the peer sends its FIN first; the server reads to EOF and closes (packetdrill close/close-remote-fin-then-close)",
			Rule:   "the peer's FIN is acknowledged and the server's FIN follows (RFC 9293 §3.6, case 2)",
			Server: drainThenClose,
			Play: script(connect, send(fin|ack, nil),
				expect("the server's FIN, acknowledging the peer's", func(x *Exchange, s rawpeer.Segment) bool { return isFIN(s) && acked(x, s) }),
				send(ack, nil)),
		},
		{
			Name: "shutdown-write-data-arriving", Port: 7103,
			Title: "the server calls shutdown(SHUT_WR) at once and reads on; the peer sends data after the server's FIN, then its own FIN (packetdrill shutdown/shutdown-wr-*)",
			Rule:  "after SHUT_WR the server still acknowledges data: a half-close ends one direction only (RFC 9293 §3.6)",
			Server: func(c Conn) {
				c.CloseWrite()
				drainThenClose(c)
			},
			Play: script(connect, expectFIN, send(ack, nil), send(psh|ack, make([]byte, 100)), expectAcked("an ACK of the 100 bytes"),
				send(fin|ack, nil), expectAcked("the final ACK")),
		},
		{
			Name: "fin-behind-data", Port: 7104,
			Title:  "the server writes 1,000 bytes and closes; the peer acknowledges nothing until the FIN has come (packetdrill close/close-with-unsent-data)",
			Rule:   "a FIN queued behind data goes out after it: its sequence number is the one after the last byte (RFC 9293 §3.10.4, CLOSE)",
			Server: func(c Conn) { c.Write(make([]byte, 1000)); c.Close() },
			Play: script(connect,
				func(x *Exchange) error {
					s, err := x.Expect("the server's FIN", wait, isFIN)
					if err == nil && s.Seq+uint32(len(s.Payload))-x.IRS() != 1001 {
						err = fmt.Errorf("the FIN's sequence number is %d, want 1001, after the 1,000 bytes", s.Seq+uint32(len(s.Payload))-x.IRS())
					}
					return err
				},
				send(ack, nil), send(fin|ack, nil), expectAcked("the final ACK")),
		},
		{
			Name: "close-with-unread-data", Port: 7105,
			Title:  "the peer sends 100 bytes; the server closes 200 ms later without reading them (packetdrill close/close-unread-data-rst)",
			Rule:   "a close with unread data resets the connection: RST, no FIN (RFC 2525 §2.17; Linux's tcp_close)",
			Server: func(c Conn) { time.Sleep(200 * time.Millisecond); c.Close() },
			Play:   script(connect, send(psh|ack, make([]byte, 100)), expectReset, noFIN),
		},
		{
			Name: "linger-zero", Port: 7106,
			Title:  "the server writes 2 bytes and closes with SO_LINGER 0 (packetdrill close/close-so-linger-onoff-1-linger-0-rst)",
			Rule:   "an abortive close sends RST and no FIN (RFC 9293 §3.10.5, ABORT)",
			Server: func(c Conn) { c.Write([]byte("x\n")); c.Abort() },
			Play:   script(connect, expectReset, noFIN),
		},
		{
			Name: "data-after-close", Port: 7107,
			Title:  "the server closes at once; the peer ACKs its FIN and sends 10 bytes (packetdrill close/close-read-data-fin)",
			Rule:   "data for a connection its application has closed draws RST: no one will read it (RFC 9293 §3.10.7.4; Linux's orphan sockets)",
			Server: closeAtOnce,
			Play:   script(connect, expectFIN, send(ack, nil), send(psh|ack, make([]byte, 10)), expectRST),
		},
		{
			Name: "simultaneous-close", Port: 7108,
			Title: "the peer sends \"close\"; the server reads it and closes; the peer's FIN crosses the server's (it does not acknowledge it)",
			Rule:  "each side ACKs the other's FIN: the server goes through CLOSING to TIME-WAIT (RFC 9293 §3.6, case 3)",
			Server: func(c Conn) {
				io.ReadFull(c, make([]byte, 5))
				c.Close()
			},
			Play: script(connect, send(psh|ack, []byte("close")), crossFINs, expectAcked("the ACK of the peer's FIN"),
				send(ack, nil), quiet(300*time.Millisecond, "after the close")),
		},
		{
			Name: "fin-retransmitted", Port: 7109,
			Title:  "the server closes at once; the peer never acknowledges the FIN (1.2 s)",
			Rule:   "an unacknowledged FIN is sent again, first after at least 200 ms, Linux's minimum RTO (RFC 9293 §3.8.1, RFC 6298)",
			Server: closeAtOnce,
			Play: script(connect, func(x *Exchange) error {
				first, err := x.Expect("the server's FIN", wait, isFIN)
				if err != nil {
					return err
				}
				// 1.2 s: two retransmissions (RTO 200 ms, doubling), well
				// before the third.
				got, err := x.Quiet(1200 * time.Millisecond)
				if err != nil {
					return err
				}
				x.SendAt(rst, x.SndNxt, 0, nil) // done: no one waits for the rest
				if len(got) == 0 || !isFIN(got[0]) {
					return fmt.Errorf("the FIN was not sent again within 1.2 s")
				}
				if gap := got[0].At.Sub(first.At); gap < 190*time.Millisecond {
					return fmt.Errorf("the FIN came again %v after the first, before 200 ms", gap.Round(time.Millisecond))
				}
				return nil
			}),
		},
		{
			Name: "fin-wait-2-timeout", Port: 7110,
			Title:  "the server closes; the peer ACKs the FIN and stays silent past the FIN-WAIT-2 timeout (2 s on both sides), then sends its FIN",
			Rule:   "the timeout ends the connection silently, and a FIN after it draws RST (Linux's tcp_fin_timeout, RFC 9293 leaves FIN-WAIT-2 open)",
			Server: closeAtOnce,
			Play: script(connect, expectFIN, send(ack, nil), quiet(FINWait2+time.Second, "while it waited in FIN-WAIT-2"),
				send(fin|ack, nil), expectRST),
		},
		{
			Name: "exact-rst-in-fin-wait-2", Port: 7111,
			Title:  "in FIN-WAIT-2 the peer sends a RST inside the window but not at RCV.NXT, then one at RCV.NXT, then a FIN",
			Rule:   "the first draws a challenge ACK, the second resets silently, the FIN then draws RST (RFC 5961 §3.2)",
			Server: closeAtOnce,
			Play: script(connect, expectFIN, send(ack, nil), sendOff(rst, 10, nil), soft(challenged("the RST inside the window")),
				sendOff(rst, 0, nil), soft(quiet(200*time.Millisecond, "after the RST at RCV.NXT")), send(fin|ack, nil), expectRST),
		},
		{
			Name: "time-wait-fin-again", Port: 7113,
			Title:  "the server closes first; in its TIME-WAIT the peer's FIN comes again (its final ACK was lost)",
			Rule:   "TIME-WAIT acknowledges the FIN again (RFC 9293 §3.10.7.4, and restarts 2 x MSL)",
			Server: closeAtOnce,
			Play:   script(toTimeWait, replay, expectAcked("the ACK again")),
		},
		{
			Name: "time-wait-rst", Port: 7114,
			Title:  "in the server's TIME-WAIT the peer sends a RST, then its FIN again",
			Rule:   "Linux: the RST ends TIME-WAIT (RFC 9293 §3.10.7.4; tcp_rfc1337=0), so the FIN draws RST; RFC 1337 would keep TIME-WAIT and ACK it",
			Server: closeAtOnce,
			Play: script(toTimeWait, sendOff(rst, 0, nil), quiet(100*time.Millisecond, "after the RST"), replay, func(x *Exchange) error {
				s, err := x.Recv(wait)
				if err == nil && !isRST(s) {
					err = fmt.Errorf("the FIN after the RST drew %s: TIME-WAIT outlived the RST", s.Flags)
				}
				return err
			}),
		},
		{
			Name: "time-wait-syn-above", Port: 7115,
			Title:  "in the server's TIME-WAIT the peer opens a new connection with an ISN above the old sequence space",
			Rule:   "TIME-WAIT gives way to the new connection: SYN-ACK (RFC 9293 §3.10.7.4, RFC 1122 §4.2.2.13)",
			Server: closeAtOnce,
			Play: script(toTimeWait, func(x *Exchange) error {
				iss := x.SndNxt + 100000
				if _, err := x.SendAt(syn, iss, 0, nil); err != nil {
					return err
				}
				s, err := x.Recv(wait)
				if err != nil {
					return fmt.Errorf("want a SYN-ACK: %w", err)
				}
				x.SendAt(rst, iss+1, 0, nil) // done with the new connection
				if !has(s, syn) || s.Ack != iss+1 {
					return fmt.Errorf("the SYN drew %s ack %d, not a SYN-ACK", s.Flags, s.Ack)
				}
				return nil
			}),
		},
		{
			Name: "time-wait-syn-below", Port: 7116,
			Title:  "in the server's TIME-WAIT the peer sends a SYN with its old ISN, inside the old sequence space",
			Rule:   "not a new connection: Linux answers with the ACK of the old connection (RFC 9293 §3.10.7.4: an unacceptable segment draws an ACK)",
			Server: closeAtOnce,
			Play: script(toTimeWait, func(x *Exchange) error {
				_, err := x.SendAt(syn, peerISS, 0, nil)
				return err
			}, expectAcked("the ACK of the old connection")),
		},
		{
			Name: "time-wait-out-of-window", Port: 7117,
			Title:  "in the server's TIME-WAIT the peer sends 10 bytes far beyond the window",
			Rule:   "an unacceptable segment draws an ACK of RCV.NXT and is dropped (RFC 9293 §3.10.7.4)",
			Server: closeAtOnce,
			Play:   script(toTimeWait, sendOff(psh|ack, 1_000_000, make([]byte, 10)), expectAcked("an ACK")),
		},
		{
			Name: "time-wait-old-data", Port: 7118,
			Title: "the server reads the peer's 9 bytes and closes first; in its TIME-WAIT an old duplicate of those bytes arrives",
			Rule:  "it draws an ACK of RCV.NXT and delivers nothing (RFC 9293 §3.10.7.4; the old-duplicate scenario shows why)",
			Server: func(c Conn) {
				io.ReadFull(c, make([]byte, 9))
				c.Close()
			},
			Play: script(connect, keep(psh|ack, []byte("old data\n")), expectFIN, send(ack, nil), send(fin|ack, nil),
				expectAcked("the final ACK"), replay, expectAcked("an ACK")),
		},
	}
}

// crossFINs waits for the server's FIN and sends the peer's as if it had
// not arrived yet: acknowledging the server's data, not its FIN.
func crossFINs(x *Exchange) error {
	s, err := x.Expect("the server's FIN", wait, isFIN)
	if err != nil {
		return err
	}
	_, err = x.SendAt(fin|ack, x.SndNxt, s.Seq+uint32(len(s.Payload)), nil)
	x.SndNxt++
	return err
}

// challenged requires a challenge ACK, and only that, to what the peer
// just sent (RFC 5961): a bare ACK of all the peer sent. The server's FIN
// sent again (FIN-WAIT-1, LAST-ACK, CLOSING) acknowledges that too but is
// no answer; a RST fails.
func challenged(what string) step {
	return func(x *Exchange) error {
		got, err := x.Quiet(300 * time.Millisecond)
		if err != nil {
			return err
		}
		challenge := false
		for _, s := range got {
			if has(s, rst) {
				return fmt.Errorf("%s drew a RST", what)
			}
			challenge = challenge || s.Flags == ack && len(s.Payload) == 0 && s.Ack == x.SndNxt
		}
		if !challenge {
			return fmt.Errorf("%s drew no challenge ACK (%d segment(s))", what, len(got))
		}
		return nil
	}
}

func shutdownCases() []*Case {
	return []*Case{
		{
			Name: "shutdown-read", Port: 7119,
			Title: "the server calls shutdown(SHUT_RD), then closes 300 ms later; the peer sends 100 bytes 100 ms after the handshake (packetdrill shutdown/shutdown-rd-*)",
			Rule:  "SHUT_RD puts nothing on the wire, and data that comes after it is acknowledged, not refused (RFC 9293 §3.10.4 has no SHUT_RD; Linux's tcp_shutdown)",
			Server: func(c Conn) {
				c.CloseRead()
				time.Sleep(300 * time.Millisecond)
				c.Close()
			},
			Play: script(connect, quiet(100*time.Millisecond, "after shutdown(SHUT_RD)"), send(psh|ack, make([]byte, 100)),
				func(x *Exchange) error {
					s, err := x.Recv(wait)
					if err == nil && (has(s, rst) || !acked(x, s)) {
						err = fmt.Errorf("the data after SHUT_RD drew %s ack %d, not an ACK of it", s.Flags, s.Ack-x.ISS())
					}
					return err
				},
				record(500*time.Millisecond)),
		},
		{
			Name: "shutdown-read-write", Port: 7120,
			Title: "the server calls shutdown(SHUT_RD) and shutdown(SHUT_WR), SHUT_RDWR in two calls, and closes 300 ms later; the peer ACKs the FIN and sends 10 bytes (packetdrill shutdown/shutdown-rdwr-*)",
			Rule:  "SHUT_RDWR sends the FIN at once, as a close does (RFC 9293 §3.10.4)",
			Server: func(c Conn) {
				c.CloseRead()
				c.CloseWrite()
				time.Sleep(300 * time.Millisecond)
				c.Close()
			},
			Play: script(connect, func(x *Exchange) error {
				_, err := x.Expect("the server's FIN", 200*time.Millisecond, isFIN)
				return err
			}, send(ack, nil), send(psh|ack, make([]byte, 10)), record(600*time.Millisecond)),
		},
	}
}

// record takes what the server sends for d, for the report, and resets
// the connection if the server has not.
func record(d time.Duration) step {
	return func(x *Exchange) error {
		got, err := x.Quiet(d)
		if err == nil && (len(got) == 0 || !has(got[len(got)-1], rst)) {
			x.Send(rst, nil)
		}
		return err
	}
}

// closingState is one of the closing states, reached by a script from
// connect (the peer's SndNxt is then the sequence number the server
// expects), with the server's application that goes there.
type closingState struct {
	name   string
	port   uint16 // the first of two ports: RST, then SYN
	server func(Conn)
	reach  func(*Exchange) error
}

var closingStates = []closingState{
	// The server's FIN not acknowledged.
	{"fin-wait-1", 7130, closeAtOnce, script(expectFIN)},
	{"fin-wait-2", 7132, closeAtOnce, script(expectFIN, send(ack, nil))},
	// The application holds the connection for a second after the peer's FIN.
	{"close-wait", 7134, func(c Conn) { io.Copy(io.Discard, c); time.Sleep(time.Second); c.Close() },
		script(send(fin|ack, nil), expectAcked("the ACK of the peer's FIN"))},
	// The server's FIN after the peer's, not acknowledged.
	{"last-ack", 7136, drainThenClose, script(send(fin|ack, nil), expectFIN)},
	{"closing", 7138, func(c Conn) { io.ReadFull(c, make([]byte, 5)); c.Close() },
		script(send(psh|ack, []byte("close")), crossFINs, expectAcked("the ACK of the peer's crossing FIN"))},
}

// challengeCases: RFC 5961's RST and SYN in each closing state.
func challengeCases() []*Case {
	var cs []*Case
	for _, st := range closingStates {
		for i, what := range []string{"rst", "syn"} {
			c := &Case{Name: what + "-in-" + st.name, Port: st.port + uint16(i), Server: st.server}
			state := strings.ToUpper(st.name)
			var provoke step
			if what == "rst" {
				c.Title = "in " + state + " the peer sends a RST inside the window, 10 past RCV.NXT"
				c.Rule = "a challenge ACK, and the connection goes on (RFC 5961 §3.2)"
				provoke = sendOff(rst, 10, nil)
			} else {
				c.Title = "in " + state + " the peer sends a SYN"
				c.Rule = "a challenge ACK, and the connection goes on (RFC 5961 §4)"
				provoke = sendOff(syn, 5000, nil)
			}
			// The exact RST at the end is the peer's way out.
			c.Play = script(connect, st.reach, provoke, soft(challenged("the "+strings.ToUpper(what))), sendOff(rst, 0, nil))
			cs = append(cs, c)
		}
	}
	return cs
}
