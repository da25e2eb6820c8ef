package tests

import (
	"fmt"
	"sync"
	"time"
)

// connWatch samples tund's connection table and flags any connection that
// stays in a closing state longer than that state's bound.
//
// A connection is its (state, local, remote) triple; it is timed from the
// first sample that shows it in a state to the last one that still does, so
// a stay is measured at most one period short. A 4-tuple that leaves the
// table and comes back later is timed afresh.
type connWatch struct {
	admin  *adminClient
	period time.Duration
	limits map[string]time.Duration

	mu         sync.Mutex
	seen       map[conn]time.Time // first sample showing each connection in its state
	longest    map[string]time.Duration
	peak       map[string]int
	violations []string
	samples    int
	errs       int
}

// closingStates are the RFC 9293 states a connection passes through when it
// closes, on tund's side.
var closingStates = []string{"FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK"}

func newConnWatch(a *adminClient, period time.Duration, limits map[string]time.Duration) *connWatch {
	return &connWatch{admin: a, period: period, limits: limits, seen: map[conn]time.Time{},
		longest: map[string]time.Duration{}, peak: map[string]int{}}
}

// run samples until stop is closed.
func (w *connWatch) run(stop <-chan struct{}) {
	tick := time.NewTicker(w.period)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			w.sample()
		}
	}
}

func (w *connWatch) sample() {
	cs, err := w.admin.conns()
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		// A read that failed under load is a gap, not a finding; too many
		// of them would make the watch meaningless, and the test checks.
		w.errs++
		return
	}
	w.samples++
	present := make(map[conn]bool, len(cs))
	count := map[string]int{}
	for _, c := range cs {
		present[c] = true
		count[c.State]++
		limit, watched := w.limits[c.State]
		if !watched {
			continue
		}
		first, ok := w.seen[c]
		if !ok {
			w.seen[c] = now
			continue
		}
		stay := now.Sub(first)
		w.longest[c.State] = max(w.longest[c.State], stay)
		if stay > limit {
			w.violations = append(w.violations, fmt.Sprintf("%s %s <- %s: at least %v in %s (bound %v)",
				now.Format("15:04:05.000"), c.Local, c.Remote, stay.Round(time.Millisecond), c.State, limit))
			// Time it afresh so that one stuck connection is not reported
			// at every sample.
			w.seen[c] = now
		}
	}
	for c := range w.seen {
		if !present[c] {
			delete(w.seen, c)
		}
	}
	for s, n := range count {
		w.peak[s] = max(w.peak[s], n)
	}
}

// report returns what the watch found.
func (w *connWatch) report() (samples, errs int, longest map[string]time.Duration, peak map[string]int, violations []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.errs, w.longest, w.peak, append([]string(nil), w.violations...)
}
