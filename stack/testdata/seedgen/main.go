// Command seedgen turns a pcap that tund wrote (--pcap, raw IP link type;
// tcpdump's raw, Linux cooked and Ethernet captures read too) into seed
// corpus files for the close path's fuzz targets, in the "go test fuzz v1"
// format, under the testdata/fuzz/<FuzzName>/ of each target's package
// (see stack/testdata/README.md).
//
//	go run ./stack/testdata/seedgen -pcap capture.pcap -name NAME -targets parse,tracer
//
// Targets: parse (FuzzParseInbound, FuzzParseOutbound: one packet of each
// shape), tracer (FuzzTracer: each connection, and the whole capture), merge
// (FuzzMerge: each connection, with a one-hour window). The record layouts
// are those of the fuzz targets (stack/internal/wiretest.Record); see
// stack/testdata/README.md for how the captures were made.
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tund/tund/internal/pcapfile"
)

func main() {
	pcap := flag.String("pcap", "", "pcap file written by tund --pcap")
	name := flag.String("name", "capture", "prefix of the seed files")
	targets := flag.String("targets", "parse,tracer,merge", "comma-separated: parse, tracer, merge")
	out := flag.String("out", "stack", "the stack directory, under which each target's package keeps its corpus")
	addrs := flag.String("addrs", "198.18.0.2,2001:2::2", "tund's own addresses: segments from them are tund's")
	flag.Parse()
	own := map[netip.Addr]bool{}
	for _, a := range strings.Split(*addrs, ",") {
		own[netip.MustParseAddr(a)] = true
	}
	pkts, err := readPcap(*pcap)
	if err != nil {
		log.Fatal(err)
	}
	g := &gen{out: *out, name: *name, own: own}
	for _, t := range strings.Split(*targets, ",") {
		switch t {
		case "parse":
			g.parse(pkts)
		case "tracer":
			g.sequences(pkts, "FuzzTracer", 0, tracerCtl)
		case "merge":
			g.sequences(pkts, "FuzzMerge", 1, mergeCtl)
		default:
			log.Fatalf("unknown target %q", t)
		}
	}
}

// readPcap returns the IP packets of a pcap file. A file cut short fails:
// the seeds are to be a capture's whole conversations.
func readPcap(path string) ([][]byte, error) {
	recs, err := pcapfile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pkts := make([][]byte, len(recs))
	for i, r := range recs {
		pkts[i] = r.Data
	}
	return pkts, nil
}

type gen struct {
	out, name string
	own       map[netip.Addr]bool
}

// seg is a TCP packet of the capture.
type seg struct {
	pkt           []byte
	fromTund, v6  bool
	conn          string
	ipLen, tcpLen int
	flags         byte
	seq, ack      uint32
	payloadLen    int
	localPort     uint16
}

func (g *gen) tcp(p []byte) (s seg, ok bool) {
	var src, dst netip.Addr
	switch header.IPVersion(p) {
	case 4:
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return s, false
		}
		s.ipLen = int(ip.HeaderLength())
		src, dst = netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
		p = p[:ip.TotalLength()]
	case 6:
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return s, false
		}
		s.ipLen, s.v6 = header.IPv6MinimumSize, true
		src, dst = netip.AddrFrom16(ip.SourceAddress().As16()), netip.AddrFrom16(ip.DestinationAddress().As16())
		p = p[:header.IPv6MinimumSize+int(ip.PayloadLength())]
	default:
		return s, false
	}
	if len(p) < s.ipLen+header.TCPMinimumSize {
		return s, false
	}
	t := header.TCP(p[s.ipLen:])
	s.pkt, s.tcpLen = p, int(t.DataOffset())
	s.flags, s.seq, s.ack = byte(t.Flags()), t.SequenceNumber(), t.AckNumber()
	s.payloadLen = len(p) - s.ipLen - s.tcpLen
	s.fromTund = g.own[src]
	local, remote := netip.AddrPortFrom(dst, t.DestinationPort()), netip.AddrPortFrom(src, t.SourcePort())
	if s.fromTund {
		local, remote = netip.AddrPortFrom(src, t.SourcePort()), netip.AddrPortFrom(dst, t.DestinationPort())
	}
	s.conn, s.localPort = local.String()+"-"+remote.String(), local.Port()
	return s, true
}

// parse writes one FuzzParseInbound seed per packet shape (direction, IP
// version, flags, header and payload presence), and one FuzzParseOutbound
// seed per shape of tund's TCP segments.
func (g *gen) parse(pkts [][]byte) {
	seenIn, seenOut := map[string]bool{}, map[string]bool{}
	for _, p := range pkts {
		s, ok := g.tcp(p)
		shape := fmt.Sprintf("%v-%d-%v-%x-%d-%v", ok, header.IPVersion(p), s.fromTund, s.flags, s.tcpLen, s.payloadLen > 0)
		if !seenIn[shape] {
			seenIn[shape] = true
			g.write("FuzzParseInbound", fmt.Sprintf("%s-%d", g.name, len(seenIn)), quoteBytes(p))
		}
		if ok && s.fromTund && !seenOut[shape] {
			seenOut[shape] = true
			g.write("FuzzParseOutbound", fmt.Sprintf("%s-%d", g.name, len(seenOut)),
				quoteBytes(s.pkt[:s.ipLen]), quoteBytes(s.pkt[s.ipLen:s.ipLen+s.tcpLen]), fmt.Sprintf("int(%d)", s.payloadLen))
		}
	}
}

// tracerCtl and mergeCtl encode a segment's direction and flow as the
// targets read a record's ctl byte: IPv4 connections take flow 0, IPv6 ones
// flow 2 (alt: 1 and 3).
func tracerCtl(s seg, alt bool) byte {
	ctl := byte(0)
	if s.fromTund {
		ctl |= 1
	}
	return ctl | flowIndex(s, alt)<<1
}

func mergeCtl(s seg, _ bool) byte {
	ctl := byte(0) // inbound
	if s.fromTund {
		ctl = 1 // outbound, a batch of its own
	}
	return ctl | flowIndex(s, false)<<2
}

func flowIndex(s seg, alt bool) byte {
	i := byte(0)
	if s.v6 {
		i = 2
	}
	if alt {
		i++
	}
	return i
}

// sequences writes a seed per connection (and, for the tracer, one of the
// whole capture, connections alternating between two flows per version).
func (g *gen) sequences(pkts [][]byte, target string, config byte, ctl func(seg, bool) byte) {
	var order []string
	conns, ports := map[string][]byte{}, map[string]uint16{}
	all := []byte{config}
	alt := map[string]bool{}
	count := [2]int{}
	for _, p := range pkts {
		s, ok := g.tcp(p)
		if !ok {
			continue
		}
		if _, ok := conns[s.conn]; !ok {
			order = append(order, s.conn)
			conns[s.conn], ports[s.conn] = []byte{config}, s.localPort
			v := 0
			if s.v6 {
				v = 1
			}
			alt[s.conn] = count[v]%2 == 1
			count[v]++
		}
		conns[s.conn] = appendRecord(conns[s.conn], ctl(s, false), s)
		all = appendRecord(all, ctl(s, alt[s.conn]), s)
	}
	for i, c := range order {
		g.write(target, fmt.Sprintf("%s-conn%d-port%d", g.name, i+1, ports[c]), quoteBytes(conns[c]))
	}
	if target == "FuzzTracer" {
		g.write(target, g.name+"-all", quoteBytes(all))
	}
}

func appendRecord(b []byte, ctl byte, s seg) []byte {
	b = append(b, ctl, s.flags)
	b = binary.BigEndian.AppendUint32(b, s.seq)
	b = binary.BigEndian.AppendUint32(b, s.ack)
	return binary.BigEndian.AppendUint16(b, uint16(min(s.payloadLen, 0xffff)))
}

func quoteBytes(b []byte) string { return "[]byte(" + strconv.Quote(string(b)) + ")" }

// targetPackages are the package directories of the fuzz targets, under the
// stack directory.
var targetPackages = map[string]string{
	"FuzzParseInbound":  "internal/wire",
	"FuzzParseOutbound": "internal/wire",
	"FuzzTracer":        "closes",
	"FuzzMerge":         "link/merge",
}

func (g *gen) write(target, file string, values ...string) {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		b.WriteString(v + "\n")
	}
	dir := filepath.Join(g.out, targetPackages[target], "testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), b.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
