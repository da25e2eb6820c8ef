package scenario

import (
	"net"
	"time"

	"github.com/tund/tund/stack/closes"
)

// closeWaitLeak: echo never closes (for 4 s here) after the client's FIN;
// the client, which has closed its socket, sits in FIN-WAIT-2 until its
// own tcp_fin_timeout, then vanishes, while tund stays in CLOSE-WAIT.
var closeWaitLeak = &Scenario{
	Name:  "close-wait-leak",
	Title: "a CLOSE-WAIT leak: the peer sits in FIN-WAIT-2 until its own timeout",
	run: func(e *Env) error {
		const finTimeout = 2 * time.Second
		if err := e.sysctl("net.ipv4.tcp_fin_timeout", "2"); err != nil {
			return err
		}
		if err := e.startTund("--serve", "echo/close-delay=4s"); err != nil {
			return err
		}
		c, err := e.dialStack(7)
		if err != nil {
			return err
		}
		client, server := localAddr(c), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if err := exchange(c, "hello\n"); err != nil {
			c.Close()
			return err
		}
		// A full close: the socket is orphaned, as when a program exits,
		// and the kernel bounds its FIN-WAIT-2 by tcp_fin_timeout.
		c.Close()
		if err := e.awaitKernel(client, server, "FIN-WAIT-2", time.Second); err != nil {
			return err
		}
		start := time.Now()
		if err := e.awaitTund(client, "CLOSE-WAIT", time.Second); err != nil {
			return err
		}
		if err := e.observe("the client closed and tund ACKed its FIN; echo does not close", is(client)); err != nil {
			return err
		}
		if err := e.awaitKernel(client, server, "", finTimeout+2*time.Second); err != nil {
			return err
		}
		waited := time.Since(start)
		if err := e.observe("the client's tcp_fin_timeout ran out: its socket is gone, tund's is still in CLOSE-WAIT", is(client)); err != nil {
			return err
		}
		if st, err := e.tundState(client); err != nil || st != "CLOSE-WAIT" {
			if err == nil {
				err = expect(false, "tund's side is %q after the client gave up, want CLOSE-WAIT", st)
			}
			return err
		}
		e.res.Numbers["kernel_fin_wait2_seconds"] = waited.Seconds()
		e.res.Numbers["tcp_fin_timeout_seconds"] = finTimeout.Seconds()
		rec, err := e.record(client, false, 5*time.Second, nil)
		if err != nil {
			return err
		}
		e.addRecord(rec)
		if err := e.observe("echo closed at last: its FIN met the client's RST", is(client)); err != nil {
			return err
		}
		e.note("Here the client left FIN-WAIT-2 %v after entering it (tcp_fin_timeout %v).", waited.Round(10*time.Millisecond), finTimeout)
		return expect(rec.Kind == closes.KindReset && rec.ResetBy == closes.SidePeer,
			"tund recorded a %s close reset by %q, want a reset by the peer", rec.Kind, rec.ResetBy)
	},
	explain: `The kernel client closed its socket; tund ACKed its FIN, which put the
client in FIN-WAIT-2 and tund in CLOSE-WAIT, where a connection stays
until its application closes it: RFC 9293 sets no timer on CLOSE-WAIT.
echo did not close (close-delay=4s plays an application that forgets to).
FIN-WAIT-2 has no timer in RFC 9293 either, but Linux bounds it for a
socket its program has closed by net.ipv4.tcp_fin_timeout (60 s by
default; 2 s in this namespace): when it ran out the kernel dropped the
socket without a word on the wire. tund still held the connection in
CLOSE-WAIT, the leak: with a real bug it stays there for good, holding
memory and a port. When echo did close, its FIN reached a host with no
such connection, which answered with RST.`,
}
