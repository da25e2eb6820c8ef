package tests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHTTP checks what a curl user sees, over IPv4 and IPv6: "/" answers 200
// with a text naming both ends, and /bytes/10000000 delivers exactly that
// many bytes of the documented pattern.
func TestHTTP(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	for _, host := range []string{stackV4, "[" + stackV6 + "]"} {
		t.Run(host, func(t *testing.T) {
			out := ns.MustRun("curl", "-sS", "-m", "10", "-w", "\n%{http_code}", "http://"+host+"/")
			i := strings.LastIndex(out, "\n")
			body, code := out[:max(i, 0)], out[i+1:]
			if code != "200" || !strings.Contains(body, "tund") || !strings.Contains(body, host) {
				t.Fatalf("GET / = %s %q, want 200 and a text naming %s", code, body, host)
			}

			const n = 10_000_000
			file := filepath.Join(t.TempDir(), "bytes")
			out = ns.MustRun("curl", "-sS", "-m", "60", "-o", file, "-w", "%{http_code} %{size_download}",
				fmt.Sprintf("http://%s/bytes/%d", host, n))
			if out != fmt.Sprintf("200 %d", n) {
				t.Fatalf("GET /bytes/%d: curl says %q", n, out)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, n)
			for i := range want {
				want[i] = 'a' + byte(i%(64<<10)%26)
			}
			if len(got) != n || sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("GET /bytes/%d: %d bytes, not the documented pattern", n, len(got))
			}
		})
	}
	out, err := ns.Run("curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "http://"+stackV4+"/bytes/-1")
	if err != nil || out != "400" {
		t.Errorf("GET /bytes/-1 = %q %v, want 400", out, err)
	}
}

// TestPing checks that both stack addresses answer ICMP echo.
func TestPing(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	for _, a := range []string{stackV4, stackV6} {
		out := ns.MustRun("ping", "-c", "3", "-i", "0.2", "-W", "2", a)
		if !strings.Contains(out, "3 received") {
			t.Errorf("ping %s:\n%s", a, out)
		}
	}
}

// TestEchoAndDiscard sends 20 MB of random bytes through echo with nc -N
// (which half-closes after stdin ends) and checks that the same bytes come
// back; then 20 MB into discard, which must complete, over both families.
func TestEchoAndDiscard(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	data := make([]byte, 20<<20)
	rand.Read(data)
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	// Three rounds each: a stall that strikes one transfer in two (as the
	// zero-window deadlock of third_party/gvisor-patches/0001 did) is all
	// but certain to show.
	for _, a := range []string{stackV4, stackV6} {
		for round := 0; round < 3; round++ {
			out := ns.MustRun("sh", "-c", fmt.Sprintf("nc -N %s 7 < %s | sha256sum", a, in))
			if got := strings.Fields(out); len(got) == 0 || got[0] != hex.EncodeToString(want[:]) {
				t.Errorf("echo over %s, round %d: sha256 %q, want %x", a, round, out, want)
			}
		}
		ns.MustRun("sh", "-c", fmt.Sprintf("nc -N %s 9 < %s", a, in))
	}
}

// TestDaytimeAndChargen checks the two services that talk first: daytime
// sends one line and closes (nc returns by itself), chargen streams the
// RFC 864 pattern.
func TestDaytimeAndChargen(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	out := ns.MustRun("nc", "-d", "-w", "5", stackV4, "13")
	if !strings.HasSuffix(out, "-UTC\r\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("daytime sent %q, want one line ending in -UTC CRLF", out)
	}
	out = ns.MustRun("sh", "-c", fmt.Sprintf("nc -d %s 19 | head -c 148", stackV4))
	const line1 = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n"
	const line2 = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"
	if out != line1+line2 {
		t.Errorf("chargen sent %q, want %q", out, line1+line2)
	}
	// Far into the stream, across many of chargen's writes, line n is
	// still the pattern from character n mod 95 on.
	c := ns.DialStack(t, 19)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 74*5000)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 5000; n++ {
		line := b[74*n : 74*n+74]
		for i := 0; i < 72; i++ {
			if line[i] != byte(' '+(n+i)%95) {
				t.Fatalf("chargen's line %d is %q", n, line)
			}
		}
		if line[72] != '\r' || line[73] != '\n' {
			t.Fatalf("chargen's line %d ends in %q", n, line[72:])
		}
	}
}

// TestSocatHalfClose has socat send a request and shut its write side down
// at once; the echo must still come back in full after the client's FIN.
func TestSocatHalfClose(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns)
	out := ns.MustRun("sh", "-c", fmt.Sprintf("printf 'half-closed hello' | socat -t 5 - TCP:%s:7,shut-down", stackV4))
	if out != "half-closed hello" {
		t.Errorf("echo through socat = %q", out)
	}
}
