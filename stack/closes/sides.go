package closes

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/tcpstate"
)

// side indexes the two ends of a connection in closeSides.
type side int

const (
	tund side = iota
	peerSide
)

func sideOf(name string) side {
	if name == SidePeer {
		return peerSide
	}
	return tund
}

func (s side) other() side { return 1 - s }

func (s side) String() string {
	if s == peerSide {
		return SidePeer
	}
	return SideTund
}

// transitions maps a state to the next one; a state that does not move
// maps to itself.
type transitions [tcpstate.Count]tcpstate.State

func newTransitions(moves map[tcpstate.State]tcpstate.State) transitions {
	var t transitions
	for s := range t {
		t[s] = tcpstate.State(s)
	}
	for from, to := range moves {
		t[from] = to
	}
	return t
}

// The RFC 9293 §3.3.2 transitions of the close, by what causes them: the
// side's own FIN leaving, the other side's FIN arriving, and the ACK of the
// side's own FIN arriving. A state missing from a table does not move.
var (
	onFINSent     = newTransitions(map[tcpstate.State]tcpstate.State{tcpstate.Established: tcpstate.FinWait1, tcpstate.CloseWait: tcpstate.LastAck})
	onFINReceived = newTransitions(map[tcpstate.State]tcpstate.State{tcpstate.Established: tcpstate.CloseWait, tcpstate.FinWait1: tcpstate.Closing, tcpstate.FinWait2: tcpstate.TimeWait})
	onFINAcked    = newTransitions(map[tcpstate.State]tcpstate.State{tcpstate.FinWait1: tcpstate.FinWait2, tcpstate.Closing: tcpstate.TimeWait, tcpstate.LastAck: tcpstate.Closed})
)

// closeSides follows both sides of a close through the RFC 9293 states, as
// the segments on the wire imply them. A segment changes the state of its
// sender when it leaves and of its receiver when it arrives; the tracer sees
// tund's segments as they leave and the peer's as they arrive, so tund's
// states and their times are exact, and the peer's are tund's view of them.
type closeSides struct {
	state    [2]tcpstate.State
	since    [2]time.Time // when each side entered its state
	fin      [2]uint32    // sequence number of each side's FIN
	finSent  [2]bool
	finAcked [2]bool
	// carried marks a side whose FIN was first acknowledged by a segment
	// with a FIN or data (three-way), not by a pure ACK (four-way).
	carried [2]bool
	// term marks a side that has sent a FIN or RST; lead is the first of
	// them, and crossed is set when the other side's first FIN or RST
	// crossed it (for FINs, a simultaneous close).
	term    [2]bool
	lead    leadSegment
	crossed bool
	// awaitACK marks a side whose FIN was sent again and not yet answered
	// by a pure ACK of the other side: that ACK may come after the close
	// completed (Tracer.lateOf).
	awaitACK [2]bool
}

// leadSegment is what the crossing rule needs of a close's first FIN or
// RST.
type leadSegment struct {
	from   side
	rst    bool
	hasAck bool
	finEnd uint32 // the ACK that acknowledges it, for a FIN
	ack    uint32
}

// crossedBy reports whether f, the first FIN or RST of the side that did
// not send l, crossed l: it left before l arrived, so the wire order at
// tund's end says nothing of who started (the close's initiator is then
// SideBoth). After a RST anything crossed it: a RST is never answered
// (RFC 9293 §3.10.7.4), and neither end sends more for a connection once it
// has read the other's RST. A FIN or RST that does not acknowledge l's FIN
// had not seen it, unless it is the RST that answers that FIN for a
// connection its sender does not have (no ACK, and the FIN's ACK field as
// its sequence number, RFC 9293 §3.10.7.1).
func (l leadSegment) crossedBy(f wire.Fields) bool {
	switch {
	case l.rst:
		return true
	case f.Flags&header.TCPFlagAck != 0:
		return !wire.SeqGE(f.Ack, l.finEnd)
	}
	return !(f.Flags&header.TCPFlagRst != 0 && l.hasAck && f.Seq == l.ack)
}

// noteTerm follows the sides' first FINs and RSTs for the crossing rule and
// reports whether f crossed the lead. It is told of every such segment that
// crossed the wire, including a peer's that loss-in kept from the stack.
func (cs *closeSides) noteTerm(f wire.Fields, from side) bool {
	if f.Flags&(header.TCPFlagFin|header.TCPFlagRst) == 0 || cs.term[from] {
		return false
	}
	cs.term[from] = true
	if !cs.term[from.other()] {
		cs.lead = leadSegment{from: from, rst: f.Flags&header.TCPFlagRst != 0, hasAck: f.Flags&header.TCPFlagAck != 0,
			finEnd: f.Seq + uint32(f.PayloadLen) + 1, ack: f.Ack}
		return false
	}
	cs.crossed = cs.lead.crossedBy(f)
	return cs.crossed
}

func newCloseSides(now time.Time) closeSides {
	return closeSides{state: [2]tcpstate.State{tcpstate.Established, tcpstate.Established}, since: [2]time.Time{now, now}}
}

// stateChange is a side leaving a state it entered at since.
type stateChange struct {
	side     side
	from, to tcpstate.State
	since    time.Time
}

// segmentEffects is what one segment did to the close.
type segmentEffects struct {
	changes [4]stateChange
	n       int
	finRetx bool // a FIN sent again
	ackRetx bool // a pure ACK of a FIN that the sender had already acknowledged
	crossed bool // the first FIN or RST of its side, which crossed the lead
	// skippedCloseWait: the sender's FIN crossed one that the tracer saw
	// first; it was never in the CLOSE-WAIT that the tracer had guessed.
	skippedCloseWait bool
}

func (e *segmentEffects) add(c stateChange) {
	if e.n < len(e.changes) {
		e.changes[e.n] = c
		e.n++
	}
}

func (cs *closeSides) move(s side, table *transitions, now time.Time, eff *segmentEffects) {
	next := table[cs.state[s]]
	if next == cs.state[s] {
		return
	}
	cs.set(s, next, now, eff)
}

// set moves side s to state to. A state that the same segment entered is
// no stay of its own: a FIN|ACK that acknowledges FIN-WAIT-1's FIN and
// carries the other FIN goes to TIME-WAIT (RFC 9293 §3.10.7.4), with no
// FIN-WAIT-2 between, and so one change is recorded, not two.
func (cs *closeSides) set(s side, to tcpstate.State, now time.Time, eff *segmentEffects) {
	for i := eff.n - 1; i >= 0; i-- {
		if c := &eff.changes[i]; c.side == s && c.to == cs.state[s] {
			c.to = to
			cs.state[s] = to
			return
		}
	}
	eff.add(stateChange{side: s, from: cs.state[s], to: to, since: cs.since[s]})
	cs.state[s], cs.since[s] = to, now
}

// apply follows one segment sent by from. A RST closes both sides.
func (cs *closeSides) apply(f wire.Fields, from side, now time.Time) segmentEffects {
	eff := segmentEffects{crossed: cs.noteTerm(f, from)}
	to := from.other()
	if f.Flags&header.TCPFlagRst != 0 {
		for _, s := range [2]side{tund, peerSide} {
			if cs.state[s] != tcpstate.Closed {
				eff.add(stateChange{side: s, from: cs.state[s], to: tcpstate.Closed, since: cs.since[s]})
				cs.state[s], cs.since[s] = tcpstate.Closed, now
			}
		}
		return eff
	}
	// The ACK first: a FIN|ACK can acknowledge the other FIN too.
	if cs.finSent[to] && f.Flags&header.TCPFlagAck != 0 && wire.SeqGE(f.Ack, cs.fin[to]+1) {
		pure := f.Flags == header.TCPFlagAck && f.PayloadLen == 0
		if pure {
			cs.awaitACK[to] = false
		}
		if cs.finAcked[to] {
			eff.ackRetx = pure
		} else {
			cs.finAcked[to] = true
			cs.carried[to] = f.Flags&header.TCPFlagFin != 0 || f.PayloadLen > 0
			cs.move(to, &onFINAcked, now, &eff)
		}
	}
	if f.Flags&header.TCPFlagFin != 0 {
		finSeq := f.Seq + uint32(f.PayloadLen)
		if cs.finSent[from] {
			eff.finRetx = cs.fin[from] == finSeq
			cs.awaitACK[from] = cs.awaitACK[from] || eff.finRetx
		} else {
			cs.fin[from], cs.finSent[from] = finSeq, true
			if eff.crossed && cs.state[from] == tcpstate.CloseWait {
				// from sent this FIN before the other reached its stack (the
				// tracer sees a FIN arrive before the stack reads it), so it
				// was never in CLOSE-WAIT: it went from ESTABLISHED to
				// FIN-WAIT-1, and to CLOSING on the other FIN, at once.
				eff.skippedCloseWait = true
				eff.add(stateChange{side: from, from: tcpstate.Established, to: tcpstate.Closing, since: cs.since[from]})
				cs.state[from], cs.since[from] = tcpstate.Closing, now
				cs.move(to, &onFINReceived, now, &eff)
				return eff
			}
			cs.move(from, &onFINSent, now, &eff)
			cs.move(to, &onFINReceived, now, &eff)
		}
	}
	return eff
}
