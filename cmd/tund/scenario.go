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
	"syscall"
	"text/tabwriter"

	"github.com/tund/tund/scenario"
)

// scenarioCommand is `tund scenario`: with no name it lists the close-path
// scenarios; with one it runs it in a namespace of its own and reports.
func scenarioCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tund scenario", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON (records, states seen, numbers)")
	pcap := fs.String("pcap", "", "keep what crossed the TUN device in `file` (pcap; a scenario that starts tund\nagain writes FILE.2, FILE.3, ...)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: tund scenario                           list the scenarios
       tund scenario NAME [--json] [--pcap FILE]  run one

Each scenario makes a network namespace of its own, starts tund in it with
the flags it needs, drives the kernel's TCP against it, and prints the
ladder diagram of tund's close record, the states both sides showed (ss in
the namespace, tund's /conns) and what happened and why. It exits 1 when
the close did not happen as the scenario says. Needs root.

`)
		fs.PrintDefaults()
	}
	// Flags may come before or after the name.
	var name string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		if name != "" {
			fmt.Fprintf(stderr, "tund scenario: one scenario at a time (got %q and %q)\n", name, fs.Arg(0))
			return 2
		}
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil || fs.NArg() > 0 {
			fmt.Fprintln(stderr, "tund scenario: want NAME [--json] [--pcap FILE]")
			return 2
		}
	}
	if name == "" {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		for _, s := range scenario.All() {
			fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Title)
		}
		tw.Flush()
		fmt.Fprintln(stdout, "\nRun one with: tund scenario NAME [--json] [--pcap FILE]")
		return 0
	}
	sc := scenario.Lookup(name)
	if sc == nil {
		fmt.Fprintf(stderr, "tund scenario: no scenario %q (tund scenario lists them)\n", name)
		return 2
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "tund scenario: finding tund's own binary: %v\n", err)
		return 1
	}
	// Ctrl-C or SIGTERM ends the run; the namespace and tund go with it.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	res, err := sc.Run(ctx, scenario.Options{Tund: bin, Pcap: *pcap})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		scenario.WriteText(stdout, res)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tund scenario %s: %v\n", name, err)
		return 1
	}
	return 0
}
