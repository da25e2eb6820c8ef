package stack

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/link/faults"
	"github.com/tund/tund/stack/link/inline"
	"github.com/tund/tund/stack/link/merge"
	"github.com/tund/tund/stack/link/timewait"
)

// nicID is the stack's only NIC: the TUN link.
const nicID = layer.NICID

// Stack is a gVisor network stack with one NIC on the TUN link.
type Stack struct {
	s      *gstack.Stack
	addrs  []netip.Addr
	merge  *merge.Endpoint
	faults *faults.Stats // whichever layer applied them
	tw     *timewait.Table
	// listening are the ports with a listener: their connections'
	// TIME-WAIT goes to tw.
	listening *timewait.Ports
	tracer    *closes.Tracer // nil when tracing is off
	inline    *inline.Endpoint
	closes    *closes.Log

	maxConns int
	active   atomic.Int64  // Conns open (not yet closed by their holder)
	refused  atomic.Uint64 // connections reset for MaxConns
}

// New builds a stack with IPv4, IPv6, ICMP (echo answered by the network
// layer), TCP and UDP on link, with the chain of close-path layers between
// them (see the package doc), and binds c.Addrs to it.
func New(link gstack.LinkEndpoint, c Config) (*Stack, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	ok := false
	defer func() {
		if !ok {
			s.Close()
			s.Wait()
		}
	}()
	if err := setTCPOptions(s, c); err != nil {
		return nil, err
	}
	if c.PortRange != [2]uint16{} {
		if err := s.SetPortRange(c.PortRange[0], c.PortRange[1]); err != nil {
			return nil, fmt.Errorf("stack: ephemeral port range %d-%d: %s", c.PortRange[0], c.PortRange[1], err)
		}
	}

	// The chain, from the device up (see the package doc). The stack
	// exists before its NIC: each layer is given it as it is built.
	st := &Stack{s: s, addrs: c.Addrs, listening: new(timewait.Ports), closes: closes.NewLog(), faults: new(faults.Stats), maxConns: c.MaxConns}
	st.inline = inline.New(link, s)
	link = st.inline
	if c.Pcap != nil {
		var err error
		if link, err = withPcap(link, c.Pcap); err != nil {
			return nil, fmt.Errorf("stack: pcap: %w", err)
		}
	}
	lossIn := faults.NewInboundLoss(c.Faults, c.PortFaults, st.faults)
	var observer faults.Observer
	if !c.NoTrace {
		st.tracer = closes.NewTracer(link, closes.Config{
			Linger:    closes.DefaultLinger,
			TimeWait:  2 * c.MSL,
			RSTCloses: c.TimeWaitRSTCloses,
			LossIn:    lossIn,
		}, st.closes, s)
		link, observer = st.tracer, st.tracer
		lossIn = nil // the tracer applies it
	}
	if !c.Faults.IsZero() || len(c.PortFaults) > 0 {
		link = faults.New(link, c.Faults, c.PortFaults, observer, lossIn, st.faults)
	}
	if c.MSL > 0 && !c.FullTimeWait {
		st.tw = timewait.New(link, 2*c.MSL, c.TimeWaitRSTCloses, st.listening, s)
		link = st.tw
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, ptr(tcpip.TCPTimeWaitHandoffOption(st.tw.Handoff))); err != nil {
			return nil, fmt.Errorf("stack: setting the TIME-WAIT handoff: %s", err)
		}
	}
	st.merge = merge.New(link, c.FINACKMerge, c.PortFINACKMerge, s)

	if err := s.CreateNIC(nicID, st.merge); err != nil {
		return nil, fmt.Errorf("stack: creating the NIC: %s", err)
	}
	for _, a := range c.Addrs {
		pa := tcpip.ProtocolAddress{
			Protocol:          protocolOf(a),
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.AddProtocolAddress(nicID, pa, gstack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("stack: adding address %v: %s", a, err)
		}
	}
	// Everything leaves through the TUN link; the kernel on the other side
	// routes it.
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	ok = true
	return st, nil
}

func setTCPOptions(s *gstack.Stack, c Config) error {
	opts := []tcpip.SettableTransportProtocolOption{
		// SACK (RFC 2018) and window scaling: Linux peers use both.
		ptr(tcpip.TCPSACKEnabled(true)),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20},
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20},
		ptr(tcpip.CongestionControlOption("cubic")),
		ptr(tcpip.TCPTimeWaitTimeoutOption(2 * c.MSL)),
		ptr(tcpip.TCPLingerTimeoutOption(c.FinWait2)),
		ptr(tcpip.TCPTimeWaitRSTOption(c.TimeWaitRSTCloses)),
		ptr(tcpip.TCPDelayedACKOption(c.DelayedACK)),
		ptr(timeWaitReuse(c.TimeWaitReuse)),
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("stack: setting TCP option %T: %s", o, err)
		}
	}
	return nil
}

func timeWaitReuse(on bool) tcpip.TCPTimeWaitReuseOption {
	if on {
		return tcpip.TCPTimeWaitReuseGlobal
	}
	return tcpip.TCPTimeWaitReuseDisabled
}

func ptr[T any](v T) *T { return &v }

func protocolOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// Addrs returns the stack's own addresses.
func (s *Stack) Addrs() []netip.Addr { return s.addrs }

// OpenConns returns how many connections services hold open.
func (s *Stack) OpenConns() int64 { return s.active.Load() }

// Refused returns how many connections were reset because MaxConns were
// open.
func (s *Stack) Refused() uint64 { return s.refused.Load() }

// MergeStats returns the counters of the FIN/ACK merge.
func (s *Stack) MergeStats() *merge.Stats { return s.merge.Stats() }

// FaultStats returns the counters of the injected faults.
func (s *Stack) FaultStats() *faults.Stats { return s.faults }

// TimeWaitStats returns the counters of the compact TIME-WAIT table (all
// zero with FullTimeWait).
func (s *Stack) TimeWaitStats() *timewait.Stats {
	if s.tw == nil {
		return &timewait.Stats{}
	}
	return s.tw.Stats()
}

// Closes returns the recent close records, oldest first.
func (s *Stack) Closes() []*closes.Record { return s.closes.Records() }

// CloseStats returns a copy of the close path's counters.
func (s *Stack) CloseStats() closes.Stats {
	if s.tracer != nil {
		s.tracer.CountDue(time.Now())
	}
	return s.closes.Stats()
}

// SubscribeCloses returns a channel that receives each close record as it
// ends (and again, amended, if a replayed FIN adds to it), and a function
// to stop.
func (s *Stack) SubscribeCloses() (<-chan *closes.Record, func()) { return s.closes.Subscribe() }

// Tracing reports whether the close tracer runs (Config.NoTrace unset): the
// records, and the counts taken off the wire, exist only then.
func (s *Stack) Tracing() bool { return s.tracer != nil }

// GVisor returns the underlying gVisor stack, for what this package does not
// wrap (statistics, endpoint lists).
func (s *Stack) GVisor() *gstack.Stack { return s.s }

// Close resets every connection that is still open, detaches the link and
// waits for the stack's goroutines to end. Connections in TIME-WAIT, whose
// close has completed, are dropped silently: the link is gone before they
// are aborted, so no peer receives a RST for a connection it has closed.
func (s *Stack) Close() {
	for _, tep := range s.endpoints() {
		if !settled(tep.EndpointState()) {
			tep.Abort()
		}
	}
	s.s.RemoveNIC(nicID)
	s.s.Close()
	s.s.Wait()
}
