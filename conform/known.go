package conform

import "strings"

// What CONFORMANCE.md documents: every way tund departs from Linux in a
// case, each with its reason and with what it looks like, so that the
// same case failing another way, or differing in other segments, is not
// excused. A difference is either fixed in tund or listed here.

// ruleBreak is a case's rule that tund does not keep, where Linux does.
type ruleBreak struct {
	target string // the configuration of tund's it applies to; "" all
	err    string // part of the error the case must fail with
	reason string
}

var ruleBreaks = map[string]ruleBreak{
	"time-wait-rst": {
		target: "tund", err: "TIME-WAIT outlived the RST",
		reason: "tund keeps gVisor's choice of RFC 1337 (TIME-WAIT assassination hazards, §2): a RST does not end TIME-WAIT, so the FIN after it is acknowledged. `--time-wait-rst close`, which `--like linux` sets, ends TIME-WAIT as Linux does (tcp_rfc1337=0).",
	},
}

// segmentDiff is a way tund's segments differ from Linux's in a case whose
// rule it keeps: only describes says whether two exchanges differ only so.
type segmentDiff struct {
	only   func(linux, tund Seg) bool // a pair of segments that may differ
	reason string
}

var segmentDiffs = map[string]segmentDiff{
	"data-after-close":    {rstCarriesACK, rstWithACK},
	"shutdown-read-write": {rstCarriesACK, rstWithACK},
	"time-wait-syn-above": {
		func(l, t Seg) bool { return l.From == "server" && l.Flags == "SA" && t.Flags == "SA" && l.Ack == t.Ack },
		"the new connection's ISN: Linux takes the old connection's SND.NXT + 65,537 (tcp_timewait_state_process), so that no segment of the old connection still in flight falls inside the new window; gVisor takes a fresh one from its keyed hash and 64 ns clock (RFC 6528), to which tund's compact TIME-WAIT table hands the SYN.",
	},
}

// rstCarriesACK: tund's RST is RST|ACK where Linux's is a bare RST.
func rstCarriesACK(l, t Seg) bool {
	return l.From == "server" && l.Flags == "R" && t.Flags == "RA" && l.Seq == t.Seq
}

const rstWithACK = "tund's RST carries an ACK (RST|ACK, acknowledging the data) where Linux sends a bare RST at SEG.ACK, the form RFC 9293 §3.10.7.4 gives for a segment with ACK set; the peer accepts either, both are at the sequence number it expects."

// linuxBreaks are the cases whose rule Linux itself does not keep, and
// why. Linux failing any other case means the peer, the case or the setup
// is broken, and the run fails.
var linuxBreaks = map[string]string{
	"rst-in-fin-wait-2":       finWait2TimewaitSocket + " Here the RST inside the window ended Linux's connection; tund answers it with a challenge ACK.",
	"exact-rst-in-fin-wait-2": finWait2TimewaitSocket + " Here the RST inside the window ended Linux's connection; tund answers it with a challenge ACK and ends the connection on the RST at RCV.NXT.",
	"syn-in-fin-wait-2":       finWait2TimewaitSocket + " Here the SYN drew Linux's RST; tund answers it with a challenge ACK.",
}

const finWait2TimewaitSocket = "Linux does not keep RFC 5961 here, tund does: once its application has closed, Linux keeps a connection in FIN-WAIT-2 as a timewait socket (tcp_time_wait with TCP_FIN_WAIT2), which ends on any RST inside the window and answers a SYN with RST, without RFC 5961's challenge ACK."

// LinuxBreaks reports whether Linux is documented not to keep the rule
// of the case called name.
func LinuxBreaks(name string) bool { _, ok := linuxBreaks[name]; return ok }

// known returns the documented reason for side's failure of the case
// called name, or "".
func known(name string, side Side) string {
	b, ok := ruleBreaks[name]
	if !ok || (b.target != "" && b.target != side.Target) || !strings.Contains(side.Err, b.err) {
		return ""
	}
	return b.reason
}

// whyDiff returns the documented reason why tund's segments differ from
// Linux's in the case called name, or "" when the difference is not the
// documented one.
func whyDiff(name string, linux, tund []Seg) string {
	if r, ok := linuxBreaks[name]; ok {
		return r
	}
	d, ok := segmentDiffs[name]
	if !ok || len(linux) != len(tund) {
		return ""
	}
	for i := range linux {
		if !linux[i].Same(tund[i]) && !d.only(linux[i], tund[i]) {
			return ""
		}
	}
	return d.reason
}
