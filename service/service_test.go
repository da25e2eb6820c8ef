package service

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/link/faults"
)

// TestConfigure: a service's own merge window and faults become the
// stack's overrides for its port; a service with the stack-wide ones adds
// none.
func TestConfigure(t *testing.T) {
	stackWide := faults.Set{LossIn: 0.1}
	specs, err := ParseList("echo,daytime/fin-ack-merge=0,chargen/no-fin,http:8080/fin-ack-merge=5ms/drop-fin=once", Options{Faults: stackWide})
	if err != nil {
		t.Fatal(err)
	}
	c := stack.Config{Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")}, Faults: stackWide}
	Configure(&c, specs)
	wantMerge := map[uint16]time.Duration{13: 0, 8080: 5 * time.Millisecond}
	if len(c.PortFINACKMerge) != len(wantMerge) {
		t.Errorf("merge windows %v, want %v", c.PortFINACKMerge, wantMerge)
	}
	for port, w := range wantMerge {
		if got, ok := c.PortFINACKMerge[port]; !ok || got != w {
			t.Errorf("port %d: merge window %v (set %v), want %v", port, got, ok, w)
		}
	}
	wantFaults := map[uint16]faults.Set{
		19:   {LossIn: 0.1, NoFIN: true},
		8080: {LossIn: 0.1, DropFIN: faults.Chance{Once: true}},
	}
	if len(c.PortFaults) != len(wantFaults) {
		t.Errorf("port faults %v, want %v", c.PortFaults, wantFaults)
	}
	for port, f := range wantFaults {
		if got := c.PortFaults[port]; got != f {
			t.Errorf("port %d: faults %v, want %v", port, got, f)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the configured stack does not validate: %v", err)
	}
}
