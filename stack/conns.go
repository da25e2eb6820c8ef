package stack

import (
	"net/netip"
	"slices"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/stack/tcpstate"
)

// ConnInfo is one TCP endpoint of the stack, as `ss -tan` shows it.
type ConnInfo struct {
	State  string         `json:"state"`
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
}

// Conns lists the stack's TCP endpoints, listeners and TIME-WAIT (the
// compact table's too) included,
// sorted by state, then local and remote address. It takes each endpoint's
// lock briefly: it is for inspection, not for the data path.
func (s *Stack) Conns() []ConnInfo {
	var out []ConnInfo
	for _, tep := range s.endpoints() {
		c := ConnInfo{State: tcpstate.Of(tep.EndpointState()).String()}
		if a, err := tep.GetLocalAddress(); err == nil {
			c.Local = addrPort(a.Addr, a.Port)
		}
		if a, err := tep.GetRemoteAddress(); err == nil {
			c.Remote = addrPort(a.Addr, a.Port)
		}
		out = append(out, c)
	}
	if s.tw != nil {
		for _, fl := range s.tw.Flows() {
			local, remote := fl.Addrs()
			out = append(out, ConnInfo{State: tcpstate.TimeWait.String(), Local: local, Remote: remote})
		}
	}
	slices.SortFunc(out, func(a, b ConnInfo) int {
		if a.State != b.State {
			if a.State < b.State {
				return -1
			}
			return 1
		}
		if c := a.Local.Compare(b.Local); c != 0 {
			return c
		}
		return a.Remote.Compare(b.Remote)
	})
	return out
}

// StateCounts counts the stack's TCP endpoints by RFC 9293 state. It reads
// states without locks.
func (s *Stack) StateCounts() map[string]int {
	counts := map[string]int{}
	for _, tep := range s.endpoints() {
		counts[tcpstate.Of(tep.EndpointState()).String()]++
	}
	if s.tw != nil {
		if n := s.tw.Len(); n > 0 {
			counts[tcpstate.TimeWait.String()] += n
		}
	}
	return counts
}

// endpoints returns each TCP endpoint once: a dual-stack listener is
// registered for IPv4 and for IPv6.
func (s *Stack) endpoints() []*tcp.Endpoint {
	eps := s.s.RegisteredEndpoints()
	seen := make(map[*tcp.Endpoint]bool, len(eps))
	out := make([]*tcp.Endpoint, 0, len(eps))
	for _, ep := range eps {
		if tep, ok := ep.(*tcp.Endpoint); ok && !seen[tep] {
			seen[tep] = true
			out = append(out, tep)
		}
	}
	return out
}

// addrPort converts a gVisor address; an unbound one (a dual-stack
// listener's) becomes [::].
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, ok := netip.AddrFromSlice(a.AsSlice())
	if !ok {
		ip = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(ip.Unmap(), port)
}

// AwaitClosed waits until every connection's close has completed (TIME-WAIT
// counts: both FINs are acknowledged) or the deadline passes, and returns
// how many are still open, by state. gVisor has no event for "all closed",
// so it polls the states every 20 ms.
func (s *Stack) AwaitClosed(deadline time.Time) map[string]int {
	for {
		open := map[string]int{}
		for _, tep := range s.endpoints() {
			if st := tep.EndpointState(); !settled(st) {
				open[tcpstate.Of(st).String()]++
			}
		}
		if len(open) == 0 || !time.Now().Before(deadline) {
			return open
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled reports a state with no close to wait for: a listener, a
// connection whose close has completed (TIME-WAIT), or none.
func settled(s tcp.EndpointState) bool {
	return s == tcp.StateListen || s == tcp.StateTimeWait || s == tcp.StateClose || s == tcp.StateError
}
