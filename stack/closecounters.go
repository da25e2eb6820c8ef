package stack

import (
	"sync"
	"sync/atomic"
	"time"
)

// closeCounters are the close path's statistics as arrays of atomic
// counters indexed by small enums, so that the tracer counts with an atomic
// add: no lock, no closure, no map hashing per close. snapshot renders them
// as CloseStats, with the maps and names that /metrics and the tests read.
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

	// other counts what has no index above (none of the documented kinds,
	// reasons or actions): it should stay empty, and costs a lock if not.
	mu         sync.Mutex
	otherClose map[CloseKey]uint64
	otherReset map[ResetKey]uint64
	otherHalf  map[string]uint64
}

// kindNames are the Close.Kind values, in counter order.
var kindNames = [...]string{KindFourWay, KindThreeWay, KindSimultaneous, KindReset, KindFinWait2Timeout,
	KindRetransmitLimit, KindHalfClosePolicy, KindUnfinished}

// initiators are the Close.Initiator values, in counter order.
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
		c.otherClose = map[CloseKey]uint64{}
	}
	c.otherClose[CloseKey{kind, initiator}]++
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
func (c *closeCounters) observe(state tcpState, d time.Duration) {
	if i, ok := state.closingIndex(); ok {
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
func (c *closeCounters) snapshot() CloseStats {
	st := CloseStats{
		Closes:           map[CloseKey]uint64{},
		Resets:           map[ResetKey]uint64{},
		Retransmits:      map[RetransmitKey]uint64{},
		HalfClose:        map[string]uint64{},
		StateTimes:       make(map[string]*Histogram, len(closingStates)),
		FinalACKLost:     c.finalACKLost.Load(),
		SegmentsSent:     c.segments[tund].Load(),
		SegmentsReceived: c.segments[peerSide].Load(),
	}
	for k, kind := range kindNames {
		for s := range c.closes[k] {
			if n := c.closes[k][s].Load(); n > 0 {
				st.Closes[CloseKey{kind, initiators[s]}] = n
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
		st.StateTimes[state] = c.states[i].render()
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
