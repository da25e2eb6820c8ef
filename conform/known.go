package conform

// known returns the documented reason why tund, as target names it, does
// not keep a case's rule where Linux does, or "" for none: every such
// difference is either fixed in tund or listed here (CONFORMANCE.md).
func known(caseName, target string) string {
	if r, ok := differences[target][caseName]; ok {
		return r
	}
	return differences["*"][caseName]
}

// differences holds the reasons, by target ("*": every configuration of
// tund's), then by case.
var differences = map[string]map[string]string{
	"*": {},
	"tund": {
		"time-wait-rst": "tund keeps gVisor's choice of RFC 1337 (TIME-WAIT assassination hazards, §2): a RST does not end TIME-WAIT, so the FIN after it is acknowledged. `--time-wait-rst close`, which `--like linux` sets, ends TIME-WAIT as Linux does (tcp_rfc1337=0).",
	},
}

// segmentReasons says why tund's segments differ from Linux's in a case
// whose rule both keep: a DIFF is either explained here or a change to
// look into.
var segmentReasons = map[string]string{
	"data-after-close":        rstWithACK,
	"shutdown-read-write":     rstWithACK,
	"rst-in-fin-wait-2":       finWait2TimewaitSocket + " Here the RST inside the window ended Linux's; tund answers it with a challenge ACK.",
	"exact-rst-in-fin-wait-2": finWait2TimewaitSocket + " Here the RST inside the window ended Linux's; tund answers it with a challenge ACK and ends the connection on the RST at RCV.NXT.",
	"syn-in-fin-wait-2":       finWait2TimewaitSocket + " Here the SYN drew Linux's RST; tund answers it with a challenge ACK.",
	"time-wait-syn-above":     "the new connection's ISN: Linux takes the old connection's SND.NXT + 65,537 (tcp_timewait_state_process), so that no segment of the old connection still in flight falls inside the new window; gVisor takes a fresh one from its keyed hash and 64 ns clock (RFC 6528), to which tund's compact TIME-WAIT table hands the SYN.",
}

// whyDiff returns the reason for a DIFF in caseName, or "".
func whyDiff(caseName string) string { return segmentReasons[caseName] }

const (
	rstWithACK = "tund's RST carries an ACK (RST|ACK, acknowledging the data) where Linux sends a bare RST at SEG.ACK, the form RFC 9293 §3.10.7.4 gives for a segment with ACK set; the peer accepts either, both are at the sequence number it expects."

	finWait2TimewaitSocket = "tund keeps RFC 5961 here and Linux does not: once its application has closed, Linux keeps a connection in FIN-WAIT-2 as a timewait socket (tcp_time_wait with TCP_FIN_WAIT2), which ends on any RST inside the window and answers a SYN with RST, without RFC 5961's challenge ACK."
)
