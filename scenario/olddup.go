package scenario

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/rawpeer"
	"github.com/tund/tund/internal/tcpflag"
)

// The old-duplicate story's peer and its sequence numbers. The peer's
// first connection starts at oldISS; the second, on the same 4-tuple, at
// oldISS + len(oldFirst): inside the sequence space the first one used, as
// for a client whose connection outran the ISN clock of RFC 6528 (64 ns a
// number, 15.6 MB a second), so that the old connection's second segment
// lies exactly where the new connection's data begins.
const (
	oldDupPort = 40077
	oldISS     = 100000
)

// The requests: the first connection asks for 1 byte and then, in a
// segment of its own, for 5 bytes and the end of the connection; the
// second asks for 3 bytes. oldSecond and newRequest are the same length,
// so the new request lies wholly under the old duplicate.
var (
	oldFirst   = []byte("GET /bytes/1 HTTP/1.1\r\nHost: tund\r\n\r\n")
	oldSecond  = []byte("GET /bytes/5 HTTP/1.1\r\nHost: tund\r\nConnection: close\r\n\r\n")
	newRequest = []byte("GET /bytes/3 HTTP/1.1\r\nHost: tund\r\nConnection: close\r\n\r\n")
)

// oldDuplicate: an old duplicate of a connection's data reaches a new
// connection on the same 4-tuple.
var oldDuplicate = &Scenario{
	Name:  "old-duplicate",
	Title: "an old connection's segment reaches a new one on the same 4-tuple: without TIME-WAIT it is read as data; TIME-WAIT absorbs it and screens the new SYN",
	run: func(e *Env) error {
		if err := oldDuplicateNoTimeWait(e); err != nil {
			return fmt.Errorf("MSL 0: %w", err)
		}
		if err := oldDuplicateTimeWait(e); err != nil {
			return fmt.Errorf("TIME-WAIT: %w", err)
		}
		return nil
	},
	explain: `TIME-WAIT lasts 2 x MSL for two reasons (RFC 9293 §3.4.2, §3.6): the
final ACK may be lost (see lost-final-ack), and segments of the old
connection may still be in the network, delayed or duplicated, when a new
connection on the same 4-tuple starts. If the new connection's sequence
space overlaps the old one, which happens when the old connection sent
faster than the ISN clock advances (RFC 6528: 4 microseconds a number in
RFC 9293, 64 ns in Linux and gVisor, 15.6 MB a second), an old segment can
land inside the new connection's window and be taken for its data. Here a
scripted peer at 198.18.0.77 talks HTTP to tund with sequence numbers
chosen so: its first connection sends two requests, the second in a
segment of its own, and tund closes first after answering (Connection:
close); the network keeps a duplicate of that second segment. The second
connection on the same 4-tuple starts its sequence space where that
segment lies. With --msl 0 tund forgot the first connection at once,
accepted the second, and read the old duplicate as the new connection's
first bytes: its http service answered the old request (5 bytes) instead
of the one the client sent (3 bytes), and the client's own bytes, arriving
after, were trimmed as duplicates. Linux would have dropped the old segment
twice over: by PAWS (RFC 7323 §5), its timestamp being older (the peer
sends none here), and by the range check of its ACK field (RFC 5961 §5:
it acknowledges the old connection's data, far behind SND.UNA). gVisor
has neither. With TIME-WAIT, tund still held the
old connection: the duplicate was answered with an ACK of what tund had
already received (RFC 9293 §3.10.7.4: in TIME-WAIT only a retransmitted
FIN is acceptable) and no byte was delivered, and the new SYN was screened
by its sequence number (RFC 1122 §4.2.2.13): one inside the old sequence
space was not taken for a new connection but answered with an ACK of the
old one (RFC 9293 §3.10.7.4, RFC 5961 §4; gVisor patch 0018), one above it
opened a clean connection from TIME-WAIT. RFC 6191 would also accept a SYN
whose timestamp is above the old connection's; the peer sends none.`,
}

// rawPeerV4 is the scripted peer's address: inside the TUN device's
// subnet, so that tund routes its answers into the device, but not the
// kernel's, so that the kernel neither answers tund's segments nor sends
// its own from there (the namespace does not forward: it drops them).
const rawPeerV4 = "198.18.0.77"

// oldDupPeer returns the scripted peer for tund's http port, closed with
// the run.
func oldDupPeer(e *Env) (*rawpeer.Peer, error) {
	p, err := rawpeer.Open(e.ns, tunName, nil, netip.AddrPortFrom(netip.MustParseAddr(rawPeerV4), oldDupPort),
		netip.AddrPortFrom(netip.MustParseAddr(stackV4), 80))
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.cleanups = append(e.cleanups, func() { p.Close() })
	e.mu.Unlock()
	return p, nil
}

// oldConnection plays the first connection: two requests, the second in a
// segment of its own, whose packet it returns (the network's duplicate),
// and a close that tund starts. end is the peer's sequence number after
// its FIN.
func oldConnection(p *rawpeer.Peer) (dup []byte, end uint32, err error) {
	x := rawpeer.NewExchange(p)
	if err := x.Connect(oldISS); err != nil {
		return nil, 0, err
	}
	if err := x.Send(header.TCPFlagPsh|header.TCPFlagAck, oldFirst); err != nil {
		return nil, 0, err
	}
	if dup, err = x.SendAt(header.TCPFlagPsh|header.TCPFlagAck, x.SndNxt, x.RcvNxt, oldSecond); err != nil {
		return nil, 0, err
	}
	x.SndNxt += uint32(len(oldSecond))
	reply, err := x.ReadToFIN(3 * time.Second)
	if err != nil {
		return nil, 0, err
	}
	if n := bytes.Count(reply, []byte("HTTP/1.1 200")); n != 2 {
		return nil, 0, fmt.Errorf("the first connection's two requests got %d answers: %q", n, reply)
	}
	if err := x.Finish(3 * time.Second); err != nil {
		return nil, 0, err
	}
	return dup, x.SndNxt, nil // past the peer's FIN
}

// request plays a later connection from ISN iss: the handshake, the old
// duplicate dup if there is one (the network delivers it), newRequest,
// tund's reply up to its FIN, and the peer's FIN. It returns the reply's
// status line and body.
func request(p *rawpeer.Peer, iss uint32, dup []byte) (string, []byte, error) {
	x := rawpeer.NewExchange(p)
	if err := x.Connect(iss); err != nil {
		return "", nil, fmt.Errorf("ISN %d: %w", iss, err)
	}
	if dup != nil {
		if err := p.Inject(dup); err != nil {
			return "", nil, err
		}
	}
	if err := x.Send(header.TCPFlagPsh|header.TCPFlagAck, newRequest); err != nil {
		return "", nil, err
	}
	reply, err := x.ReadToFIN(3 * time.Second)
	if err != nil {
		return "", nil, err
	}
	if err := x.Finish(3 * time.Second); err != nil {
		return "", nil, err
	}
	return response(reply)
}

// response returns the status line and the body of the one HTTP response
// in b.
func response(b []byte) (status string, body []byte, err error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return "", nil, fmt.Errorf("reading tund's answer %q: %w", b, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.Proto + " " + resp.Status, body, err
}

// oldDupWire appends the run's segments between the peer and tund to the
// result, the replayed one marked.
func oldDupWire(e *Env, config string, p *rawpeer.Peer, dupSeq uint32) error {
	e.stopTund()
	segs, err := readPcap(e.res.Pcaps[len(e.res.Pcaps)-1])
	if err != nil {
		return err
	}
	segs = between(segs, p.Local, p.Remote)
	if len(segs) == 0 {
		return errors.New("tund's pcap holds no segment of the peer's")
	}
	e.res.Wire = append(e.res.Wire, config+":")
	t0, syns, replay := segs[0].T, 0, false
	for _, s := range segs {
		who := "tund"
		if s.Src == p.Local {
			who = "peer"
		}
		what := ""
		switch {
		case who == "peer" && s.Flags == tcpflag.SYN:
			syns++
			what = fmt.Sprintf("SYN, connection %d (ISN %d)", syns, s.Seq)
		case s.Flags&tcpflag.SYN != 0:
			what = "SYN-ACK"
		case s.Flags&tcpflag.RST != 0:
			what = "RST"
		case who == "peer" && syns > 1 && s.Seq == dupSeq && s.Len > 0 && !replay:
			replay = true
			what = fmt.Sprintf("data, %d bytes: the OLD DUPLICATE of connection 1's second request", s.Len)
		case s.Len > 0:
			what = fmt.Sprintf("data, %d bytes", s.Len)
		case s.Flags&tcpflag.FIN != 0:
			what = "FIN"
		}
		e.res.Wire = append(e.res.Wire, fmt.Sprintf("  +%.4fs %s %-3s seq=%-10d ack=%-10d %s",
			s.T.Sub(t0).Seconds(), who, tcpflag.String(s.Flags), s.Seq, s.Ack, what))
	}
	return nil
}

// oldDuplicateNoTimeWait: with --msl 0 the old duplicate becomes the new
// connection's data.
func oldDuplicateNoTimeWait(e *Env) error {
	if err := e.startTund("--serve", "http", "--msl", "0"); err != nil {
		return err
	}
	p, err := oldDupPeer(e)
	if err != nil {
		return err
	}
	dup, _, err := oldConnection(p)
	if err != nil {
		return fmt.Errorf("the first connection: %w", err)
	}
	rec, err := e.record(p.Local, false, 5*time.Second, nil)
	if err != nil {
		return err
	}
	e.addRecord(rec)
	if err := e.observe("MSL 0: the first connection closed (tund first); tund keeps no TIME-WAIT", is(p.Local)); err != nil {
		return err
	}
	status, got, err := request(p, uint32(oldISS+len(oldFirst)), dup)
	if err != nil {
		return fmt.Errorf("the second connection: %w", err)
	}
	e.res.Numbers["msl0_bytes_asked"] = 3
	e.res.Numbers["msl0_bytes_answered"] = float64(len(got))
	e.note("MSL 0, byte for byte: the second connection sent %q; the old duplicate at the same sequence number %d carried %q; tund's http service read the old one and answered %q with a body of %d bytes, not 3.",
		newRequest, rawpeer.SeqOf(dup), oldSecond, status, len(got))
	if err := oldDupWire(e, "MSL 0 (--msl 0)", p, rawpeer.SeqOf(dup)); err != nil {
		return err
	}
	return expect(len(got) == 5, "with MSL 0 the second connection got a body of %d bytes: the old duplicate was not taken as data (want 5, the old request's)", len(got))
}

// oldDuplicateTimeWait: with TIME-WAIT the old duplicate is absorbed and
// the new SYN screened.
func oldDuplicateTimeWait(e *Env) error {
	const msl = 5 * time.Second // longer than the run: TIME-WAIT holds throughout
	if err := e.startTund("--serve", "http", "--msl", msl.String()); err != nil {
		return err
	}
	p, err := oldDupPeer(e)
	if err != nil {
		return err
	}
	dup, end, err := oldConnection(p)
	if err != nil {
		return fmt.Errorf("the first connection: %w", err)
	}
	if err := e.awaitTund(p.Local, "TIME-WAIT", 2*time.Second); err != nil {
		return err
	}
	rec, err := e.record(p.Local, false, 5*time.Second, nil)
	if err != nil {
		return err
	}
	e.addRecord(rec)
	if err := e.observe("TIME-WAIT: the first connection closed (tund first); tund holds it for 2 x MSL", is(p.Local)); err != nil {
		return err
	}
	// The duplicate, in TIME-WAIT: an ACK of what tund received, no data.
	if err := p.Inject(dup); err != nil {
		return err
	}
	s, err := p.Next(2 * time.Second)
	if err != nil {
		return fmt.Errorf("after the old duplicate: %w", err)
	}
	if s.Flags != header.TCPFlagAck || s.Ack != end || len(s.Payload) != 0 {
		return fmt.Errorf("tund in TIME-WAIT answered the old duplicate with %s ack %d (%d bytes), want an ACK of %d", s.Flags, s.Ack, len(s.Payload), end)
	}
	e.note("TIME-WAIT: tund answered the old duplicate (seq %d) with an ACK of %d, the end of what the first connection carried, and delivered nothing.", rawpeer.SeqOf(dup), end)
	// A SYN inside the old sequence space: not a new connection.
	low := uint32(oldISS + len(oldFirst))
	if _, err := p.Send(header.TCPFlagSyn, low, 0, nil); err != nil {
		return err
	}
	s, err = p.Next(2 * time.Second)
	if err != nil {
		return fmt.Errorf("after a SYN inside the old sequence space (ISN %d): %w", low, err)
	}
	if s.Flags != header.TCPFlagAck || s.Ack != end {
		return fmt.Errorf("tund in TIME-WAIT answered a SYN (ISN %d) below the old connection's end %d with %s ack %d, want an ACK of the old connection", low, end, s.Flags, s.Ack)
	}
	e.note("A SYN with ISN %d, inside the old sequence space, got an ACK of the old connection (ack %d), not a SYN-ACK.", low, s.Ack)
	// A SYN above it: a new connection, from TIME-WAIT.
	high := end + 100000
	_, got, err := request(p, high, nil)
	if err != nil {
		return fmt.Errorf("a SYN above the old sequence space: %w", err)
	}
	e.res.Numbers["tw_bytes_answered"] = float64(len(got))
	e.note("A SYN with ISN %d, above it, opened a new connection from TIME-WAIT, whose request for 3 bytes got %d.", high, len(got))
	if err := oldDupWire(e, "TIME-WAIT (--msl "+msl.String()+")", p, rawpeer.SeqOf(dup)); err != nil {
		return err
	}
	return expect(len(got) == 3, "the connection opened from TIME-WAIT got a body of %d bytes, want 3", len(got))
}
