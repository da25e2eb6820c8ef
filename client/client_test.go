package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// settingsDoc is a settings document as tund sends it.
const settingsDoc = `{
  "generation": 4,
  "stack": {"msl": "30s", "fin-wait2": "1m0s", "drop-fin": "off"},
  "ports": [
    {"port": 7, "service": "echo", "overrides": {"fin-ack-merge": "0s"},
     "settings": {"fin-ack-merge": "0s", "half-close": "allow", "drop-fin": "off"}},
    {"port": 7007, "service": "proxy", "target": "127.0.0.1:7100", "overrides": {},
     "settings": {"fin-ack-merge": "200ms", "half-close": "allow", "drop-fin": "off"}}
  ]
}`

// request is what the fake server received.
type request struct {
	Method, Path, Query, Auth, ContentType string
	Body                                   string
}

// fake is an admin server that records each request and answers with
// the status and body that answer returns for it.
type fake struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []request
	answer func(r *http.Request) (int, string)
}

func newFake(t *testing.T, answer func(r *http.Request) (int, string)) *fake {
	t.Helper()
	f := &fake{answer: answer}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		f.mu.Unlock()
		status, body := f.answer(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func TestNew(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:9180":         "http://127.0.0.1:9180",
		"http://127.0.0.1:9180":  "http://127.0.0.1:9180",
		"http://127.0.0.1:9180/": "http://127.0.0.1:9180",
		"https://tund.test:443":  "https://tund.test:443",
		"[::1]:9180":             "http://[::1]:9180",
		"":                       "http://" + DefaultAddr,
	} {
		if got := New(addr).base; got != want {
			t.Errorf("New(%q): base %q, want %q", addr, got, want)
		}
	}
}

// TestWrites checks each call's method, path, body and token, and that
// the answer is decoded.
func TestWrites(t *testing.T) {
	f := newFake(t, func(r *http.Request) (int, string) {
		if r.Method == http.MethodPost && r.URL.Path == "/proxies" {
			return http.StatusCreated, settingsDoc
		}
		return http.StatusOK, settingsDoc
	})
	c := New(f.URL)
	c.Token = "s3cret"
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		call         func() (*Settings, error)
		method, path string
		body         string // JSON; "" for none
	}{
		{"Settings", func() (*Settings, error) { return c.Settings(ctx) }, "GET", "/settings", ""},
		{"Set", func() (*Settings, error) { return c.Set(ctx, Knobs{"drop-fin": "once", "msl": "1s"}) }, "PATCH", "/settings", `{"drop-fin":"once","msl":"1s"}`},
		{"Set nil", func() (*Settings, error) { return c.Set(ctx, nil) }, "PATCH", "/settings", `{}`},
		{"SetPort", func() (*Settings, error) { return c.SetPort(ctx, 7, Knobs{"drop-final-ack": "once"}) }, "PATCH", "/settings/ports/7", `{"drop-final-ack":"once"}`},
		{"ClearPort", func() (*Settings, error) { return c.ClearPort(ctx, 65535) }, "DELETE", "/settings/ports/65535", ""},
		{"Reset", func() (*Settings, error) { return c.Reset(ctx) }, "POST", "/reset", ""},
		{"AddProxy", func() (*Settings, error) {
			return c.AddProxy(ctx, Proxy{Port: 7007, Target: "127.0.0.1:7100", Overrides: Knobs{"half-close": "close"}})
		}, "POST", "/proxies", `{"port":7007,"target":"127.0.0.1:7100","settings":{"half-close":"close"}}`},
		{"AddProxy without overrides", func() (*Settings, error) {
			return c.AddProxy(ctx, Proxy{Port: 7007, Target: "127.0.0.1:7100"})
		}, "POST", "/proxies", `{"port":7007,"target":"127.0.0.1:7100"}`},
		{"RemoveProxy", func() (*Settings, error) { return c.RemoveProxy(ctx, 7007) }, "DELETE", "/proxies/7007", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(f.requests())
			s, err := tc.call()
			if err != nil {
				t.Fatal(err)
			}
			reqs := f.requests()[n:]
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tc.method || r.Path != tc.path {
				t.Errorf("request %s %s, want %s %s", r.Method, r.Path, tc.method, tc.path)
			}
			if r.Auth != "Bearer s3cret" {
				t.Errorf("Authorization %q, want %q", r.Auth, "Bearer s3cret")
			}
			if tc.body == "" {
				if r.Body != "" {
					t.Errorf("body %q, want none", r.Body)
				}
			} else {
				if !jsonEqual(t, r.Body, tc.body) {
					t.Errorf("body %s, want %s", r.Body, tc.body)
				}
				if r.ContentType != "application/json" {
					t.Errorf("Content-Type %q, want application/json", r.ContentType)
				}
			}
			if s.Generation != 4 || s.Stack["msl"] != "30s" || len(s.Ports) != 2 {
				t.Errorf("decoded %+v", s)
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestNoToken(t *testing.T) {
	f := newFake(t, func(*http.Request) (int, string) { return 200, settingsDoc })
	if _, err := New(f.URL).Settings(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := f.requests()[0]; r.Auth != "" {
		t.Errorf("Authorization %q sent without a token", r.Auth)
	}
}

func TestSettingsPort(t *testing.T) {
	var s Settings
	if err := json.Unmarshal([]byte(settingsDoc), &s); err != nil {
		t.Fatal(err)
	}
	p := s.Port(7007)
	if p == nil {
		t.Fatal("Port(7007) = nil")
	}
	want := PortSettings{Port: 7007, Service: "proxy", Target: "127.0.0.1:7100", Overrides: Knobs{},
		Settings: Knobs{"fin-ack-merge": "200ms", "half-close": "allow", "drop-fin": "off"}}
	if !reflect.DeepEqual(*p, want) {
		t.Errorf("Port(7007) = %+v, want %+v", *p, want)
	}
	if p := s.Port(7); p == nil || p.Overrides["fin-ack-merge"] != "0s" || p.Target != "" {
		t.Errorf("Port(7) = %+v", p)
	}
	if p := s.Port(80); p != nil {
		t.Errorf("Port(80) = %+v, want nil", p)
	}
	// The pointer is into the document, so a test may keep it.
	if s.Port(7) != &s.Ports[0] {
		t.Error("Port(7) does not point into Ports")
	}
}

func TestKnobsString(t *testing.T) {
	if got := (Knobs{"msl": "1s", "drop-fin": "once"}).String(); got != "drop-fin=once,msl=1s" {
		t.Errorf("String() = %q", got)
	}
	if got := Knobs(nil).String(); got != "" {
		t.Errorf("nil String() = %q", got)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		call   func(c *Client) error
		want   Error
		text   string
	}{
		{
			name: "bad knob value", status: 400,
			body: `{"error": "drop-fin=\"sometimes\": want once, a probability or off", "field": "drop-fin"}`,
			call: func(c *Client) error {
				_, err := c.Set(context.Background(), Knobs{"drop-fin": "sometimes"})
				return err
			},
			want: Error{Method: "PATCH", Path: "/settings", Status: 400, Field: "drop-fin", Message: `drop-fin="sometimes": want once, a probability or off`},
			text: `tund admin: PATCH /settings: 400 Bad Request: drop-fin="sometimes": want once, a probability or off`,
		},
		{
			name: "field not in message", status: 404,
			body: `{"error": "no service on it", "field": "port"}`,
			call: func(c *Client) error {
				_, err := c.SetPort(context.Background(), 8, Knobs{"abort": "true"})
				return err
			},
			want: Error{Method: "PATCH", Path: "/settings/ports/8", Status: 404, Field: "port", Message: "no service on it"},
			text: `tund admin: PATCH /settings/ports/8: 404 Not Found: port: no service on it`,
		},
		{
			name: "unauthorized", status: 401,
			body: `{"error": "missing or wrong bearer token"}`,
			call: func(c *Client) error { _, err := c.Reset(context.Background()); return err },
			want: Error{Method: "POST", Path: "/reset", Status: 401, Message: "missing or wrong bearer token"},
			text: `tund admin: POST /reset: 401 Unauthorized: missing or wrong bearer token`,
		},
		{
			name: "conflict", status: 409,
			body: `{"error": "port 7 is served already (echo)", "field": "port"}`,
			call: func(c *Client) error {
				_, err := c.AddProxy(context.Background(), Proxy{Port: 7, Target: "127.0.0.1:7"})
				return err
			},
			want: Error{Method: "POST", Path: "/proxies", Status: 409, Field: "port", Message: "port 7 is served already (echo)"},
			text: `tund admin: POST /proxies: 409 Conflict: port 7 is served already (echo)`,
		},
		{
			// An older tund's mux, which has no such route.
			name: "not an error document", status: 404,
			body: "404 page not found\n",
			call: func(c *Client) error { _, err := c.Settings(context.Background()); return err },
			want: Error{Method: "GET", Path: "/settings", Status: 404, Message: "404 page not found"},
			text: `tund admin: GET /settings: 404 Not Found: 404 page not found`,
		},
		{
			name: "empty", status: 500,
			call: func(c *Client) error { _, err := c.Proxies(context.Background()); return err },
			want: Error{Method: "GET", Path: "/proxies", Status: 500},
			text: `tund admin: GET /proxies: 500 Internal Server Error`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(*http.Request) (int, string) { return tc.status, tc.body })
			err := tc.call(New(f.URL))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want an *Error", err, err)
			}
			if *e != tc.want {
				t.Errorf("error %+v, want %+v", *e, tc.want)
			}
			if err.Error() != tc.text {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.text)
			}
		})
	}
}

func TestTransportError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = New(addr).Settings(context.Background())
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	if want := "tund admin: GET /settings: dial tcp " + addr; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
	var e *Error
	if errors.As(err, &e) {
		t.Errorf("a failure to connect is an *Error: %v", e)
	}
}

func TestBadAnswer(t *testing.T) {
	f := newFake(t, func(*http.Request) (int, string) { return 200, `{"generation": "four"}` })
	_, err := New(f.URL).Settings(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "tund admin: GET /settings: reading the answer: ") {
		t.Errorf("error %v", err)
	}
}

func TestProxies(t *testing.T) {
	f := newFake(t, func(*http.Request) (int, string) {
		return 200, `[{"port":7007,"target":"127.0.0.1:7100","overrides":{"half-close":"close"}},{"port":7008,"target":"[::1]:80","overrides":{}}]`
	})
	ps, err := New(f.URL).Proxies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Proxy{
		{Port: 7007, Target: "127.0.0.1:7100", Overrides: Knobs{"half-close": "close"}},
		{Port: 7008, Target: "[::1]:80", Overrides: Knobs{}},
	}
	if !reflect.DeepEqual(ps, want) {
		t.Errorf("Proxies() = %+v, want %+v", ps, want)
	}
	if r := f.requests()[0]; r.Method != "GET" || r.Path != "/proxies" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
}

// closeRecord is a close record as tund sends it.
const closeRecord = `{"id":12,"local":"198.18.0.2:7","remote":"198.18.0.1:40000","initiator":"peer","kind":"four-way",
 "fin_retransmits":0,"ack_retransmits":1,"final_ack_lost":true,
 "start":"2026-01-02T03:04:05.000000001Z","end":"2026-01-02T03:04:05.250000001Z",
 "segments":[
  {"at":"2026-01-02T03:04:05.000000001Z","from":"peer","flags":"FA","seq":100,"ack":500,"len":0,"tund_state":"CLOSE-WAIT","peer_state":"FIN-WAIT-1"},
  {"at":"2026-01-02T03:04:05.100000001Z","from":"tund","flags":"A","seq":500,"ack":101,"len":0,"fault":"drop-final-ack"}
 ]}`

func TestClose(t *testing.T) {
	var c Close
	if err := json.Unmarshal([]byte(closeRecord), &c); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 1, time.UTC)
	want := Close{
		ID: 12, Local: netip.MustParseAddrPort("198.18.0.2:7"), Remote: netip.MustParseAddrPort("198.18.0.1:40000"),
		Initiator: SidePeer, Kind: KindFourWay, ACKRetransmits: 1, FinalACKLost: true,
		Start: t0, End: t0.Add(250 * time.Millisecond),
		Segments: []Segment{
			{At: t0, From: SidePeer, Flags: "FA", Seq: 100, Ack: 500, TundState: "CLOSE-WAIT", PeerState: "FIN-WAIT-1"},
			{At: t0.Add(100 * time.Millisecond), From: SideTund, Flags: "A", Seq: 500, Ack: 101, Fault: "drop-final-ack"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", c, want)
	}
	if d := c.Duration(); d != 250*time.Millisecond {
		t.Errorf("Duration() = %v", d)
	}
}

func TestCloses(t *testing.T) {
	f := newFake(t, func(*http.Request) (int, string) { return 200, "[" + closeRecord + "," + closeRecord + "]" })
	cs, err := New(f.URL).Closes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[1].ID != 12 || len(cs[1].Segments) != 2 {
		t.Errorf("Closes() = %+v", cs)
	}
	if r := f.requests()[0]; r.Method != "GET" || r.Path != "/closes" || r.Query != "" {
		t.Errorf("request %s %s?%s", r.Method, r.Path, r.Query)
	}
}

var peer = netip.MustParseAddrPort("198.18.0.1:40000")

// closesServer answers GET /closes?peer= as tund does: after the wait
// asked for (but at most maxWait), 404 until the close has come; the
// close comes at the answer'th request.
func closesServer(t *testing.T, maxWait time.Duration, answer int) (*fake, func() []time.Duration) {
	t.Helper()
	var (
		mu    sync.Mutex
		waits []time.Duration
	)
	f := newFake(t, func(r *http.Request) (int, string) {
		if r.URL.Path != "/closes" || r.URL.Query().Get("peer") != peer.String() {
			return 400, `{"error":"unexpected request ` + r.URL.String() + `"}`
		}
		wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
		if err != nil || wait <= 0 {
			return 400, `{"error":"bad wait","field":"wait"}`
		}
		mu.Lock()
		waits = append(waits, wait)
		n := len(waits)
		mu.Unlock()
		if n == answer {
			return 200, closeRecord
		}
		select {
		case <-time.After(min(wait, maxWait)):
		case <-r.Context().Done():
		}
		return 404, `{"error":"no close of 198.18.0.1:40000 within ` + wait.String() + `","field":"peer"}`
	})
	return f, func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), waits...)
	}
}

func TestWaitClose(t *testing.T) {
	f, waits := closesServer(t, time.Hour, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(f.URL).WaitClose(ctx, peer)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 12 || c.Remote != peer {
		t.Errorf("WaitClose = %+v", c)
	}
	// The server is asked to answer a little before the deadline.
	if w := waits(); len(w) != 1 || w[0] > 5*time.Second || w[0] < 4*time.Second {
		t.Errorf("waits %v, want one under 5s", w)
	}
}

// TestWaitCloseNoDeadline checks that a context without a deadline waits
// DefaultWait.
func TestWaitCloseNoDeadline(t *testing.T) {
	f, waits := closesServer(t, time.Hour, 1)
	if _, err := New(f.URL).WaitClose(context.Background(), peer); err != nil {
		t.Fatal(err)
	}
	if w := waits(); len(w) != 1 || w[0] > DefaultWait || w[0] < DefaultWait-time.Second {
		t.Errorf("waits %v, want one just under %v", w, DefaultWait)
	}
}

func TestPollWait(t *testing.T) {
	c := New("")
	for _, tc := range []struct {
		left, want time.Duration
		timeout    time.Duration
		ok         bool
	}{
		{left: 5 * time.Second, want: 4800 * time.Millisecond, ok: true},
		{left: time.Second, want: 900 * time.Millisecond, ok: true},
		{left: time.Hour, want: maxPoll, ok: true},
		{left: time.Hour, timeout: 10 * time.Second, want: 9800 * time.Millisecond, ok: true},
		{left: 50 * time.Millisecond, ok: false},
	} {
		c.HTTPClient = &http.Client{Timeout: tc.timeout}
		got, ok := c.pollWait(tc.left)
		if got != tc.want || ok != tc.ok {
			t.Errorf("pollWait(%v) with Timeout %v = %v, %v; want %v, %v", tc.left, tc.timeout, got, ok, tc.want, tc.ok)
		}
	}
}

// TestWaitCloseRetry checks that WaitClose polls again when the server's
// wait runs out (here, it holds a poll for 150ms at most) while the
// context's has not.
func TestWaitCloseRetry(t *testing.T) {
	f, waits := closesServer(t, 150*time.Millisecond, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	c, err := New(f.URL).WaitClose(ctx, peer)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 12 {
		t.Errorf("WaitClose = %+v", c)
	}
	w := waits()
	if len(w) != 3 {
		t.Fatalf("%d polls (%v), want 3", len(w), w)
	}
	// Each poll asks for the time left, less a little.
	if w[1] >= w[0] || w[2] >= w[1] {
		t.Errorf("waits %v, want them shrinking", w)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("answered after %v, before the two 150ms polls", d)
	}
}

// TestWaitCloseHTTPTimeout checks that each poll stays under the
// http.Client's Timeout, which would otherwise cut it.
func TestWaitCloseHTTPTimeout(t *testing.T) {
	f, waits := closesServer(t, time.Hour, 3)
	c := New(f.URL)
	c.HTTPClient = &http.Client{Timeout: 400 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitClose(ctx, peer); err != nil {
		t.Fatal(err)
	}
	w := waits()
	if len(w) != 3 {
		t.Fatalf("%d polls (%v), want 3", len(w), w)
	}
	for _, d := range w {
		if d >= 400*time.Millisecond {
			t.Errorf("waits %v, want each under the 400ms Timeout", w)
		}
	}
}

// TestWaitCloseNone checks the error when no close comes in time: the
// server's 404 before the deadline, as ErrNoClose.
func TestWaitCloseNone(t *testing.T) {
	f, _ := closesServer(t, time.Hour, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := New(f.URL).WaitClose(ctx, peer)
	if d := time.Since(start); d < 400*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %v, want about 500ms", d)
	}
	if !errors.Is(err, ErrNoClose) {
		t.Fatalf("error %v, want ErrNoClose", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != 404 {
		t.Errorf("error %v does not carry the server's 404", err)
	}
	if ctx.Err() != nil {
		t.Errorf("gave up after the context's deadline, not before")
	}
	if want := "tund admin: waiting for the close of 198.18.0.1:40000: none ended within "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
}

func TestWaitCloseCanceled(t *testing.T) {
	f, _ := closesServer(t, time.Hour, 0)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := New(f.URL).WaitClose(ctx, peer)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrNoClose) {
		t.Errorf("error %v: a canceled wait is not ErrNoClose", err)
	}
}

// TestWaitCloseFailure checks that a refusal other than 404 ends the
// wait at once.
func TestWaitCloseFailure(t *testing.T) {
	f := newFake(t, func(*http.Request) (int, string) { return 400, `{"error":"peer \"x\": want IP:PORT","field":"peer"}` })
	_, err := New(f.URL).WaitClose(context.Background(), peer)
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || errors.Is(err, ErrNoClose) {
		t.Errorf("error %v, want the 400", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if want := "tund admin: GET /closes?peer=198.18.0.1:40000&wait=9."; !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "s: 400 Bad Request: peer") {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
	if _, err := New(f.URL).WaitClose(context.Background(), netip.AddrPort{}); err == nil {
		t.Error("no error for an invalid peer")
	}
}

// TestWaitCloseOldServer checks the error from a tund that ignores ?peer=
// and answers with every close.
func TestWaitCloseOldServer(t *testing.T) {
	f := newFake(t, func(*http.Request) (int, string) { return 200, "[" + closeRecord + "]" })
	_, err := New(f.URL).WaitClose(context.Background(), peer)
	if err == nil || !strings.Contains(err.Error(), "predates") {
		t.Errorf("error %v, want one saying the server predates ?peer=", err)
	}
}

// TestStandardLibraryOnly guards the package's promise: a test suite that
// imports it builds nothing but the standard library (no gVisor).
func TestStandardLibraryOnly(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, []string{"github.com/tund/tund/client"}) {
		t.Errorf("the package imports %v, want the standard library alone", got)
	}
}
