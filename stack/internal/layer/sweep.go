package layer

import "time"

// Sweep paces the clean-ups that layers make under their own lock while
// they handle a segment: forgetting entries whose time is up costs a walk
// over the table, so it is made at most once a second.
type Sweep struct {
	last time.Time
}

// sweepEvery is the pace of a Sweep.
const sweepEvery = time.Second

// Due reports whether a clean-up is due at now, and if so counts it done.
func (s *Sweep) Due(now time.Time) bool {
	if now.Sub(s.last) < sweepEvery {
		return false
	}
	s.last = now
	return true
}
