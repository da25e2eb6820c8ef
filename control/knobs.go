package control

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tund/tund/service"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/link/faults"
)

// Scope says where a knob can be set.
type Scope uint8

// Scopes: stack-wide, for one port (a service's own value), or both.
const (
	StackWide Scope = 1 << iota
	PerPort
	Both = StackWide | PerPort
)

// Knob is one setting that can change while tund runs. Its Name is the
// flag's; its values are spelled as the flag (or the --serve option) takes
// them.
type Knob struct {
	Name  string `json:"name"`
	Scope Scope  `json:"-"`
	// Reaches says which connections a change reaches: new ones only, or
	// open ones too, and from when.
	Reaches string `json:"reaches"`
	// Why, for a knob that cannot be set per port, says why not.
	Why string `json:"why,omitempty"`

	// set parses v into the stack's config or the services' defaults; get
	// spells the value back. Together they normalize a value ("1m" is
	// "1m0s").
	set func(c *stack.Config, d *service.Options, v string) error
	get func(c *stack.Config, d *service.Options) string
}

// Reaches, as the knobs say it.
const (
	reachesNew      = "new connections: each takes the value when its service accepts it"
	reachesSegments = "open connections too: every segment from the change on"
)

// Knobs are the settings that can change while tund runs, in the order
// tund get lists them.
var Knobs = []Knob{
	{Name: "msl", Scope: StackWide,
		Reaches: "connections that enter TIME-WAIT (or restart it, on a FIN sent again) after the change; one under way keeps its end",
		Why:     "2 x MSL is one value of the stack's TCP, read when a TIME-WAIT starts",
		set:     duration(func(c *stack.Config, _ *service.Options) *time.Duration { return &c.MSL }),
		get:     func(c *stack.Config, _ *service.Options) string { return c.MSL.String() }},
	{Name: "fin-wait2", Scope: Both, Reaches: reachesNew,
		set: duration(func(c *stack.Config, _ *service.Options) *time.Duration { return &c.FinWait2 }),
		get: func(c *stack.Config, _ *service.Options) string { return c.FinWait2.String() }},
	{Name: "fin-ack-merge", Scope: Both,
		Reaches: "open connections too: every peer FIN that arrives after the change",
		set:     duration(func(c *stack.Config, _ *service.Options) *time.Duration { return &c.FINACKMerge }),
		get:     func(c *stack.Config, _ *service.Options) string { return c.FINACKMerge.String() }},
	{Name: "delayed-ack", Scope: StackWide, Reaches: reachesNew,
		Why: "gVisor's TCP takes the delayed-ACK time from the stack-wide option as each connection is made",
		set: duration(func(c *stack.Config, _ *service.Options) *time.Duration { return &c.DelayedACK }),
		get: func(c *stack.Config, _ *service.Options) string { return c.DelayedACK.String() }},
	{Name: "time-wait-rst", Scope: StackWide,
		Reaches: "open connections too: every RST from the change on, in TIME-WAITs under way as well",
		Why:     "gVisor's TCP reads it from the stack-wide option",
		set: func(c *stack.Config, _ *service.Options, v string) error {
			rst, err := ParseTimeWaitRST(v)
			c.TimeWaitRSTCloses = rst
			return err
		},
		get: func(c *stack.Config, _ *service.Options) string {
			if c.TimeWaitRSTCloses {
				return "close"
			}
			return "ignore"
		}},
	{Name: "max-conns", Scope: StackWide,
		Reaches: "connections accepted after the change; open ones above a lower bound are not reset",
		Why:     "it bounds the connections of all services together",
		set: func(c *stack.Config, _ *service.Options, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q: want a number of connections, 0 for no limit", v)
			}
			c.MaxConns = n
			return nil
		},
		get: func(c *stack.Config, _ *service.Options) string { return strconv.Itoa(c.MaxConns) }},
	{Name: "half-close", Scope: Both, Reaches: reachesNew,
		set: func(_ *stack.Config, d *service.Options, v string) (err error) {
			d.HalfClose, err = service.ParseHalfClose(v)
			return err
		},
		get: func(_ *stack.Config, d *service.Options) string { return d.HalfClose.String() }},
	{Name: "abort", Scope: Both, Reaches: reachesNew,
		set: func(_ *stack.Config, d *service.Options, v string) (err error) {
			if d.Abort, err = strconv.ParseBool(v); err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			return nil
		},
		get: func(_ *stack.Config, d *service.Options) string { return strconv.FormatBool(d.Abort) }},
	{Name: "close-delay", Scope: PerPort, Reaches: reachesNew,
		Why: "it is an option of the echo and discard services",
		set: duration(func(_ *stack.Config, d *service.Options) *time.Duration { return &d.CloseDelay }),
		get: func(_ *stack.Config, d *service.Options) string { return d.CloseDelay.String() }},
	faultKnob(faults.DropFinalACK, func(f *faults.Set) string { return f.DropFinalACK.String() }),
	faultKnob(faults.DropFIN, func(f *faults.Set) string { return f.DropFIN.String() }),
	faultKnob(faults.DelayFIN, func(f *faults.Set) string { return f.DelayFIN.String() }),
	faultKnob(faults.NoFIN, func(f *faults.Set) string { return strconv.FormatBool(f.NoFIN) }),
	faultKnob(faults.LossIn, func(f *faults.Set) string { return strconv.FormatFloat(f.LossIn, 'g', -1, 64) }),
	faultKnob(faults.LossOut, func(f *faults.Set) string { return strconv.FormatFloat(f.LossOut, 'g', -1, 64) }),
}

// ParseTimeWaitRST parses what --time-wait-rst takes: ignore (RFC 1337)
// or close (RFC 9293 §3.10.7.4). It reports whether a RST closes.
func ParseTimeWaitRST(v string) (bool, error) {
	switch v {
	case "ignore":
		return false, nil
	case "close":
		return true, nil
	}
	return false, fmt.Errorf("%q: want ignore or close", v)
}

func duration(field func(*stack.Config, *service.Options) *time.Duration) func(*stack.Config, *service.Options, string) error {
	return func(c *stack.Config, d *service.Options, v string) error {
		x, err := time.ParseDuration(v)
		if err != nil || x < 0 {
			return fmt.Errorf("%q: want a duration such as 200ms or 0", v)
		}
		*field(c, d) = x
		return nil
	}
}

func faultKnob(name string, get func(*faults.Set) string) Knob {
	return Knob{Name: name, Scope: Both, Reaches: reachesSegments,
		set: func(c *stack.Config, _ *service.Options, v string) error {
			_, err := c.Faults.Parse(name, v)
			if err != nil {
				// Parse names the fault itself; the caller names the field.
				_, msg, _ := strings.Cut(err.Error(), "=")
				return fmt.Errorf("%s", msg)
			}
			return nil
		},
		get: func(c *stack.Config, _ *service.Options) string { return get(&c.Faults) },
	}
}

// knob returns the knob named name.
func knob(name string) (*Knob, bool) {
	i := slices.IndexFunc(Knobs, func(k Knob) bool { return k.Name == name })
	if i < 0 {
		return nil, false
	}
	return &Knobs[i], true
}

// knownNames lists the knobs of scope, for an error that names the known
// ones.
func knownNames(scope Scope) string {
	var names []string
	for _, k := range Knobs {
		if k.Scope&scope != 0 {
			names = append(names, k.Name)
		}
	}
	return strings.Join(names, ", ")
}
