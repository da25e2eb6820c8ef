package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultAddr is the admin address tund listens on unless its --admin flag
// says otherwise: the loopback of tund's own network namespace. It is
// admin.DefaultAddr, repeated so that this package imports nothing of
// tund's.
const DefaultAddr = "127.0.0.1:9180"

// DefaultWait is how long WaitClose waits for a close when its context
// has no deadline.
const DefaultWait = 10 * time.Second

// Client talks to one running tund's admin server. Its fields may be set
// after New and before the first request; a Client is then safe for
// concurrent use.
type Client struct {
	// HTTPClient sends the requests; nil means http.DefaultClient. Supply
	// one whose Transport dials inside tund's network namespace to reach
	// a tund whose admin server listens on that namespace's loopback, or
	// one with a Timeout to bound every request (WaitClose keeps each of
	// its long polls under that Timeout).
	HTTPClient *http.Client

	// Token, if not empty, is sent as "Authorization: Bearer TOKEN" with
	// every request. A tund run with --admin-token FILE refuses writes
	// without it (401); reads never need it.
	Token string

	base string // scheme://host:port, without a trailing slash
}

// New returns a client of the tund whose admin server is at addr: a
// host:port such as "127.0.0.1:9180", or a URL such as
// "http://127.0.0.1:9180". An empty addr means DefaultAddr. A malformed
// addr is reported by the first request.
func New(addr string) *Client {
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{base: strings.TrimRight(addr, "/")}
}

// Knobs maps knob names, as tund's flags spell them ("drop-fin",
// "fin-ack-merge", ...), to values, as the flags take them ("once",
// "0s", ...).
type Knobs map[string]string

// String spells k as "name=value" pairs sorted by name and separated by
// commas, as tund set takes them (with spaces); "" when k is empty.
func (k Knobs) String() string {
	var b strings.Builder
	for i, name := range slices.Sorted(maps.Keys(k)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(k[name])
	}
	return b.String()
}

// Settings is tund's settings document: every knob in force, stack-wide
// and on each port that has a service. Every successful write answers with
// the document as the write left it.
type Settings struct {
	// Generation counts the successful writes since tund started: each
	// adds 1, so a reader can tell whether anything changed in between.
	Generation uint64 `json:"generation"`
	// Stack holds the stack-wide value of every knob that has one (all
	// but close-delay). A port without an override of a knob follows it.
	Stack Knobs `json:"stack"`
	// Ports lists every port with a service, sorted by port.
	Ports []PortSettings `json:"ports"`
}

// PortSettings is one port's entry in the settings document.
type PortSettings struct {
	Port    uint16 `json:"port"`
	Service string `json:"service"` // the service's name: "echo", "http", "proxy", ...
	// Target is where a proxy carries its connections on to, IP:PORT;
	// empty for other services.
	Target string `json:"target,omitempty"`
	// Overrides holds the knobs set for this port alone (PATCH
	// /settings/ports/N, a proxy's own settings); empty when the port
	// follows the stack-wide values throughout.
	Overrides Knobs `json:"overrides"`
	// Settings holds every per-port knob in force on the port: its
	// overrides, and the stack-wide values for the rest.
	Settings Knobs `json:"settings"`
}

// Port returns the entry of port n, or nil if no service is on it.
func (s *Settings) Port(n uint16) *PortSettings {
	for i := range s.Ports {
		if s.Ports[i].Port == n {
			return &s.Ports[i]
		}
	}
	return nil
}

// Proxy is a proxy service: connections to Port on tund are carried on to
// Target, a kernel address.
type Proxy struct {
	Port   uint16 `json:"port"`
	Target string `json:"target"` // IP:PORT
	// Overrides holds the knobs set for the proxy's port alone. AddProxy
	// sends them as the new proxy's settings; Proxies reports those in
	// force (the server's "overrides", as in PortSettings).
	Overrides Knobs `json:"overrides"`
}

// Error is the answer of a request that tund refused or could not serve:
// any status outside 2xx. tund says 400 for bad input, 401 for a missing
// or wrong token, 404 for no close in time (WaitClose), and
// 409 for a port already served.
type Error struct {
	Method string // of the request: "PATCH"
	Path   string // of the request, with its query: "/settings"
	Status int    // HTTP status code: 400
	// Field names the input at fault: a knob ("drop-fin"), or "port",
	// "target", "body" (malformed JSON); empty if tund named none.
	Field string
	// Message is tund's explanation, or the text of an answer that was not
	// an error document (from a server that is not a tund with this API).
	Message string
}

// Error spells e as "tund admin: PATCH /settings: 400 Bad Request:
// drop-fin=...: want ...".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("tund admin: ")
	b.WriteString(e.Method)
	b.WriteByte(' ')
	b.WriteString(e.Path)
	b.WriteString(": ")
	b.WriteString(e.StatusText())
	if msg := e.detail(); msg != "" {
		b.WriteString(": ")
		b.WriteString(msg)
	}
	return b.String()
}

// StatusText is the status as HTTP spells it: "400 Bad Request".
func (e *Error) StatusText() string {
	s := strconv.Itoa(e.Status)
	if t := http.StatusText(e.Status); t != "" {
		s += " " + t
	}
	return s
}

// detail is Message, led by Field unless Message names it first already
// (tund's messages usually start with "knob=value").
func (e *Error) detail() string {
	if e.Field == "" || strings.HasPrefix(e.Message, e.Field) {
		return e.Message
	}
	if e.Message == "" {
		return e.Field
	}
	return e.Field + ": " + e.Message
}

// ErrNoClose is what WaitClose's error wraps when no close of the peer
// ended in time: errors.Is(err, ErrNoClose) tells it from a failure to
// ask.
var ErrNoClose = errors.New("no close of the peer ended in time")

// Settings returns the settings in force.
func (c *Client) Settings(ctx context.Context) (*Settings, error) {
	return c.settings(ctx, http.MethodGet, "/settings", nil)
}

// Set changes stack-wide values: every port that does not override a knob
// follows it. All of k takes effect, or none of it.
func (c *Client) Set(ctx context.Context, k Knobs) (*Settings, error) {
	return c.settings(ctx, http.MethodPatch, "/settings", knobsBody(k))
}

// SetPort overrides knobs on port alone, which must have a service;
// overrides set before on it and not named in k stay. All of k takes
// effect, or none of it.
func (c *Client) SetPort(ctx context.Context, port uint16, k Knobs) (*Settings, error) {
	return c.settings(ctx, http.MethodPatch, portPath(port), knobsBody(k))
}

// ClearPort drops every override of port: it follows the stack-wide
// values again.
func (c *Client) ClearPort(ctx context.Context, port uint16) (*Settings, error) {
	return c.settings(ctx, http.MethodDelete, portPath(port), nil)
}

// Reset puts everything back as tund's command line set it at start:
// stack-wide values, port overrides, and proxies (those added since are
// removed, those removed come back).
func (c *Client) Reset(ctx context.Context) (*Settings, error) {
	return c.settings(ctx, http.MethodPost, "/reset", nil)
}

// AddProxy starts a proxy service on p.Port, carrying its connections on
// to p.Target, with p.Overrides set on its port. It fails with a 409
// *Error if the port is served already.
func (c *Client) AddProxy(ctx context.Context, p Proxy) (*Settings, error) {
	// The request spells the overrides "settings": they are the settings
	// the new proxy starts with.
	body := struct {
		Port     uint16 `json:"port"`
		Target   string `json:"target"`
		Settings Knobs  `json:"settings,omitempty"`
	}{p.Port, p.Target, p.Overrides}
	return c.settings(ctx, http.MethodPost, "/proxies", body)
}

// RemoveProxy stops the proxy on port. Its connections are ended as a
// stopping tund ends them.
func (c *Client) RemoveProxy(ctx context.Context, port uint16) (*Settings, error) {
	return c.settings(ctx, http.MethodDelete, "/proxies/"+strconv.Itoa(int(port)), nil)
}

// Proxies lists the proxy services, from the command line and added since.
func (c *Client) Proxies(ctx context.Context) ([]Proxy, error) {
	var ps []Proxy
	if err := c.do(ctx, http.MethodGet, "/proxies", nil, &ps); err != nil {
		return nil, err
	}
	return ps, nil
}

// Closes returns the close records tund keeps (the most recent ones),
// oldest first.
func (c *Client) Closes(ctx context.Context) ([]Close, error) {
	var cs []Close
	if err := c.do(ctx, http.MethodGet, "/closes", nil, &cs); err != nil {
		return nil, err
	}
	return cs, nil
}

// WaitClose returns the record of the newest close whose remote end is
// peer (the address of the test's socket, as tund sees it), waiting for
// it to end until ctx's deadline, or for DefaultWait if ctx has none. A
// close that ended before the call counts: call it after closing.
//
// If none ends in time the error wraps ErrNoClose. The server is asked to
// answer a little before the deadline, so that the error is its account
// rather than the context's; each poll is kept under HTTPClient.Timeout,
// and polled again while time is left.
func (c *Client) WaitClose(ctx context.Context, peer netip.AddrPort) (*Close, error) {
	if !peer.IsValid() {
		return nil, fmt.Errorf("tund admin: waiting for a close: invalid peer address %q", peer)
	}
	start := time.Now()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = start.Add(DefaultWait)
	}
	var last error // what the last poll returned
	for {
		wait, ok := c.pollWait(time.Until(deadline))
		if !ok {
			break
		}
		// ':' may stand unescaped in a query (RFC 3986 §3.4), and reads
		// better so in an error's path.
		query := url.Values{"peer": {peer.String()}, "wait": {wait.String()}}.Encode()
		path := "/closes?" + strings.ReplaceAll(query, "%3A", ":")
		sent := time.Now()
		var raw json.RawMessage
		err := c.do(ctx, http.MethodGet, path, nil, &raw)
		if err == nil {
			return decodeClose(path, raw)
		}
		last = err
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusNotFound {
			if ctx.Err() != nil {
				break // the context ended during the poll
			}
			return nil, err // a failure to ask, not an answer
		}
		// The server's wait ran out. Pause if it answered well before it
		// should have, so that a server that ignores wait is not polled
		// in a tight loop.
		if !sleep(ctx, minPoll-time.Since(sent)) {
			last = ctx.Err()
			break
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil, fmt.Errorf("tund admin: waiting for the close of %s: %w", peer, ctx.Err())
	}
	return nil, &noCloseError{peer: peer, waited: time.Since(start), last: last}
}

// WaitCloseWhere is WaitClose for a record that satisfies ok. A record is
// filed when the close completes and filed again, amended, when a FIN that
// the peer sends again in TIME-WAIT adds to it (Close.FinalACKLost): a test
// that waits for that waits here. It returns the last record seen with the
// error if none satisfies ok in time (ctx's deadline, or DefaultWait).
func (c *Client) WaitCloseWhere(ctx context.Context, peer netip.AddrPort, ok func(*Close) bool) (*Close, error) {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultWait)
		defer cancel()
	}
	for {
		rec, err := c.WaitClose(ctx, peer)
		if err != nil || ok(rec) {
			return rec, err
		}
		if !sleep(ctx, amendPoll) {
			return rec, fmt.Errorf("tund admin: the close of %s: %w", peer, ctx.Err())
		}
	}
}

// amendPoll is how often WaitCloseWhere looks again at a record that does
// not yet show what it waits for.
const amendPoll = 20 * time.Millisecond

// minPoll is the least time between two of WaitClose's polls, and the
// least time left worth one.
const minPoll = 100 * time.Millisecond

// maxPoll is the longest wait WaitClose asks of the server in one poll:
// tund takes up to 10 minutes, and a long poll held for less is less
// likely to be cut by something in between.
const maxPoll = time.Minute

// pollWait returns the wait of WaitClose's next poll, with left the time
// to its deadline, and false when too little is left for one. The server
// is asked to answer a tenth early (at most 200ms), for the time the
// answer takes to arrive, and under HTTPClient.Timeout likewise.
func (c *Client) pollWait(left time.Duration) (time.Duration, bool) {
	if left < minPoll {
		return 0, false
	}
	early := func(d time.Duration) time.Duration { return d - min(d/10, 200*time.Millisecond) }
	wait := min(early(left), maxPoll)
	if t := c.httpClient().Timeout; t > 0 {
		wait = min(wait, early(t))
	}
	// Whole hundredths: the server takes wait as a Go duration, and
	// "4.79s" reads better in its logs and in errors than "4.799871234s".
	return max(wait.Truncate(10*time.Millisecond), 10*time.Millisecond), true
}

// sleep waits d, or until ctx ends, and reports whether ctx is still on.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// decodeClose decodes the answer of GET /closes?peer=, which is one record.
func decodeClose(path string, raw json.RawMessage) (*Close, error) {
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		// GET /closes without ?peer= answers with the whole list: the
		// server ignored the parameter.
		return nil, fmt.Errorf("tund admin: GET %s: the answer is a list of closes, not one: this tund predates waiting for a peer's close", path)
	}
	var rec Close
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("tund admin: GET %s: reading the answer: %w", path, err)
	}
	return &rec, nil
}

// noCloseError is WaitClose's error when no close of the peer ended in
// time; it wraps ErrNoClose and what the last poll returned (the server's
// 404 *Error, or the context's error).
type noCloseError struct {
	peer   netip.AddrPort
	waited time.Duration
	last   error
}

func (e *noCloseError) Error() string {
	s := fmt.Sprintf("tund admin: waiting for the close of %s: none ended within %v", e.peer, e.waited.Round(time.Millisecond))
	var ae *Error
	switch {
	case errors.As(e.last, &ae):
		if msg := ae.detail(); msg != "" {
			s += " (tund: " + msg + ")"
		}
	case e.last != nil:
		s += ": " + e.last.Error()
	}
	return s
}

func (e *noCloseError) Unwrap() []error {
	if e.last == nil {
		return []error{ErrNoClose}
	}
	return []error{ErrNoClose, e.last}
}

func portPath(port uint16) string { return "/settings/ports/" + strconv.Itoa(int(port)) }

// knobsBody is k as a request body: {} rather than null for no knobs,
// which the server would take for a malformed body.
func knobsBody(k Knobs) Knobs {
	if k == nil {
		return Knobs{}
	}
	return k
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

// settings sends a request whose answer is the settings document.
func (c *Client) settings(ctx context.Context, method, path string, body any) (*Settings, error) {
	var s Settings
	if err := c.do(ctx, method, path, body, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// maxErrorBody bounds how much of a refusal's body is read: an error
// document is small, and a server that is not tund may send anything.
const maxErrorBody = 64 << 10

// do sends a request with body, if not nil, as JSON, and decodes a 2xx
// answer's JSON into out; any other status is an *Error.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("tund admin: %s %s: encoding the request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("tund admin: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		// A *url.Error repeats the method and the whole URL; the cause
		// (dial tcp 127.0.0.1:9180: connection refused) names the address.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("tund admin: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(method, path, resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("tund admin: %s %s: reading the answer: %w", method, path, err)
	}
	return nil
}

// readError makes the *Error of a refusal from its error document, or
// from its text if it has none (an older tund's "404 page not found").
func readError(method, path string, resp *http.Response) error {
	e := &Error{Method: method, Path: path, Status: resp.StatusCode}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var doc struct {
		Error string `json:"error"`
		Field string `json:"field"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Error != "" {
		e.Message, e.Field = doc.Error, doc.Field
		return e
	}
	msg := strings.Join(strings.Fields(string(b)), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" && err != nil {
		msg = "reading the answer: " + err.Error()
	}
	e.Message = msg
	return e
}
