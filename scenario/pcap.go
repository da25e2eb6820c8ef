package scenario

import (
	"errors"
	"net/netip"

	"github.com/tund/tund/internal/pcapfile"
)

// readPcap reads the TCP segments of a pcap file tund's --pcap wrote
// (gVisor's sniffer: raw IP). A file that ends inside a record (a tund
// killed while writing it) yields the segments before that record.
func readPcap(file string) ([]pcapfile.Segment, error) {
	pkts, err := pcapfile.ReadFile(file)
	if err != nil && !errors.Is(err, pcapfile.ErrTruncated) {
		return nil, err
	}
	return pcapfile.Segments(pkts), nil
}

// between keeps the segments that go either way between a and b.
func between(segs []pcapfile.Segment, a, b netip.AddrPort) []pcapfile.Segment {
	var out []pcapfile.Segment
	for _, s := range segs {
		if (s.Src == a && s.Dst == b) || (s.Src == b && s.Dst == a) {
			out = append(out, s)
		}
	}
	return out
}
