package closes

import (
	"sync"
	"sync/atomic"
)

// recentCloses is how many close records the stack keeps for /closes.
const recentCloses = 1024

// Log keeps the recent close records and the close-path statistics,
// and hands each record to the subscribers. It never blocks the tracer: a
// subscriber that falls behind loses records.
type Log struct {
	mu     sync.Mutex
	ring   []*Record
	next   int
	lastID atomic.Uint64
	subs   map[chan *Record]struct{}
	// counters are counted without the lock; Stats renders them.
	counters closeCounters
}

// NewLog returns an empty log.
func NewLog() *Log {
	return &Log{subs: map[chan *Record]struct{}{}}
}

// newID numbers a record as it finishes. The tracer numbers it under its
// own lock, so that a TIME-WAIT entry can name it before it is filed.
func (l *Log) newID() uint64 { return l.lastID.Add(1) }

// add files a finished record and counts it.
func (l *Log) add(c *Record) {
	l.file(c)
	l.counters.countClose(c.Kind, c.Initiator)
}

// file files a finished record without counting it: the tracer counts a
// close whose initiator may still change (endedClose.countDue) once it is final.
func (l *Log) file(c *Record) {
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
func (l *Log) amend(c *Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, old := range l.ring {
		if old.ID == c.ID {
			l.ring[i] = c
		}
	}
	l.publishLocked(c)
}

func (l *Log) publishLocked(c *Record) {
	for ch := range l.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

// record returns the filed record with the given ID, if it is still kept.
func (l *Log) record(id uint64) *Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.ring {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// Records returns the recent close records, oldest first.
func (l *Log) Records() []*Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Record, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

// Stats returns a copy of the close path's counters. A tracer that files
// in the log counts first what is due (see Tracer.CountDue).
func (l *Log) Stats() Stats { return l.counters.snapshot() }

// CountHalfClose counts what a service's half-close policy did
// (HalfCloseAllowed, ...).
func (l *Log) CountHalfClose(action string) { l.counters.countHalfClose(action) }

// Subscribe returns a channel that receives each close record as it ends
// (and again, amended, if a replayed FIN adds to it), and a function to
// stop. A subscriber that falls behind loses records: the log never blocks
// the tracer.
func (l *Log) Subscribe() (<-chan *Record, func()) {
	ch := make(chan *Record, 256)
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
