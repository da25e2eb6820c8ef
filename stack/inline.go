package stack

import (
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// inlineEndpoint, the link endpoint nearest the device, has TCP process
// inbound segments on the goroutine that read their packets (gVisor patch
// 0013), a burst at a time, instead of handing each to one of gVisor's
// processor goroutines.
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
// A listener's segments stay with the processors (patch 0013), so that a
// SYN flood does not slow the connections' own; so do a burst's packets
// past maxInlineBurst, and those of a device that never ends a burst
// (gVisor's fdbased endpoint, the channel endpoint of unit tests).
type inlineEndpoint struct {
	nested.Endpoint
	// tcp drains what the bursts queued; set before the device is attached.
	tcp interface{ ProcessInline() }
	// bursts is set once the device has ended a burst: it ends every one,
	// so its packets may leave their processing to EndBurst.
	bursts atomic.Bool
	// inBurst counts the packets delivered since the last burst ended.
	inBurst atomic.Int32
}

// maxInlineBurst is how many packets of a burst are processed inline; the
// rest go to gVisor's processors. A long burst is bulk data, where the
// processors, which run beside the reader on other cores, move more.
const maxInlineBurst = 8

func newInlineEndpoint(child stack.LinkEndpoint) *inlineEndpoint {
	e := &inlineEndpoint{}
	e.Init(child, e)
	return e
}

// DeliverNetworkPacket delivers pkt, its TCP segment to be processed at
// the end of the burst.
func (e *inlineEndpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	pkt.ProcessInline = e.bursts.Load() && e.inBurst.Add(1) <= maxInlineBurst
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// EndBurst processes the TCP segments of the burst that the device has
// just delivered (tun.BatchDispatcher).
func (e *inlineEndpoint) EndBurst() {
	if e.tcp == nil {
		return
	}
	if !e.bursts.Load() {
		e.bursts.Store(true)
	}
	e.inBurst.Store(0)
	e.tcp.ProcessInline()
}
