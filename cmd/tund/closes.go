package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"

	"github.com/tund/tund/admin"
	"github.com/tund/tund/stack"
)

// closesCommand is `tund closes`: the recent closes of a running tund as
// ladder diagrams, or each close as it happens with --follow.
func closesCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tund closes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", admin.DefaultAddr, "admin `address` of the running tund (run this in its namespace)")
	follow := fs.Bool("follow", false, "print each close as it ends, until interrupted")
	asJSON := fs.Bool("json", false, "print JSON records instead of ladder diagrams")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tund closes [--follow] [--json] [--admin ADDR]\n\nShows the closes a running tund recorded on the wire, as ladder diagrams.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	path := "/closes"
	if *follow {
		path += "?follow=1"
	}
	// No client timeout: --follow streams for as long as the user wants.
	body, err := adminGet(&http.Client{}, *addr, path, stderr, "closes")
	if err != nil {
		return 1
	}
	defer body.Close()
	show := func(c *stack.Close) {
		if *asJSON {
			json.NewEncoder(stdout).Encode(c)
			return
		}
		admin.WriteLadder(stdout, c)
		fmt.Fprintln(stdout)
	}
	if *follow {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var c stack.Close
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				fmt.Fprintf(stderr, "tund closes: %v\n", err)
				return 1
			}
			show(&c)
		}
		return 0
	}
	var closes []*stack.Close
	if err := json.NewDecoder(body).Decode(&closes); err != nil {
		fmt.Fprintf(stderr, "tund closes: reading the answer: %v\n", err)
		return 1
	}
	for _, c := range closes {
		show(c)
	}
	return 0
}

// adminGet fetches path from a running tund's admin server; on failure it
// says what to check on stderr.
func adminGet(client *http.Client, addr, path string, stderr io.Writer, cmd string) (io.ReadCloser, error) {
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		fmt.Fprintf(stderr, "tund %s: %v (is tund running in this namespace with --admin %s?)\n", cmd, err, addr)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		fmt.Fprintf(stderr, "tund %s: %s answered %s\n", cmd, addr, resp.Status)
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return resp.Body, nil
}
