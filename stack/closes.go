package stack

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// recentCloses is how many close records the stack keeps for /closes.
const recentCloses = 1024

// closeLog keeps the recent close records and the close-path statistics,
// and hands each record to the subscribers. It never blocks the tracer: a
// subscriber that falls behind loses records.
type closeLog struct {
	mu     sync.Mutex
	ring   []*Close
	next   int
	lastID atomic.Uint64
	subs   map[chan *Close]struct{}
	// counters are counted without the lock; CloseStats renders them.
	counters closeCounters
}

// CloseStats are the close path's counters, as the tracer saw the wire.
type CloseStats struct {
	// Closes counts finished records by kind and initiator.
	Closes map[CloseKey]uint64
	// Resets counts RST segments by direction and reason.
	Resets map[ResetKey]uint64
	// Retransmits counts FINs and ACKs of FINs sent again, by side and
	// segment ("FIN" or "ACK").
	Retransmits map[RetransmitKey]uint64
	// FinalACKLost counts tund's final ACKs that did not reach the peer, as
	// far as tund can see: a FIN the peer sent again while tund was in
	// TIME-WAIT, or an ACK that --drop-final-ack dropped.
	FinalACKLost uint64
	// HalfClose counts what services' half-close policies did.
	HalfClose map[string]uint64
	// StateTimes are the times tund's side spent in each closing state.
	StateTimes map[string]*Histogram
	// SegmentsSent and SegmentsReceived count the TCP segments that crossed
	// the device, as a capture on it counts them: what tund sent once the
	// faults, the TIME-WAIT table and the merge had their say, and what
	// came in before --loss-in dropped any. gVisor's own counts (Stack.GVisor)
	// are taken above those layers.
	SegmentsSent, SegmentsReceived uint64
}

// CloseKey is what closes are counted by.
type CloseKey struct {
	Kind, Initiator string
}

// ResetKey is what RSTs are counted by: direction "sent" or "received",
// and the reason (see the Reset* constants).
type ResetKey struct {
	Direction, Reason string
}

// RetransmitKey is what close-path retransmissions are counted by.
type RetransmitKey struct {
	Side, Segment string
}

// Reasons for a RST, as tund tells them from the stack's state when the RST
// crossed the device.
const (
	ResetAbort        = "abort"         // sent: tund ended one of its connections (abortive close, unread data, a service's abort)
	ResetNoConnection = "no-connection" // sent: the segment was for a connection tund does not have (or no longer has); received: for one tund had forgotten
	ResetRefused      = "refused"       // sent: a SYN to a port without listener; received: the answer to tund's SYN
	ResetEstablished  = "established"   // received: the peer reset an open connection
	ResetClosing      = "closing"       // received: the peer reset a connection whose close had begun
	ResetTimeWait     = "time-wait"     // received: a RST for a connection in TIME-WAIT (RFC 1337)
)

// stateBuckets are the upper bounds, in seconds, of the time-in-state
// histograms: from a LAN round trip to Linux's 60 s FIN-WAIT-2 and
// TIME-WAIT and gVisor's 120 s limit.
var stateBuckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// Histogram is a cumulative-bucket histogram in the Prometheus sense.
type Histogram struct {
	Count   uint64
	Sum     float64            // seconds
	Buckets map[float64]uint64 // upper bound → observations at or below it
}

func newCloseLog() *closeLog {
	return &closeLog{subs: map[chan *Close]struct{}{}}
}

// newID numbers a record as it finishes. The tracer numbers it under its
// own lock, so that a TIME-WAIT entry can name it before it is filed.
func (l *closeLog) newID() uint64 { return l.lastID.Add(1) }

// add files a finished record and counts it.
func (l *closeLog) add(c *Close) {
	l.file(c)
	l.counters.countClose(c.Kind, c.Initiator)
}

// file files a finished record without counting it: the tracer counts a
// close whose initiator may still change (endedClose.countDue) once it is final.
func (l *closeLog) file(c *Close) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < recentCloses {
		l.ring = append(l.ring, c)
	} else {
		l.ring[l.next] = c
		l.next = (l.next + 1) % recentCloses
	}
	l.publishLocked(c)
}

// amend replaces a record that was filed already by a newer version of it
// (a replayed FIN in TIME-WAIT adds segments to a finished close). It is
// counted once, when it was first filed.
func (l *closeLog) amend(c *Close) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, old := range l.ring {
		if old.ID == c.ID {
			l.ring[i] = c
		}
	}
	l.publishLocked(c)
}

func (l *closeLog) publishLocked(c *Close) {
	for ch := range l.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

// record returns the filed record with the given ID, if it is still kept.
func (l *closeLog) record(id uint64) *Close {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.ring {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// Closes returns the recent close records, oldest first.
func (s *Stack) Closes() []*Close {
	l := s.closes
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Close, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

// CloseStats returns a copy of the close path's counters.
func (s *Stack) CloseStats() CloseStats {
	if s.tracer != nil {
		s.tracer.countDue(time.Now())
	}
	return s.closes.counters.snapshot()
}

// Tracing reports whether the close tracer runs (Config.NoTrace unset): the
// records, and the counts taken off the wire, exist only then.
func (s *Stack) Tracing() bool { return s.tracer != nil }

// StateBuckets returns the upper bounds of the time-in-state histograms.
func StateBuckets() []float64 { return slices.Clone(stateBuckets[:]) }

// SubscribeCloses returns a channel that receives each close record as it
// ends (and again, amended, if a replayed FIN adds to it), and a function
// to stop.
func (s *Stack) SubscribeCloses() (<-chan *Close, func()) {
	ch := make(chan *Close, 256)
	l := s.closes
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, ch)
			l.mu.Unlock()
		})
	}
}
