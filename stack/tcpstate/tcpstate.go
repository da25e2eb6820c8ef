// Package tcpstate names the connection states of RFC 9293 §3.3.2, once,
// as ss and the textbooks spell them. The tracer follows the close through
// them, the connection table and the metrics report them; all use State.
package tcpstate

import "gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

// State is an RFC 9293 §3.3.2 connection state. The zero State is CLOSED.
type State uint8

// The states, in the order of RFC 9293's state diagram.
const (
	Closed State = iota
	Listen
	SynSent
	SynReceived
	Established
	FinWait1
	FinWait2
	CloseWait
	Closing
	LastAck
	TimeWait
	// Count is the number of states, for tables indexed by State.
	Count
)

var names = [Count]string{"CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
	"CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"}

// String returns the state's RFC name, such as "FIN-WAIT-1".
func (s State) String() string {
	if s >= Count {
		return "CLOSED"
	}
	return names[s]
}

// All lists the states in RFC order.
func All() []State {
	all := make([]State, Count)
	for i := range all {
		all[i] = State(i)
	}
	return all
}

// Of returns the state of a gVisor endpoint. gVisor's own error and bound
// states, which have no RFC name, are Closed.
func Of(s tcp.EndpointState) State {
	switch s {
	case tcp.StateListen:
		return Listen
	case tcp.StateSynSent:
		return SynSent
	case tcp.StateSynRecv:
		return SynReceived
	case tcp.StateEstablished:
		return Established
	case tcp.StateFinWait1:
		return FinWait1
	case tcp.StateFinWait2:
		return FinWait2
	case tcp.StateCloseWait:
		return CloseWait
	case tcp.StateClosing:
		return Closing
	case tcp.StateLastAck:
		return LastAck
	case tcp.StateTimeWait:
		return TimeWait
	}
	return Closed
}
