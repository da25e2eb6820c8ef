package admin

import (
	"fmt"
	"io"
	"strings"

	"github.com/tund/tund/stack"
)

// WriteLadder draws a close as the ladder diagram of the TCP textbooks:
// tund on the left, the peer on the right, one arrow per segment with its
// flags, sequence and acknowledgement numbers, and the time since the
// first FIN or RST.
func WriteLadder(w io.Writer, c *stack.Close) {
	const width = 52
	left := "tund " + c.Local.String()
	right := "peer " + c.Remote.String()
	fmt.Fprintf(w, "%s close, started by %s", c.Kind, c.Initiator)
	if c.ResetBy != "" {
		fmt.Fprintf(w, ", reset by %s", c.ResetBy)
	}
	fmt.Fprintf(w, ", %v", c.Duration().Round(1000))
	if c.FINRetransmits > 0 {
		fmt.Fprintf(w, ", %d FIN retransmission(s)", c.FINRetransmits)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %-12s %-*s%s\n", "", width+3, left, right)
	fmt.Fprintf(w, "  %-12s  %*s  %s\n", "ESTABLISHED", width+1, "", "ESTABLISHED")
	states := newLadderStates()
	for _, s := range c.Segments {
		label := fmt.Sprintf("%s seq=%d ack=%d", flagNames(s.Flags), s.Seq, s.Ack)
		if s.Len > 0 {
			label += fmt.Sprintf(" len=%d", s.Len)
		}
		pad := max(width-len(label)-4, 0)
		var arrow string
		if s.From == stack.SideTund {
			arrow = "-- " + label + " " + strings.Repeat("-", pad) + ">"
		} else {
			arrow = "<" + strings.Repeat("-", pad) + " " + label + " --"
		}
		tundState, peerState := states.next(s)
		fmt.Fprintf(w, "  %-12s |%-*s| %-12s +%.3fms\n", tundState, width+1, arrow, peerState, float64(s.At.Sub(c.Start).Microseconds())/1000)
	}
	if c.Truncated {
		fmt.Fprintln(w, "  (more segments not recorded)")
	}
}

// flagNames spells flags as the textbooks do: FIN|ACK, ACK, RST.
func flagNames(flags string) string {
	var names []string
	for _, f := range flags {
		switch f {
		case 'S':
			names = append(names, "SYN")
		case 'F':
			names = append(names, "FIN")
		case 'R':
			names = append(names, "RST")
		case 'P':
			names = append(names, "PSH")
		case 'A':
			names = append(names, "ACK")
		}
	}
	return strings.Join(names, "|")
}

// The RFC 9293 §3.3.2 transitions of the close, by what causes them: the
// side's own FIN leaving, the other side's FIN arriving, and the ACK of the
// side's own FIN arriving.
var (
	onFINSent     = map[string]string{"ESTABLISHED": "FIN-WAIT-1", "CLOSE-WAIT": "LAST-ACK"}
	onFINReceived = map[string]string{"ESTABLISHED": "CLOSE-WAIT", "FIN-WAIT-1": "CLOSING", "FIN-WAIT-2": "TIME-WAIT"}
	onFINAcked    = map[string]string{"FIN-WAIT-1": "FIN-WAIT-2", "CLOSING": "TIME-WAIT", "LAST-ACK": "CLOSED"}
)

// ladderStates follows the state of each side as the segments imply it, so
// that the ladder can name the state each side enters. A receiver's new
// state is shown on the row of the segment that causes it.
type ladderStates struct {
	state map[string]string
	fin   map[string]uint32 // each side's FIN sequence number, once sent
}

func newLadderStates() *ladderStates {
	return &ladderStates{
		state: map[string]string{stack.SideTund: "ESTABLISHED", stack.SidePeer: "ESTABLISHED"},
		fin:   map[string]uint32{},
	}
}

// move applies a transition table to side, if it has an entry.
func (l *ladderStates) move(side string, table map[string]string) {
	if next, ok := table[l.state[side]]; ok {
		l.state[side] = next
	}
}

// next applies one segment and returns the states that changed ("" for
// none): tund's, then the peer's.
func (l *ladderStates) next(s stack.Segment) (tund, peer string) {
	from, to := s.From, stack.SidePeer
	if from == stack.SidePeer {
		to = stack.SideTund
	}
	before := map[string]string{stack.SideTund: l.state[stack.SideTund], stack.SidePeer: l.state[stack.SidePeer]}
	if strings.Contains(s.Flags, "R") {
		l.state[from], l.state[to] = "CLOSED", "CLOSED"
	} else {
		// The ACK first: a FIN|ACK can acknowledge the other FIN too.
		if fin, sent := l.fin[to]; sent && strings.Contains(s.Flags, "A") && int32(s.Ack-(fin+1)) >= 0 {
			l.move(to, onFINAcked)
		}
		if _, sent := l.fin[from]; strings.Contains(s.Flags, "F") && !sent {
			l.fin[from] = s.Seq + uint32(s.Len)
			l.move(from, onFINSent)
			l.move(to, onFINReceived)
		}
	}
	changed := func(side string) string {
		if l.state[side] != before[side] {
			return l.state[side]
		}
		return ""
	}
	return changed(stack.SideTund), changed(stack.SidePeer)
}
