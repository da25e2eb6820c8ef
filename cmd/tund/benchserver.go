package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/tund/tund/internal/serve"
	"github.com/tund/tund/service"
)

// benchServerCommand is `tund bench-server`: tund's http service on a
// kernel socket, so that scripts/bench compares the kernel's TCP with
// tund's running the very same handler; with --discard, also a discard
// server (RFC 863) that drains as tund's does (io.Copy to io.Discard).
func benchServerCommand(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tund bench-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("listen", ":80", "kernel `address` to serve tund's http service on")
	discard := fs.String("discard", "", "kernel `address` to serve discard on (none if empty)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "tund bench-server: %v\n", err)
		return 1
	}
	if *discard != "" {
		dln, err := net.Listen("tcp", *discard)
		if err != nil {
			fmt.Fprintf(stderr, "tund bench-server: discard: %v\n", err)
			return 1
		}
		go serve.Discard(dln, 0)
	}
	fmt.Fprintf(stderr, "tund bench-server: serving on %s\n", ln.Addr())
	if err := http.Serve(ln, service.NewHTTPHandler()); err != nil {
		fmt.Fprintf(stderr, "tund bench-server: %v\n", err)
		return 1
	}
	return 0
}
