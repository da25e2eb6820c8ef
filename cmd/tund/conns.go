package main

import (
	"encoding/json"
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
	c := newClientFlags("conns", "[--admin ADDR] [--json]", "Lists the TCP endpoints of a running tund: state, local and peer address.", stderr)
	if status, ok := c.parse(args); !ok {
		return status
	}
	body, err := c.get(&http.Client{Timeout: 10 * time.Second}, "/conns?format=json", stderr)
	if err != nil {
		return 1
	}
	defer body.Close()
	var conns []stack.ConnInfo
	if err := json.NewDecoder(body).Decode(&conns); err != nil {
		fmt.Fprintf(stderr, "tund conns: reading the answer: %v\n", err)
		return 1
	}
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(conns)
		return 0
	}
	admin.WriteConns(stdout, conns)
	return 0
}
