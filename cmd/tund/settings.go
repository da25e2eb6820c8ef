package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tund/tund/client"
	"github.com/tund/tund/control"
)

// settingsFlags are the flags of the commands that read or change a
// running tund's settings: clientFlags' (--admin, --json), --token-file,
// and --port for those that take one.
type settingsFlags struct {
	*clientFlags
	synopsis  string
	tokenFile string
	port      portFlag
}

// portFlag is --port N: a port in [1, 65535], or 0 when not given.
type portFlag uint16

func (p *portFlag) String() string {
	if *p == 0 {
		return ""
	}
	return strconv.Itoa(int(*p))
}

func (p *portFlag) Set(s string) error {
	n, err := parsePortArg(s)
	*p = portFlag(n)
	return err
}

// parsePortArg parses a port number as the commands take it.
func parsePortArg(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q: want a number in [1, 65535]", s)
	}
	return uint16(n), nil
}

// newSettingsFlags returns the flag set of `tund NAME`, with --port if
// portUsage, which says what it means to the command, is not empty.
func newSettingsFlags(name, synopsis, about, portUsage string, stderr io.Writer) *settingsFlags {
	f := &settingsFlags{clientFlags: newClientFlags(name, synopsis, about, stderr), synopsis: synopsis}
	f.StringVar(&f.tokenFile, "token-file", "", "`file` holding the token of tund's --admin-token, which writes need")
	if portUsage != "" {
		f.Var(&f.port, "port", portUsage)
	}
	return f
}

// parse parses args with the flags anywhere among the operands (tund set
// drop-fin=once --port 7), and returns the operands. When ok is false the
// command is over with the given exit status.
func (f *settingsFlags) parse(args []string) (operands []string, status int, ok bool) {
	for {
		if status, ok := f.clientFlags.parse(args); !ok {
			return nil, status, false
		}
		rest := f.Args()
		// Parse stops at the first operand, or after "--": past "--"
		// everything is an operand.
		if len(rest) == 0 || len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(operands, rest...), 0, true
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
}

// usageError says what is wrong with the command line, and exits 2.
func (f *settingsFlags) usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\nUsage: %s %s (see --help)\n", f.Name(), fmt.Sprintf(format, args...), f.Name(), f.synopsis)
	return 2
}

// clientOnly parses args of a command that takes no operands and returns
// its client; when ok is false the command is over with status.
func (f *settingsFlags) clientOnly(args []string, stderr io.Writer) (c *client.Client, status int, ok bool) {
	operands, status, ok := f.parse(args)
	if !ok {
		return nil, status, false
	}
	if len(operands) > 0 {
		return nil, f.usageError(stderr, "unexpected argument %q", operands[0]), false
	}
	return f.client(stderr)
}

// client returns the client of the running tund, with the token of
// --token-file; when ok is false the command is over with status.
func (f *settingsFlags) client(stderr io.Writer) (c *client.Client, status int, ok bool) {
	c = client.New(f.admin)
	c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --token-file: %v\n", f.Name(), err)
			return nil, 2, false
		}
		if c.Token = strings.TrimSpace(string(b)); c.Token == "" {
			fmt.Fprintf(stderr, "%s: --token-file %s: the file is empty\n", f.Name(), f.tokenFile)
			return nil, 2, false
		}
	}
	return c, 0, true
}

// fail says why a request failed, with a hint where one helps, and
// returns exit status 1.
func (f *settingsFlags) fail(stderr io.Writer, err error) int {
	msg := strings.TrimPrefix(err.Error(), "tund admin: ")
	var e *client.Error
	switch {
	case errors.As(err, &e) && e.Status == http.StatusUnauthorized && f.tokenFile == "":
		msg += " (give the token of tund's --admin-token with --token-file FILE)"
	case errors.As(err, &e) && e.Field == "" && (e.Message == "404 page not found" || e.Status == http.StatusMethodNotAllowed):
		// Go's ServeMux, not tund's error document: the server has no
		// such route.
		msg += fmt.Sprintf(" (is the tund at %s older than the settings API?)", f.admin)
	case e == nil:
		msg += fmt.Sprintf(" (is tund running in this namespace with --admin %s?)", f.admin)
	}
	fmt.Fprintf(stderr, "%s: %s\n", f.Name(), msg)
	return 1
}

// printJSON writes v indented, as the other commands' --json do.
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// getCommand is `tund get`: the settings in force in a running tund.
func getCommand(args []string, stdout, stderr io.Writer) int {
	f := newSettingsFlags("get", "[--port N] [--json] [--admin ADDR] [--token-file FILE]",
		"Shows the settings in force in a running tund: the stack-wide value of each knob, and each\nport's service and overrides; with --port, every setting in force on that port.",
		"show the settings in force on port `N`, and which are its own (overrides)", stderr)
	c, status, ok := f.clientOnly(args, stderr)
	if !ok {
		return status
	}
	s, err := c.Settings(context.Background())
	if err != nil {
		return f.fail(stderr, err)
	}
	if f.port != 0 {
		p := s.Port(uint16(f.port))
		if p == nil {
			fmt.Fprintf(stderr, "tund get: no service on port %d (tund get lists the ports)\n", f.port)
			return 1
		}
		if f.json {
			printJSON(stdout, p)
			return 0
		}
		writePortSettings(stdout, s, p)
		return 0
	}
	if f.json {
		printJSON(stdout, s)
		return 0
	}
	writeSettings(stdout, s)
	return 0
}

// writeSettings writes the stack-wide values, then each port's service and
// overrides.
func writeSettings(w io.Writer, s *client.Settings) {
	fmt.Fprintf(w, "generation %d\n\n", s.Generation)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KNOB\tVALUE")
	for _, k := range knobOrder(s.Stack) {
		fmt.Fprintf(tw, "%s\t%s\n", k, s.Stack[k])
	}
	tw.Flush()
	if len(s.Ports) == 0 {
		fmt.Fprintln(w, "\nno services")
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tSERVICE\tTARGET\tOVERRIDES")
	for _, p := range s.Ports {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.Port, p.Service, dash(p.Target), dash(spellKnobs(p.Overrides, " ")))
	}
	tw.Flush()
}

// writePortSettings writes every setting in force on p, marking its
// overrides with the stack-wide value they replace.
func writePortSettings(w io.Writer, s *client.Settings, p *client.PortSettings) {
	fmt.Fprintf(w, "port %d: %s", p.Port, p.Service)
	if p.Target != "" {
		fmt.Fprintf(w, " to %s", p.Target)
	}
	fmt.Fprintf(w, " (generation %d)\n\n", s.Generation)
	// The notes column leaves trailing blanks on the lines without
	// one; they are trimmed from the table before it is written.
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KNOB\tVALUE\t")
	for _, k := range knobOrder(p.Settings, p.Overrides) {
		v, ok := p.Settings[k]
		if !ok {
			v = p.Overrides[k]
		}
		note := ""
		if _, over := p.Overrides[k]; over {
			note = "override"
			if sv, ok := s.Stack[k]; ok {
				note += " (stack-wide: " + sv + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k, v, note)
	}
	tw.Flush()
	for line := range strings.Lines(buf.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
}

// setCommand is `tund set`: changes knobs of a running tund, stack-wide
// or for one port, in one request.
func setCommand(args []string, stdout, stderr io.Writer) int {
	f := newSettingsFlags("set", "[--port N] KNOB=VALUE... [--admin ADDR] [--token-file FILE] [--json]",
		"Changes knobs of a running tund, named and spelled as its flags (drop-fin=once, msl=1s):\nstack-wide, or with --port for that port alone. All of them take effect, or none.\nPrints the new generation and what changed; --json the settings document instead.",
		"set the knobs on port `N` alone (overrides)", stderr)
	operands, status, ok := f.parse(args)
	if !ok {
		return status
	}
	if len(operands) == 0 {
		return f.usageError(stderr, "no KNOB=VALUE to set")
	}
	knobs, err := parseKnobs(operands)
	if err != nil {
		return f.usageError(stderr, "%v", err)
	}
	return f.write(stdout, stderr, func(ctx context.Context, c *client.Client) (*client.Settings, error) {
		if f.port != 0 {
			return c.SetPort(ctx, uint16(f.port), knobs)
		}
		return c.Set(ctx, knobs)
	})
}

// resetCommand is `tund reset`: everything as the command line set it, or
// one port back to the stack-wide values.
func resetCommand(args []string, stdout, stderr io.Writer) int {
	f := newSettingsFlags("reset", "[--port N] [--admin ADDR] [--token-file FILE] [--json]",
		"Sets everything in a running tund back to what its command line set: the stack-wide knobs,\nthe ports' overrides and the proxies. With --port, only that port's overrides are dropped:\nit follows the stack-wide values again.",
		"drop the overrides of port `N` alone", stderr)
	operands, status, ok := f.parse(args)
	if !ok {
		return status
	}
	if len(operands) > 0 {
		return f.usageError(stderr, "unexpected argument %q", operands[0])
	}
	return f.write(stdout, stderr, func(ctx context.Context, c *client.Client) (*client.Settings, error) {
		if f.port != 0 {
			return c.ClearPort(ctx, uint16(f.port))
		}
		return c.Reset(ctx)
	})
}

// proxyCommand is `tund proxy add|rm|ls`: the proxies of a running tund.
func proxyCommand(args []string, stdout, stderr io.Writer) int {
	const usage = `Usage:
  tund proxy add PORT=IP:PORT [KNOB=VALUE...]   start a proxy from PORT to the kernel address IP:PORT,
                                                with the knobs set on its port
  tund proxy rm PORT                            stop the proxy on PORT
  tund proxy ls [--json]                        list the proxies
Each takes --admin ADDR and --token-file FILE; see tund proxy add --help.
`
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "add":
		return proxyAddCommand(args[1:], stdout, stderr)
	case "rm":
		return proxyRmCommand(args[1:], stdout, stderr)
	case "ls":
		return proxyLsCommand(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tund proxy: unknown command %q\n%s", args[0], usage)
	return 2
}

func proxyAddCommand(args []string, stdout, stderr io.Writer) int {
	f := newSettingsFlags("proxy add", "PORT=IP:PORT [KNOB=VALUE...] [--admin ADDR] [--token-file FILE] [--json]",
		"Starts a proxy service in a running tund: connections to PORT are carried on to the kernel\naddress IP:PORT, with the knobs given set on PORT (half-close=close, drop-fin=once, ...).",
		"", stderr)
	operands, status, ok := f.parse(args)
	if !ok {
		return status
	}
	if len(operands) == 0 {
		return f.usageError(stderr, "no PORT=IP:PORT")
	}
	portText, target, found := strings.Cut(operands[0], "=")
	if !found || target == "" {
		return f.usageError(stderr, "%q: want PORT=IP:PORT, such as 7007=127.0.0.1:7100", operands[0])
	}
	port, err := parsePortArg(portText)
	if err != nil {
		return f.usageError(stderr, "%s: %v", operands[0], err)
	}
	knobs, err := parseKnobs(operands[1:])
	if err != nil {
		return f.usageError(stderr, "%v", err)
	}
	return f.write(stdout, stderr, func(ctx context.Context, c *client.Client) (*client.Settings, error) {
		return c.AddProxy(ctx, client.Proxy{Port: port, Target: target, Overrides: knobs})
	})
}

func proxyRmCommand(args []string, stdout, stderr io.Writer) int {
	f := newSettingsFlags("proxy rm", "PORT [--admin ADDR] [--token-file FILE] [--json]",
		"Stops the proxy service on PORT in a running tund; its connections end as they do when tund stops.", "", stderr)
	operands, status, ok := f.parse(args)
	if !ok {
		return status
	}
	if len(operands) != 1 {
		return f.usageError(stderr, "want one PORT, got %d arguments", len(operands))
	}
	port, err := parsePortArg(operands[0])
	if err != nil {
		return f.usageError(stderr, "%v", err)
	}
	return f.write(stdout, stderr, func(ctx context.Context, c *client.Client) (*client.Settings, error) {
		return c.RemoveProxy(ctx, port)
	})
}

func proxyLsCommand(args []string, stdout, stderr io.Writer) int {
	f := newSettingsFlags("proxy ls", "[--json] [--admin ADDR] [--token-file FILE]",
		"Lists the proxy services of a running tund, from its command line and added since.", "", stderr)
	c, status, ok := f.clientOnly(args, stderr)
	if !ok {
		return status
	}
	ps, err := c.Proxies(context.Background())
	if err != nil {
		return f.fail(stderr, err)
	}
	if f.json {
		if ps == nil {
			ps = []client.Proxy{}
		}
		printJSON(stdout, ps)
		return 0
	}
	if len(ps) == 0 {
		fmt.Fprintln(stdout, "no proxies")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tTARGET\tOVERRIDES")
	for _, p := range ps {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Port, p.Target, dash(spellKnobs(p.Overrides, " ")))
	}
	tw.Flush()
	return 0
}

// write runs a change: it reads the settings before, makes the change, and
// prints the new generation and what changed (or, with --json, the
// settings document the change left).
func (f *settingsFlags) write(stdout, stderr io.Writer, change func(context.Context, *client.Client) (*client.Settings, error)) int {
	c, status, ok := f.client(stderr)
	if !ok {
		return status
	}
	ctx := context.Background()
	var before *client.Settings
	if !f.json {
		var err error
		if before, err = c.Settings(ctx); err != nil {
			return f.fail(stderr, err)
		}
	}
	after, err := change(ctx, c)
	if err != nil {
		return f.fail(stderr, err)
	}
	if f.json {
		printJSON(stdout, after)
		return 0
	}
	fmt.Fprintf(stdout, "generation %d\n", after.Generation)
	if after.Generation != before.Generation+1 {
		fmt.Fprintf(stdout, "(generation %d before: other writes came in between, and what they changed is listed too)\n", before.Generation)
	}
	lines := settingsChanges(before, after)
	if len(lines) == 0 {
		fmt.Fprintln(stdout, "no change")
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return 0
}

// parseKnobs parses KNOB=VALUE operands. The values are the server's to
// judge; a knob given twice is refused here, where its intent is unclear.
func parseKnobs(operands []string) (client.Knobs, error) {
	knobs := client.Knobs{}
	for _, op := range operands {
		k, v, ok := strings.Cut(op, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want KNOB=VALUE, such as drop-fin=once", op)
		}
		if _, dup := knobs[k]; dup {
			return nil, fmt.Errorf("%s given twice", k)
		}
		knobs[k] = v
	}
	return knobs, nil
}

// settingsChanges lists what differs between two settings documents, one
// line each: stack-wide values ("drop-fin: off -> once"), ports' values
// that do not just follow the stack-wide ones ("drop-fin: off -> once
// (port 7)"), and services started or stopped.
func settingsChanges(before, after *client.Settings) []string {
	var lines []string
	for _, k := range knobOrder(before.Stack, after.Stack) {
		if b, a := before.Stack[k], after.Stack[k]; b != a {
			lines = append(lines, fmt.Sprintf("%s: %s -> %s", k, dash(b), dash(a)))
		}
	}
	for _, b := range before.Ports {
		if a := after.Port(b.Port); a == nil || !sameService(&b, a) {
			lines = append(lines, fmt.Sprintf("port %d: %s stopped", b.Port, serviceText(&b)))
		}
	}
	for i := range after.Ports {
		a := &after.Ports[i]
		b := before.Port(a.Port)
		if b == nil || !sameService(b, a) {
			line := fmt.Sprintf("port %d: %s started", a.Port, serviceText(a))
			if len(a.Overrides) > 0 {
				line += " with " + spellKnobs(a.Overrides, " ")
			}
			lines = append(lines, line)
			continue
		}
		lines = append(lines, portChanges(before, after, b, a)...)
	}
	return lines
}

// portChanges lists the changes of one port's settings in force, leaving
// out those that only followed a stack-wide change (listed already).
func portChanges(before, after *client.Settings, b, a *client.PortSettings) []string {
	var lines []string
	for _, k := range knobOrder(b.Settings, a.Settings, b.Overrides, a.Overrides) {
		bv, av := b.Settings[k], a.Settings[k]
		_, bOver := b.Overrides[k]
		_, aOver := a.Overrides[k]
		bs, bInStack := before.Stack[k]
		as, aInStack := after.Stack[k]
		if !bOver && !aOver && bInStack && aInStack && bv == bs && av == as {
			continue // followed the stack-wide value throughout
		}
		var note string
		switch {
		case !bOver && aOver:
			note = ", now its own"
		case bOver && !aOver && aInStack:
			note = ", stack-wide again"
		case bOver && !aOver:
			note = ", override dropped"
		}
		switch {
		case bv != av:
			lines = append(lines, fmt.Sprintf("%s: %s -> %s (port %d%s)", k, dash(bv), dash(av), a.Port, note))
		case note != "":
			lines = append(lines, fmt.Sprintf("%s: %s (port %d%s)", k, dash(av), a.Port, note))
		}
	}
	return lines
}

func sameService(b, a *client.PortSettings) bool {
	return b.Service == a.Service && b.Target == a.Target
}

func serviceText(p *client.PortSettings) string {
	if p.Target != "" {
		return p.Service + " to " + p.Target
	}
	return p.Service
}

// knobOrder returns the names in the maps in the order tund lists its
// knobs (control.Knobs), and any it does not know (from a newer tund)
// after them, sorted.
func knobOrder(ms ...client.Knobs) []string {
	seen := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			seen[k] = true
		}
	}
	var names []string
	for _, k := range control.Knobs {
		if seen[k.Name] {
			names = append(names, k.Name)
			delete(seen, k.Name)
		}
	}
	return append(names, slices.Sorted(maps.Keys(seen))...)
}

// spellKnobs spells k as name=value pairs in knob order, separated by sep.
func spellKnobs(k client.Knobs, sep string) string {
	var pairs []string
	for _, name := range knobOrder(k) {
		pairs = append(pairs, name+"="+k[name])
	}
	return strings.Join(pairs, sep)
}

// dash stands in for an empty column.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
