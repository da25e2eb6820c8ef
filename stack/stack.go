// Package stack builds the gVisor TCP/IP stack that answers for tund's
// addresses, and carries the close-path settings of its TCP.
package stack

import (
	"errors"
	"fmt"
	"io"
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
)

// nicID is the stack's only NIC: the TUN link.
const nicID tcpip.NICID = 1

// Default close-path settings. They match Linux (net.ipv4.tcp_fin_timeout is
// 60 s, and TIME-WAIT lasts TCP_TIMEWAIT_LEN = 60 s = 2 x 30 s).
const (
	DefaultMSL      = 30 * time.Second
	DefaultFinWait2 = 60 * time.Second
)

// Config is what the stack needs beyond its link.
type Config struct {
	// Addrs are the stack's own addresses: IPv4, IPv6 or both.
	Addrs []netip.Addr
	// MSL is the maximum segment lifetime; TIME-WAIT lasts 2 x MSL
	// (RFC 9293 §3.4.2). Zero means no TIME-WAIT at all: the endpoint is
	// freed when the close completes, so a late FIN from the peer is
	// answered with RST and an old duplicate can be taken for a segment of
	// a new connection on the same 4-tuple.
	MSL time.Duration
	// FinWait2 bounds how long an endpoint that was closed by its
	// application waits in FIN-WAIT-2 for the peer's FIN (Linux's
	// tcp_fin_timeout). After it the endpoint is freed and the peer's late
	// FIN draws a RST.
	FinWait2 time.Duration
	// FINACKMerge is how long the ACK of a peer's FIN may wait to ride on
	// tund's own FIN (a three-way close); zero sends it at once (four-way).
	// See DefaultFINACKMerge.
	FINACKMerge time.Duration
	// PortFINACKMerge overrides FINACKMerge for connections on the given
	// local ports.
	PortFINACKMerge map[uint16]time.Duration
	// TimeWaitRSTCloses makes an RST received in TIME-WAIT close the
	// connection (RFC 9293 §3.10.7.4, Linux's default); otherwise it is
	// ignored (RFC 1337), which is gVisor's behaviour.
	TimeWaitRSTCloses bool
	// DelayedACK, when not zero, lets the ACK of a small in-order segment
	// wait up to this long to ride on the reply (gVisor patch 0011), as
	// Linux's delayed ACK does; zero acknowledges every segment at once,
	// gVisor's behaviour. Two full segments, out-of-order data and
	// anything outside ESTABLISHED (a FIN among them, whose ACK the FIN/ACK
	// merge may still hold) are not delayed.
	DelayedACK time.Duration
	// MaxConns, when not zero, bounds the connections that services hold
	// open at once: a connection accepted beyond it is reset at once and
	// counted (Stack.Refused), so that a storm cannot take the memory that
	// established connections need.
	MaxConns int
	// Faults are injected into the close path of every connection (see
	// Faults); PortFaults replace them for connections on the given local
	// ports.
	Faults     Faults
	PortFaults map[uint16]Faults
	// PortRange, when not zero, is the range of ephemeral ports for the
	// connections tund opens (DialTCP); a small one shows TIME-WAIT port
	// exhaustion quickly.
	PortRange [2]uint16
	// TimeWaitReuse lets a connection tund opens take the port of one of
	// its own TIME-WAIT connections to the same peer, ending that
	// TIME-WAIT early (Linux's net.ipv4.tcp_tw_reuse). Off, a port in
	// TIME-WAIT stays taken for 2 x MSL.
	TimeWaitReuse bool
	// FullTimeWait keeps gVisor's own endpoint, about 5 KB, for each
	// connection in TIME-WAIT. Otherwise the connections that services
	// accepted hand their TIME-WAIT to a compact table (about 100 bytes
	// each, see timeWaitTable) that behaves the same on the wire.
	FullTimeWait bool
	// NoTrace turns the close tracer off (for measuring what it costs).
	NoTrace bool
	// Pcap, when not nil, receives every packet that crosses the link, in
	// pcap format, as the wire sees it (beneath the FIN/ACK merge).
	Pcap io.Writer
}

// Stack is a gVisor network stack with one NIC on the TUN link.
type Stack struct {
	s      *gstack.Stack
	addrs  []netip.Addr
	merge  *mergeEndpoint
	faults *faultEndpoint // nil when no fault is set
	// faultStats count the faults, whichever layer applied them.
	faultStats *FaultStats
	tw         *timeWaitTable // nil with FullTimeWait or no TIME-WAIT
	// listening are the ports with a listener: their connections' TIME-WAIT
	// goes to tw.
	listening *portSet
	tracer    *tracer // nil when tracing is off
	inline    *inlineEndpoint
	closes    *closeLog

	maxConns int
	active   atomic.Int64  // Conns open (not yet closed by their holder)
	refused  atomic.Uint64 // connections reset for MaxConns
}

// New builds a stack with IPv4, IPv6, ICMP (echo answered by the network
// layer), TCP and UDP on link, and binds c.Addrs to it.
func New(link gstack.LinkEndpoint, c Config) (*Stack, error) {
	if len(c.Addrs) == 0 {
		return nil, errors.New("stack: no address to bind")
	}
	if c.MSL < 0 || c.FinWait2 < 0 || c.FINACKMerge < 0 || c.MaxConns < 0 || c.DelayedACK < 0 {
		return nil, fmt.Errorf("stack: negative MSL (%v), FIN-WAIT-2 timeout (%v), merge window (%v), connection limit (%d) or delayed ACK (%v)", c.MSL, c.FinWait2, c.FINACKMerge, c.MaxConns, c.DelayedACK)
	}
	// Nearest the device, which it tells where bursts end.
	inline := newInlineEndpoint(link)
	link = inline
	if c.Pcap != nil {
		var err error
		if link, err = withPcap(link, c.Pcap); err != nil {
			return nil, fmt.Errorf("stack: pcap: %w", err)
		}
	}
	// The tracer sits just above the device (and the inline and pcap
	// endpoints), beneath the merge: it records what the wire sees.
	closes := newCloseLog()
	faultStats := new(FaultStats)
	dropIn := newLossIn(c.Faults, c.PortFaults, faultStats)
	var tr *tracer
	if !c.NoTrace {
		tr = newTracer(link, traceConfig{
			linger:    closeLinger,
			timeWait:  2 * c.MSL,
			rstCloses: c.TimeWaitRSTCloses,
			lossIn:    dropIn,
		}, closes)
		link = tr
		dropIn = nil // applied by the tracer, beneath what it traces
	}
	// Faults act beneath the merge, on what would go on the wire, and
	// above the tracer, which notes what they take away.
	var faults *faultEndpoint
	if !c.Faults.IsZero() || len(c.PortFaults) > 0 {
		faults = newFaultEndpoint(link, c.Faults, c.PortFaults, tr, dropIn, faultStats)
		link = faults
	}
	// The compact TIME-WAIT answers late segments beneath the stack, and
	// above the faults and the tracer, which see its ACKs as the stack's.
	listening := new(portSet)
	var tw *timeWaitTable
	if c.MSL > 0 && !c.FullTimeWait {
		tw = newTimeWaitTable(link, 2*c.MSL, c.TimeWaitRSTCloses, listening)
		link = tw
	}
	merge := newMergeEndpoint(link, c.FINACKMerge, c.PortFINACKMerge)
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
	if tw != nil {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, ptr(tcpip.TCPTimeWaitHandoffOption(tw.handoff))); err != nil {
			return nil, fmt.Errorf("stack: setting the TIME-WAIT handoff: %s", err)
		}
	}
	if c.PortRange != [2]uint16{} {
		if err := s.SetPortRange(c.PortRange[0], c.PortRange[1]); err != nil {
			return nil, fmt.Errorf("stack: ephemeral port range %d-%d: %s", c.PortRange[0], c.PortRange[1], err)
		}
	}
	merge.stack = s
	if p, ok := s.TransportProtocolInstance(tcp.ProtocolNumber).(inlineTCP); ok {
		inline.tcp = p
	}
	if tr != nil {
		tr.stack = s
	}
	if tw != nil {
		tw.stack = s
	}
	if err := s.CreateNIC(nicID, merge); err != nil {
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
	return &Stack{s: s, addrs: c.Addrs, merge: merge, faults: faults, faultStats: faultStats, tw: tw, listening: listening, tracer: tr, inline: inline, closes: closes, maxConns: c.MaxConns}, nil
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
func (s *Stack) MergeStats() *MergeStats { return s.merge.Stats() }

// FaultStats returns the counters of the injected faults.
func (s *Stack) FaultStats() *FaultStats { return s.faultStats }

// TimeWaitStats returns the counters of the compact TIME-WAIT table (all
// zero with FullTimeWait).
func (s *Stack) TimeWaitStats() *TimeWaitStats {
	if s.tw == nil {
		return &TimeWaitStats{}
	}
	return &s.tw.stats
}

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
