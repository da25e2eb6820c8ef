package rawpeer

import (
	"errors"
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/tcpflag"
)

// Seg is one segment of an exchange, as a report shows it: sequence and
// acknowledgment numbers relative to the ISN of the side that sent them
// (seq) and of the other side (ack), so that two runs compare.
type Seg struct {
	From     string        `json:"from"` // "peer" or "server"
	Flags    string        `json:"flags"`
	Seq      uint32        `json:"seq"`
	Ack      uint32        `json:"ack"`
	Len      int           `json:"len"`
	At       time.Duration `json:"at_ns"` // since the case began
	Replayed bool          `json:"replayed,omitempty"`
}

// String is the segment as the report prints it: p: or s:, the flags,
// seq/ack and the payload length.
func (s Seg) String() string {
	who := "p"
	if s.From == "server" {
		who = "s"
	}
	l := ""
	if s.Len > 0 {
		l = fmt.Sprintf("(%d)", s.Len)
	}
	return fmt.Sprintf("%s:%s %d/%d%s", who, s.Flags, s.Seq, s.Ack, l)
}

// Same reports whether two segments are the same but for their timing.
func (s Seg) Same(o Seg) bool {
	return s.From == o.From && s.Flags == o.Flags && s.Seq == o.Seq && s.Ack == o.Ack && s.Len == o.Len
}

// Exchange is one scripted connection of a peer and everything that
// crossed, both ways.
type Exchange struct {
	p      *Peer
	start  time.Time
	iss    uint32 // the peer's ISN
	irs    uint32 // the server's
	SndNxt uint32 // the peer's next sequence number
	RcvNxt uint32 // the server's next, as the peer has received it
	// Log is every segment that crossed, both ways, in order: what the
	// report shows and what two targets are compared on.
	Log []Seg
}

// NewExchange starts an exchange of p's; its time counts from now.
func NewExchange(p *Peer) *Exchange { return &Exchange{p: p, start: time.Now()} }

// ISS and IRS are the peer's ISN and the other side's.
func (x *Exchange) ISS() uint32 { return x.iss }
func (x *Exchange) IRS() uint32 { return x.irs }

func (x *Exchange) log(from string, flags header.TCPFlags, seq, ack uint32, n int) Seg {
	s := Seg{From: from, Flags: tcpflag.String(uint8(flags)), Len: n, At: time.Since(x.start)}
	if from == "peer" {
		s.Seq, s.Ack = seq-x.iss, ack-x.irs
	} else {
		s.Seq, s.Ack = seq-x.irs, ack-x.iss
	}
	if flags&header.TCPFlagAck == 0 {
		s.Ack = 0
	}
	x.Log = append(x.Log, s)
	return s
}

// SendAt sends a segment with absolute numbers.
func (x *Exchange) SendAt(flags header.TCPFlags, seq, ack uint32, payload []byte) ([]byte, error) {
	b, err := x.p.Send(flags, seq, ack, payload)
	if err == nil {
		x.log("peer", flags, seq, ack, len(payload))
	}
	return b, err
}

// Send sends a segment at SndNxt, acknowledging RcvNxt, and advances
// SndNxt past it.
func (x *Exchange) Send(flags header.TCPFlags, payload []byte) error {
	_, err := x.SendAt(flags, x.SndNxt, x.RcvNxt, payload)
	x.SndNxt += uint32(len(payload))
	if flags&(header.TCPFlagFin|header.TCPFlagSyn) != 0 {
		x.SndNxt++
	}
	return err
}

// Replay sends a packet sent before, again.
func (x *Exchange) Replay(b []byte) error {
	if err := x.p.Inject(b); err != nil {
		return err
	}
	t := header.TCP(b[header.IPv4MinimumSize:])
	x.log("peer", t.Flags(), t.SequenceNumber(), t.AckNumber(), len(b)-header.IPv4MinimumSize-int(t.DataOffset()))
	x.Log[len(x.Log)-1].Replayed = true
	return nil
}

// Recv returns the server's next segment within timeout, and moves
// RcvNxt past it when it is the next in order.
func (x *Exchange) Recv(timeout time.Duration) (Segment, error) {
	s, err := x.p.Next(timeout)
	if err != nil {
		return s, err
	}
	x.log("server", s.Flags, s.Seq, s.Ack, len(s.Payload))
	if s.Seq == x.RcvNxt && s.Flags&header.TCPFlagSyn == 0 {
		x.RcvNxt += uint32(len(s.Payload))
		if s.Flags&header.TCPFlagFin != 0 {
			x.RcvNxt++
		}
	}
	return s, nil
}

// Expect receives until a segment satisfies ok, and returns it; what
// comes before it is logged. what names it for the error.
func (x *Exchange) Expect(what string, timeout time.Duration, ok func(Segment) bool) (Segment, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := x.Recv(time.Until(deadline))
		if err != nil {
			return s, fmt.Errorf("want %s: %w", what, err)
		}
		if ok(s) {
			return s, nil
		}
	}
}

// Quiet receives for d and returns what came (nothing, for a peer that
// expects silence).
func (x *Exchange) Quiet(d time.Duration) ([]Segment, error) {
	var got []Segment
	deadline := time.Now().Add(d)
	for {
		s, err := x.Recv(time.Until(deadline))
		if errors.Is(err, ErrNoSegment) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, s)
	}
}

// Connect makes the handshake from ISN iss.
func (x *Exchange) Connect(iss uint32) error {
	x.iss, x.SndNxt = iss, iss
	if err := x.Send(header.TCPFlagSyn, nil); err != nil {
		return err
	}
	s, err := x.p.Next(3 * time.Second)
	if err != nil {
		return fmt.Errorf("no SYN-ACK: %w", err)
	}
	x.irs = s.Seq
	x.log("server", s.Flags, s.Seq, s.Ack, len(s.Payload))
	if s.Flags != header.TCPFlagSyn|header.TCPFlagAck || s.Ack != iss+1 {
		return fmt.Errorf("the SYN got %s ack %d, not a SYN-ACK", s.Flags, s.Ack)
	}
	x.RcvNxt = s.Seq + 1
	return x.Send(header.TCPFlagAck, nil)
}

// ReadToFIN reads what the other side sends up to its FIN, ACKing each
// segment as a client does, and returns the bytes.
func (x *Exchange) ReadToFIN(timeout time.Duration) ([]byte, error) {
	var data []byte
	for {
		from := x.RcvNxt
		s, err := x.Recv(timeout)
		if err != nil {
			return data, fmt.Errorf("waiting for the reply and the FIN (%d bytes so far): %w", len(data), err)
		}
		if has(s, header.TCPFlagRst) {
			return data, fmt.Errorf("reset (%d bytes so far)", len(data))
		}
		if s.Seq == from {
			data = append(data, s.Payload...)
		}
		if x.RcvNxt != from {
			if err := x.Send(header.TCPFlagAck, nil); err != nil {
				return data, err
			}
		}
		if has(s, header.TCPFlagFin) && x.RcvNxt != from {
			return data, nil
		}
	}
}

// Finish sends the peer's FIN, after the other side's, and waits for the
// final ACK.
func (x *Exchange) Finish(timeout time.Duration) error {
	if err := x.Send(header.TCPFlagFin|header.TCPFlagAck, nil); err != nil {
		return err
	}
	_, err := x.Expect("the final ACK", timeout, func(s Segment) bool { return has(s, header.TCPFlagAck) && s.Ack == x.SndNxt })
	return err
}

func has(s Segment, f header.TCPFlags) bool { return s.Flags&f != 0 }
