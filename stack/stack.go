package stack

import (
	"fmt"
	"net/netip"
	"sync"
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
	"github.com/tund/tund/stack/internal/wire"
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
	faults *faults.Table
	fstats *faults.Stats   // whichever layer applied them
	tw     *timewait.Table // nil with FullTimeWait
	// listening are the ports with a listener: their connections'
	// TIME-WAIT goes to tw.
	listening *timewait.Ports
	tracer    *closes.Tracer // nil when tracing is off
	inline    *inline.Endpoint
	closes    *closes.Log

	tuneMu   sync.Mutex    // Tune is one change at a time
	maxConns atomic.Int64  // Config.MaxConns, as Tune last set it
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
	st := &Stack{s: s, addrs: c.Addrs, listening: new(timewait.Ports), closes: closes.NewLog(),
		faults: faults.NewTable(c.Faults, c.PortFaults), fstats: new(faults.Stats)}
	st.maxConns.Store(int64(c.MaxConns))
	st.inline = inline.New(link, s)
	link = st.inline
	if c.Pcap != nil {
		var err error
		if link, err = withPcap(link, c.Pcap); err != nil {
			return nil, fmt.Errorf("stack: pcap: %w", err)
		}
	}
	lossIn := faults.NewInboundLoss(st.faults, st.fstats)
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
	// The fault layer is in the chain even with no fault set, so that
	// faults can be set while tund runs (Tune); then it costs an atomic
	// load a segment.
	link = faults.New(link, st.faults, observer, lossIn, st.fstats)
	if !c.FullTimeWait {
		st.tw = timewait.New(link, 2*c.MSL, c.TimeWaitRSTCloses, st.listening, s)
		link = st.tw
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, ptr(tcpip.TCPTimeWaitHandoffOption(st.tw.Handoff))); err != nil {
			return nil, fmt.Errorf("stack: setting the TIME-WAIT handoff: %s", err)
		}
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, ptr(tcpip.TCPTimeWaitLateSegmentOption(st.tw.Late))); err != nil {
			return nil, fmt.Errorf("stack: setting the TIME-WAIT handoff's late segments: %s", err)
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
	return setOptions(s, append([]tcpip.SettableTransportProtocolOption{
		// SACK (RFC 2018) and window scaling: Linux peers use both.
		ptr(tcpip.TCPSACKEnabled(true)),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20},
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20},
		ptr(tcpip.CongestionControlOption("cubic")),
		ptr(timeWaitReuse(c.TimeWaitReuse)),
	}, tunableOptions(c)...))
}

// tunableOptions are the stack-wide TCP options that Tune may change.
// gVisor reads each when it needs it: 2 x MSL when a TIME-WAIT starts,
// what a RST does in TIME-WAIT when one comes, the FIN-WAIT-2 timeout and
// the delayed ACK when a connection is made.
//
// While some port merges, the data before a peer's FIN is acknowledged at
// once by an ACK of its own (gVisor patch 0016), so that the merge holds
// the FIN's ACK alone: a Linux peer with two segments unacknowledged (its
// last data and its FIN) probes for the tail after 2 x SRTT, a few
// milliseconds, and would send its FIN again before tund's FIN comes;
// with its FIN alone in flight it waits 2 x SRTT + 200 ms.
func tunableOptions(c Config) []tcpip.SettableTransportProtocolOption {
	merges := c.FINACKMerge > 0
	for _, w := range c.PortFINACKMerge {
		merges = merges || w > 0
	}
	return []tcpip.SettableTransportProtocolOption{
		ptr(tcpip.TCPTimeWaitTimeoutOption(2 * c.MSL)),
		ptr(tcpip.TCPLingerTimeoutOption(c.FinWait2)),
		ptr(tcpip.TCPTimeWaitRSTOption(c.TimeWaitRSTCloses)),
		ptr(tcpip.TCPDelayedACKOption(c.DelayedACK)),
		ptr(tcpip.TCPAckDataBeforeFINOption(merges)),
	}
}

func setOptions(s *gstack.Stack, opts []tcpip.SettableTransportProtocolOption) error {
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

// Tune changes the close-path settings of c while the stack runs: MSL,
// FinWait2, FINACKMerge and PortFINACKMerge, TimeWaitRSTCloses,
// DelayedACK, MaxConns, Faults and PortFaults. The rest of c (Addrs,
// PortRange, TimeWaitReuse, FullTimeWait, NoTrace, Pcap) is fixed at New
// and ignored here. c is checked whole first: if it is refused, nothing
// changes.
//
// Each setting reaches the connections it can: the merge windows and the
// faults act on every segment from now on, open connections included; a
// RST in TIME-WAIT meets the new rule also in TIME-WAITs under way; a
// TIME-WAIT that starts (or restarts) from now on lasts the new 2 x MSL;
// MaxConns bounds the connections accepted from now on; the FIN-WAIT-2
// timeout and the delayed ACK are taken by each connection when it is
// made, so they reach new connections only.
func (s *Stack) Tune(c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	s.tuneMu.Lock()
	defer s.tuneMu.Unlock()
	if err := setOptions(s.s, tunableOptions(c)); err != nil {
		return err
	}
	s.merge.SetWindows(c.FINACKMerge, c.PortFINACKMerge)
	s.faults.Set(c.Faults, c.PortFaults)
	if s.tw != nil {
		s.tw.Set(2*c.MSL, c.TimeWaitRSTCloses)
	}
	if s.tracer != nil {
		s.tracer.SetTimeWait(2*c.MSL, c.TimeWaitRSTCloses)
	}
	s.maxConns.Store(int64(c.MaxConns))
	return nil
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
func (s *Stack) FaultStats() *faults.Stats { return s.fstats }

// TimeWaitStats returns the counters of the compact TIME-WAIT table (all
// zero with FullTimeWait).
func (s *Stack) TimeWaitStats() *timewait.Stats {
	if s.tw == nil {
		return &timewait.Stats{}
	}
	return s.tw.Stats()
}

// TableBytes returns the memory that the close path's per-connection
// tables (the compact TIME-WAIT table's entries, the tracer's) hold outside
// the Go heap, in this process: counted in its resident memory, not in the
// Go heap's statistics.
func TableBytes() int64 { return wire.TableBytes() }

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
