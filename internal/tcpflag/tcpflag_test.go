package tcpflag

import "testing"

func TestString(t *testing.T) {
	for _, c := range []struct {
		flags uint8
		want  string
	}{
		{0, ""},
		{FIN, "F"},
		{SYN, "S"},
		{RST, "R"},
		{PSH, "P"},
		{ACK, "A"},
		{FIN | ACK, "FA"},
		{SYN | ACK, "SA"},
		{PSH | ACK, "PA"},
		{RST | ACK, "RA"},
		{FIN | PSH | ACK, "FPA"},
		{SYN | FIN | RST | PSH | ACK, "SFRPA"},
		{URG | ECE | CWR, ""},
		{0xff, "SFRPA"},
		{FIN | ACK | URG, "FA"},
	} {
		if got := String(c.flags); got != c.want {
			t.Errorf("String(%#02x) = %q, want %q", c.flags, got, c.want)
		}
	}
}

// TestStringNoAlloc holds String to what the stack's tracer needs of it: it
// runs for every recorded segment.
func TestStringNoAlloc(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = String(FIN | PSH | ACK) }); n != 0 {
		t.Errorf("String allocates %v times a call, want 0", n)
	}
}

func TestParseInvertsString(t *testing.T) {
	for f := 0; f < 256; f++ {
		want := uint8(f) & (FIN | SYN | RST | PSH | ACK)
		if got := Parse(String(uint8(f))); got != want {
			t.Errorf("Parse(String(%#02x)) = %#02x, want %#02x", f, got, want)
		}
	}
	if got := Parse("A?F"); got != FIN|ACK {
		t.Errorf(`Parse("A?F") = %#02x, want FIN|ACK`, got)
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		flags uint8
		want  string
	}{
		{0, ""},
		{ACK, "ACK"},
		{FIN | ACK, "FIN|ACK"},
		{SYN | ACK, "SYN|ACK"},
		{RST, "RST"},
		{SYN | FIN | RST | PSH | ACK | URG, "SYN|FIN|RST|PSH|ACK"},
	} {
		if got := Names(c.flags); got != c.want {
			t.Errorf("Names(%#02x) = %q, want %q", c.flags, got, c.want)
		}
	}
}
