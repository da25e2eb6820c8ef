package scenario

import (
	"bufio"
	"fmt"
	"net"
	"time"

	"github.com/tund/tund/stack/closes"
)

// simultaneous: both sides close before either hears of the other's FIN:
// both pass through CLOSING.
var simultaneous = &Scenario{
	Name:  "simultaneous",
	Title: "simultaneous close: the FINs cross, both sides go through CLOSING",
	run: func(e *Env) error {
		// tund's FIN goes out 100 ms late, and its first ACK of the
		// client's FIN is dropped: on the wire the FINs cross, neither
		// acknowledging the other.
		// tund's FIN goes out 300 ms late, and its first ACK of the
		// client's FIN is dropped: on the wire the FINs cross, neither
		// acknowledging the other.
		if err := e.startTund("--serve", "daytime", "--delay-fin", "300ms", "--drop-final-ack", "once"); err != nil {
			return err
		}
		// The kernel retransmits its unacknowledged FIN after its RTO,
		// 200 ms at least; a host route with rto_min 1 s keeps it in
		// CLOSING long enough to be seen.
		if _, err := e.run("ip", "route", "add", stackV4+"/32", "dev", tunName, "src", kernelV4, "rto_min", "1000ms"); err != nil {
			return err
		}
		c, err := e.dialStack(13)
		if err != nil {
			return err
		}
		defer c.Close()
		client, server := localAddr(c), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return fmt.Errorf("reading daytime's line: %w", err)
		}
		// daytime has closed (its FIN is on its way, late): the client
		// closes too.
		if err := e.awaitTund(client, "FIN-WAIT-1", time.Second); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		if err := e.observeWhen("the client's FIN reached tund, in FIN-WAIT-1: tund is in CLOSING; tund's FIN has not reached the client", is(client), time.Second,
			func(o Observation) bool { return o.TundState(client) == "CLOSING" }); err != nil {
			return err
		}
		if err := e.observeWhen("tund's FIN reached the client, in FIN-WAIT-1: the client is in CLOSING", is(client), time.Second,
			func(o Observation) bool { return o.KernelState(client, server) == "CLOSING" }); err != nil {
			return err
		}
		rec, err := e.record(client, false, 5*time.Second, nil)
		if err != nil {
			return err
		}
		e.addRecord(rec)
		if err := e.awaitKernel(client, server, "TIME-WAIT", 5*time.Second); err != nil {
			return err
		}
		if err := e.observe("the client sent its FIN again and tund ACKed it: both sides are in TIME-WAIT", is(client)); err != nil {
			return err
		}
		if st, err := e.tundState(client); err != nil || st != "TIME-WAIT" {
			if err == nil {
				err = expect(false, "tund's side is %q after the close, want TIME-WAIT", st)
			}
			return err
		}
		return expect(rec.Kind == closes.KindSimultaneous, "tund recorded a %s close, want simultaneous", rec.Kind)
	},
	explain: `daytime sent its line and closed, so tund's stack sent its FIN
(FIN-WAIT-1); that FIN was held 300 ms on its way (--delay-fin). The kernel
client read the line and closed too: its FIN reached tund in FIN-WAIT-1,
a FIN that did not acknowledge tund's, so tund went to CLOSING (RFC 9293
§3.6, "Case 3: Both users close simultaneously"). tund's ACK of it was
dropped (--drop-final-ack once), so when tund's FIN arrived, not
acknowledging the client's FIN either, the client in FIN-WAIT-1 went to
CLOSING too. Each ACKed the other's FIN: tund's side reached TIME-WAIT at
the client's ACK. The client's FIN had not been acknowledged on the wire
yet: its own RTO (raised to 1 s on this route, so that its CLOSING lasts
long enough for ss to show it) would send it again for tund to ACK, or
tund's retransmitted FIN (gVisor's RTO ran from when its FIN left the
stack, 300 ms before the wire saw it, and the copy was delayed too)
acknowledged it first; either took the client to TIME-WAIT. In a simultaneous close both sides end in
TIME-WAIT. Which FIN the wire shows first depends on when the client's
went out; either way neither FIN acknowledges the other.`,
}
