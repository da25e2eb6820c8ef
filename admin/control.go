package admin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tund/tund/control"
	"github.com/tund/tund/stack"
)

// maxBody bounds a request's JSON body: a change is a few knobs.
const maxBody = 64 << 10

// controlAPI serves the live-control endpoints: the settings in force and
// changes to them, the proxies, and the wait for one connection's close.
type controlAPI struct {
	ctl   *control.Controller
	token string // writes need it as a bearer token; "" lets any through
}

func (a *controlAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /settings", a.get)
	mux.HandleFunc("GET /settings/knobs", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, control.Knobs)
	})
	mux.HandleFunc("PATCH /settings", a.write(http.StatusOK, func(r *http.Request) (control.Settings, error) {
		knobs, err := readKnobs(r)
		if err != nil {
			return control.Settings{}, err
		}
		return a.ctl.Set(0, knobs)
	}))
	mux.HandleFunc("PATCH /settings/ports/{port}", a.write(http.StatusOK, func(r *http.Request) (control.Settings, error) {
		port, err := pathPort(r)
		if err != nil {
			return control.Settings{}, err
		}
		knobs, err := readKnobs(r)
		if err != nil {
			return control.Settings{}, err
		}
		return a.ctl.Set(port, knobs)
	}))
	mux.HandleFunc("DELETE /settings/ports/{port}", a.write(http.StatusOK, func(r *http.Request) (control.Settings, error) {
		port, err := pathPort(r)
		if err != nil {
			return control.Settings{}, err
		}
		return a.ctl.ClearPort(port)
	}))
	mux.HandleFunc("POST /reset", a.write(http.StatusOK, func(r *http.Request) (control.Settings, error) {
		return a.ctl.Reset()
	}))
	mux.HandleFunc("GET /proxies", func(w http.ResponseWriter, r *http.Request) {
		proxies := []proxyDoc{}
		for _, p := range a.ctl.Settings().Ports {
			if p.Service == "proxy" {
				proxies = append(proxies, proxyDoc{Port: p.Port, Target: p.Target, Overrides: p.Overrides})
			}
		}
		writeJSON(w, http.StatusOK, proxies)
	})
	mux.HandleFunc("POST /proxies", a.write(http.StatusCreated, func(r *http.Request) (control.Settings, error) {
		var req struct {
			Port     json.Number     `json:"port"`
			Target   string          `json:"target"`
			Settings json.RawMessage `json:"settings"`
		}
		if err := decode(r, &req); err != nil {
			return control.Settings{}, err
		}
		port, err := parsePort(req.Port.String())
		if err != nil {
			return control.Settings{}, err
		}
		knobs := map[string]string{}
		if len(req.Settings) > 0 {
			if knobs, err = knobsOf(req.Settings); err != nil {
				return control.Settings{}, err
			}
		}
		return a.ctl.AddProxy(port, req.Target, knobs)
	}))
	mux.HandleFunc("DELETE /proxies/{port}", a.write(http.StatusOK, func(r *http.Request) (control.Settings, error) {
		port, err := pathPort(r)
		if err != nil {
			return control.Settings{}, err
		}
		return a.ctl.RemoveProxy(port)
	}))
}

// proxyDoc is an element of GET /proxies.
type proxyDoc struct {
	Port      uint16            `json:"port"`
	Target    string            `json:"target"`
	Overrides map[string]string `json:"overrides"`
}

func (a *controlAPI) get(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.ctl.Settings())
}

// write wraps a change: it checks the token, runs change and answers with
// status and the settings that the change left in force, or with the
// error that refused it.
func (a *controlAPI) write(status int, change func(*http.Request) (control.Settings, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" {
			got := []byte(r.Header.Get("Authorization"))
			if subtle.ConstantTimeCompare(got, []byte("Bearer "+a.token)) != 1 {
				writeError(w, http.StatusUnauthorized, "", errors.New("writes need the token of --admin-token, as Authorization: Bearer TOKEN"))
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		settings, err := change(r)
		if err != nil {
			var fe *control.FieldError
			field, status := "", 0
			if errors.As(err, &fe) {
				field = fe.Field
			}
			switch {
			case errors.Is(err, control.ErrPortTaken):
				status = http.StatusConflict
			case fe != nil:
				status = http.StatusBadRequest
			default:
				status = http.StatusInternalServerError
			}
			writeError(w, status, field, err)
			return
		}
		writeJSON(w, status, settings)
	}
}

// closeOf answers GET /closes?peer=IP:PORT[&wait=DURATION]: the newest
// close record of the connection from peer, waiting up to wait for it to
// end (it may be under way, or not begun, when a test asks).
func closeOf(st *stack.Stack, w http.ResponseWriter, r *http.Request) {
	peer, err := netip.ParseAddrPort(r.URL.Query().Get("peer"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "peer", fmt.Errorf("%q: want the client's IP:PORT, such as 198.18.0.1:40000", r.URL.Query().Get("peer")))
		return
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	wait := time.Duration(0)
	if s := r.URL.Query().Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 || wait > 10*time.Minute {
			writeError(w, http.StatusBadRequest, "wait", fmt.Errorf("%q: want a duration up to 10m", s))
			return
		}
	}
	// Subscribe before looking, so that a close that ends in between is
	// not missed.
	ch, stop := st.SubscribeCloses()
	defer stop()
	newest := func() bool {
		recs := st.Closes()
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Remote == peer {
				writeJSON(w, http.StatusOK, recs[i])
				return true
			}
		}
		return false
	}
	if newest() {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for {
		select {
		case rec := <-ch:
			if rec.Remote == peer {
				writeJSON(w, http.StatusOK, rec)
				return
			}
		case <-ctx.Done():
			// A subscriber that fell behind misses records: the log
			// has them.
			if !newest() {
				writeError(w, http.StatusNotFound, "peer", fmt.Errorf("no close of %v within %v", peer, wait))
			}
			return
		}
	}
}

// readKnobs reads a JSON object of knob names and values.
func readKnobs(r *http.Request) (map[string]string, error) {
	var raw json.RawMessage
	if err := decode(r, &raw); err != nil {
		return nil, err
	}
	return knobsOf(raw)
}

// knobsOf takes a JSON object of knobs whose values are strings as the
// flags spell them, or numbers and booleans, taken as their text.
func knobsOf(raw json.RawMessage) (map[string]string, error) {
	var in map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil || in == nil {
		return nil, &control.FieldError{Field: "body", Err: errors.New("want a JSON object of settings, such as {\"drop-fin\": \"once\"}")}
	}
	knobs := make(map[string]string, len(in))
	for k, v := range in {
		switch v := v.(type) {
		case string:
			knobs[k] = v
		case json.Number:
			knobs[k] = v.String()
		case bool:
			knobs[k] = strconv.FormatBool(v)
		default:
			return nil, &control.FieldError{Field: k, Err: errors.New("want a string, a number or a boolean")}
		}
	}
	return knobs, nil
}

// decode reads r's body as one JSON value into v.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &control.FieldError{Field: "body", Err: fmt.Errorf("malformed JSON: %v", err)}
	}
	if dec.More() {
		return &control.FieldError{Field: "body", Err: errors.New("malformed JSON: more than one value")}
	}
	return nil
}

func pathPort(r *http.Request) (uint16, error) { return parsePort(r.PathValue("port")) }

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, &control.FieldError{Field: "port", Err: fmt.Errorf("%q: want a port in [1, 65535]", s)}
	}
	return uint16(p), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, field string, err error) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
		Field string `json:"field,omitempty"`
	}{err.Error(), field})
}

// settingsCollector reports the controller's generation and changes.
type settingsCollector struct {
	ctl        *control.Controller
	generation *prometheus.Desc
	changes    *prometheus.Desc
}

func newSettingsCollector(ctl *control.Controller) *settingsCollector {
	return &settingsCollector{
		ctl: ctl,
		generation: prometheus.NewDesc("tund_settings_generation",
			"Changes applied to the settings since tund started (each successful write to the admin API raises it by one): a test that changed a setting can wait until it shows.", nil, nil),
		changes: prometheus.NewDesc("tund_settings_changes_total",
			"Settings changed through the admin API, by knob (stack-wide or for a port), and services started or stopped there, by service name.", []string{"knob"}, nil),
	}
}

func (c *settingsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.generation
	ch <- c.changes
}

func (c *settingsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.generation, prometheus.GaugeValue, float64(c.ctl.Generation()))
	for k, n := range c.ctl.Changes() {
		ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(n), k)
	}
}
