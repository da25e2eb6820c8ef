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
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + *addr + "/conns?format=json")
	if err != nil {
		fmt.Fprintf(stderr, "tund conns: %v (is tund running in this namespace with --admin %s?)\n", err, *addr)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "tund conns: %s answered %s\n", *addr, resp.Status)
		return 1
	}
	var conns []stack.ConnInfo
	if err := json.NewDecoder(resp.Body).Decode(&conns); err != nil {
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
