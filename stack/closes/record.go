package closes

import (
	"net/netip"
	"time"
)

// Close kinds, as Record.Kind reports them.
const (
	KindFourWay      = "four-way"     // FIN, ACK, FIN, ACK
	KindThreeWay     = "three-way"    // FIN, FIN|ACK, ACK (RFC 9293 §3.6): the first FIN's ACK rides on the second FIN or on data
	KindSimultaneous = "simultaneous" // both FINs sent before either arrived (CLOSING)
	KindReset        = "reset"        // ended by a RST
	// KindFinWait2Timeout: tund's FIN was acknowledged but the peer's FIN
	// did not come within the FIN-WAIT-2 timeout; tund forgot the
	// connection, and answers a late FIN with RST.
	KindFinWait2Timeout = "fin-wait2-timeout"
	// KindRetransmitLimit: tund gave up retransmitting its FIN, which the
	// peer never acknowledged.
	KindRetransmitLimit = "retransmission-limit"
	// KindHalfClosePolicy: the peer half-closed and the service's
	// half-close policy (close, or a time limit) ended the connection.
	KindHalfClosePolicy = "half-close-policy"
	KindUnfinished      = "unfinished" // forgotten before it completed
)

// Sides of a connection, as Segment.From and Record.Initiator name them.
// SideBoth is the initiator of a close whose two sides' first FINs or RSTs
// crossed: each left before the other arrived (for FINs, RFC 9293 §3.6's
// simultaneous close), so neither end started it, and neither end can tell
// which left first (leadSegment.crossedBy).
const (
	SideTund = "tund"
	SidePeer = "peer"
	SideBoth = "both"
)

// Segment is one TCP segment of a close, as it crossed the TUN device.
type Segment struct {
	At    time.Time `json:"at"`
	From  string    `json:"from"` // "tund" or "peer"
	Flags string    `json:"flags"`
	Seq   uint32    `json:"seq"`
	Ack   uint32    `json:"ack"`
	Len   int       `json:"len"`
	// TundState and PeerState name the state a side entered with this
	// segment, if any (RFC 9293 §3.3.2), as the wire implies it.
	TundState string `json:"tund_state,omitempty"`
	PeerState string `json:"peer_state,omitempty"`
	// Fault names the fault (faults.DropFIN, ...) that dropped or delayed
	// the segment. A dropped segment of tund's never reached the wire; a
	// peer's dropped by loss-in crossed it but never reached the stack.
	Fault string `json:"fault,omitempty"`
}

// Record is the record of one connection's close, built from the segments
// on the wire: who closed first, how, and the segments from the first FIN
// or RST to the end.
type Record struct {
	// ID numbers the records in the order they finished; an amended
	// record keeps its ID.
	ID        uint64         `json:"id"`
	Local     netip.AddrPort `json:"local"`
	Remote    netip.AddrPort `json:"remote"`
	Initiator string         `json:"initiator"` // side that sent the first FIN or RST; both where the other side's crossed it (leadSegment.crossedBy)
	Kind      string         `json:"kind"`
	// ResetBy names the side that sent the RST that ended the close: for
	// KindReset, and for KindFinWait2Timeout when a late FIN drew one.
	ResetBy string `json:"reset_by,omitempty"`
	// FINRetransmits counts FINs sent again by either side.
	FINRetransmits int `json:"fin_retransmits"`
	// ACKRetransmits counts pure ACKs of a FIN that their sender had
	// acknowledged already (a dup ACK of a retransmitted FIN, the ACK of a
	// FIN replayed in TIME-WAIT).
	ACKRetransmits int `json:"ack_retransmits"`
	// FinalACKLost reports that the peer sent its FIN again while tund was
	// in TIME-WAIT: tund's final ACK did not reach it. tund ACKed it again
	// and restarted 2 x MSL (RFC 9293 §3.10.7.4); the segments are added to
	// the record, which is filed again.
	FinalACKLost bool      `json:"final_ack_lost,omitempty"`
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
	Segments     []Segment `json:"segments"`
	Truncated    bool      `json:"truncated,omitempty"`
}

// Duration is the time from the first FIN or RST to the last segment.
func (c *Record) Duration() time.Duration { return c.End.Sub(c.Start) }
