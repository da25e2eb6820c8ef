// Package layer is the skeleton of tund's close-path link layers: the
// FIN/ACK merge, the faults, the compact TIME-WAIT table and the close
// tracer. Each is a Rule, which sees the TCP segments that cross it and
// decides what becomes of them; Layer, nested between the stack and the
// device as gVisor's link endpoints are (pkg/tcpip/link/nested), does the
// rest: it parses the segments, writes on what the rule does not take, and
// stops the rule when the stack lets go of the link. The order of the
// layers is drawn once, in package stack's doc.
package layer

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tund/tund/stack/internal/wire"
)

// Direction is the way a segment crosses a layer.
type Direction int

// Segments come In from the peer and go Out from the stack.
const (
	In Direction = iota
	Out
)

// A Rule is what one layer does to the TCP segments crossing it. Layer
// calls it from the device's reading goroutines (In) and from the stack's
// writing ones (Out), concurrently.
type Rule interface {
	// Watching reports whether the rule wants to see the segments going
	// dir now. Layer asks it for every packet, so it must be cheap (a
	// constant, an atomic load): a rule with nothing to follow costs only
	// that.
	Watching(dir Direction) bool
	// Inbound sees a segment from the peer on its way up: f its fields, hdr
	// its first bytes (at most wire.MaxPeek, from the IP header). It
	// returns false to drop the segment.
	Inbound(f wire.Fields, hdr []byte) (deliver bool)
	// Outbound sees a segment the stack sends, before it goes down. It
	// returns true to take it out of the write: the rule drops it, or
	// keeps it with a reference of its own (pkt.IncRef) to write later
	// with Layer.WriteOne.
	Outbound(f wire.Fields, pkt *stack.PacketBuffer) (take bool)
	// Stop is called once, when the stack detaches from the link or the
	// link closes: the rule lets go of what it keeps and writes nothing
	// more.
	Stop()
}

// An OutboundFilter is a Rule that needs to see only the segments it sends
// that carry one of the flags OutboundFlags names: the others pass without
// being parsed.
type OutboundFilter interface {
	OutboundFlags() header.TCPFlags
}

// Layer is a link endpoint that runs a Rule over the segments crossing it.
// Embed it, and call Init.
type Layer struct {
	nested.Endpoint
	rule     Rule
	outFlags header.TCPFlags // 0: every outbound segment (see OutboundFilter)
	stop     sync.Once
}

// Init nests the layer over child, with rule deciding.
func (l *Layer) Init(child stack.LinkEndpoint, rule Rule) {
	l.rule = rule
	if f, ok := rule.(OutboundFilter); ok {
		l.outFlags = f.OutboundFlags()
	}
	l.Endpoint.Init(child, l)
}

// DeliverNetworkPacket shows a TCP segment from the peer to the rule, and
// passes it up unless the rule drops it.
func (l *Layer) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if l.rule.Watching(In) {
		size := pkt.Data().Size()
		if b, ok := pkt.Data().PullUp(min(size, wire.MaxPeek)); ok {
			if f, ok := wire.ParseInbound(b, size); ok && !l.rule.Inbound(f, b) {
				return
			}
		}
	}
	l.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// WritePackets shows each TCP segment the stack sends to the rule, and
// writes on those it does not take. Every packet is reported written: a
// taken one is the rule's.
func (l *Layer) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if !l.rule.Watching(Out) {
		return l.Endpoint.WritePackets(pkts)
	}
	var taken []bool // allocated only when a segment is taken: rarely
	for i, pkt := range pkts.AsSlice() {
		if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
			continue
		}
		th := pkt.TransportHeader().Slice()
		if l.outFlags != 0 && (len(th) < header.TCPMinimumSize || header.TCP(th).Flags()&l.outFlags == 0) {
			continue
		}
		f, ok := wire.ParseOutbound(pkt.NetworkHeader().Slice(), th, pkt.Data().Size())
		if !ok || !l.rule.Outbound(f, pkt) {
			continue
		}
		if taken == nil {
			taken = make([]bool, pkts.Len())
		}
		taken[i] = true
	}
	if taken == nil {
		return l.Endpoint.WritePackets(pkts)
	}
	var rest stack.PacketBufferList
	for i, pkt := range pkts.AsSlice() {
		if !taken[i] {
			rest.PushBack(pkt.IncRef())
		}
	}
	defer rest.Reset()
	n := pkts.Len() - rest.Len()
	if rest.Len() == 0 {
		return n, nil
	}
	m, err := l.Endpoint.WritePackets(rest)
	return n + m, err
}

// WriteOne writes a packet the rule kept (or built) to the link below,
// taking the rule's reference.
func (l *Layer) WriteOne(pkt *stack.PacketBuffer) {
	var list stack.PacketBufferList
	list.PushBack(pkt)
	l.Endpoint.WritePackets(list)
	list.Reset()
}

// Attach stops the rule when the stack detaches (nil), so that nothing it
// keeps is written to a device that is going away.
func (l *Layer) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.stop.Do(l.rule.Stop)
	}
	l.Endpoint.Attach(d)
}

// Close stops the rule and closes the link below.
func (l *Layer) Close() {
	l.stop.Do(l.rule.Stop)
	l.Endpoint.Close()
}
