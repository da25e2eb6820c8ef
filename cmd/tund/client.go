package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"

	"github.com/tund/tund/admin"
)

// clientFlags are the flags the commands that query a running tund share.
type clientFlags struct {
	*flag.FlagSet
	admin string
	json  bool
}

// newClientFlags returns the flag set of `tund NAME`, with --admin and
// --json, and usage lines that start with synopsis and about.
func newClientFlags(name, synopsis, about string, stderr io.Writer) *clientFlags {
	c := &clientFlags{FlagSet: flag.NewFlagSet("tund "+name, flag.ContinueOnError)}
	c.SetOutput(stderr)
	c.StringVar(&c.admin, "admin", admin.DefaultAddr, "admin `address` of the running tund (run this in its namespace)")
	c.BoolVar(&c.json, "json", false, "print JSON")
	c.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tund %s %s\n\n%s\n", name, synopsis, about)
		c.PrintDefaults()
	}
	return c
}

// parse parses args; when it returns false the command is over with the
// given exit status (0 for --help, 2 for a bad flag).
func (c *clientFlags) parse(args []string) (status int, ok bool) {
	err := c.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	}
	return 2, false
}

// get fetches path from the running tund's admin server; on failure it
// says on stderr what to check.
func (c *clientFlags) get(client *http.Client, path string, stderr io.Writer) (io.ReadCloser, error) {
	resp, err := client.Get("http://" + c.admin + path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (is tund running in this namespace with --admin %s?)\n", c.Name(), err, c.admin)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		fmt.Fprintf(stderr, "%s: %s answered %s\n", c.Name(), c.admin, resp.Status)
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return resp.Body, nil
}
