package stack

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
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

// The RFC 9293 §3.3.2 transitions of the close, by what causes them: the
// side's own FIN leaving, the other side's FIN arriving, and the ACK of the
// side's own FIN arriving. A state missing from a table does not move.
var (
	onFINSent     = map[string]string{"ESTABLISHED": "FIN-WAIT-1", "CLOSE-WAIT": "LAST-ACK"}
	onFINReceived = map[string]string{"ESTABLISHED": "CLOSE-WAIT", "FIN-WAIT-1": "CLOSING", "FIN-WAIT-2": "TIME-WAIT"}
	onFINAcked    = map[string]string{"FIN-WAIT-1": "FIN-WAIT-2", "CLOSING": "TIME-WAIT", "LAST-ACK": "CLOSED"}
)

// closeSides follows both sides of a close through the RFC 9293 states, as
// the segments on the wire imply them. A segment changes the state of its
// sender when it leaves and of its receiver when it arrives; the tracer sees
// tund's segments as they leave and the peer's as they arrive, so tund's
// states and their times are exact, and the peer's are tund's view of them.
type closeSides struct {
	state    [2]string
	since    [2]time.Time // when each side entered its state
	fin      [2]uint32    // sequence number of each side's FIN
	finSent  [2]bool
	finAcked [2]bool
	// first marks a side whose FIN left before the other's arrived; both
	// are first in a simultaneous close.
	first [2]bool
}

func newCloseSides(now time.Time) closeSides {
	return closeSides{state: [2]string{"ESTABLISHED", "ESTABLISHED"}, since: [2]time.Time{now, now}}
}

// stateChange is a side leaving a state it entered at since.
type stateChange struct {
	side     side
	from, to string
	since    time.Time
}

// segmentEffects is what one segment did to the close.
type segmentEffects struct {
	changes [4]stateChange
	n       int
	finRetx bool // a FIN sent again
	ackRetx bool // a pure ACK of a FIN that the sender had already acknowledged
}

func (e *segmentEffects) add(c stateChange) {
	if e.n < len(e.changes) {
		e.changes[e.n] = c
		e.n++
	}
}

func (cs *closeSides) move(s side, table map[string]string, now time.Time, eff *segmentEffects) {
	next, ok := table[cs.state[s]]
	if !ok {
		return
	}
	eff.add(stateChange{side: s, from: cs.state[s], to: next, since: cs.since[s]})
	cs.state[s], cs.since[s] = next, now
}

// apply follows one segment sent by from. A RST closes both sides.
func (cs *closeSides) apply(f tcpFields, from side, now time.Time) segmentEffects {
	var eff segmentEffects
	to := from.other()
	if f.flags&header.TCPFlagRst != 0 {
		for _, s := range []side{tund, peerSide} {
			if cs.state[s] != "CLOSED" {
				eff.add(stateChange{side: s, from: cs.state[s], to: "CLOSED", since: cs.since[s]})
				cs.state[s], cs.since[s] = "CLOSED", now
			}
		}
		return eff
	}
	// The ACK first: a FIN|ACK can acknowledge the other FIN too.
	if cs.finSent[to] && f.flags&header.TCPFlagAck != 0 && seqGE(f.ack, cs.fin[to]+1) {
		if cs.finAcked[to] {
			eff.ackRetx = f.flags == header.TCPFlagAck && f.payloadLen == 0
		} else {
			cs.finAcked[to] = true
			cs.move(to, onFINAcked, now, &eff)
		}
	}
	if f.flags&header.TCPFlagFin != 0 {
		finSeq := f.seq + uint32(f.payloadLen)
		if cs.finSent[from] {
			eff.finRetx = cs.fin[from] == finSeq
		} else {
			cs.fin[from], cs.finSent[from] = finSeq, true
			switch {
			case !cs.finSent[to]:
				cs.first[from] = true
			case !cs.finAcked[to]:
				// This FIN does not acknowledge the other one: they crossed.
				cs.first[from], cs.first[to] = true, true
			}
			cs.move(from, onFINSent, now, &eff)
			cs.move(to, onFINReceived, now, &eff)
		}
	}
	return eff
}

// closingStates are the states whose durations tund measures for its side.
var closingStates = []string{"FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK"}
