package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/control"
	"github.com/tund/tund/service"
	"github.com/tund/tund/stack"
)

// newControlServer serves the admin handler of a stack over a channel link,
// running echo and http, with writes guarded by token.
func newControlServer(t *testing.T, token string) *httptest.Server {
	t.Helper()
	c := stack.Config{Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")}, MSL: stack.DefaultMSL, FINACKMerge: stack.DefaultFINACKMerge}
	st, err := stack.New(channel.New(16, 1500, ""), c)
	if err != nil {
		t.Fatal(err)
	}
	specs, err := service.ParseList("echo,http", service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := service.NewGroup(ctx, st, 0, log, func(err error) { t.Error(err) })
	ctl, err := control.New(st, g, c, service.Options{}, specs, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(st, ctl, token))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		g.Wait()
		st.Close()
	})
	return srv
}

// call sends a request and returns the status and the decoded JSON body.
func call(t *testing.T, srv *httptest.Server, method, path, body, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode, doc
}

func TestControlAPI(t *testing.T) {
	srv := newControlServer(t, "")
	for _, c := range []struct {
		method, path, body string
		status             int
		field              string
	}{
		{"PATCH", "/settings", `{"drop-fin": "once", "max-conns": 100, "abort": true, "loss-in": 0.25}`, 200, ""},
		{"PATCH", "/settings", `{"drop-fin": "sometimes"}`, 400, "drop-fin"},
		{"PATCH", "/settings", `{"drop-fin": ["once"]}`, 400, "drop-fin"},
		{"PATCH", "/settings", `{"no-such-knob": "1"}`, 400, "no-such-knob"},
		{"PATCH", "/settings", `{"drop-fin": "once"`, 400, "body"},
		{"PATCH", "/settings", `[1]`, 400, "body"},
		{"PATCH", "/settings/ports/7", `{"fin-ack-merge": "0"}`, 200, ""},
		{"PATCH", "/settings/ports/7", `{"msl": "1s"}`, 400, "msl"},
		{"PATCH", "/settings/ports/70000", `{}`, 400, "port"},
		{"PATCH", "/settings/ports/9", `{"drop-fin": "once"}`, 400, "port"},
		{"DELETE", "/settings/ports/7", ``, 200, ""},
		{"POST", "/proxies", `{"port": 7007, "target": "127.0.0.1:7100", "settings": {"half-close": "close"}}`, 201, ""},
		{"POST", "/proxies", `{"port": 7007, "target": "127.0.0.1:7100"}`, 409, "port"},
		{"POST", "/proxies", `{"port": 7008, "target": "somewhere"}`, 400, "target"},
		{"POST", "/proxies", `{"port": 7008, "target": "127.0.0.1:1", "extra": 1}`, 400, "body"},
		{"DELETE", "/proxies/7", ``, 400, "port"},
		{"DELETE", "/proxies/7007", ``, 200, ""},
		{"POST", "/reset", ``, 200, ""},
		{"GET", "/closes?peer=nowhere", ``, 400, "peer"},
		{"GET", "/closes?peer=198.18.0.1:40000&wait=10ms", ``, 404, "peer"},
	} {
		status, doc := call(t, srv, c.method, c.path, c.body, "")
		if status != c.status || c.field != "" && doc["field"] != c.field {
			t.Errorf("%s %s %s: %d %v, want %d naming %q", c.method, c.path, c.body, status, doc, c.status, c.field)
		}
		if status < 300 && c.method != "GET" && doc["generation"] == nil {
			t.Errorf("%s %s: answered %v, want the settings in force", c.method, c.path, doc)
		}
	}
	status, doc := call(t, srv, "GET", "/settings", "", "")
	if status != 200 || doc["generation"].(float64) != 6 {
		t.Errorf("GET /settings: %d %v, want generation 6 (six changes applied)", status, doc)
	}
	if s := doc["stack"].(map[string]any); s["drop-fin"] != "off" || s["max-conns"] != "0" {
		t.Errorf("after POST /reset the stack-wide settings are %v", s)
	}
}

func TestControlToken(t *testing.T) {
	srv := newControlServer(t, "s3cret")
	if status, _ := call(t, srv, "PATCH", "/settings", `{"drop-fin": "once"}`, ""); status != http.StatusUnauthorized {
		t.Errorf("a write without the token: %d, want 401", status)
	}
	if status, _ := call(t, srv, "POST", "/reset", ``, "wrong"); status != http.StatusUnauthorized {
		t.Errorf("a write with a wrong token: %d, want 401", status)
	}
	if status, _ := call(t, srv, "GET", "/settings", "", ""); status != http.StatusOK {
		t.Errorf("a read without the token: %d, want 200", status)
	}
	status, doc := call(t, srv, "PATCH", "/settings", `{"drop-fin": "once"}`, "s3cret")
	if status != http.StatusOK || doc["stack"].(map[string]any)["drop-fin"] != "once" {
		t.Errorf("a write with the token: %d %v", status, doc)
	}
}
