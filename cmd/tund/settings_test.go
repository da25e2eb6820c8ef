package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tund/tund/client"
)

// fakeTund emulates the settings API of a running tund closely enough for
// the commands: a few knobs, validated, and services on ports.
type fakeTund struct {
	*httptest.Server
	token string

	mu    sync.Mutex
	gen   uint64
	stack client.Knobs
	ports map[uint16]*fakePort
	reqs  []string // "METHOD /path body" of each request
}

type fakePort struct {
	service, target string
	overrides       client.Knobs
}

// fakePerPort are the fake's per-port knobs; close-delay has no
// stack-wide value.
var fakePerPort = []string{"fin-wait2", "half-close", "close-delay", "drop-fin"}

func newFakeTund(t *testing.T) *fakeTund {
	t.Helper()
	f := &fakeTund{}
	f.reset()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /settings", func(w http.ResponseWriter, r *http.Request) { f.answer(w, 200, nil) })
	mux.HandleFunc("PATCH /settings", f.write(func(r *http.Request, body []byte) (int, string, error) {
		return f.set(0, body)
	}))
	mux.HandleFunc("PATCH /settings/ports/{port}", f.write(func(r *http.Request, body []byte) (int, string, error) {
		port, _ := strconv.Atoi(r.PathValue("port"))
		return f.set(uint16(port), body)
	}))
	mux.HandleFunc("DELETE /settings/ports/{port}", f.write(func(r *http.Request, body []byte) (int, string, error) {
		port, _ := strconv.Atoi(r.PathValue("port"))
		p := f.ports[uint16(port)]
		if p == nil {
			return 400, "port", fmt.Errorf("port: %d: no service on this port", port)
		}
		p.overrides = client.Knobs{}
		return 200, "", nil
	}))
	mux.HandleFunc("POST /reset", f.write(func(r *http.Request, body []byte) (int, string, error) {
		gen := f.gen
		f.reset()
		f.gen = gen
		return 200, "", nil
	}))
	mux.HandleFunc("GET /proxies", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.reqs = append(f.reqs, "GET /proxies")
		ps := []client.Proxy{}
		for _, n := range slices.Sorted(maps.Keys(f.ports)) {
			if p := f.ports[n]; p.service == "proxy" {
				ps = append(ps, client.Proxy{Port: n, Target: p.target, Overrides: p.overrides})
			}
		}
		json.NewEncoder(w).Encode(ps)
	})
	mux.HandleFunc("POST /proxies", f.write(func(r *http.Request, body []byte) (int, string, error) {
		var req struct {
			Port     uint16       `json:"port"`
			Target   string       `json:"target"`
			Settings client.Knobs `json:"settings"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return 400, "body", err
		}
		if f.ports[req.Port] != nil {
			return 409, "port", fmt.Errorf("port: %d: port served already (by %s)", req.Port, f.ports[req.Port].service)
		}
		if _, err := net.ResolveTCPAddr("tcp", req.Target); err != nil {
			return 400, "target", fmt.Errorf("target: %q: want IP:PORT", req.Target)
		}
		f.ports[req.Port] = &fakePort{service: "proxy", target: req.Target, overrides: client.Knobs{}}
		if req.Settings == nil {
			req.Settings = client.Knobs{}
		}
		b, _ := json.Marshal(req.Settings)
		if status, field, err := f.set(req.Port, b); err != nil {
			delete(f.ports, req.Port)
			return status, field, err
		}
		return 201, "", nil
	}))
	mux.HandleFunc("DELETE /proxies/{port}", f.write(func(r *http.Request, body []byte) (int, string, error) {
		port, _ := strconv.Atoi(r.PathValue("port"))
		if p := f.ports[uint16(port)]; p == nil || p.service != "proxy" {
			return 400, "port", fmt.Errorf("port: %d: no proxy on this port", port)
		}
		delete(f.ports, uint16(port))
		return 200, "", nil
	}))
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// addr is the fake's host:port, as --admin takes it.
func (f *fakeTund) addr() string { return strings.TrimPrefix(f.URL, "http://") }

// reset puts the fake as its command line would have: echo on 7 with an
// override, http on 80, a proxy on 7007.
func (f *fakeTund) reset() {
	f.stack = client.Knobs{"msl": "30s", "fin-wait2": "1m0s", "half-close": "allow", "drop-fin": "off"}
	f.ports = map[uint16]*fakePort{
		7:    {service: "echo", overrides: client.Knobs{"close-delay": "0s"}},
		80:   {service: "http", overrides: client.Knobs{}},
		7007: {service: "proxy", target: "127.0.0.1:7100", overrides: client.Knobs{"half-close": "close"}},
	}
}

func (f *fakeTund) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// set applies body's knobs stack-wide (port 0) or to a port, whole or not
// at all.
func (f *fakeTund) set(port uint16, body []byte) (int, string, error) {
	var knobs client.Knobs
	if err := json.Unmarshal(body, &knobs); err != nil || knobs == nil {
		return 400, "body", fmt.Errorf("want a JSON object of settings")
	}
	target := f.stack
	if port != 0 {
		p := f.ports[port]
		if p == nil {
			return 400, "port", fmt.Errorf("port: %d: no service on this port", port)
		}
		target = p.overrides
	}
	for k, v := range knobs {
		switch {
		case k == "msl" && port != 0:
			return 400, k, fmt.Errorf("%s: stack-wide only", k)
		case k == "close-delay" && port == 0:
			return 400, k, fmt.Errorf("%s: per port only", k)
		case k == "drop-fin" && v != "off" && v != "once":
			return 400, k, fmt.Errorf("%s=%q: want once, a probability or off", k, v)
		case k != "msl" && !slices.Contains(fakePerPort, k):
			return 400, k, fmt.Errorf("%s: no such knob", k)
		}
	}
	maps.Copy(target, knobs)
	return 200, "", nil
}

// write wraps a change as tund does: token, then the change, then the
// settings document or the error document.
func (f *fakeTund) write(change func(r *http.Request, body []byte) (int, string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.reqs = append(f.reqs, strings.TrimSpace(r.Method+" "+r.URL.Path+" "+string(body)))
		if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
			f.answerLocked(w, 401, map[string]string{"error": "writes need the token of --admin-token, as Authorization: Bearer TOKEN"})
			return
		}
		status, field, err := change(r, body)
		if err != nil {
			f.answerLocked(w, status, map[string]string{"error": err.Error(), "field": field})
			return
		}
		f.gen++
		f.answerLocked(w, status, nil)
	}
}

func (f *fakeTund) answer(w http.ResponseWriter, status int, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answerLocked(w, status, v)
}

// answerLocked writes v, or the settings document if v is nil.
func (f *fakeTund) answerLocked(w http.ResponseWriter, status int, v any) {
	if v == nil {
		v = f.doc()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeTund) doc() *client.Settings {
	s := &client.Settings{Generation: f.gen, Stack: maps.Clone(f.stack), Ports: []client.PortSettings{}}
	for _, n := range slices.Sorted(maps.Keys(f.ports)) {
		p := f.ports[n]
		ps := client.PortSettings{Port: n, Service: p.service, Target: p.target, Overrides: maps.Clone(p.overrides), Settings: client.Knobs{}}
		for _, k := range fakePerPort {
			if v, ok := p.overrides[k]; ok {
				ps.Settings[k] = v
			} else if v, ok := f.stack[k]; ok {
				ps.Settings[k] = v
			} else {
				ps.Settings[k] = "0s"
			}
		}
		s.Ports = append(s.Ports, ps)
	}
	return s
}

// tund runs a command against the fake, and returns its exit status,
// stdout and stderr.
func (f *fakeTund) tund(t *testing.T, cmd func([]string, io.Writer, io.Writer) int, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	status := cmd(append(args, "--admin", f.addr()), &stdout, &stderr)
	return status, stdout.String(), stderr.String()
}

func TestGet(t *testing.T) {
	f := newFakeTund(t)
	status, out, errOut := f.tund(t, getCommand)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, errOut)
	}
	for _, want := range []string{
		"generation 0\n",
		"KNOB        VALUE\nmsl         30s\nfin-wait2   1m0s\nhalf-close  allow\ndrop-fin    off\n",
		"PORT  SERVICE  TARGET          OVERRIDES\n" +
			"7     echo     -               close-delay=0s\n" +
			"80    http     -               -\n" +
			"7007  proxy    127.0.0.1:7100  half-close=close\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output\n%s\nwants\n%s", out, want)
		}
	}

	status, out, errOut = f.tund(t, getCommand, "--port", "7007")
	if status != 0 {
		t.Fatalf("--port 7007: exit %d: %s", status, errOut)
	}
	want := "port 7007: proxy to 127.0.0.1:7100 (generation 0)\n\n" +
		"KNOB         VALUE\n" +
		"fin-wait2    1m0s\n" +
		"half-close   close  override (stack-wide: allow)\n" +
		"close-delay  0s\n" +
		"drop-fin     off\n"
	if out != want {
		t.Errorf("--port 7007:\n%s\nwant\n%s", out, want)
	}

	status, out, _ = f.tund(t, getCommand, "--json")
	var s client.Settings
	if err := json.Unmarshal([]byte(out), &s); status != 0 || err != nil || !reflect.DeepEqual(&s, f.doc()) {
		t.Errorf("--json: exit %d, %v:\n%s", status, err, out)
	}
	status, out, _ = f.tund(t, getCommand, "--json", "--port", "7")
	var p client.PortSettings
	if err := json.Unmarshal([]byte(out), &p); status != 0 || err != nil || p.Port != 7 || p.Service != "echo" {
		t.Errorf("--json --port 7: exit %d, %v:\n%s", status, err, out)
	}

	status, _, errOut = f.tund(t, getCommand, "--port", "9999")
	if status != 1 || !strings.Contains(errOut, "no service on port 9999") {
		t.Errorf("--port 9999: exit %d: %s", status, errOut)
	}
	for _, args := range [][]string{{"--port", "0"}, {"--port", "x"}, {"extra"}, {"--nope"}} {
		if status, _, _ := f.tund(t, getCommand, args...); status != 2 {
			t.Errorf("%q: exit %d, want 2", args, status)
		}
	}
	if status, _, errOut := f.tund(t, getCommand, "--help"); status != 0 || !strings.Contains(errOut, "Usage: tund get") {
		t.Errorf("--help: exit %d: %s", status, errOut)
	}
}

func TestSet(t *testing.T) {
	f := newFakeTund(t)
	// A stack-wide change is one line, not one per port that follows it.
	status, out, errOut := f.tund(t, setCommand, "drop-fin=once", "msl=1s")
	if status != 0 {
		t.Fatalf("exit %d: %s", status, errOut)
	}
	if want := "generation 1\nmsl: 30s -> 1s\ndrop-fin: off -> once\n"; out != want {
		t.Errorf("output\n%s\nwant\n%s", out, want)
	}
	if got := f.requests(); len(got) != 1 || !jsonRequest(t, got[0], "PATCH /settings", `{"drop-fin":"once","msl":"1s"}`) {
		t.Errorf("requests %q", got)
	}

	// Flags after the pairs; a port's own value.
	status, out, errOut = f.tund(t, setCommand, "half-close=close", "--port", "7")
	if status != 0 {
		t.Fatalf("--port 7: exit %d: %s", status, errOut)
	}
	if want := "generation 2\nhalf-close: allow -> close (port 7, now its own)\n"; out != want {
		t.Errorf("--port 7: output\n%s\nwant\n%s", out, want)
	}
	// The same value again changes nothing.
	status, out, _ = f.tund(t, setCommand, "--port", "7", "half-close=close")
	if want := "generation 3\nno change\n"; status != 0 || out != want {
		t.Errorf("again: exit %d, output\n%s\nwant\n%s", status, out, want)
	}

	status, out, _ = f.tund(t, setCommand, "--json", "drop-fin=off")
	var s client.Settings
	if err := json.Unmarshal([]byte(out), &s); status != 0 || err != nil || s.Generation != 4 || s.Stack["drop-fin"] != "off" {
		t.Errorf("--json: exit %d, %v:\n%s", status, err, out)
	}

	// The server's refusal: exit 1 with its message, nothing changed.
	n := len(f.requests())
	status, out, errOut = f.tund(t, setCommand, "drop-fin=sometimes", "msl=2s")
	if status != 1 || out != "" {
		t.Errorf("refused: exit %d, output %q", status, out)
	}
	if want := "tund set: PATCH /settings: 400 Bad Request: drop-fin=\"sometimes\": want once, a probability or off\n"; errOut != want {
		t.Errorf("refused: stderr %q, want %q", errOut, want)
	}
	if f.stack["msl"] != "1s" {
		t.Errorf("msl %s after a refused request", f.stack["msl"])
	}
	if got := f.requests()[n:]; len(got) != 1 || !strings.HasPrefix(got[0], "PATCH /settings ") {
		t.Errorf("refused: requests %q", got)
	}
	status, _, errOut = f.tund(t, setCommand, "--port", "9", "drop-fin=once")
	if status != 1 || !strings.Contains(errOut, "400 Bad Request: port: 9: no service on this port") {
		t.Errorf("--port 9: exit %d: %s", status, errOut)
	}

	// Bad usage: exit 2, and no request.
	n = len(f.requests())
	for _, args := range [][]string{
		{},
		{"drop-fin"},
		{"=once"},
		{"drop-fin=once", "drop-fin=off"},
		{"--port", "70000", "drop-fin=once"},
		{"--token-file", filepath.Join(t.TempDir(), "none"), "drop-fin=once"},
	} {
		status, _, errOut := f.tund(t, setCommand, args...)
		if status != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, status, errOut)
		}
		if !strings.Contains(errOut, "tund set") {
			t.Errorf("%q: stderr %q does not say what is wrong", args, errOut)
		}
	}
	if got := f.requests()[n:]; len(got) != 0 {
		t.Errorf("requests on bad usage: %q", got)
	}
}

// jsonRequest reports whether a request the fake recorded is prefix with
// a JSON body equal to body.
func jsonRequest(t *testing.T, req, prefix, body string) bool {
	t.Helper()
	got, ok := strings.CutPrefix(req, prefix+" ")
	if !ok {
		return false
	}
	var x, y any
	if json.Unmarshal([]byte(got), &x) != nil || json.Unmarshal([]byte(body), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestToken(t *testing.T) {
	f := newFakeTund(t)
	f.token = "s3cret"
	status, _, errOut := f.tund(t, setCommand, "drop-fin=once")
	if status != 1 || !strings.Contains(errOut, "401 Unauthorized") || !strings.Contains(errOut, "--token-file") {
		t.Errorf("no token: exit %d: %s", status, errOut)
	}
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("  s3cret\n"), 0o600)
	if status, _, errOut := f.tund(t, setCommand, "--token-file", file, "drop-fin=once"); status != 0 {
		t.Errorf("--token-file: exit %d: %s", status, errOut)
	}
	os.WriteFile(file, []byte("wrong\n"), 0o600)
	status, _, errOut = f.tund(t, resetCommand, "--token-file", file)
	if status != 1 || !strings.Contains(errOut, "401 Unauthorized") || strings.Contains(errOut, "give the token") {
		t.Errorf("wrong token: exit %d: %s", status, errOut)
	}
	os.WriteFile(file, []byte("\n"), 0o600)
	status, _, errOut = f.tund(t, setCommand, "--token-file", file, "drop-fin=once")
	if status != 2 || !strings.Contains(errOut, "the file is empty") {
		t.Errorf("empty token file: exit %d: %s", status, errOut)
	}
}

func TestReset(t *testing.T) {
	f := newFakeTund(t)
	if status, _, errOut := f.tund(t, setCommand, "drop-fin=once", "--port", "7"); status != 0 {
		t.Fatal(errOut)
	}
	status, out, errOut := f.tund(t, resetCommand, "--port", "7")
	if status != 0 {
		t.Fatalf("--port 7: exit %d: %s", status, errOut)
	}
	if want := "generation 2\nclose-delay: 0s (port 7, override dropped)\ndrop-fin: once -> off (port 7, stack-wide again)\n"; out != want {
		t.Errorf("--port 7: output\n%s\nwant\n%s", out, want)
	}
	if got := f.requests(); got[len(got)-1] != "DELETE /settings/ports/7" {
		t.Errorf("requests %q", got)
	}

	f.tund(t, setCommand, "msl=5s")
	f.tund(t, proxyCommand, "rm", "7007")
	status, out, errOut = f.tund(t, resetCommand)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, errOut)
	}
	if want := "generation 5\nmsl: 5s -> 30s\nclose-delay: 0s (port 7, now its own)\nport 7007: proxy to 127.0.0.1:7100 started with half-close=close\n"; out != want {
		t.Errorf("output\n%s\nwant\n%s", out, want)
	}
	if got := f.requests(); got[len(got)-1] != "POST /reset" {
		t.Errorf("requests %q", got)
	}
	if status, _, _ := f.tund(t, resetCommand, "now"); status != 2 {
		t.Errorf("reset now: exit %d, want 2", status)
	}
}

func TestProxy(t *testing.T) {
	f := newFakeTund(t)
	status, out, errOut := f.tund(t, proxyCommand, "add", "8080=127.0.0.1:80", "half-close=5s", "drop-fin=once")
	if status != 0 {
		t.Fatalf("add: exit %d: %s", status, errOut)
	}
	if want := "generation 1\nport 8080: proxy to 127.0.0.1:80 started with half-close=5s drop-fin=once\n"; out != want {
		t.Errorf("add: output\n%s\nwant\n%s", out, want)
	}
	if got := f.requests(); !jsonRequest(t, got[len(got)-1], "POST /proxies", `{"port":8080,"target":"127.0.0.1:80","settings":{"half-close":"5s","drop-fin":"once"}}`) {
		t.Errorf("add: requests %q", got)
	}
	if status, _, errOut := f.tund(t, proxyCommand, "add", "9=127.0.0.1:9"); status != 0 {
		t.Errorf("add without knobs: exit %d: %s", status, errOut)
	}
	f.tund(t, proxyCommand, "rm", "9")
	status, _, errOut = f.tund(t, proxyCommand, "add", "7=127.0.0.1:7")
	if status != 1 || !strings.Contains(errOut, "409 Conflict: port: 7: port served already (by echo)") {
		t.Errorf("add on a served port: exit %d: %s", status, errOut)
	}

	status, out, _ = f.tund(t, proxyCommand, "ls")
	if want := "PORT  TARGET          OVERRIDES\n7007  127.0.0.1:7100  half-close=close\n8080  127.0.0.1:80    half-close=5s drop-fin=once\n"; status != 0 || out != want {
		t.Errorf("ls: exit %d, output\n%s\nwant\n%s", status, out, want)
	}
	status, out, _ = f.tund(t, proxyCommand, "ls", "--json")
	var ps []client.Proxy
	if err := json.Unmarshal([]byte(out), &ps); status != 0 || err != nil || len(ps) != 2 || ps[1].Overrides["drop-fin"] != "once" {
		t.Errorf("ls --json: exit %d, %v:\n%s", status, err, out)
	}

	status, out, errOut = f.tund(t, proxyCommand, "rm", "8080")
	if want := "generation 4\nport 8080: proxy to 127.0.0.1:80 stopped\n"; status != 0 || out != want {
		t.Errorf("rm: exit %d (%s), output\n%s\nwant\n%s", status, errOut, out, want)
	}
	if got := f.requests(); got[len(got)-1] != "DELETE /proxies/8080" {
		t.Errorf("rm: requests %q", got)
	}
	status, _, errOut = f.tund(t, proxyCommand, "rm", "80")
	if status != 1 || !strings.Contains(errOut, "400 Bad Request: port: 80: no proxy on this port") {
		t.Errorf("rm 80: exit %d: %s", status, errOut)
	}
	f.tund(t, proxyCommand, "rm", "7007")
	if status, out, _ := f.tund(t, proxyCommand, "ls"); status != 0 || out != "no proxies\n" {
		t.Errorf("ls of none: exit %d, output %q", status, out)
	}

	for _, args := range [][]string{
		{}, {"start"}, {"add"}, {"add", "8080"}, {"add", "8080="}, {"add", "x=127.0.0.1:80"},
		{"add", "8080=127.0.0.1:80", "drop-fin"}, {"rm"}, {"rm", "0"}, {"rm", "1", "2"}, {"ls", "x"},
	} {
		var stdout, stderr bytes.Buffer
		if status := proxyCommand(args, &stdout, &stderr); status != 2 {
			t.Errorf("proxy %q: exit %d, want 2 (%s)", args, status, stderr.String())
		}
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var stdout, stderr bytes.Buffer
	status := getCommand([]string{"--admin", addr}, &stdout, &stderr)
	if status != 1 || !strings.Contains(stderr.String(), "connection refused") || !strings.Contains(stderr.String(), "is tund running") {
		t.Errorf("exit %d: %s", status, stderr.String())
	}
}

// TestOldTund checks the hint when the server has no settings API.
func TestOldTund(t *testing.T) {
	srv := httptest.NewServer(http.NewServeMux())
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	status := getCommand([]string{"--admin", strings.TrimPrefix(srv.URL, "http://")}, &stdout, &stderr)
	if status != 1 || !strings.Contains(stderr.String(), "older than the settings API") {
		t.Errorf("exit %d: %s", status, stderr.String())
	}
}

// TestRun checks that run dispatches the commands.
func TestRun(t *testing.T) {
	f := newFakeTund(t)
	out := captureStdout(t, func() {
		var stderr bytes.Buffer
		if status := run([]string{"set", "--admin", f.addr(), "drop-fin=once"}, &stderr); status != 0 {
			t.Errorf("tund set: exit %d: %s", status, stderr.String())
		}
		for _, args := range [][]string{{"get"}, {"reset"}, {"proxy", "ls"}} {
			if status := run(append(args, "--admin", f.addr()), &stderr); status != 0 {
				t.Errorf("tund %q: exit %d: %s", args, status, stderr.String())
			}
		}
	})
	if !strings.Contains(out, "drop-fin: off -> once\n") || !strings.Contains(out, "KNOB") || !strings.Contains(out, "7007  127.0.0.1:7100") {
		t.Errorf("stdout:\n%s", out)
	}
}

// captureStdout returns what fn writes to os.Stdout, where run sends the
// commands' output.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	defer func() {
		os.Stdout = saved
	}()
	fn()
	w.Close()
	return <-done
}

func TestSettingsChanges(t *testing.T) {
	before := &client.Settings{
		Generation: 3,
		Stack:      client.Knobs{"drop-fin": "off", "fin-wait2": "1m0s"},
		Ports: []client.PortSettings{
			{Port: 7, Service: "echo", Overrides: client.Knobs{"fin-wait2": "5s"}, Settings: client.Knobs{"drop-fin": "off", "fin-wait2": "5s"}},
			{Port: 80, Service: "http", Overrides: client.Knobs{}, Settings: client.Knobs{"drop-fin": "off", "fin-wait2": "1m0s"}},
			{Port: 9000, Service: "proxy", Target: "127.0.0.1:1", Overrides: client.Knobs{}, Settings: client.Knobs{"drop-fin": "off", "fin-wait2": "1m0s"}},
		},
	}
	after := &client.Settings{
		Generation: 4,
		Stack:      client.Knobs{"drop-fin": "once", "fin-wait2": "1m0s"},
		Ports: []client.PortSettings{
			// drop-fin follows the stack; fin-wait2 is overridden with its stack-wide value.
			{Port: 7, Service: "echo", Overrides: client.Knobs{"fin-wait2": "1m0s"}, Settings: client.Knobs{"drop-fin": "once", "fin-wait2": "1m0s"}},
			// drop-fin set on the port to what it was.
			{Port: 80, Service: "http", Overrides: client.Knobs{"drop-fin": "off"}, Settings: client.Knobs{"drop-fin": "off", "fin-wait2": "1m0s"}},
			// Another target: stopped and started.
			{Port: 9000, Service: "proxy", Target: "127.0.0.1:2", Overrides: client.Knobs{}, Settings: client.Knobs{"drop-fin": "once", "fin-wait2": "1m0s"}},
		},
	}
	got := settingsChanges(before, after)
	want := []string{
		"drop-fin: off -> once",
		"port 9000: proxy to 127.0.0.1:1 stopped",
		"fin-wait2: 5s -> 1m0s (port 7)",
		"drop-fin: off (port 80, now its own)",
		"port 9000: proxy to 127.0.0.1:2 started",
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := settingsChanges(after, after); len(got) != 0 {
		t.Errorf("changes of a document against itself: %q", got)
	}
}

func TestParseInterspersed(t *testing.T) {
	var stderr bytes.Buffer
	f := newSettingsFlags("set", "", "", "port", &stderr)
	ops, status, ok := f.parse([]string{"a=1", "--port", "7", "b=2", "--json", "--", "--c=3"})
	if !ok || status != 0 || !slices.Equal(ops, []string{"a=1", "b=2", "--c=3"}) || f.port != 7 || !f.json {
		t.Errorf("operands %q, port %d, json %v, ok %v", ops, f.port, f.json, ok)
	}
}
