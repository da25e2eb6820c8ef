package timewait

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/stack/internal/wire"
)

// synWithTS builds an IPv4 SYN from the peer with a timestamp option.
func synWithTS(seq, tsVal uint32) (wire.Fields, []byte) {
	const size = header.IPv4MinimumSize + header.TCPMinimumSize + 12
	b := make([]byte, size)
	header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: size, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{198, 18, 0, 2})})
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 7, SeqNum: seq, DataOffset: header.TCPMinimumSize + 12, Flags: header.TCPFlagSyn, WindowSize: 65535})
	opts := tcp[header.TCPMinimumSize:]
	opts[0], opts[1] = header.TCPOptionNOP, header.TCPOptionNOP
	header.EncodeTSOption(tsVal, 0, opts[2:])
	f, _ := wire.ParseInbound(b, len(b))
	return f, b
}

func TestNewIncarnation(t *testing.T) {
	const rcvNxt, recent = 5000, 1000
	withTS := twEntry{rcvNxt: rcvNxt, ts: true, tsEcr: recent}
	noTS := twEntry{rcvNxt: rcvNxt}
	for _, c := range []struct {
		name       string
		e          twEntry
		seq, tsVal uint32
		want       bool
	}{
		{"newer timestamp, lower sequence (RFC 6191)", withTS, rcvNxt - 100, recent + 1, true},
		{"older timestamp, higher sequence (RFC 6191: drop)", withTS, rcvNxt + 100, recent - 1, false},
		{"same timestamp: the sequence decides", withTS, rcvNxt + 100, recent, true},
		{"same timestamp, lower sequence", withTS, rcvNxt - 100, recent, false},
		{"no timestamps on the old connection: higher sequence (RFC 1122)", noTS, rcvNxt + 1, recent + 1, true},
		{"no timestamps on the old connection: lower sequence", noTS, rcvNxt - 1, recent + 1, false},
	} {
		f, b := synWithTS(c.seq, c.tsVal)
		if got := newIncarnation(f, b, &c.e); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
