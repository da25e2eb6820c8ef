// Package faults is the close-path layer that injects faults on tund's
// side of the wire: a lost final ACK, a lost, late or missing FIN, random
// loss each way. It tests how peers cope with what a real network or a
// buggy server does to a close.
package faults

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Fault names, as close records and Stats name them, and as flags and
// service options spell them.
const (
	// DropFinalACK: tund's final ACK, the pure ACK of the peer's FIN
	// that tund sends after its own FIN went out, never reaches the wire.
	// The peer stays in LAST-ACK (or CLOSING) and retransmits its FIN,
	// which tund, in TIME-WAIT, acknowledges again (RFC 9293 §3.10.7.4).
	DropFinalACK = "drop-final-ack"
	// DropFIN: a FIN tund sends is lost; gVisor retransmits it after
	// its RTO.
	DropFIN = "drop-fin"
	// DelayFIN: every FIN tund sends goes out late.
	DelayFIN = "delay-fin"
	// NoFIN: tund's FINs never reach the wire. The peer sees what a
	// service that never closes (a CLOSE-WAIT leak) shows it: its own FIN
	// acknowledged, and then nothing, in FIN-WAIT-2 until its own timeout.
	NoFIN = "no-fin"
	// LossIn and LossOut drop TCP segments at random, from the
	// peer to tund and from tund to the peer.
	LossIn  = "loss-in"
	LossOut = "loss-out"
)

// Names lists the faults in the order metrics report them.
var Names = []string{DropFinalACK, DropFIN, DelayFIN, NoFIN, LossIn, LossOut}

// Chance is how often a fault strikes: the first time in each connection
// (Once), or each time with probability P. The zero Chance never strikes.
type Chance struct {
	Once bool
	P    float64
}

// ParseChance parses "once", a probability such as 0.25, or a percentage
// such as 25%; "off" (or 0) is the Chance that never strikes, so that a
// fault set while tund runs can be cleared the way it was set.
func ParseChance(s string) (Chance, error) {
	switch s {
	case "once":
		return Chance{Once: true}, nil
	case "off":
		return Chance{}, nil
	}
	p, err := ParseProbability(s)
	if err != nil {
		return Chance{}, fmt.Errorf("%q: want once, off, or a probability in [0, 1] such as 0.3 or 30%%", s)
	}
	return Chance{P: p}, nil
}

// ParseProbability parses a probability in [0, 1], such as 0.05 or 5%.
func ParseProbability(s string) (float64, error) {
	scale := 1.0
	if v, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = v, 100
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil || p < 0 || p/scale > 1 || p != p {
		return 0, fmt.Errorf("%q: want a probability in [0, 1] such as 0.05 or 5%%", s)
	}
	return p / scale, nil
}

// IsZero reports a Chance that never strikes.
func (c Chance) IsZero() bool { return !c.Once && c.P == 0 }

// String spells the Chance as flags take it: once, off, or the
// probability.
func (c Chance) String() string {
	switch {
	case c.Once:
		return "once"
	case c.P == 0:
		return "off"
	}
	return strconv.FormatFloat(c.P, 'g', -1, 64)
}

// strikes reports whether the fault strikes now; struck says whether a
// once-fault already struck in this connection.
func (c Chance) strikes(struck bool) bool {
	if c.Once {
		return !struck
	}
	return c.P > 0 && rand.Float64() < c.P
}

// Set is the faults of one port (or of every port): drops and delays of
// the segments tund sends, and losses each way. The tracer records what the
// wire carries and notes what a fault took away (package stack's doc draws
// the order of the layers).
type Set struct {
	DropFinalACK Chance
	DropFIN      Chance
	DelayFIN     time.Duration
	NoFIN        bool
	// LossIn and LossOut are probabilities of dropping any TCP segment
	// from the peer and to the peer.
	LossIn, LossOut float64
}

// Validate reports a fault that no flag could have set: a probability
// outside [0, 1], a negative delay.
func (f Set) Validate() error {
	for _, c := range []struct {
		name string
		p    float64
	}{{DropFinalACK, f.DropFinalACK.P}, {DropFIN, f.DropFIN.P}, {LossIn, f.LossIn}, {LossOut, f.LossOut}} {
		if !(c.p >= 0 && c.p <= 1) {
			return fmt.Errorf("%s wants a probability in [0, 1], not %v", c.name, c.p)
		}
	}
	if f.DelayFIN < 0 {
		return fmt.Errorf("%s must not be negative (%v)", DelayFIN, f.DelayFIN)
	}
	return nil
}

// IsZero reports that no fault is set.
func (f Set) IsZero() bool { return f == Set{} }

// String lists the faults set, as service options spell them.
func (f Set) String() string {
	var s []string
	if !f.DropFinalACK.IsZero() {
		s = append(s, DropFinalACK+"="+f.DropFinalACK.String())
	}
	if !f.DropFIN.IsZero() {
		s = append(s, DropFIN+"="+f.DropFIN.String())
	}
	if f.DelayFIN > 0 {
		s = append(s, DelayFIN+"="+f.DelayFIN.String())
	}
	if f.NoFIN {
		s = append(s, NoFIN)
	}
	if f.LossIn > 0 {
		s = append(s, LossIn+"="+strconv.FormatFloat(f.LossIn, 'g', -1, 64))
	}
	if f.LossOut > 0 {
		s = append(s, LossOut+"="+strconv.FormatFloat(f.LossOut, 'g', -1, 64))
	}
	return strings.Join(s, "/")
}

// follows reports faults that need to know, per connection, which FINs went
// out: the final ACK is only final after tund's FIN, and a once-fault
// strikes once per connection.
func (f Set) follows() bool { return !f.DropFinalACK.IsZero() || f.DropFIN.Once }

// Stats counts the segments each fault dropped or delayed.
type Stats struct {
	counts [6]atomic.Uint64 // in Names order
}

// Count returns how often the named fault struck.
func (s *Stats) Count(name string) uint64 {
	for i, n := range Names {
		if n == name {
			return s.counts[i].Load()
		}
	}
	return 0
}

func (s *Stats) add(name string) {
	for i, n := range Names {
		if n == name {
			s.counts[i].Add(1)
			return
		}
	}
}

// Parse sets the fault named key (DropFIN, ...) from its textual value,
// as a service option or a flag spells it: a Chance for the drops, a
// duration for delay-fin, a probability for the losses, nothing (or true)
// for no-fin. known is false for a key that names no fault.
func (f *Set) Parse(key, value string) (known bool, err error) {
	switch key {
	case DropFinalACK:
		f.DropFinalACK, err = ParseChance(value)
	case DropFIN:
		f.DropFIN, err = ParseChance(value)
	case DelayFIN:
		d, perr := time.ParseDuration(value)
		if perr != nil || d < 0 {
			err = fmt.Errorf("%q: want a duration such as 300ms", value)
		}
		f.DelayFIN = d
	case NoFIN:
		switch value {
		case "", "true":
			f.NoFIN = true
		case "false":
			f.NoFIN = false
		default:
			err = fmt.Errorf("%q: takes no value", value)
		}
	case LossIn:
		f.LossIn, err = ParseProbability(value)
	case LossOut:
		f.LossOut, err = ParseProbability(value)
	default:
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("%s=%w", key, err)
	}
	return true, nil
}
