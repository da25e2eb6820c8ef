// Package inline is the link endpoint that has TCP process the segments of
// a burst of packets on the goroutine that read them, when the burst ends
// (gVisor patch 0013).
package inline

import (
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Endpoint has TCP process inbound segments on the goroutine that read
// their packets (gVisor patch 0013), a burst at a time, instead of handing
// each to one of gVisor's processor goroutines.
//
// The hand-off costs a goroutine wake-up per segment: for a small request
// that is a good part of its cost, and on two cores the processors and the
// reader fight for them. Processing at the end of a burst, when the device
// has no packet left queued (tun.BatchDispatcher), rather than after each
// packet, keeps what the processors gave: the segments of one connection
// in a burst are handled together and acknowledged with one ACK. It runs
// after every endpoint's delivery and the stack's demultiplexer have
// returned, so no lock is held (closing or accepting a connection takes
// the demultiplexer's lock, which a delivery holds).
//
// A burst longer than MaxBurst is bulk data: its segments go to the
// processors, which work beside the reader on the other cores. A
// listener's segments always do (patch 0013), so that a SYN flood does not
// slow the connections' own, and so do all of a device that never ends a
// burst (gVisor's fdbased endpoint, the channel endpoint of unit tests).
type Endpoint struct {
	nested.Endpoint
	// tcp takes what the bursts queued.
	tcp inlineTCP
	// bursts is set once the device has ended a burst: it ends every one,
	// so its packets may leave their processing to EndBurst.
	bursts atomic.Bool
}

// inlineTCP is what gVisor's TCP protocol offers for the segments of
// packets marked ProcessInline (patch 0013).
type inlineTCP interface {
	ProcessInline() // on the calling goroutine
	HandOffInline() // on the processor goroutines
}

// MaxBurst is the longest burst whose segments are processed on the
// reader's goroutine: room for a request from each of a few dozen clients,
// while bulk transfers fill the reader's bursts of 64 (tun's maxBurst).
const MaxBurst = 32

// New returns the endpoint over child, the device; s is the stack whose
// TCP processes the segments.
func New(child stack.LinkEndpoint, s *stack.Stack) *Endpoint {
	e := &Endpoint{}
	e.tcp, _ = s.TransportProtocolInstance(tcp.ProtocolNumber).(inlineTCP)
	e.Init(child, e)
	return e
}

// DeliverNetworkPacket delivers pkt, its TCP segment to be processed when
// the burst ends.
func (e *Endpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	pkt.ProcessInline = e.bursts.Load()
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// EndBurst processes the TCP segments of the burst of packets that the
// device has just delivered, or hands them to the processors if the burst
// was long (tun.BatchDispatcher). The queue is shared: with several
// device queues, one reader's call also takes what the others queued so
// far, processing it or handing it off by its own burst's length.
func (e *Endpoint) EndBurst(packets int) {
	if e.tcp == nil {
		return
	}
	if !e.bursts.Load() {
		e.bursts.Store(true)
	}
	if packets > MaxBurst {
		e.tcp.HandOffInline()
		return
	}
	e.tcp.ProcessInline()
}
