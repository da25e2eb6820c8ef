package scenario

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tund/tund/internal/pcapfile"
	"github.com/tund/tund/internal/serve"
	"github.com/tund/tund/stack/closes"
)

// reconnectPort is tund's only ephemeral port in same-port-reconnect: a
// second connection to the same server has the same 4-tuple.
const reconnectPort = 40000

// reconnectRTOMin is the kernel's minimum RTO towards tund's stack in
// same-port-reconnect: the server's FIN is retransmitted no sooner, so the
// new SYN, sent a few tens of milliseconds after the server is seen in
// LAST-ACK, certainly meets LAST-ACK.
const reconnectRTOMin = time.Second

// samePortReconnect: tund as a client closes first, its final ACK is
// lost, and it opens a new connection from the same port to the same
// server: without TIME-WAIT the SYN meets the server's LAST-ACK; with
// TIME-WAIT the port is held.
var samePortReconnect = &Scenario{
	Name:  "same-port-reconnect",
	Title: "no TIME-WAIT on tund as client: a new connection from the same port meets the server's LAST-ACK; with TIME-WAIT the port is held",
	run: func(e *Env) error {
		if err := reconnectNoTimeWait(e); err != nil {
			return fmt.Errorf("MSL 0: %w", err)
		}
		if err := reconnectTimeWait(e); err != nil {
			return fmt.Errorf("MSL 30s: %w", err)
		}
		if err := reconnectReuse(e); err != nil {
			return fmt.Errorf("MSL 30s, TIME-WAIT reuse on: %w", err)
		}
		return nil
	},
	explain: `tund is the client here, as in port-exhaustion: --dial has it
listen on 127.0.0.1:7000 and, for each kernel connection accepted there,
open one from its stack to a kernel server on 198.18.0.1, from its only
ephemeral port, 40000 (--port-range 40000-40000), so that a second
connection to the same server has the same 4-tuple. The kernel client
shuts down its side at once; tund passes the FIN on, the server reads EOF
and closes, and tund's ACK of the server's FIN, the final ACK, is dropped
(--drop-final-ack once): the server waits in LAST-ACK. The kernel's
minimum RTO towards tund is raised to 1 s on this route, so the server
retransmits its FIN only after 1 s and the next step certainly comes
first. Then the kernel client connects again, and tund dials the same
server again.

With --msl 0 tund has no TIME-WAIT: it forgot the connection when it sent
the final ACK, port 40000 is free, and its SYN goes to the server's
LAST-ACK socket with the same 4-tuple. Linux does not take a SYN in a
synchronized state as a new connection: it answers with a challenge ACK
(RFC 5961 §4), which acknowledges the old connection's FIN, not the SYN.
tund, in SYN-SENT, finds that ACK unacceptable and answers it with a RST
whose sequence number is the ACK's acknowledgment number (RFC 9293
§3.10.7.3) - exactly what the server expects next, so the server accepts
the RST and drops its LAST-ACK socket, its FIN never acknowledged. tund
then sends its SYN again at once instead of after its 1 s RTO, as Linux
does in SYN-SENT after such an ACK ("Previous FIN/ACK or RST/ACK might be
ignored": one SYN after TCP_TIMEOUT_MIN, 2 jiffies); but gVisor restarts
its SYN back-off at 2 µs, so copies of the SYN follow at 2, 4, 8, ... µs
until the SYN-ACK is back: several identical SYNs on the wire, harmless
here (the server answers each with the same SYN-ACK or none). The new
connection opens within a millisecond or so, and the old one ends in a
reset that the server's application never hears of (it had closed
already). It worked out here,
but only because tund's new SYN sequence number and the RST happened to be
acceptable: RFC 1122 §4.2.2.13 allows a new connection on the 4-tuple of
one in TIME-WAIT only when its sequence numbers lie beyond the old ones,
and TIME-WAIT is what keeps the old connection's segments and state from
meeting the new one.

With --msl 30s tund keeps TIME-WAIT on port 40000, and a connection it
opens cannot take the port: the dial fails at once, with no SYN on the
wire, and tund resets the kernel client (it is its only port). The
server's LAST-ACK is untouched: after its RTO it retransmits its FIN,
tund's TIME-WAIT ACKs it (RFC 9293 §3.10.7.4), and the server closes
cleanly.

With --msl 30s and --time-wait-reuse on, a connection tund opens may take
the port of one of its TIME-WAIT connections to the same server (ending
that TIME-WAIT, like Linux's tcp_tw_reuse), but only once the last
segment the TIME-WAIT saw is at least 1 s old. An immediate reconnect is
refused as without reuse; the server's retransmitted FIN is ACKed; and a
reconnect 1 s after that takes port 40000 with a plain three-way
handshake, since the server holds no state for the old connection any
more.`,
}

// reconnectSetup is one configuration of same-port-reconnect: tund
// started with its flags, and the kernel server it dials.
type reconnectSetup struct {
	e       *Env
	config  string
	server  netip.AddrPort // the kernel server: a port of its own per configuration
	tundEnd netip.AddrPort // tund's side: its only port
	ln      *net.TCPListener
	dialErr string // why tund's dial failed, from its log
}

// startReconnect starts tund dialing a kernel server on port serverPort
// (a fresh port per configuration, so that the kernel's TIME-WAIT of an
// earlier one is not in the way), with extra flags.
func startReconnect(e *Env, config string, serverPort int, extra ...string) (*reconnectSetup, error) {
	r := &reconnectSetup{e: e, config: config,
		server:  netip.AddrPortFrom(netip.MustParseAddr(kernelV4), uint16(serverPort)),
		tundEnd: netip.AddrPortFrom(netip.MustParseAddr(stackV4), reconnectPort)}
	port := strconv.Itoa(reconnectPort)
	args := append([]string{"--dial", dialListen + "=" + r.server.String(), "--port-range", port + "-" + port,
		"--drop-final-ack", "once"}, extra...)
	if err := e.startTund(args...); err != nil {
		return nil, err
	}
	// tund's device is made anew at each start, and its routes with it.
	if _, err := e.run("ip", "route", "replace", stackV4+"/32", "dev", tunName, "src", kernelV4,
		"rto_min", fmt.Sprintf("%dms", reconnectRTOMin.Milliseconds())); err != nil {
		return nil, err
	}
	ln, err := e.listen(r.server.String())
	if err != nil {
		return nil, err
	}
	r.ln = ln
	go serveLine(ln)
	return r, nil
}

// keep is the observation filter: the server's socket, and tund's
// connection to it.
func (r *reconnectSetup) keep(a netip.AddrPort) bool { return a == r.server }

// lastAck runs the first connection through tund and waits until ss shows
// the server in LAST-ACK; tund's side must then be in tundWant.
func (r *reconnectSetup) lastAck(label, tundWant string) error {
	if err := throughDial(r.e); err != nil {
		return fmt.Errorf("the first connection: %w", err)
	}
	var tundSaw string
	err := r.e.observeWhen(r.config+": "+label, r.keep, 2*time.Second, func(o Observation) bool {
		tundSaw = o.TundState(r.server)
		return o.KernelState(r.server, r.tundEnd) == "LAST-ACK"
	})
	if err != nil {
		return err
	}
	return expect(tundSaw == tundWant, "tund's side of the first connection is %q while the server is in LAST-ACK, want %q", tundSaw, tundWant)
}

// reconnect is the kernel client's second connection through tund: it
// sends a line, reads it back and reads to the server's FIN. It returns
// how long that took, and what failed.
func (r *reconnectSetup) reconnect() (time.Duration, error) {
	start := time.Now()
	c, err := r.e.dial(r.e.ctx, "tcp", dialListen)
	if err != nil {
		return since(start), err
	}
	defer c.Close()
	if err = exchange(c, "hello\n"); err == nil {
		_, err = readToEOF(c, 5*time.Second)
	}
	return since(start), err
}

// firstRecord returns tund's close record of the configuration's first
// connection (its oldest record with the server), once match accepts it.
func (r *reconnectSetup) firstRecord(match func(*closes.Record) bool) (*closes.Record, error) {
	var found *closes.Record
	err := r.e.await("tund's close record of its first connection to "+r.server.String(), 5*time.Second, func() (bool, error) {
		recs, err := r.e.closes()
		if err != nil {
			return false, err
		}
		found = nil
		for _, rec := range recs {
			if rec.Remote == r.server && (found == nil || rec.Start.Before(found.Start)) {
				found = rec
			}
		}
		return found != nil && match(found), nil
	})
	if err == nil {
		r.e.addRecord(found)
	}
	return found, err
}

// finish stops tund and the server and returns the segments between tund's
// port and the server from tund's pcap, also listed in the result.
func (r *reconnectSetup) finish() ([]pcapfile.Segment, error) {
	r.ln.Close()
	r.e.stopTund() // the pcap is complete once tund has exited
	all, err := readPcap(r.e.res.Pcaps[len(r.e.res.Pcaps)-1])
	if err != nil {
		return nil, err
	}
	segs := between(all, r.tundEnd, r.server)
	if len(segs) == 0 {
		return nil, expect(false, "tund's pcap shows no segment between %v and %v", r.tundEnd, r.server)
	}
	r.e.res.Wire = append(r.e.res.Wire, r.config+":")
	r.e.res.Wire = append(r.e.res.Wire, describeWire(segs, r.tundEnd)...)
	return segs, nil
}

// reconnectNoTimeWait is the configuration the scenario is about: MSL 0.
func reconnectNoTimeWait(e *Env) error {
	r, err := startReconnect(e, "MSL 0", 9000, "--msl", "0")
	if err != nil {
		return err
	}
	defer r.ln.Close()
	if err := r.lastAck("the server waits in LAST-ACK; tund, with no TIME-WAIT, has forgotten the connection", ""); err != nil {
		return err
	}
	took, err := r.reconnect()
	if err != nil {
		return expect(false, "the second connection from port %d failed after %v: %v", reconnectPort, took, err)
	}
	// The server echoed the line and closed first: it ends in TIME-WAIT.
	if err := e.observeWhen(r.config+": the second connection, from the same port, carried its line and closed; the server, which closed it first, is in TIME-WAIT", r.keep, 2*time.Second,
		func(o Observation) bool {
			return o.KernelState(r.server, r.tundEnd) == "TIME-WAIT" && o.TundState(r.server) == ""
		}); err != nil {
		return err
	}
	rec, err := r.firstRecord(func(c *closes.Record) bool { return c.Kind == closes.KindReset })
	if err != nil {
		return err
	}
	segs, err := r.finish()
	if err != nil {
		return err
	}
	w, err := challengeStory(segs, r.tundEnd)
	if err != nil {
		return err
	}
	e.res.Numbers["msl0_second_connection_ms"] = ms(took)
	e.res.Numbers["msl0_syn_to_challenge_ack_ms"] = ms(w.challenge.T.Sub(w.syn.T))
	e.res.Numbers["msl0_syn_to_synack_ms"] = ms(w.synAck.T.Sub(w.syn.T))
	e.res.Numbers["msl0_syn_copies"] = float64(w.synCopies)
	e.res.Numbers["msl0_server_fin_retransmits_before_syn"] = float64(w.finRetransmits)
	e.note("\n\nHere, with MSL 0, tund's new SYN left %v after the first connection's FIN; the server's challenge ACK came %v after it and acknowledged %d (tund's old FIN + 1); tund's RST carried seq %d; the SYN-ACK came %v after the first SYN, which tund sent %d times in all. The kernel client's second connection took %v in all.",
		w.syn.T.Sub(w.oldFIN.T).Round(time.Millisecond), w.challenge.T.Sub(w.syn.T).Round(time.Microsecond), w.challenge.Ack, w.rst.Seq,
		w.synAck.T.Sub(w.syn.T).Round(time.Microsecond), w.synCopies, took)
	return expect(rec.ResetBy == closes.SideTund && rec.Initiator == closes.SideTund,
		"tund's record of the first connection: reset by %q, started by %q; want both tund", rec.ResetBy, rec.Initiator)
}

// reconnectTimeWait: MSL 30s; the second dial finds the port held.
func reconnectTimeWait(e *Env) error {
	r, err := startReconnect(e, "MSL 30s", 9001, "--msl", "30s")
	if err != nil {
		return err
	}
	defer r.ln.Close()
	if err := r.lastAck("the server waits in LAST-ACK; tund is in TIME-WAIT", "TIME-WAIT"); err != nil {
		return err
	}
	took, err := refused(r)
	if err != nil {
		return err
	}
	if err := r.acked(); err != nil {
		return err
	}
	if _, err := r.firstRecord(func(c *closes.Record) bool { return c.FINRetransmits > 0 }); err != nil {
		return err
	}
	segs, err := r.finish()
	if err != nil {
		return err
	}
	w, err := timeWaitStory(segs, r.tundEnd)
	if err != nil {
		return err
	}
	if len(w.syns) != 1 {
		return expect(false, "tund sent SYNs with ISNs %v, want one connection only: the second dial should not reach the wire", w.syns)
	}
	e.res.Numbers["msl30_second_connection_reset_ms"] = ms(took)
	e.res.Numbers["msl30_fin_retransmit_ms"] = ms(w.finAgain.T.Sub(w.fin.T))
	e.note("\n\nHere, with MSL 30s, the second connection was reset %v after it was opened (tund's log: %q), and no second SYN went out; the server sent its FIN again %v after the first, and tund's TIME-WAIT ACKed it.",
		took, r.dialErr, w.finAgain.T.Sub(w.fin.T).Round(time.Millisecond))
	return nil
}

// reconnectReuse: MSL 30s with TIME-WAIT reuse; refused at once, taken
// once the TIME-WAIT's last segment is 1 s old.
func reconnectReuse(e *Env) error {
	r, err := startReconnect(e, "MSL 30s, reuse", 9002, "--msl", "30s", "--time-wait-reuse", "on")
	if err != nil {
		return err
	}
	defer r.ln.Close()
	if err := r.lastAck("the server waits in LAST-ACK; tund is in TIME-WAIT", "TIME-WAIT"); err != nil {
		return err
	}
	if _, err := refused(r); err != nil {
		return err
	}
	if err := r.acked(); err != nil {
		return err
	}
	// gVisor reuses a TIME-WAIT whose last segment is at least 1 s old:
	// try every 100 ms until the dial succeeds.
	tries := 0
	err = e.await("a connection from port 40000 while tund's TIME-WAIT holds it", 3*time.Second, func() (bool, error) {
		tries++
		_, err = r.reconnect()
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			return false, err
		}
		time.Sleep(90 * time.Millisecond) // await polls every 10 ms; a dial a try is enough
		return false, nil
	})
	if err != nil {
		return err
	}
	if err := e.observeWhen(r.config+": a later connection took port 40000 (TIME-WAIT reuse) and closed; the server, which closed it first, is in TIME-WAIT", r.keep, 2*time.Second,
		func(o Observation) bool {
			return o.KernelState(r.server, r.tundEnd) == "TIME-WAIT" && o.TundState(r.server) == ""
		}); err != nil {
		return err
	}
	if _, err := r.firstRecord(func(c *closes.Record) bool { return c.FINRetransmits > 0 }); err != nil {
		return err
	}
	segs, err := r.finish()
	if err != nil {
		return err
	}
	w, err := reuseStory(segs, r.tundEnd)
	if err != nil {
		return err
	}
	after := w.syn.T.Sub(w.finAgain.T)
	e.res.Numbers["reuse_tries"] = float64(tries)
	e.res.Numbers["reuse_syn_after_fin_again_ms"] = ms(after)
	e.note("\n\nHere, with TIME-WAIT reuse, an immediate reconnect was refused as well (tund's log: %q); trying every 100 ms, the reconnect succeeded at try %d, %v after the server's retransmitted FIN reached tund's TIME-WAIT, with a plain SYN, SYN-ACK, ACK.",
		r.dialErr, tries, after.Round(time.Millisecond))
	// The pcap's clock and gVisor's are not the same reading: a little
	// slack.
	return expect(after >= time.Second-20*time.Millisecond, "the reused port's SYN went out %v after the last segment tund's TIME-WAIT received, want 1 s or more", after)
}

// refused checks that a second connection at once is reset by tund (it
// cannot dial: its port is held) and leaves the server in LAST-ACK.
func refused(r *reconnectSetup) (time.Duration, error) {
	took, err := r.reconnect()
	if !errors.Is(err, syscall.ECONNRESET) {
		return took, expect(false, "the second connection while tund's TIME-WAIT holds port %d: %v after %v, want a reset from tund", reconnectPort, errString(err), took)
	}
	r.dialErr = dialError(r.e.TundLog())
	return took, r.e.observeWhen(r.config+": a second connection at once was reset by tund, which could not dial (its only port is held by TIME-WAIT); the server is still in LAST-ACK", r.keep, time.Second,
		func(o Observation) bool { return o.KernelState(r.server, r.tundEnd) == "LAST-ACK" })
}

// acked waits until the server's retransmitted FIN is ACKed by tund's
// TIME-WAIT and its socket is gone.
func (r *reconnectSetup) acked() error {
	return r.e.observeWhen(r.config+": the server sent its FIN again after its RTO; tund's TIME-WAIT ACKed it, and the server's socket is closed", r.keep, reconnectRTOMin+2*time.Second,
		func(o Observation) bool {
			return o.KernelState(r.server, r.tundEnd) == "" && o.TundState(r.server) == "TIME-WAIT"
		})
}

// serveLine is the kernel server: for each connection it reads a line and
// writes it back, or reads to EOF, and then closes.
func serveLine(ln net.Listener) {
	serve.Each(ln, 10*time.Second, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			io.WriteString(c, line)
		}
	})
}

// dialError returns the error of tund's last "dial failed" log line.
func dialError(log string) string {
	i := strings.LastIndex(log, "dial failed")
	if i < 0 {
		return "(not logged)"
	}
	line := log[i:]
	line = line[:strings.IndexByte(line+"\n", '\n')]
	if j := strings.Index(line, `err="`); j >= 0 {
		v := line[j+len(`err="`):]
		if k := strings.IndexByte(v, '"'); k >= 0 {
			return v[:k]
		}
	}
	return line
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
