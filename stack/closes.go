package stack

import (
	"sync"
)

// recentCloses is how many close records the stack keeps for /closes.
const recentCloses = 1024

// closeLog keeps the recent close records, counts them, and hands each to
// the subscribers. It never blocks the tracer: a subscriber that falls
// behind loses records (and Dropped counts them).
type closeLog struct {
	mu      sync.Mutex
	ring    []*Close
	next    int
	subs    map[chan *Close]struct{}
	counts  map[CloseKey]uint64
	dropped uint64
}

// CloseKey is what closes are counted by.
type CloseKey struct {
	Kind, Initiator string
}

func newCloseLog() *closeLog {
	return &closeLog{subs: map[chan *Close]struct{}{}, counts: map[CloseKey]uint64{}}
}

func (l *closeLog) add(c *Close) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < recentCloses {
		l.ring = append(l.ring, c)
	} else {
		l.ring[l.next] = c
		l.next = (l.next + 1) % recentCloses
	}
	l.counts[CloseKey{c.Kind, c.Initiator}]++
	for ch := range l.subs {
		select {
		case ch <- c:
		default:
			l.dropped++
		}
	}
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

// CloseCounts returns how many closes ended, by kind and initiator.
func (s *Stack) CloseCounts() map[CloseKey]uint64 {
	l := s.closes
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[CloseKey]uint64, len(l.counts))
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

// SubscribeCloses returns a channel that receives each close record as it
// ends, and a function to stop.
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
