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

// toTimeWait plays a close that the server starts (it closes at once) to
// TIME-WAIT on the server: its FIN, the peer's ACK and FIN, its final ACK.
// It returns the peer's FIN, to replay.
func toTimeWait(x *Exchange) ([]byte, error) {
	if err := x.Connect(peerISS); err != nil {
		return nil, err
	}
	if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
		return nil, err
	}
	if err := x.Send(ack, nil); err != nil {
		return nil, err
	}
	b, err := x.SendAt(fin|ack, x.SndNxt, x.RcvNxt, nil)
	if err != nil {
		return nil, err
	}
	x.SndNxt++
	if _, err := x.Expect("the final ACK", wait, acks(x.SndNxt)); err != nil {
		return nil, err
	}
	return b, nil
}

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
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				_, err := x.Expect("the final ACK", wait, acks(x.SndNxt))
				return err
			},
		},
		{
			Name: "fin-then-close", Port: 7102,
			Title:  "the peer sends its FIN first; the server reads to EOF and closes (packetdrill close/close-remote-fin-then-close)",
			Rule:   "the peer's FIN is acknowledged and the server's FIN follows (RFC 9293 §3.6, case 2)",
			Server: drainThenClose,
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN, acknowledging the peer's", wait, func(s rawpeer.Segment) bool {
					return isFIN(s) && acks(x.SndNxt)(s)
				}); err != nil {
					return err
				}
				return x.Send(ack, nil)
			},
		},
		{
			Name: "shutdown-write-data-arriving", Port: 7103,
			Title: "the server calls shutdown(SHUT_WR) at once and reads on; the peer sends data after the server's FIN, then its own FIN (packetdrill shutdown/shutdown-wr-*)",
			Rule:  "after SHUT_WR the server still acknowledges data: a half-close ends one direction only (RFC 9293 §3.6)",
			Server: func(c Conn) {
				c.CloseWrite()
				drainThenClose(c)
			},
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if err := x.Send(psh|ack, make([]byte, 100)); err != nil {
					return err
				}
				if _, err := x.Expect("an ACK of the 100 bytes", wait, acks(x.SndNxt)); err != nil {
					return err
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				_, err := x.Expect("the final ACK", wait, acks(x.SndNxt))
				return err
			},
		},
		{
			Name: "fin-behind-data", Port: 7104,
			Title:  "the server writes 1,000 bytes and closes; the peer acknowledges nothing until the FIN has come (packetdrill close/close-with-unsent-data)",
			Rule:   "a FIN queued behind data goes out after it: its sequence number is the one after the last byte (RFC 9293 §3.10.4, CLOSE)",
			Server: func(c Conn) { c.Write(make([]byte, 1000)); c.Close() },
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				s, err := x.Expect("the server's FIN", wait, isFIN)
				if err != nil {
					return err
				}
				if end := s.Seq + uint32(len(s.Payload)) - x.irs; end != 1001 {
					return fmt.Errorf("the FIN's sequence number is %d, want 1001, after the 1,000 bytes", end)
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				_, err = x.Expect("the final ACK", wait, acks(x.SndNxt))
				return err
			},
		},
		{
			Name: "close-with-unread-data", Port: 7105,
			Title:  "the peer sends 100 bytes; the server closes 200 ms later without reading them (packetdrill close/close-unread-data-rst)",
			Rule:   "a close with unread data resets the connection: RST, no FIN (RFC 2525 §2.17; Linux's tcp_close)",
			Server: func(c Conn) { time.Sleep(200 * time.Millisecond); c.Close() },
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if err := x.Send(psh|ack, make([]byte, 100)); err != nil {
					return err
				}
				if _, err := x.Expect("RST", wait, func(s rawpeer.Segment) bool { return isRST(s) || isFIN(s) }); err != nil {
					return err
				}
				return noFIN(x)
			},
		},
		{
			Name: "linger-zero", Port: 7106,
			Title:  "the server writes 2 bytes and closes with SO_LINGER 0 (packetdrill close/close-so-linger-onoff-1-linger-0-rst)",
			Rule:   "an abortive close sends RST and no FIN (RFC 9293 §3.10.5, ABORT)",
			Server: func(c Conn) { c.Write([]byte("x\n")); c.Abort() },
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("RST", wait, func(s rawpeer.Segment) bool { return isRST(s) || isFIN(s) }); err != nil {
					return err
				}
				return noFIN(x)
			},
		},
		{
			Name: "data-after-close", Port: 7107,
			Title:  "the server closes at once; the peer ACKs its FIN and sends 10 bytes (packetdrill close/close-read-data-fin)",
			Rule:   "data for a connection its application has closed draws RST: no one will read it (RFC 9293 §3.10.7.4; Linux's orphan sockets)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if err := x.Send(psh|ack, make([]byte, 10)); err != nil {
					return err
				}
				_, err := x.Expect("RST", wait, isRST)
				return err
			},
		},
		{
			Name: "simultaneous-close", Port: 7108,
			Title: "the peer sends \"close\"; the server reads it and closes; the peer's FIN crosses the server's (it does not acknowledge it)",
			Rule:  "each side ACKs the other's FIN: the server goes through CLOSING to TIME-WAIT (RFC 9293 §3.6, case 3)",
			Server: func(c Conn) {
				io.ReadFull(c, make([]byte, 5))
				c.Close()
			},
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if err := x.Send(psh|ack, []byte("close")); err != nil {
					return err
				}
				s, err := x.Expect("the server's FIN", wait, isFIN)
				if err != nil {
					return err
				}
				// The FIN "crosses": it acknowledges the server's data but not
				// its FIN.
				if _, err := x.SendAt(fin|ack, x.SndNxt, s.Seq+uint32(len(s.Payload)), nil); err != nil {
					return err
				}
				x.SndNxt++
				if _, err := x.Expect("the ACK of the peer's FIN", wait, acks(x.SndNxt)); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				got, err := x.Quiet(300 * time.Millisecond)
				if err == nil && len(got) > 0 {
					return fmt.Errorf("the server sent %d segments after the close", len(got))
				}
				return err
			},
		},
		{
			Name: "fin-retransmitted", Port: 7109,
			Title:  "the server closes at once; the peer never acknowledges the FIN (1.2 s)",
			Rule:   "an unacknowledged FIN is sent again, first after at least 200 ms, Linux's minimum RTO (RFC 9293 §3.8.1, RFC 6298)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
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
			},
		},
		{
			Name: "fin-wait-2-timeout", Port: 7110,
			Title:  "the server closes; the peer ACKs the FIN and stays silent past the FIN-WAIT-2 timeout (2 s on both sides), then sends its FIN",
			Rule:   "the timeout ends the connection silently, and a FIN after it draws RST (Linux's tcp_fin_timeout, RFC 9293 leaves FIN-WAIT-2 open)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				got, err := x.Quiet(FINWait2 + time.Second)
				if err != nil {
					return err
				}
				if len(got) > 0 {
					return fmt.Errorf("the server sent %d segment(s) while it waited in FIN-WAIT-2, the first %s", len(got), x.Log[len(x.Log)-len(got)])
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				_, err = x.Expect("RST", wait, isRST)
				return err
			},
		},
		{
			Name: "exact-rst-in-fin-wait-2", Port: 7111,
			Title:  "in FIN-WAIT-2 the peer sends a RST inside the window but not at RCV.NXT, then one at RCV.NXT, then a FIN",
			Rule:   "the first draws a challenge ACK, the second resets silently, the FIN then draws RST (RFC 5961 §3.2)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if _, err := x.SendAt(rst, x.SndNxt+10, 0, nil); err != nil {
					return err
				}
				challenge, err := x.Quiet(300 * time.Millisecond)
				if err != nil {
					return err
				}
				if _, err := x.SendAt(rst, x.SndNxt, 0, nil); err != nil {
					return err
				}
				after, err := x.Quiet(200 * time.Millisecond)
				if err != nil {
					return err
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				if _, err := x.Expect("RST", wait, isRST); err != nil {
					return err
				}
				if len(challenge) != 1 || !acks(x.SndNxt-1)(challenge[0]) || has(challenge[0], rst) {
					return fmt.Errorf("the RST inside the window drew %d segment(s), not one challenge ACK", len(challenge))
				}
				if len(after) > 0 {
					return fmt.Errorf("the server answered the RST at RCV.NXT with %d segment(s)", len(after))
				}
				return nil
			},
		},
		{
			Name: "time-wait-fin-again", Port: 7113,
			Title:  "the server closes first; in its TIME-WAIT the peer's FIN comes again (its final ACK was lost)",
			Rule:   "TIME-WAIT acknowledges the FIN again (RFC 9293 §3.10.7.4, and restarts 2 x MSL)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				finPkt, err := toTimeWait(x)
				if err != nil {
					return err
				}
				if err := x.Replay(finPkt); err != nil {
					return err
				}
				_, err = x.Expect("the ACK again", wait, acks(x.SndNxt))
				return err
			},
		},
		{
			Name: "time-wait-rst", Port: 7114,
			Title:  "in the server's TIME-WAIT the peer sends a RST, then its FIN again",
			Rule:   "Linux: the RST ends TIME-WAIT (RFC 9293 §3.10.7.4; tcp_rfc1337=0), so the FIN draws RST; RFC 1337 would keep TIME-WAIT and ACK it",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				finPkt, err := toTimeWait(x)
				if err != nil {
					return err
				}
				if _, err := x.SendAt(rst, x.SndNxt, 0, nil); err != nil {
					return err
				}
				if _, err := x.Quiet(100 * time.Millisecond); err != nil {
					return err
				}
				if err := x.Replay(finPkt); err != nil {
					return err
				}
				s, err := x.Recv(wait)
				if err != nil {
					return err
				}
				if !isRST(s) {
					return fmt.Errorf("the FIN after the RST drew %s: TIME-WAIT outlived the RST", x.Log[len(x.Log)-1].Flags)
				}
				return nil
			},
		},
		{
			Name: "time-wait-syn-above", Port: 7115,
			Title:  "in the server's TIME-WAIT the peer opens a new connection with an ISN above the old sequence space",
			Rule:   "TIME-WAIT gives way to the new connection: SYN-ACK (RFC 9293 §3.10.7.4, RFC 1122 §4.2.2.13)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if _, err := toTimeWait(x); err != nil {
					return err
				}
				iss := x.SndNxt + 100000
				if _, err := x.SendAt(syn, iss, 0, nil); err != nil {
					return err
				}
				s, err := x.Recv(wait)
				if err != nil {
					return fmt.Errorf("want a SYN-ACK: %w", err)
				}
				x.SendAt(rst, iss+1, 0, nil)
				if !has(s, syn) || s.Ack != iss+1 {
					return fmt.Errorf("the SYN drew %s ack %d, not a SYN-ACK", s.Flags, s.Ack)
				}
				return nil
			},
		},
		{
			Name: "time-wait-syn-below", Port: 7116,
			Title:  "in the server's TIME-WAIT the peer sends a SYN with its old ISN, inside the old sequence space",
			Rule:   "not a new connection: Linux answers with the ACK of the old connection (RFC 9293 §3.10.7.4: an unacceptable segment draws an ACK)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if _, err := toTimeWait(x); err != nil {
					return err
				}
				if _, err := x.SendAt(syn, peerISS, 0, nil); err != nil {
					return err
				}
				_, err := x.Expect("the ACK of the old connection", wait, acks(x.SndNxt))
				return err
			},
		},
		{
			Name: "time-wait-out-of-window", Port: 7117,
			Title:  "in the server's TIME-WAIT the peer sends 10 bytes far beyond the window",
			Rule:   "an unacceptable segment draws an ACK of RCV.NXT and is dropped (RFC 9293 §3.10.7.4)",
			Server: closeAtOnce,
			Play: func(x *Exchange) error {
				if _, err := toTimeWait(x); err != nil {
					return err
				}
				if _, err := x.SendAt(psh|ack, x.SndNxt+1_000_000, x.RcvNxt, make([]byte, 10)); err != nil {
					return err
				}
				_, err := x.Expect("an ACK", wait, acks(x.SndNxt))
				return err
			},
		},
		{
			Name: "time-wait-old-data", Port: 7118,
			Title: "the server reads the peer's 9 bytes and closes first; in its TIME-WAIT an old duplicate of those bytes arrives",
			Rule:  "it draws an ACK of RCV.NXT and delivers nothing (RFC 9293 §3.10.7.4; the old-duplicate scenario shows why)",
			Server: func(c Conn) {
				io.ReadFull(c, make([]byte, 9))
				c.Close()
			},
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				old, err := x.SendAt(psh|ack, x.SndNxt, x.RcvNxt, []byte("old data\n"))
				if err != nil {
					return err
				}
				x.SndNxt += 9
				if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if err := x.Send(fin|ack, nil); err != nil {
					return err
				}
				if _, err := x.Expect("the final ACK", wait, acks(x.SndNxt)); err != nil {
					return err
				}
				if err := x.Replay(old); err != nil {
					return err
				}
				_, err = x.Expect("an ACK", wait, acks(x.SndNxt))
				return err
			},
		},
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
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if got, err := x.Quiet(100 * time.Millisecond); err != nil || len(got) > 0 {
					return fmt.Errorf("shutdown(SHUT_RD) put %d segment(s) on the wire (%v)", len(got), err)
				}
				if err := x.Send(psh|ack, make([]byte, 100)); err != nil {
					return err
				}
				s, err := x.Recv(wait)
				if err != nil {
					return fmt.Errorf("want an ACK of the 100 bytes: %w", err)
				}
				end, err := x.Quiet(500 * time.Millisecond) // the close that follows, for the record
				if err == nil && len(end) > 0 && !has(end[len(end)-1], rst) {
					x.Send(rst, nil)
				}
				if has(s, rst) || !acks(x.SndNxt)(s) {
					return fmt.Errorf("the data after SHUT_RD drew %s ack %d, not an ACK of it", s.Flags, s.Ack-x.iss)
				}
				return err
			},
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
			Play: func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if _, err := x.Expect("the server's FIN", 200*time.Millisecond, isFIN); err != nil {
					return err
				}
				if err := x.Send(ack, nil); err != nil {
					return err
				}
				if err := x.Send(psh|ack, make([]byte, 10)); err != nil {
					return err
				}
				got, err := x.Quiet(600 * time.Millisecond) // whatever the data and the close draw, for the record
				if err == nil && (len(got) == 0 || !has(got[len(got)-1], rst)) {
					x.Send(rst, nil)
				}
				return err
			},
		},
	}
}

// closingState brings the server's connection to one of the closing
// states, and returns how many segments the peer has sent; the peer's
// SndNxt is then the sequence number the server expects.
type closingState struct {
	name   string
	port   uint16 // the first of two ports: RST, then SYN
	server func(Conn)
	reach  func(x *Exchange) error
}

var closingStates = []closingState{
	{"fin-wait-1", 7130, closeAtOnce, func(x *Exchange) error {
		_, err := x.Expect("the server's FIN", wait, isFIN) // not acknowledged: FIN-WAIT-1
		return err
	}},
	{"fin-wait-2", 7132, closeAtOnce, func(x *Exchange) error {
		if _, err := x.Expect("the server's FIN", wait, isFIN); err != nil {
			return err
		}
		return x.Send(ack, nil)
	}},
	{"close-wait", 7134, func(c Conn) { io.Copy(io.Discard, c); time.Sleep(time.Second); c.Close() }, func(x *Exchange) error {
		if err := x.Send(fin|ack, nil); err != nil {
			return err
		}
		_, err := x.Expect("the ACK of the peer's FIN", wait, acks(x.SndNxt))
		return err
	}},
	{"last-ack", 7136, drainThenClose, func(x *Exchange) error {
		if err := x.Send(fin|ack, nil); err != nil {
			return err
		}
		_, err := x.Expect("the server's FIN", wait, isFIN) // not acknowledged: LAST-ACK
		return err
	}},
	{"closing", 7138, func(c Conn) { io.ReadFull(c, make([]byte, 5)); c.Close() }, func(x *Exchange) error {
		if err := x.Send(psh|ack, []byte("close")); err != nil {
			return err
		}
		s, err := x.Expect("the server's FIN", wait, isFIN)
		if err != nil {
			return err
		}
		if _, err := x.SendAt(fin|ack, x.SndNxt, s.Seq+uint32(len(s.Payload)), nil); err != nil {
			return err
		}
		x.SndNxt++
		_, err = x.Expect("the ACK of the peer's crossing FIN", wait, acks(x.SndNxt)) // CLOSING
		return err
	}},
}

// challengeCases: RFC 5961's RST and SYN in each closing state.
func challengeCases() []*Case {
	var cs []*Case
	for _, st := range closingStates {
		for i, what := range []string{"rst", "syn"} {
			st, what := st, what
			c := &Case{
				Name: what + "-in-" + st.name, Port: st.port + uint16(i), Server: st.server,
			}
			if what == "rst" {
				c.Title = "in " + strings.ToUpper(st.name) + " the peer sends a RST inside the window, 10 past RCV.NXT"
				c.Rule = "a challenge ACK, and the connection goes on (RFC 5961 §3.2)"
			} else {
				c.Title = "in " + strings.ToUpper(st.name) + " the peer sends a SYN"
				c.Rule = "a challenge ACK, and the connection goes on (RFC 5961 §4)"
			}
			c.Play = func(x *Exchange) error {
				if err := x.Connect(peerISS); err != nil {
					return err
				}
				if err := st.reach(x); err != nil {
					return err
				}
				var err error
				if what == "rst" {
					_, err = x.SendAt(rst, x.SndNxt+10, 0, nil)
				} else {
					_, err = x.SendAt(syn, x.SndNxt+5000, 0, nil)
				}
				if err != nil {
					return err
				}
				got, err := x.Quiet(300 * time.Millisecond)
				x.SendAt(rst, x.SndNxt, 0, nil) // done: the exact RST ends the connection
				if err != nil {
					return err
				}
				var challenge bool
				for _, s := range got {
					if has(s, rst) {
						return fmt.Errorf("the %s drew a RST", strings.ToUpper(what))
					}
					// A bare ACK: the server's FIN sent again (FIN-WAIT-1,
					// LAST-ACK, CLOSING) acknowledges SndNxt too, but is no
					// answer to the RST or SYN.
					challenge = challenge || s.Flags == ack && len(s.Payload) == 0 && s.Ack == x.SndNxt
				}
				if !challenge {
					return fmt.Errorf("the %s drew no challenge ACK (%d segment(s))", strings.ToUpper(what), len(got))
				}
				return nil
			}
			cs = append(cs, c)
		}
	}
	return cs
}
