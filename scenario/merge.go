package scenario

import (
	"net"
	"time"

	"github.com/tund/tund/stack/closes"
)

// longMergeWindow: a merge window longer than the peer's minimum RTO with
// a service that stays in CLOSE-WAIT: no FIN of tund's comes to carry the
// held ACK, and the peer retransmits its FIN.
var longMergeWindow = &Scenario{
	Name:  "long-merge-window",
	Title: "a merge window longer than the peer's RTO: the peer retransmits its FIN for nothing",
	run: func(e *Env) error {
		if err := e.startTund("--serve", "discard/close-delay=1s/fin-ack-merge=300ms"); err != nil {
			return err
		}
		c, err := e.dialStack(9)
		if err != nil {
			return err
		}
		defer c.Close()
		client, server := localAddr(c), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		// No data before the FIN: unacknowledged data would make the
		// client's tail loss probe (RFC 8985) fire long before any RTO.
		if err := c.CloseWrite(); err != nil {
			return err
		}
		if err := e.awaitKernel(client, server, "FIN-WAIT-1", time.Second); err != nil {
			return err
		}
		if err := e.observe("the client's FIN is not ACKed yet: tund holds the ACK for its 300 ms window", is(client)); err != nil {
			return err
		}
		if err := e.awaitKernel(client, server, "FIN-WAIT-2", time.Second); err != nil {
			return err
		}
		if err := e.observe("the client sent its FIN again; tund sent the held ACK at once", is(client)); err != nil {
			return err
		}
		if _, err := readToEOF(c, 5*time.Second); err != nil {
			return err
		}
		if err := closeDone(e, c, closes.KindFourWay, closes.SidePeer); err != nil {
			return err
		}
		flushed, err := e.metric(`tund_fin_ack_merge_total{outcome="flushed"}`)
		if err != nil {
			return err
		}
		rec := e.res.Records[len(e.res.Records)-1]
		e.res.Numbers["peer_fin_retransmits"] = float64(rec.FINRetransmits)
		e.res.Numbers["merge_flushed"] = flushed
		if err := expect(rec.FINRetransmits >= 1, "the client did not retransmit its FIN"); err != nil {
			return err
		}
		return expect(flushed == 1, `tund_fin_ack_merge_total{outcome="flushed"} is %v, want 1`, flushed)
	},
	explain: `The kernel client closed first. tund held the ACK of its FIN for up to
--fin-ack-merge (300 ms here) hoping to send it on its own FIN, but
discard stays in CLOSE-WAIT for a second (close-delay), so no FIN came.
Meanwhile the client's retransmission timer, at least 200 ms on Linux
(RFC 6298 §2.4, tcp_rto_min), ran out before any ACK came and it sent its
FIN again: a retransmission for nothing, the FIN had arrived. The
retransmitted FIN makes tund send the held ACK at once (counted in
tund_fin_ack_merge_total{outcome="flushed"}). Keep the window under the
peer's minimum RTO; the default 40 ms is Linux's delayed-ACK minimum.
discard closed a second later, a four-way close.`,
}
