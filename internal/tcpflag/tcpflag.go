// Package tcpflag names TCP header flags the one way tund's close records,
// its tests and its scenarios print them: the letters S F R P A, always in
// that order, so that "FA" is FIN|ACK and "SA" is SYN|ACK. A record's
// flags and a capture's flags can then be compared as strings.
package tcpflag

import "strings"

// The flag bits as the TCP header carries them in its 13th byte
// (RFC 9293 §3.1, RFC 3168 §6.1 for ECE and CWR).
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
	URG = 0x20
	ECE = 0x40
	CWR = 0x80
)

// named are the flags that have a letter, in the order the letters are
// written. URG, ECE and CWR have none: no close record needs them.
var named = [...]struct {
	bit    uint8
	letter byte
	name   string
}{{SYN, 'S', "SYN"}, {FIN, 'F', "FIN"}, {RST, 'R', "RST"}, {PSH, 'P', "PSH"}, {ACK, 'A', "ACK"}}

// mask keeps the bits that have a letter.
const mask = FIN | SYN | RST | PSH | ACK

// letters holds String's answer for every combination of the named bits,
// built once so that String, which the stack's tracer calls for every
// recorded segment, allocates nothing.
var letters = func() (t [mask + 1]string) {
	for f := range t {
		var b []byte
		for _, n := range named {
			if uint8(f)&n.bit != 0 {
				b = append(b, n.letter)
			}
		}
		t[f] = string(b)
	}
	return t
}()

// String spells flags as letters in the order S F R P A ("FA" for
// FIN|ACK); bits without a letter are left out, and no flag is "".
func String(flags uint8) string { return letters[flags&mask] }

// Parse is String's inverse: the bits of the letters in s. A character
// that is not one of the letters is ignored, so that Parse never fails on
// a record written by a later version.
func Parse(s string) uint8 {
	var flags uint8
	for i := 0; i < len(s); i++ {
		for _, n := range named {
			if s[i] == n.letter {
				flags |= n.bit
			}
		}
	}
	return flags
}

// Names spells flags as the textbooks do, "FIN|ACK", in String's order;
// bits without a letter are left out, and no flag is "".
func Names(flags uint8) string {
	var names []string
	for _, n := range named {
		if flags&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, "|")
}
