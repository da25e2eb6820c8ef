package tests

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"
)

// soakDuration is how long TestSoak's traffic runs: about a minute in CI,
// 30 minutes from scripts/soak (-soak.duration=30m).
var soakDuration = flag.Duration("soak.duration", 45*time.Second, "how long TestSoak's traffic runs")

// The soak's close-path settings: short, so that many closes complete and
// expire within the run, and so that a leak shows in minutes.
const (
	soakMSL      = time.Second
	soakFinWait2 = 3 * time.Second
)

// Tolerances of the comparison with the baseline once the traffic stopped.
const (
	// soakHeapSlack is what tund's live heap may have grown: the close log
	// keeps the last 1,024 records, which the warm-up does not fill.
	soakHeapSlack = 16 << 20
	// soakStateSlack is added to each closing state's bound: sampling
	// granularity, a busy machine, and TIME-WAIT restarting when a lost
	// final ACK makes the peer send its FIN again.
	soakStateSlack = 5 * time.Second
)

// TestSoak runs a mix of traffic against tund with a short MSL for
// -soak.duration: short connections (curl, daytime), long transfers checked
// byte for byte (echo, http, chargen, discard), half-closes (nc -N, Go
// CloseWrite) and 5% loss on two ports of their own (echo and http). While
// it runs, no connection may stay in a closing state past its bound (/conns
// sampled every 250 ms); no client may see an error. When it stops and
// 2 x MSL + FIN-WAIT-2 have passed, open descriptors must be back at their
// baseline, goroutines at or below it, the live heap within soakHeapSlack of it,
// and no connection left but the listeners.
//
// The baseline is read after a warm-up pass of every class has closed, so
// that what the first connection of a kind sets up once (pools, lazily
// started goroutines) is in it.
func TestSoak(t *testing.T) {
	ns := newNS(t)
	td := startTund(t, ns, "--msl", soakMSL.String(), "--fin-wait2", soakFinWait2.String(), "--serve", soakServe)
	if err := addPortLoss(ns, "tund0", soakLoss, soakEchoLossy, soakHTTPLossy); err != nil {
		t.Fatal(err)
	}
	admin := newAdminClient(ns)
	classes := soakClasses(ns)

	// Warm-up: one operation of each class, then wait for the closes.
	warm := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range classes {
		if _, err := c.op(rng); err != nil {
			t.Fatalf("warm-up %s: %v", c.name, err)
		}
	}
	base, err := awaitSoakSettled(admin, td, nil, time.Now().Add(2*soakMSL+soakFinWait2+30*time.Second))
	if err != nil {
		t.Fatalf("after the warm-up (%v): %v", time.Since(warm).Round(time.Millisecond), err)
	}
	t.Logf("baseline: %s", base)

	limits := map[string]time.Duration{
		"TIME-WAIT":  2*soakMSL + soakStateSlack,
		"FIN-WAIT-2": soakFinWait2 + soakStateSlack,
		// Bounded by retransmission of tund's last data and FIN under 5%
		// loss: RTO 200 ms doubling, so 60 s is eight timeouts in a row.
		// gVisor gives up after 15 (minutes), and a leak stays for good.
		"FIN-WAIT-1": 60 * time.Second,
		"CLOSING":    60 * time.Second,
		"LAST-ACK":   60 * time.Second,
		// Bounded by the service: echo sends what it still holds, then closes.
		"CLOSE-WAIT": 30 * time.Second,
	}
	watch := newConnWatch(admin, 250*time.Millisecond, limits)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() { watch.run(stopWatch); close(watchDone) }()

	start := time.Now()
	peakRSS := int64(0)
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopRSS:
				return
			case <-tick.C:
				if r, err := td.RSS(); err == nil {
					peakRSS = max(peakRSS, r)
				}
			}
		}
	}()
	runSoakTraffic(classes, start.Add(*soakDuration), 20*time.Millisecond)
	stopped := time.Now()
	t.Logf("traffic ran %v (asked %v)", stopped.Sub(start).Round(time.Millisecond), *soakDuration)

	after, err := awaitSoakSettled(admin, td, &base, stopped.Add(2*soakMSL+soakFinWait2+30*time.Second))
	settled := time.Since(stopped)
	close(stopWatch)
	<-watchDone
	close(stopRSS)
	<-rssDone
	if err != nil {
		t.Errorf("%v after the traffic stopped: %v", settled.Round(time.Millisecond), err)
	}
	t.Logf("after (%v after the traffic stopped): %s", settled.Round(time.Millisecond), after)
	t.Logf("tund RSS peak during the traffic %.1f MiB", float64(peakRSS)/(1<<20))

	samples, errs, longest, peak, violations := watch.report()
	t.Logf("/conns: %d samples, %d failed reads; peak count and longest stay seen by state: %s", samples, errs, stateTable(peak, longest))
	if samples == 0 || errs > samples/20 {
		t.Errorf("/conns could be read %d times, %d reads failed: the watch saw too little", samples, errs)
	}
	for _, v := range violations {
		t.Errorf("connection past its bound: %s", v)
	}

	var ops, cerrs int
	var total int64
	for _, c := range classes {
		t.Logf("class %-14s %6d operations, %8.1f MB, %d errors", c.name, c.ops, float64(c.bytes)/1e6, c.errs)
		ops += c.ops
		cerrs += c.errs
		total += c.bytes
		for _, e := range c.sample {
			t.Errorf("%s: %s", c.name, e)
		}
		if c.ops == 0 {
			t.Errorf("class %s ran no operation", c.name)
		}
	}
	t.Logf("total: %d operations, %.1f MB, %d client errors, %v closes counted", ops, float64(total)/1e6, cerrs, after.closes-base.closes)
}

// soakFigures are the figures compared with the baseline.
type soakFigures struct {
	goroutines int
	heap       float64 // go_memstats_heap_inuse_bytes after a GC
	fds        int
	rss        int64
	states     map[string]int
	open       float64 // tund_tcp_conns_open
	closes     float64 // sum of tund_tcp_closes_total
}

func (f soakFigures) String() string {
	var st []string
	for s, n := range f.states {
		if n != 0 {
			st = append(st, fmt.Sprintf("%s=%d", s, n))
		}
	}
	sort.Strings(st)
	return fmt.Sprintf("goroutines %d, heap in use %.1f MiB, open fds %d, RSS %.1f MiB, service conns %v, closes %v, endpoints %s",
		f.goroutines, f.heap/(1<<20), f.fds, float64(f.rss)/(1<<20), f.open, f.closes, strings.Join(st, " "))
}

// readSoakFigures reads tund's figures, after a GC.
func readSoakFigures(admin *adminClient, td *Tund) (soakFigures, error) {
	var f soakFigures
	if err := admin.gc(); err != nil {
		return f, err
	}
	m, err := admin.metrics()
	if err != nil {
		return f, err
	}
	f.goroutines = int(m["go_goroutines"])
	f.heap = m["go_memstats_heap_inuse_bytes"]
	f.open = m["tund_tcp_conns_open"]
	f.states = map[string]int{}
	for k, v := range m {
		if s, ok := strings.CutPrefix(k, `tund_tcp_connections{state="`); ok {
			f.states[strings.TrimSuffix(s, `"}`)] = int(v)
		}
		if strings.HasPrefix(k, "tund_tcp_closes_total{") {
			f.closes += v
		}
	}
	if f.fds, err = openFDs(td.Pid()); err != nil {
		return f, err
	}
	f.rss, err = td.RSS()
	return f, err
}

// awaitSoakSettled polls tund until nothing but listeners is left and, if
// base is given, goroutines and descriptors are back at base and the heap
// within soakHeapSlack of it; it returns the last figures read, and what was
// still off at the deadline.
func awaitSoakSettled(admin *adminClient, td *Tund, base *soakFigures, deadline time.Time) (soakFigures, error) {
	for {
		f, err := readSoakFigures(admin, td)
		if err == nil {
			err = soakOff(f, base)
		}
		if err == nil || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// soakOff says what in f is not settled, or not back at base.
func soakOff(f soakFigures, base *soakFigures) error {
	var off []string
	for s, n := range f.states {
		if s != "LISTEN" && n != 0 {
			off = append(off, fmt.Sprintf("%d in %s", n, s))
		}
	}
	if f.open != 0 {
		off = append(off, fmt.Sprintf("%v connections open in services", f.open))
	}
	if base != nil {
		if f.states["LISTEN"] != base.states["LISTEN"] {
			off = append(off, fmt.Sprintf("%d listeners, %d before", f.states["LISTEN"], base.states["LISTEN"]))
		}
		// Fewer is fine: a goroutine the warm-up left running (a timer, a
		// connection of the admin server) may have ended since.
		if f.goroutines > base.goroutines {
			off = append(off, fmt.Sprintf("%d goroutines, %d before", f.goroutines, base.goroutines))
		}
		if f.fds != base.fds {
			off = append(off, fmt.Sprintf("%d open fds, %d before", f.fds, base.fds))
		}
		if f.heap > base.heap+soakHeapSlack {
			off = append(off, fmt.Sprintf("heap in use %.1f MiB, %.1f MiB before (slack %d MiB)", f.heap/(1<<20), base.heap/(1<<20), soakHeapSlack>>20))
		}
	}
	if len(off) == 0 {
		return nil
	}
	sort.Strings(off)
	return fmt.Errorf("%s", strings.Join(off, "; "))
}

// stateTable formats per-state peaks and longest stays.
func stateTable(peak map[string]int, longest map[string]time.Duration) string {
	var out []string
	for _, s := range append([]string{"ESTABLISHED"}, closingStates...) {
		out = append(out, fmt.Sprintf("%s %d/%v", s, peak[s], longest[s].Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}
