package stack

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/tund/tund/stack/link/faults"
	"github.com/tund/tund/stack/link/merge"
)

// Default close-path settings. They match Linux (net.ipv4.tcp_fin_timeout is
// 60 s, and TIME-WAIT lasts TCP_TIMEWAIT_LEN = 60 s = 2 x 30 s).
const (
	DefaultMSL      = 30 * time.Second
	DefaultFinWait2 = 60 * time.Second
	// DefaultFINACKMerge is the FIN/ACK merge window (merge.DefaultWindow).
	DefaultFINACKMerge = merge.DefaultWindow
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
	// package faults); PortFaults replace them for connections on the
	// given local ports.
	Faults     faults.Set
	PortFaults map[uint16]faults.Set
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
	// accepted hand their TIME-WAIT to a compact table (48 bytes
	// each, see package timewait) that behaves the same on the wire.
	FullTimeWait bool
	// NoTrace turns the close tracer off (for measuring what it costs).
	NoTrace bool
	// Pcap, when not nil, receives every packet that crosses the link, in
	// pcap format, as the wire carries it.
	Pcap io.Writer
}

// Validate reports the first setting that the stack cannot take, naming it
// as tund's flag does (without its dashes). New calls it; tund calls it
// before it creates any device, so that a bad setting leaves nothing
// behind.
func (c *Config) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("addr: no address to bind")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"msl", c.MSL}, {"fin-wait2", c.FinWait2}, {"fin-ack-merge", c.FINACKMerge}, {"delayed-ack", c.DelayedACK}} {
		if d.v < 0 {
			return fmt.Errorf("%s must not be negative (%v)", d.name, d.v)
		}
	}
	for port, w := range c.PortFINACKMerge {
		if w < 0 {
			return fmt.Errorf("fin-ack-merge must not be negative (%v on port %d)", w, port)
		}
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("max-conns must not be negative (%d; 0: no limit)", c.MaxConns)
	}
	if lo, hi := c.PortRange[0], c.PortRange[1]; c.PortRange != [2]uint16{} && (lo == 0 || lo > hi) {
		return fmt.Errorf("port-range %d-%d: want LO-HI, two ports with 0 < LO <= HI, such as 40000-40099", lo, hi)
	}
	for _, f := range append([]faults.Set{c.Faults}, slices.Collect(maps.Values(c.PortFaults))...) {
		if err := f.Validate(); err != nil {
			return err
		}
	}
	return nil
}
