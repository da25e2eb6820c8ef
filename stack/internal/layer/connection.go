package layer

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/stack/internal/wire"
)

// NICID is the stack's only NIC, the TUN link.
const NICID tcpip.NICID = 1

// Connection returns the state of s's connection for fl, if it has one. A
// listener does not count: the demultiplexer hands out the listener of the
// port for a 4-tuple it does not know. The lookup takes the
// demultiplexer's lock: layers make it for closing segments only. A nil s
// (a layer tested alone) has no connection.
func Connection(s *stack.Stack, fl wire.Flow) (tcp.EndpointState, bool) {
	if s == nil {
		return 0, false
	}
	netProto, id := fl.EndpointID()
	tep, ok := s.FindTransportEndpoint(netProto, header.TCPProtocolNumber, id, NICID).(*tcp.Endpoint)
	if !ok {
		return 0, false
	}
	st := tep.EndpointState()
	return st, st != tcp.StateListen
}
