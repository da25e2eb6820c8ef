package closes

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tund/tund/stack/tcpstate"
)

// Stats are the close path's counters, as the tracer saw the wire.
type Stats struct {
	// Closes counts finished records by kind and initiator.
	Closes map[Key]uint64
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
	// SegmentsResent counts the segments tund sent again (data, FINs) that
	// crossed the device: gVisor's retransmissions less those a fault
	// dropped, as a capture on the device counts them.
	SegmentsResent uint64
}

// Key is what closes are counted by.
type Key struct {
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

// StateBuckets returns the upper bounds of the time-in-state histograms.
func StateBuckets() []float64 { return slices.Clone(stateBuckets[:]) }

// Histogram is a cumulative-bucket histogram in the Prometheus sense.
type Histogram struct {
	Count   uint64
	Sum     float64            // seconds
	Buckets map[float64]uint64 // upper bound → observations at or below it
}

// Half-close policy actions, as services report them (Log.CountHalfClose).
const (
	HalfCloseAllowed = "allowed" // the service went on sending after the peer's FIN
	HalfCloseClosed  = "closed"  // the service closed at the peer's FIN
	HalfCloseTimeout = "timeout" // the service closed when the half-open time ran out
)

// closeCounters are the close path's statistics as arrays of atomic
// counters indexed by small enums, so that the tracer counts with an atomic
// add: no lock, no closure, no map hashing per close. snapshot renders them
// as Stats, with the maps and names that /metrics and the tests read.
type closeCounters struct {
	closes       [len(kindNames)][len(initiators)]atomic.Uint64 // kind, initiator
	resets       [2][len(resetReasons)]atomic.Uint64
	retransmits  [2][2]atomic.Uint64 // side, FIN or ACK
	finalACKLost atomic.Uint64
	halfClose    [len(halfCloseActions)]atomic.Uint64
	states       [len(closingStates)]stateHistogram
	// segments counts every TCP segment that crossed the device, by the
	// side that sent it: the wire's count, beneath tund's layers.
	segments [2]atomic.Uint64
	// retransmitted counts tund's segments that TCP sent again and that
	// crossed the device (gVisor patch 0015 marks them).
	retransmitted atomic.Uint64

	// other counts what has no index above (none of the documented kinds,
	// reasons or actions): it should stay empty, and costs a lock if not.
	mu         sync.Mutex
	otherClose map[Key]uint64
	otherReset map[ResetKey]uint64
	otherHalf  map[string]uint64
}

// closingStates are the states whose durations tund measures for its
// side; closingIndex maps a state to its index there, -1 for the others.
var (
	closingStates = [...]tcpstate.State{tcpstate.FinWait1, tcpstate.FinWait2, tcpstate.Closing, tcpstate.TimeWait, tcpstate.CloseWait, tcpstate.LastAck}
	closingIndex  = func() (index [tcpstate.Count]int8) {
		for s := range index {
			index[s] = -1
		}
		for i, s := range closingStates {
			index[s] = int8(i)
		}
		return index
	}()
)

// kindNames are the Record.Kind values, in counter order.
var kindNames = [...]string{KindFourWay, KindThreeWay, KindSimultaneous, KindReset, KindFinWait2Timeout,
	KindRetransmitLimit, KindHalfClosePolicy, KindUnfinished}

// initiators are the Record.Initiator values, in counter order.
var initiators = [...]string{SideTund, SidePeer, SideBoth}

// resetReasons are the Reset* reasons, in counter order.
var resetReasons = [...]string{ResetAbort, ResetNoConnection, ResetRefused, ResetEstablished, ResetClosing, ResetTimeWait}

// resetDirections are ResetKey.Direction values: a RST tund sent, and one
// it received.
var resetDirections = [2]string{"sent", "received"}

// retransmitSegments are RetransmitKey.Segment values.
var retransmitSegments = [2]string{"FIN", "ACK"}

var halfCloseActions = [...]string{HalfCloseAllowed, HalfCloseClosed, HalfCloseTimeout}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

func (c *closeCounters) countClose(kind, initiator string) {
	if k, i := indexOf(kindNames[:], kind), indexOf(initiators[:], initiator); k >= 0 && i >= 0 {
		c.closes[k][i].Add(1)
		return
	}
	c.mu.Lock()
	if c.otherClose == nil {
		c.otherClose = map[Key]uint64{}
	}
	c.otherClose[Key{kind, initiator}]++
	c.mu.Unlock()
}

// countReset counts a RST that from sent (SideTund: "sent").
func (c *closeCounters) countReset(from side, reason string) {
	dir := 1
	if from == tund {
		dir = 0
	}
	if r := indexOf(resetReasons[:], reason); r >= 0 {
		c.resets[dir][r].Add(1)
		return
	}
	c.mu.Lock()
	if c.otherReset == nil {
		c.otherReset = map[ResetKey]uint64{}
	}
	c.otherReset[ResetKey{resetDirections[dir], reason}]++
	c.mu.Unlock()
}

// countRetransmit counts a FIN (ack false) or a pure ACK of a FIN (ack
// true) that from sent again.
func (c *closeCounters) countRetransmit(from side, ack bool) {
	i := 0
	if ack {
		i = 1
	}
	c.retransmits[from][i].Add(1)
}

func (c *closeCounters) countHalfClose(action string) {
	if a := indexOf(halfCloseActions[:], action); a >= 0 {
		c.halfClose[a].Add(1)
		return
	}
	c.mu.Lock()
	if c.otherHalf == nil {
		c.otherHalf = map[string]uint64{}
	}
	c.otherHalf[action]++
	c.mu.Unlock()
}

// observe counts d spent by tund's side in state; states other than the
// closing ones are not timed.
func (c *closeCounters) observe(state tcpstate.State, d time.Duration) {
	if i := closingIndex[state]; i >= 0 {
		c.states[i].observe(d)
	}
}

// stateHistogram counts observations per bucket (not cumulated: one add
// per observation), the last bucket being +Inf, and their sum in ns.
type stateHistogram struct {
	buckets [len(stateBuckets) + 1]atomic.Uint64
	sumNs   atomic.Int64
}

func (h *stateHistogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(stateBuckets) && s > stateBuckets[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNs.Add(int64(d))
}

// render returns the histogram as Prometheus reads it: cumulative buckets,
// every bound present. Count is the sum of the buckets read, so the two
// always agree.
func (h *stateHistogram) render() *Histogram {
	out := &Histogram{Buckets: make(map[float64]uint64, len(stateBuckets))}
	for i, b := range stateBuckets {
		out.Count += h.buckets[i].Load()
		out.Buckets[b] = out.Count
	}
	out.Count += h.buckets[len(stateBuckets)].Load()
	out.Sum = time.Duration(h.sumNs.Load()).Seconds()
	return out
}

// snapshot renders the counters. Like the maps the counters once were,
// Closes, Resets, Retransmits and HalfClose hold only what was counted;
// StateTimes holds every closing state.
func (c *closeCounters) snapshot() Stats {
	st := Stats{
		Closes:           map[Key]uint64{},
		Resets:           map[ResetKey]uint64{},
		Retransmits:      map[RetransmitKey]uint64{},
		HalfClose:        map[string]uint64{},
		StateTimes:       make(map[string]*Histogram, len(closingStates)),
		FinalACKLost:     c.finalACKLost.Load(),
		SegmentsSent:     c.segments[tund].Load(),
		SegmentsResent:   c.retransmitted.Load(),
		SegmentsReceived: c.segments[peerSide].Load(),
	}
	for k, kind := range kindNames {
		for s := range c.closes[k] {
			if n := c.closes[k][s].Load(); n > 0 {
				st.Closes[Key{kind, initiators[s]}] = n
			}
		}
	}
	for d, dir := range resetDirections {
		for r, reason := range resetReasons {
			if n := c.resets[d][r].Load(); n > 0 {
				st.Resets[ResetKey{dir, reason}] = n
			}
		}
	}
	for s := range c.retransmits {
		for i, seg := range retransmitSegments {
			if n := c.retransmits[s][i].Load(); n > 0 {
				st.Retransmits[RetransmitKey{side(s).String(), seg}] = n
			}
		}
	}
	for a, action := range halfCloseActions {
		if n := c.halfClose[a].Load(); n > 0 {
			st.HalfClose[action] = n
		}
	}
	for i, state := range closingStates {
		st.StateTimes[state.String()] = c.states[i].render()
	}
	c.mu.Lock()
	for k, n := range c.otherClose {
		st.Closes[k] += n
	}
	for k, n := range c.otherReset {
		st.Resets[k] += n
	}
	for k, n := range c.otherHalf {
		st.HalfClose[k] += n
	}
	c.mu.Unlock()
	return st
}
