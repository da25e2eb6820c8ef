package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tund/tund/conform"
)

// conformCommand is `tund conform`: the close-path cases against the Linux
// kernel and against tund, with its defaults and with --like linux.
func conformCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tund conform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	markdown := fs.Bool("markdown", false, "print the result as CONFORMANCE.md has it")
	var cases listFlag
	fs.Var(&cases, "case", "run only the case `NAME` (repeat for more); default all")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: tund conform [--json|--markdown] [--case NAME]... [-- TUND FLAGS...]

Plays close-path cases (close and shutdown orders, RFC 5961 RST and SYN
handling, TIME-WAIT, FIN-WAIT-2, FIN retransmission) from a scripted peer
against the Linux kernel in a namespace of its own and against tund's stack
on a TUN device, with tund's default flags and with --like linux. TUND
FLAGS, if given, are added to both; only those of the stack and the device
act (each case brings its own application, so --serve, --half-close,
--abort and the like do not; the FIN-WAIT-2 timeout is 2 s on both sides).
Prints what each side sent and where tund differs. Exits 1 when tund
breaks a rule Linux keeps, or sends other segments, in a way not
documented (CONFORMANCE.md lists the documented ones). Needs root.

`)
		fs.PrintDefaults()
	}
	var tundArgs []string
	for i, a := range args {
		if a == "--" {
			args, tundArgs = args[:i], args[i+1:]
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tund conform: unexpected argument %q (tund's own flags go after --)\n", fs.Arg(0))
		return 2
	}
	if *asJSON && *markdown {
		fmt.Fprintln(stderr, "tund conform: --json or --markdown, not both")
		return 2
	}
	for _, name := range notForConform(tundArgs) {
		fmt.Fprintf(stderr, "tund conform: --%s acts on tund's services or on the daemon, not on its stack: each case brings its own application; ignored\n", name)
	}
	var tunds []conform.TundConfig
	for _, c := range []struct {
		name  string
		extra []string
	}{{"tund", nil}, {"tund --like linux", []string{"--like", "linux"}}} {
		o, err := parseFlags(append(append([]string{}, tundArgs...), c.extra...), stderr)
		if err != nil {
			fmt.Fprintf(stderr, "tund conform: tund's flags: %v\n", err)
			return 2
		}
		tunds = append(tunds, conform.TundConfig{Name: c.name, Tun: o.tun, Stack: o.stack})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := conform.Run(ctx, conform.Options{Tunds: tunds, Cases: cases.values})
	if err != nil {
		fmt.Fprintf(stderr, "tund conform: %v\n", err)
		return 1
	}
	switch {
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	case *markdown:
		command := "tund conform --markdown"
		for _, c := range cases.values {
			command += " --case " + c
		}
		if len(tundArgs) > 0 {
			command += " -- " + strings.Join(tundArgs, " ")
		}
		conform.WriteMarkdown(stdout, res, command+" > CONFORMANCE.md")
	default:
		conform.WriteText(stdout, res)
	}
	if len(res.Failures()) > 0 {
		return 1
	}
	return 0
}

// notForConform returns the flags among args that conform takes but does
// not apply: it runs tund's stack alone, with each case's own application.
func notForConform(args []string) []string {
	ignored := map[string]bool{
		"serve": true, "half-close": true, "abort": true, "admin": true, "admin-token": true,
		"pcap": true, "dial": true, "drain": true, "max-conns": true,
	}
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if ignored[name] {
			out = append(out, name)
		}
	}
	return out
}
