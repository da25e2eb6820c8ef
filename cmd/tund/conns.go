package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tund/tund/admin"
	"github.com/tund/tund/stack"
)

// connsCommand is `tund conns`: the live connection table of a running
// tund, read from its admin server, like `ss -tan`.
func connsCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tund conns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", admin.DefaultAddr, "admin `address` of the running tund (run this in its namespace)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tund conns [--admin ADDR] [--json]\n\nLists the TCP endpoints of a running tund: state, local and peer address.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	body, err := adminGet(&http.Client{Timeout: 10 * time.Second}, *addr, "/conns?format=json", stderr, "conns")
	if err != nil {
		return 1
	}
	defer body.Close()
	var conns []stack.ConnInfo
	if err := json.NewDecoder(body).Decode(&conns); err != nil {
		fmt.Fprintf(stderr, "tund conns: reading the answer: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(conns)
		return 0
	}
	admin.WriteConns(stdout, conns)
	return 0
}
