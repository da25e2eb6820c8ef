package tests

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM to a tund holding 1,000 echo
// connections and a chargen stream. Every client that closes when it reads
// EOF must see a clean EOF (tund's FIN, no RST) after its last echo, the
// chargen client must read its stream to a clean EOF, and tund must exit 0
// and remove its device (the harness checks). The stubborn clients that
// never close are reset when --drain runs out.
func TestGracefulShutdown(t *testing.T) {
	const conns, stubborn = 1000, 5
	ns := newNS(t)
	td := startTund(t, ns, "--drain", "3s", "--serve", "echo,chargen")
	capt := capture(t, ns, "tund0", "tcp[tcpflags] & tcp-rst != 0")

	var cs []net.Conn
	for i := range conns {
		c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "7"))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		if err := roundTrip(c, fmt.Sprint("line ", i)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		cs = append(cs, c)
	}
	gen, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "19"))
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	if _, err := io.ReadFull(gen, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		bad     []string
		genRead int64
		genErr  error
	)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			n, err := io.Copy(io.Discard, c) // nil on EOF
			if err != nil || n != 0 {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("connection %d: %d bytes, %v", i, n, err))
				mu.Unlock()
			}
			if i >= stubborn {
				c.Close()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		gen.SetReadDeadline(time.Now().Add(15 * time.Second))
		genRead, genErr = io.Copy(io.Discard, gen)
		gen.Close()
	}()
	stopped := time.Now()
	td.Stop()
	wg.Wait()
	t.Logf("tund exited %v after SIGTERM; chargen client read %d more bytes to EOF", time.Since(stopped).Round(time.Millisecond), genRead)
	if len(bad) > 0 {
		t.Errorf("%d of %d clients did not get a clean EOF, e.g. %s", len(bad), conns, strings.Join(bad[:min(5, len(bad))], "; "))
	}
	if genErr != nil {
		t.Errorf("chargen stream ended with %v, want a clean EOF", genErr)
	}
	// RSTs from tund go only to the stubborn clients, at the drain's end.
	stubbornPorts := map[uint16]bool{}
	for _, c := range cs[:stubborn] {
		stubbornPorts[uint16(c.LocalAddr().(*net.TCPAddr).Port)] = true
	}
	for _, s := range capt.Stop() {
		if s.Src.Port() == 7 || s.Src.Port() == 19 {
			if !stubbornPorts[s.Dst.Port()] {
				t.Errorf("tund reset a client that closed: %v", s)
			}
		}
	}
	logs := td.Logs()
	if !strings.Contains(logs, "drain time over") {
		t.Errorf("tund did not log the reset of the %d stubborn clients:\n%s", stubborn, logs)
	}
}
