package scenario

import (
	"fmt"
	"net/netip"

	"github.com/tund/tund/internal/pcapfile"
	"github.com/tund/tund/internal/tcpflag"
)

// The stories same-port-reconnect tells, checked against tund's pcap: the
// segments between tund's port and the server, in capture order.

// challengeWire is what MSL 0 shows: tund's new SYN meets the server's
// LAST-ACK.
type challengeWire struct {
	oldFIN         pcapfile.Segment // tund's FIN of the first connection
	syn            pcapfile.Segment // tund's first SYN of the second connection
	challenge      pcapfile.Segment // the server's answer to it: a pure ACK of the old FIN
	rst            pcapfile.Segment // tund's answer to that ACK
	synAck         pcapfile.Segment // the server's SYN-ACK of the second connection
	synCopies      int              // tund's SYNs of the second connection
	finRetransmits int              // the server's FIN sent again before the SYN
}

// challengeStory checks that tund's SYN from the same port drew the
// server's challenge ACK, that tund answered with a RST at the ACK's
// acknowledgment number, that the SYN then opened the connection, and
// that the old connection was not heard of again.
func challengeStory(segs []pcapfile.Segment, tundEnd netip.AddrPort) (challengeWire, error) {
	var w challengeWire
	fromTund := func(s pcapfile.Segment) bool { return s.Src == tundEnd }
	isn1, i := -1, 0
	for ; i < len(segs); i++ {
		s := segs[i]
		if fromTund(s) && s.Has(tcpflag.SYN) && isn1 < 0 {
			isn1 = int(s.Seq)
		}
		if fromTund(s) && s.Has(tcpflag.FIN) {
			w.oldFIN = s
			break
		}
	}
	if i == len(segs) || isn1 < 0 {
		return w, expect(false, "the wire shows no first connection with a FIN from tund:%s", wireString(segs, tundEnd))
	}
	var serverFIN *pcapfile.Segment
	synAt := -1
	for j := i + 1; j < len(segs); j++ {
		s := segs[j]
		switch {
		case !fromTund(s) && s.Has(tcpflag.FIN) && serverFIN == nil:
			serverFIN = &segs[j]
		case !fromTund(s) && s.Has(tcpflag.FIN) && s.Seq == serverFIN.Seq:
			w.finRetransmits++
		case fromTund(s) && s.Flags == tcpflag.SYN:
			synAt = j
		}
		if synAt >= 0 {
			break
		}
	}
	if serverFIN == nil || synAt < 0 {
		return w, expect(false, "the wire shows no FIN from the server, or no new SYN from tund after the first connection:%s", wireString(segs, tundEnd))
	}
	w.syn = segs[synAt]
	if w.finRetransmits > 0 {
		return w, expect(false, "the server sent its FIN again before tund's new SYN: the SYN did not meet LAST-ACK first:%s", wireString(segs, tundEnd))
	}
	if w.syn.Seq == uint32(isn1) {
		return w, expect(false, "tund's second SYN has the first connection's ISN %d:%s", isn1, wireString(segs, tundEnd))
	}
	step := 0 // 0: await the challenge ACK, 1: tund's RST, 2: the SYN-ACK
	for _, s := range segs[synAt+1:] {
		switch {
		case fromTund(s) && s.Flags == tcpflag.SYN && s.Seq == w.syn.Seq:
			w.synCopies++
			continue
		case step == 0 && !fromTund(s):
			if s.Flags&^tcpflag.PSH != tcpflag.ACK || s.Len != 0 || s.Ack != w.oldFIN.Seq+uint32(w.oldFIN.Len)+1 {
				return w, expect(false, "the server answered tund's new SYN with %s seq=%d ack=%d, want a challenge ACK acknowledging the old FIN (ack=%d):%s",
					tcpflag.String(s.Flags), s.Seq, s.Ack, w.oldFIN.Seq+uint32(w.oldFIN.Len)+1, wireString(segs, tundEnd))
			}
			w.challenge, step = s, 1
		case step == 1 && fromTund(s):
			if !s.Has(tcpflag.RST) || s.Seq != w.challenge.Ack {
				return w, expect(false, "tund answered the challenge ACK with %s seq=%d, want a RST with seq=%d:%s", tcpflag.String(s.Flags), s.Seq, w.challenge.Ack, wireString(segs, tundEnd))
			}
			w.rst, step = s, 2
		case step == 2 && !fromTund(s) && s.Has(tcpflag.SYN):
			if !s.Has(tcpflag.ACK) || s.Ack != w.syn.Seq+1 {
				return w, expect(false, "the server's SYN seq=%d ack=%d does not acknowledge tund's SYN %d:%s", s.Seq, s.Ack, w.syn.Seq, wireString(segs, tundEnd))
			}
			if w.synAck.T.IsZero() {
				w.synAck = s
			}
		case step >= 1 && !fromTund(s) && serverFIN != nil && s.Has(tcpflag.FIN) && s.Seq == serverFIN.Seq:
			return w, expect(false, "the server sent its old connection's FIN again after tund's RST: the RST did not end its LAST-ACK:%s", wireString(segs, tundEnd))
		case step < 2 && !fromTund(s):
			return w, expect(false, "the server sent %s seq=%d ack=%d before tund's RST, want nothing more:%s", tcpflag.String(s.Flags), s.Seq, s.Ack, wireString(segs, tundEnd))
		}
	}
	if w.synAck.T.IsZero() {
		return w, expect(false, "the wire shows no SYN-ACK for tund's new SYN after the challenge ACK and RST:%s", wireString(segs, tundEnd))
	}
	w.synCopies++ // the first
	return w, nil
}

// timeWaitWire is what TIME-WAIT shows: one connection, whose final ACK
// was lost and sent again.
type timeWaitWire struct {
	fin, finAgain pcapfile.Segment // the server's FIN, and its retransmission
	ack           pcapfile.Segment // tund's ACK of the retransmission (TIME-WAIT)
	syns          []uint32         // the ISNs of tund's connections, in order
	after         []pcapfile.Segment
}

// timeWaitStory checks the first connection's close: the server's FIN
// twice, and tund's ACK only after the second, with no RST. The segments
// after that ACK are returned in after.
func timeWaitStory(segs []pcapfile.Segment, tundEnd netip.AddrPort) (timeWaitWire, error) {
	var w timeWaitWire
	fromTund := func(s pcapfile.Segment) bool { return s.Src == tundEnd }
	for i, s := range segs {
		if fromTund(s) && s.Flags == tcpflag.SYN && (len(w.syns) == 0 || w.syns[len(w.syns)-1] != s.Seq) {
			w.syns = append(w.syns, s.Seq)
		}
		if s.Has(tcpflag.RST) {
			return w, expect(false, "a RST on the wire; with TIME-WAIT there should be none:%s", wireString(segs, tundEnd))
		}
		switch {
		case !w.ack.T.IsZero():
		case !fromTund(s) && s.Has(tcpflag.FIN) && w.fin.T.IsZero():
			w.fin = s
		case !fromTund(s) && s.Has(tcpflag.FIN) && s.Seq == w.fin.Seq:
			w.finAgain = s
		case fromTund(s) && !w.fin.T.IsZero() && s.Flags == tcpflag.ACK && s.Len == 0 && s.Ack == w.fin.Seq+1:
			if w.finAgain.T.IsZero() {
				return w, expect(false, "tund's final ACK reached the wire before the server sent its FIN again: it was not dropped:%s", wireString(segs, tundEnd))
			}
			w.ack = s
			w.after = segs[i+1:]
		}
	}
	if w.ack.T.IsZero() {
		return w, expect(false, "the wire shows no FIN from the server sent twice and ACKed by tund after the second:%s", wireString(segs, tundEnd))
	}
	return w, nil
}

// reuseWire is what TIME-WAIT reuse shows: the TIME-WAIT close, then a
// new connection from the same port with a plain handshake.
type reuseWire struct {
	finAgain pcapfile.Segment // the server's FIN sent again, the last segment tund's TIME-WAIT received
	ack      pcapfile.Segment // tund's TIME-WAIT ACK of it
	syn      pcapfile.Segment // the SYN of the connection that reused the port
	synAck   pcapfile.Segment
}

// reuseStory checks the TIME-WAIT close and a later SYN, with a new ISN,
// answered by a SYN-ACK.
func reuseStory(segs []pcapfile.Segment, tundEnd netip.AddrPort) (reuseWire, error) {
	tw, err := timeWaitStory(segs, tundEnd)
	if err != nil {
		return reuseWire{}, err
	}
	w := reuseWire{finAgain: tw.finAgain, ack: tw.ack}
	if len(tw.syns) != 2 {
		return w, expect(false, "tund sent SYNs with ISNs %v, want two connections (the second reusing the port):%s", tw.syns, wireString(segs, tundEnd))
	}
	for _, s := range tw.after {
		switch {
		case s.Src == tundEnd && s.Flags == tcpflag.SYN && w.syn.T.IsZero():
			w.syn = s
		case s.Src != tundEnd && !w.syn.T.IsZero():
			if s.Flags != tcpflag.SYN|tcpflag.ACK || s.Ack != w.syn.Seq+1 {
				return w, expect(false, "the server answered the reused port's SYN with %s ack=%d, want a SYN-ACK:%s", tcpflag.String(s.Flags), s.Ack, wireString(segs, tundEnd))
			}
			w.synAck = s
			return w, nil
		}
	}
	return w, expect(false, "no SYN-ACK for the reused port's SYN:%s", wireString(segs, tundEnd))
}

// describeWire lists segs one a line, with what each is in the story.
func describeWire(segs []pcapfile.Segment, tundEnd netip.AddrPort) []string {
	var lines []string
	var isns []uint32
	var lastSYN uint32
	synAnswered := true
	fins := map[bool]uint32{} // by "from tund": the sequence number of that side's last FIN
	t0 := segs[0].T
	for _, s := range segs {
		byTund := s.Src == tundEnd
		who, other := "tund  ", "the server's"
		if !byTund {
			who, other = "server", "tund's"
		}
		what := ""
		switch {
		case byTund && s.Flags == tcpflag.SYN:
			if len(isns) == 0 || isns[len(isns)-1] != s.Seq {
				isns = append(isns, s.Seq)
				what = fmt.Sprintf("SYN: connection %d", len(isns))
				lastSYN, synAnswered = s.Seq, false
			} else {
				what = fmt.Sprintf("SYN of connection %d again", len(isns))
			}
		case s.Has(tcpflag.SYN):
			what, synAnswered = "SYN-ACK", true
		case s.Has(tcpflag.RST):
			what = "RST"
		case s.Has(tcpflag.FIN):
			what = "FIN"
			if f, ok := fins[byTund]; ok && f == s.Seq {
				what = "FIN again (retransmitted)"
			}
			fins[byTund] = s.Seq
		case !byTund && !synAnswered && s.Len == 0 && s.Ack != lastSYN+1:
			what = "challenge ACK (RFC 5961 §4): acknowledges the old connection, not the SYN"
		case s.Len > 0:
			what = fmt.Sprintf("data, %d bytes", s.Len)
		case fins[!byTund] != 0 && s.Ack == fins[!byTund]+1:
			what = "ACK of " + other + " FIN"
		}
		lines = append(lines, fmt.Sprintf("  +%.4fs %s %-3s seq=%-10d ack=%-10d %s", s.T.Sub(t0).Seconds(), who, tcpflag.String(s.Flags), s.Seq, s.Ack, what))
	}
	return lines
}

// wireString is segs as describeWire has them, for errors.
func wireString(segs []pcapfile.Segment, tundEnd netip.AddrPort) string {
	s := ""
	for _, l := range describeWire(segs, tundEnd) {
		s += "\n" + l
	}
	return s
}
