package stack

import (
	"io"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/link/sniffer"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pcapSnapLen keeps whole packets up to the largest TUN MTU.
const pcapSnapLen = 65535

func init() {
	// The sniffer's packet log (one line per packet on the global logger)
	// is on by default; tund writes pcap only.
	sniffer.LogPackets.Store(0)
}

// withPcap wraps link so that every packet crossing it, both ways, is
// written to w in pcap format (readable by tcpdump -r and Wireshark).
func withPcap(link gstack.LinkEndpoint, w io.Writer) (gstack.LinkEndpoint, error) {
	return sniffer.NewWithWriter(link, &pcapWriter{w: w}, pcapSnapLen)
}

// pcapWriter serialises the sniffer's writes, which come from the reading
// and the writing goroutines at once, and swallows write errors: the
// sniffer panics on one, and a full disk must not take the stack down. Err
// reports the first.
type pcapWriter struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

func (p *pcapWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		_, p.err = p.w.Write(b)
	}
	return len(b), nil
}
