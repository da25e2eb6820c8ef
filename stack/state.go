package stack

import "gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

// StateName returns the RFC 9293 §3.3.2 name of a gVisor endpoint state, as
// ss and the textbooks spell it. gVisor's own error and bound states, which
// have no RFC name, come out as CLOSED.
func StateName(s tcp.EndpointState) string {
	switch s {
	case tcp.StateListen:
		return "LISTEN"
	case tcp.StateSynSent:
		return "SYN-SENT"
	case tcp.StateSynRecv:
		return "SYN-RECEIVED"
	case tcp.StateEstablished:
		return "ESTABLISHED"
	case tcp.StateFinWait1:
		return "FIN-WAIT-1"
	case tcp.StateFinWait2:
		return "FIN-WAIT-2"
	case tcp.StateCloseWait:
		return "CLOSE-WAIT"
	case tcp.StateClosing:
		return "CLOSING"
	case tcp.StateLastAck:
		return "LAST-ACK"
	case tcp.StateTimeWait:
		return "TIME-WAIT"
	}
	return "CLOSED"
}
