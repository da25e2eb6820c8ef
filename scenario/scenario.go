// Package scenario reproduces the classic stories of the TCP close path,
// each in one command (`tund scenario NAME`): it makes a network namespace
// of its own, starts tund in it with the flags the story needs, drives a
// kernel client or server against it, watches the kernel's side with ss
// and tund's side through its admin server, and reports the ladder
// diagram of tund's close record, the states both sides went through, and
// what happened and why. A run that does not unfold as the story says is
// an error, so the scenarios double as end-to-end checks.
package scenario

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tund/tund/stack/closes"
)

// Scenario is one story of the close path.
type Scenario struct {
	Name    string // short name on the command line
	Title   string // one line: what it shows
	run     func(e *Env) error
	explain string // what happened and why; the run may add to it
}

// All returns the scenarios in the order of the project's list.
func All() []*Scenario {
	return []*Scenario{
		fourWay, threeWay, halfClose, lostFinalACK, noTimeWait,
		samePortReconnect, oldDuplicate, portExhaustion, longMergeWindow, simultaneous, closeWaitLeak,
	}
}

// Lookup returns the scenario called name, or nil.
func Lookup(name string) *Scenario {
	for _, s := range All() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Options are how a scenario is run.
type Options struct {
	// Tund is tund's binary, started in the scenario's namespace.
	Tund string
	// Pcap, if set, is where tund writes what crossed the TUN device; a
	// scenario that starts tund more than once writes PCAP, then
	// PCAP.2, PCAP.3, ... (Result.Pcaps lists them). Otherwise the capture
	// goes to a temporary file that is removed.
	Pcap string
}

// Result is what a run saw.
type Result struct {
	Name     string   `json:"name"`
	Title    string   `json:"title"`
	TundArgs []string `json:"tund_args"` // the flags of the last tund started
	// Records are tund's close records of the scenario's connections.
	Records []*closes.Record `json:"records"`
	// Observations are the states both sides showed at the moments that
	// matter, oldest first.
	Observations []Observation `json:"observations"`
	// Numbers are the scenario's measurements, by name.
	Numbers map[string]float64 `json:"numbers,omitempty"`
	// Runs are the configurations a comparing scenario ran (port
	// exhaustion).
	Runs  []Run    `json:"runs,omitempty"`
	Pcaps []string `json:"pcaps,omitempty"`
	// Wire is the scenario's segments as tund's pcap shows them, one line
	// each, for a scenario whose story is told by the wire.
	Wire        []string `json:"wire,omitempty"`
	Explanation string   `json:"explanation"`
	// Error says how the run failed or departed from the story.
	Error string `json:"error,omitempty"`
}

// Run runs the scenario. The namespace is removed and tund stopped
// before it returns, and also as soon as ctx ends (Ctrl-C). The result
// holds what was seen even when the run fails.
func (s *Scenario) Run(ctx context.Context, o Options) (*Result, error) {
	res := &Result{Name: s.Name, Title: s.Title, Numbers: map[string]float64{}}
	pcap := o.Pcap
	if pcap == "" {
		dir, err := os.MkdirTemp("", "tund-scenario-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		pcap = filepath.Join(dir, "tund.pcap")
	}
	e, err := newEnv(ctx, o.Tund, pcap, res)
	if err != nil {
		return res, err
	}
	stop := context.AfterFunc(ctx, e.Close)
	defer stop()
	defer e.Close()
	err = s.run(e)
	e.stopTund() // the pcap is complete once tund has exited
	if o.Pcap == "" {
		res.Pcaps = nil
	}
	res.Explanation = s.explain + res.Explanation
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		res.Error = err.Error()
		if log := e.TundLog(); log != "" && ctx.Err() == nil {
			err = fmt.Errorf("%w\ntund's log:\n%s", err, log)
		}
	}
	return res, err
}

// addRecord keeps a close record in the result.
func (e *Env) addRecord(r *closes.Record) { e.res.Records = append(e.res.Records, r) }

// note adds a sentence to the explanation, for what only the run knows.
func (e *Env) note(format string, args ...any) {
	e.res.Explanation += " " + fmt.Sprintf(format, args...)
}

// since is how long ago t was, rounded for reports.
func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
