// Package tcpflag names TCP flags as tund's records, ladders and tests
// spell them: S, F, R, P and A, in that order ("FA" for FIN|ACK).
package tcpflag

// The flag bits of a TCP header's flags byte (RFC 9293 §3.1).
const (
	FIN uint8 = 0x01
	SYN uint8 = 0x02
	RST uint8 = 0x04
	PSH uint8 = 0x08
	ACK uint8 = 0x10
)

// String names the SYN, FIN, RST, PSH and ACK bits of flags, in that order.
// The names come from a table built once: a call allocates nothing.
func String(flags uint8) string { return names[flags&(FIN|SYN|RST|PSH|ACK)] }

var names = func() (names [ACK << 1]string) {
	for f := range names {
		var b []byte
		for _, x := range []struct {
			bit  uint8
			name byte
		}{{SYN, 'S'}, {FIN, 'F'}, {RST, 'R'}, {PSH, 'P'}, {ACK, 'A'}} {
			if uint8(f)&x.bit != 0 {
				b = append(b, x.name)
			}
		}
		names[f] = string(b)
	}
	return names
}()
