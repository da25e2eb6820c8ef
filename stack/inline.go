package stack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// inlineEndpoint, the link endpoint nearest the device, has TCP process
// each inbound segment on the goroutine that read its packet (gVisor patch
// 0013) instead of handing it to one of gVisor's processor goroutines.
//
// The hand-off costs a goroutine wake-up per segment: for a small request
// that is a good part of its cost, and with two cores the processors and
// the reader fight for them. Processing inline leaves one wake-up on the
// way in, the reader waking the application's goroutine. Because the
// processing runs here, after the whole chain of link endpoints and the
// stack's demultiplexer have returned (closing or accepting a connection
// takes the demultiplexer's lock, which a delivery holds), no lock is held
// while it runs.
type inlineEndpoint struct {
	nested.Endpoint
	// tcp drains what the delivery queued; nil until the stack exists.
	tcp interface{ ProcessInline() }
}

func newInlineEndpoint(child stack.LinkEndpoint) *inlineEndpoint {
	e := &inlineEndpoint{}
	e.Init(child, e)
	return e
}

// DeliverNetworkPacket delivers pkt and then processes the TCP segment it
// carried, if any.
func (e *inlineEndpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if e.tcp == nil {
		e.Endpoint.DeliverNetworkPacket(protocol, pkt)
		return
	}
	pkt.ProcessInline = true
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
	e.tcp.ProcessInline()
}
