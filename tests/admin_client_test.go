package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"time"
)

// adminClient reads tund's admin server (127.0.0.1:9180 in tund's
// namespace) from the test process, without spawning curl for every read:
// each request's socket is made inside the namespace.
type adminClient struct {
	c *http.Client
}

func newAdminClient(ns *NS) *adminClient {
	tr := &http.Transport{
		// A fresh connection per request: a kept-alive one would be an
		// extra descriptor in tund between reads and skew the fd count.
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(network, addr)
		},
	}
	return &adminClient{c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// get returns the body of path on the admin server.
func (a *adminClient) get(path string) ([]byte, error) {
	resp, err := a.c.Get("http://127.0.0.1:9180" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin %s: %s", path, resp.Status)
	}
	return b, nil
}

// metricLine matches one sample of the Prometheus text format: a name with
// optional labels, and a value.
var metricLine = regexp.MustCompile(`(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// metrics returns every sample of /metrics, keyed as it is written
// (`name{label="v"}`).
func (a *adminClient) metrics() (map[string]float64, error) {
	b, err := a.get("/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", m[1], err)
		}
		out[m[1]] = v
	}
	return out, nil
}

// conn is one row of /conns?format=json.
type conn struct {
	State  string `json:"state"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

// conns returns tund's connection table.
func (a *adminClient) conns() ([]conn, error) {
	b, err := a.get("/conns?format=json")
	if err != nil {
		return nil, err
	}
	var out []conn
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("/conns: %w", err)
	}
	return out, nil
}

// gc makes tund collect garbage (the heap profile endpoint does it when
// asked), so that heap figures compare live data, not garbage.
func (a *adminClient) gc() error {
	_, err := a.get("/debug/pprof/heap?gc=1")
	return err
}

// openFDs counts the file descriptors process pid holds.
func openFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}
