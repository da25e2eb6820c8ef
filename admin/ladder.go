package admin

import (
	"fmt"
	"io"
	"strings"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/link/faults"
	"github.com/tund/tund/stack/tcpstate"
)

// WriteLadder draws a close as the ladder diagram of the TCP textbooks:
// tund on the left, the peer on the right, one arrow per segment with its
// flags, sequence and acknowledgement numbers, and the time since the
// first FIN or RST.
func WriteLadder(w io.Writer, c *closes.Record) {
	const width = 52
	left := "tund " + c.Local.String()
	right := "peer " + c.Remote.String()
	switch {
	case c.Initiator == closes.SideBoth && c.Kind == closes.KindSimultaneous:
		fmt.Fprintf(w, "%s close, the FINs crossed", c.Kind)
	case c.Initiator == closes.SideBoth:
		fmt.Fprintf(w, "%s close, the two sides' first FIN or RST crossed", c.Kind)
	default:
		fmt.Fprintf(w, "%s close, started by %s", c.Kind, c.Initiator)
	}
	if c.ResetBy != "" {
		fmt.Fprintf(w, ", reset by %s", c.ResetBy)
	}
	fmt.Fprintf(w, ", %v", c.Duration().Round(1000))
	if c.FINRetransmits > 0 {
		fmt.Fprintf(w, ", %d FIN retransmission(s)", c.FINRetransmits)
	}
	if c.ACKRetransmits > 0 {
		fmt.Fprintf(w, ", %d ACK retransmission(s)", c.ACKRetransmits)
	}
	if c.FinalACKLost {
		fmt.Fprint(w, ", final ACK lost")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %-12s %-*s%s\n", "", width+3, left, right)
	fmt.Fprintf(w, "  %-12s  %*s  %s\n", tcpstate.Established, width+1, "", tcpstate.Established)
	for _, s := range c.Segments {
		// Flags as the textbooks spell them: FIN|ACK, ACK, RST.
		label := fmt.Sprintf("%s seq=%d ack=%d", tcpflag.Names(tcpflag.Parse(s.Flags)), s.Seq, s.Ack)
		if s.Len > 0 {
			label += fmt.Sprintf(" len=%d", s.Len)
		}
		pad := max(width-len(label)-4, 0)
		// A segment a fault dropped ends in an X where it was lost, as
		// textbooks draw a lost segment; one it held goes nowhere yet: it
		// is drawn again when it crosses the wire.
		head, tail, note := ">", "<", ""
		switch s.Fault {
		case "":
		case faults.DelayFIN:
			head, note = " ", "  held ("+s.Fault+")"
		default:
			head, tail, note = "X", "X", "  lost ("+s.Fault+")"
		}
		var arrow string
		if s.From == closes.SideTund {
			arrow = "-- " + label + " " + strings.Repeat("-", pad) + head
		} else {
			arrow = tail + strings.Repeat("-", pad) + " " + label + " --"
		}
		fmt.Fprintf(w, "  %-12s |%-*s| %-12s +%.3fms%s\n", s.TundState, width+1, arrow, s.PeerState, float64(s.At.Sub(c.Start).Microseconds())/1000, note)
	}
	if c.Truncated {
		fmt.Fprintln(w, "  (more segments not recorded)")
	}
}
