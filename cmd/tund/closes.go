package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/tund/tund/admin"
	"github.com/tund/tund/stack/closes"
)

// closesCommand is `tund closes`: the recent closes of a running tund as
// ladder diagrams, or each close as it happens with --follow.
func closesCommand(args []string, stdout, stderr io.Writer) int {
	c := newClientFlags("closes", "[--follow] [--json] [--admin ADDR]", "Shows the closes a running tund recorded on the wire, as ladder diagrams.", stderr)
	follow := c.Bool("follow", false, "print each close as it ends, until interrupted")
	if status, ok := c.parse(args); !ok {
		return status
	}
	path := "/closes"
	if *follow {
		path += "?follow=1"
	}
	// No client timeout: --follow streams for as long as the user wants.
	body, err := c.get(&http.Client{}, path, stderr)
	if err != nil {
		return 1
	}
	defer body.Close()
	show := func(rec *closes.Record) {
		if c.json {
			json.NewEncoder(stdout).Encode(rec)
			return
		}
		admin.WriteLadder(stdout, rec)
		fmt.Fprintln(stdout)
	}
	if *follow {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var rec closes.Record
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				fmt.Fprintf(stderr, "tund closes: %v\n", err)
				return 1
			}
			show(&rec)
		}
		return 0
	}
	var closes []*closes.Record
	if err := json.NewDecoder(body).Decode(&closes); err != nil {
		fmt.Fprintf(stderr, "tund closes: reading the answer: %v\n", err)
		return 1
	}
	for _, rec := range closes {
		show(rec)
	}
	return 0
}
