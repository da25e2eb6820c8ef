package scenario

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tund/tund/internal/serve"
)

// Run is one configuration of a comparing scenario and what its clients
// saw.
type Run struct {
	Config    string   `json:"config"`
	TundArgs  []string `json:"tund_args"`
	Seconds   float64  `json:"seconds"`
	OK        int      `json:"ok"`     // connections that carried their exchange and closed with FIN
	Errors    int      `json:"errors"` // connections reset or refused
	PerSecond float64  `json:"per_second"`
	// TimeWait is tund's count of connections in TIME-WAIT at the end,
	// from its metrics.
	TimeWait float64 `json:"time_wait"`
	// FirstError is the first error a client saw, as it saw it.
	FirstError string `json:"first_error,omitempty"`
}

// Port exhaustion settings: a 100-port range is used up in a fraction of
// a second, and each configuration runs for exhaustionRun.
const (
	exhaustionPorts = "40000-40099"
	exhaustionRun   = 2 * time.Second
	serverAddr      = kernelV4 + ":9000"
	dialListen      = "127.0.0.1:7000"
)

// portExhaustion: tund as the client of a kernel server, closing first,
// so that TIME-WAIT lands on tund's ports.
var portExhaustion = &Scenario{
	Name:  "port-exhaustion",
	Title: "TIME-WAIT port exhaustion: tund as client runs out of ephemeral ports; MSL and TIME-WAIT reuse change that",
	run: func(e *Env) error {
		configs := []struct {
			name string
			args []string
		}{
			{"MSL 30s", []string{"--msl", "30s"}},
			{"MSL 250ms", []string{"--msl", "250ms"}},
			{"MSL 30s, TIME-WAIT reuse on", []string{"--msl", "30s", "--time-wait-reuse", "on"}},
		}
		for _, c := range configs {
			args := append([]string{"--serve", "echo", "--dial", dialListen + "=" + serverAddr, "--port-range", exhaustionPorts}, c.args...)
			r, err := exhaust(e, c.name, args)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			e.res.Runs = append(e.res.Runs, r)
		}
		long, short, reuse := e.res.Runs[0], e.res.Runs[1], e.res.Runs[2]
		e.note("Here, in %v each: %d connections with MSL 30s, then only errors (%d); %d with MSL 250ms (%d errors); %d with TIME-WAIT reuse (%d errors).",
			exhaustionRun, long.OK, long.Errors, short.OK, short.Errors, reuse.OK, reuse.Errors)
		if err := expect(long.OK <= 100 && long.Errors > 0, "with MSL 30s and 100 ports, %d connections succeeded and %d failed: want at most 100, then errors", long.OK, long.Errors); err != nil {
			return err
		}
		if err := expect(short.OK > long.OK, "a short MSL did not free ports: %d connections, %d with MSL 30s", short.OK, long.OK); err != nil {
			return err
		}
		return expect(reuse.OK > long.OK, "TIME-WAIT reuse: %d connections, want more than the %d of MSL 30s", reuse.OK, long.OK)
	},
	explain: `tund is the client here: --dial has it listen on 127.0.0.1:7000 and, for
each kernel connection accepted there, open one from its stack to a
kernel server on 198.18.0.1:9000, from an ephemeral port of
--port-range (100 ports). The kernel client sends nothing and shuts
down its side; tund passes the FIN on, so tund closes first and its side
of every connection ends in TIME-WAIT for 2 x MSL (RFC 9293 §3.4.2). A
port in TIME-WAIT cannot take a new connection to the same server (the
4-tuple would be the same), so with MSL 30s the 100 ports are spent in
a fraction of a second and every later connection fails: tund cannot
dial, and resets the client. A short MSL frees them sooner, at the cost
of the protection TIME-WAIT gives. TIME-WAIT reuse (Linux's
tcp_tw_reuse, gVisor's TCPTimeWaitReuseOption) lets a new connection take
the port of a TIME-WAIT one to the same peer, ending that TIME-WAIT
early; the server, which closed second, holds no state for the old
connection, so the new SYN is accepted as usual. As in Linux, only a
TIME-WAIT whose last segment is at least 1 s old is reused (timestamps,
RFC 7323, then tell the new connection's segments from the old one's), so
reuse caps the rate at about one connection per port per second: 100/s
here, where a 250 ms MSL (TIME-WAIT 500 ms) allows 200/s. The errors are
what a client that retries at once sees: each is a reset from tund, which
could not open the connection.`,
}

// exhaust starts tund with args and opens connections through --dial one
// after another for exhaustionRun, counting what the clients see.
func exhaust(e *Env, name string, args []string) (Run, error) {
	r := Run{Config: name, TundArgs: args}
	if err := e.startTund(args...); err != nil {
		return r, err
	}
	ln, err := e.listen(serverAddr)
	if err != nil {
		return r, err
	}
	defer ln.Close()
	// The kernel server reads each connection to EOF and closes it, so
	// that tund, which sent the first FIN, ends in TIME-WAIT.
	go serve.Discard(ln, 10*time.Second)
	start := time.Now()
	for time.Since(start) < exhaustionRun {
		if err := e.ctx.Err(); err != nil {
			return r, err
		}
		if err := throughDial(e); err != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = err.Error()
			}
		} else {
			r.OK++
		}
	}
	r.Seconds = time.Since(start).Seconds()
	r.PerSecond = float64(r.OK) / r.Seconds
	if r.TimeWait, err = e.metric(`tund_tcp_connections{state="TIME-WAIT"}`); err != nil {
		return r, err
	}
	e.res.TundArgs = args
	return r, nil
}

// throughDial is one client connection through tund's --dial: connect,
// shut down the sending side, read until the server's FIN comes back.
func throughDial(e *Env) error {
	c, err := e.dial(e.ctx, "tcp", dialListen)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c)
	return err
}

// writeRuns prints runs as a table.
func writeRuns(w io.Writer, runs []Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  config\tok\terrors\tok/s\tTIME-WAIT at end\tfirst error")
	for _, r := range runs {
		first := r.FirstError
		if i := strings.LastIndex(first, ": "); i >= 0 {
			first = first[i+2:]
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%.0f\t%.0f\t%s\n", r.Config, r.OK, r.Errors, r.PerSecond, r.TimeWait, first)
	}
	tw.Flush()
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
