package stack

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/stack/link/faults"
)

// TestConfigValidate: each setting the stack cannot take is refused, named
// as tund's flag names it, and New refuses it before building anything.
func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")}, MSL: time.Second, FinWait2: time.Second}
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string // in the error; "" for none
	}{
		{"defaults", func(*Config) {}, ""},
		{"no address", func(c *Config) { c.Addrs = nil }, "addr"},
		{"negative MSL", func(c *Config) { c.MSL = -time.Second }, "msl must not be negative"},
		{"negative FIN-WAIT-2", func(c *Config) { c.FinWait2 = -1 }, "fin-wait2 must not be negative"},
		{"negative merge window", func(c *Config) { c.FINACKMerge = -1 }, "fin-ack-merge must not be negative"},
		{"negative merge window on a port", func(c *Config) { c.PortFINACKMerge = map[uint16]time.Duration{7: -1} }, "on port 7"},
		{"negative delayed ACK", func(c *Config) { c.DelayedACK = -1 }, "delayed-ack"},
		{"negative connection limit", func(c *Config) { c.MaxConns = -1 }, "max-conns"},
		{"port range upside down", func(c *Config) { c.PortRange = [2]uint16{5, 1} }, "port-range 5-1"},
		{"port range from 0", func(c *Config) { c.PortRange = [2]uint16{0, 4} }, "port-range 0-4"},
		{"port range of one", func(c *Config) { c.PortRange = [2]uint16{40000, 40000} }, ""},
		{"a loss over 1", func(c *Config) { c.Faults.LossOut = 1.5 }, "loss-out"},
		{"a port's negative FIN delay", func(c *Config) { c.PortFaults = map[uint16]faults.Set{9: {DelayFIN: -1}} }, "delay-fin"},
	} {
		cfg := good()
		c.edit(&cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want no error", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		case c.want != "":
			if _, err := New(nil, cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: New: %v, want the error of Validate", c.name, err)
			}
		}
	}
}
