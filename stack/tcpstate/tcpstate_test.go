package tcpstate

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		gvisor tcp.EndpointState
		want   string
	}{
		{tcp.StateListen, "LISTEN"},
		{tcp.StateSynSent, "SYN-SENT"},
		{tcp.StateSynRecv, "SYN-RECEIVED"},
		{tcp.StateEstablished, "ESTABLISHED"},
		{tcp.StateFinWait1, "FIN-WAIT-1"},
		{tcp.StateFinWait2, "FIN-WAIT-2"},
		{tcp.StateCloseWait, "CLOSE-WAIT"},
		{tcp.StateClosing, "CLOSING"},
		{tcp.StateLastAck, "LAST-ACK"},
		{tcp.StateTimeWait, "TIME-WAIT"},
		{tcp.StateClose, "CLOSED"},
		{tcp.StateError, "CLOSED"},
		{tcp.StateBound, "CLOSED"},
	} {
		if got := Of(c.gvisor).String(); got != c.want {
			t.Errorf("Of(%v) = %s, want %s", c.gvisor, got, c.want)
		}
	}
	if n := len(All()); n != 11 {
		t.Errorf("All() has %d states, want RFC 9293's 11", n)
	}
}
