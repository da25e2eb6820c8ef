package client

import (
	"net/netip"
	"time"
)

// Close kinds, as Close.Kind reports them.
const (
	// KindFourWay: FIN, ACK, FIN, ACK.
	KindFourWay = "four-way"
	// KindThreeWay: FIN, FIN|ACK, ACK (RFC 9293 §3.6): the first FIN's
	// ACK rides on the second FIN or on data.
	KindThreeWay = "three-way"
	// KindSimultaneous: both FINs were sent before either arrived
	// (CLOSING).
	KindSimultaneous = "simultaneous"
	// KindReset: the close was ended by a RST.
	KindReset = "reset"
	// KindFinWait2Timeout: tund's FIN was acknowledged but the peer's FIN
	// did not come within the FIN-WAIT-2 timeout (fin-wait2); tund forgot
	// the connection, and answers a late FIN with RST.
	KindFinWait2Timeout = "fin-wait2-timeout"
	// KindRetransmitLimit: tund gave up retransmitting its FIN, which the
	// peer never acknowledged.
	KindRetransmitLimit = "retransmission-limit"
	// KindHalfClosePolicy: the peer half-closed and the service's
	// half-close policy (close, or a time limit) ended the connection.
	KindHalfClosePolicy = "half-close-policy"
	// KindUnfinished: the connection was forgotten before its close
	// completed.
	KindUnfinished = "unfinished"
)

// Sides of a connection, as Segment.From, Close.Initiator and
// Close.ResetBy name them.
const (
	SideTund = "tund"
	SidePeer = "peer"
	// SideBoth is the initiator of a close whose two sides' first FINs or
	// RSTs crossed: each left before the other arrived (for FINs, RFC
	// 9293 §3.6's simultaneous close), so neither end started it, and
	// neither end can tell which left first.
	SideBoth = "both"
)

// Close is the record of one connection's close, built by tund from the
// segments on the wire (the TUN device): who closed first, how, and the
// segments from the first FIN or RST to the end. It decodes an element of
// GET /closes.
type Close struct {
	// ID numbers the records in the order they finished; a record that
	// was amended (FinalACKLost) keeps its ID.
	ID     uint64         `json:"id"`
	Local  netip.AddrPort `json:"local"`  // tund's end
	Remote netip.AddrPort `json:"remote"` // the peer's end, as WaitClose's peer
	// Initiator is the side that sent the first FIN or RST: SideTund,
	// SidePeer, or SideBoth where the other side's crossed it.
	Initiator string `json:"initiator"`
	Kind      string `json:"kind"` // KindFourWay, ...
	// ResetBy names the side that sent the RST that ended the close: for
	// KindReset, and for KindFinWait2Timeout when a late FIN drew one;
	// empty otherwise.
	ResetBy string `json:"reset_by,omitempty"`
	// FINRetransmits counts FINs sent again by either side.
	FINRetransmits int `json:"fin_retransmits"`
	// ACKRetransmits counts pure ACKs of a FIN that their sender had
	// acknowledged already (a dup ACK of a retransmitted FIN, the ACK of a
	// FIN replayed in TIME-WAIT).
	ACKRetransmits int `json:"ack_retransmits"`
	// FinalACKLost reports that the peer sent its FIN again while tund was
	// in TIME-WAIT: tund's final ACK did not reach it. tund ACKed it again
	// and restarted 2 x MSL (RFC 9293 §3.10.7.4); the segments are added
	// to the record, which is filed again under the same ID.
	FinalACKLost bool `json:"final_ack_lost,omitempty"`
	// Start is when the first FIN or RST crossed the wire, End when the
	// last segment of the close did.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Segments are the segments of the close, in the order they crossed
	// the wire.
	Segments []Segment `json:"segments"`
	// Truncated reports that the close had more segments than a record
	// keeps (retransmissions past the first few dozen); the rest are left
	// out of Segments, though still counted.
	Truncated bool `json:"truncated,omitempty"`
}

// Duration is the time from the first FIN or RST to the last segment.
func (c *Close) Duration() time.Duration { return c.End.Sub(c.Start) }

// Segment is one TCP segment of a close, as it crossed the TUN device.
type Segment struct {
	At   time.Time `json:"at"`
	From string    `json:"from"` // SideTund or SidePeer
	// Flags spells the TCP flags as letters in the order S F R P A: "FA"
	// is FIN|ACK, "A" a pure ACK.
	Flags string `json:"flags"`
	Seq   uint32 `json:"seq"`
	Ack   uint32 `json:"ack"`
	Len   int    `json:"len"` // payload bytes
	// TundState and PeerState name the state a side entered with this
	// segment, if any ("FIN-WAIT-1", "TIME-WAIT", ... RFC 9293 §3.3.2),
	// as the wire implies it.
	TundState string `json:"tund_state,omitempty"`
	PeerState string `json:"peer_state,omitempty"`
	// Fault names the fault knob ("drop-fin", "loss-in", ...) that dropped
	// or delayed the segment; empty for a segment that passed untouched.
	// A dropped segment of tund's never reached the wire; a peer's dropped
	// by loss-in crossed it but never reached tund's stack.
	Fault string `json:"fault,omitempty"`
}
