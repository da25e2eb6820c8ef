package tests

import (
	"fmt"
	"strings"
	"testing"
)

// mss is the largest TCP payload of one 1500-byte IPv4 packet; with
// offloads, segments on the TUN device are larger than that.
const mss = 1460

// TestOffloadSuperSegments checks on the wire what --offload buys: with the
// default (auto), the kernel hands tund TCP super-segments of up to 64 KB
// and tund sends the same, in both directions and both address families,
// and the bytes still arrive whole; with --offload=off, no segment on the
// device is larger than the MTU allows. tcpdump on the TUN device sees
// segments as the driver passes them, before any segmentation.
func TestOffloadSuperSegments(t *testing.T) {
	for _, mode := range []string{"auto", "off"} {
		t.Run(mode, func(t *testing.T) {
			ns := newNS(t)
			td := startTund(t, ns, "--offload", mode, "--serve", "http,discard")
			if want := fmt.Sprintf("offload=%v", mode == "auto"); !strings.Contains(td.Logs(), want) {
				t.Errorf("tund's log lacks %q", want)
			}
			c := capture(t, ns, "tund0", "tcp port 80 or tcp port 9")
			for _, host := range []string{stackV4, "[" + stackV6 + "]"} {
				out := ns.MustRun("curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "http://"+host+"/bytes/4000000")
				if out != "200 4000000" {
					t.Errorf("curl %s/bytes/4000000: %q", host, out)
				}
				// discard closes after the peer's FIN: nc -N returns once
				// tund has read everything.
				if _, err := ns.Run("sh", "-c", fmt.Sprintf("head -c 4000000 /dev/zero | timeout 20 nc -N %s 9", strings.Trim(host, "[]"))); err != nil {
					t.Errorf("sending 4 MB to discard on %s: %v", host, err)
				}
			}
			segs := c.Stop()
			largest := map[string]int{}
			for _, s := range segs {
				dir := "into tund"
				if s.Src.Port() == 80 || s.Src.Port() == 9 {
					dir = "out of tund"
				}
				fam := "IPv4"
				if s.Src.Addr().Is6() {
					fam = "IPv6"
				}
				k := dir + " " + fam
				largest[k] = max(largest[k], s.Len)
			}
			for _, k := range []string{"into tund IPv4", "out of tund IPv4", "into tund IPv6", "out of tund IPv6"} {
				switch l := largest[k]; {
				case l == 0:
					t.Errorf("no data segment %s captured (%d segments in all)", k, len(segs))
				case mode == "auto" && l <= mss:
					t.Errorf("offload on: largest segment %s carries %d bytes, want super-segments above %d", k, l, mss)
				case mode == "off" && l > mss:
					t.Errorf("offload off: a segment %s carries %d bytes, more than an MTU of 1500 allows", k, l)
				default:
					t.Logf("largest segment %s: %d bytes", k, l)
				}
			}
		})
	}
}
