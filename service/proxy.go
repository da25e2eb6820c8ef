package service

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/tund/tund/forward"
)

// proxyTo returns the proxy's handler: each connection that arrives on the
// stack is carried to target through a kernel socket in tund's namespace,
// so that a kernel server is reached through tund's TCP and its close path.
// Half-close and RST cross in both directions (forward.Splice).
//
// The options shape the stack-side connection: half-close is what the
// proxy does when the client half-closes (allow passes the FIN on to the
// server and carries the server's data until it closes too; close ends
// both connections at once; a duration ends them that long after, if the
// server has not closed by then); abort makes every FIN the proxy would
// send to the client a RST; fin-wait2 and fin-ack-merge apply as for any
// service. A target that cannot be reached resets the client. When tund
// stops, each pair is left drain to end by itself (forward.Policy.Drain).
//
// With copySplice the bytes go the common way instead (forward.Copy), with
// none of the policy: the baseline tund's splice is measured against.
func proxyTo(target netip.AddrPort, copySplice bool, drain time.Duration) handler {
	return func(ctx context.Context, c *conn, log *slog.Logger) {
		var d net.Dialer
		kc, err := d.DialContext(ctx, "tcp", target.String())
		if err != nil {
			log.Info("proxy: cannot reach the target; resetting the client", "err", err)
			c.Abort()
			return
		}
		log = log.With("via", kc.LocalAddr().String())
		log.Debug("proxy connected")
		if copySplice {
			forward.Copy(c.Conn, kc.(*net.TCPConn))
			return
		}
		res := forward.Splice(ctx, forward.Stack(c.Conn), forward.Kernel(kc.(*net.TCPConn)), forward.Policy{
			HalfCloseClose: c.opts.HalfClose.Close,
			HalfCloseAfter: c.opts.HalfClose.After,
			AbortA:         c.opts.Abort,
			OnHalfClose:    c.NoteHalfClose,
			Drain:          drain,
		})
		log.Debug("proxy done", "to_target", res.AtoB, "from_target", res.BtoA, "end", res.End)
	}
}
