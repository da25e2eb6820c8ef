package tests

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What TestHostilePackets injects and what it tolerates.
const (
	// hostileMin is the number of hostile packets that must be accepted by
	// the device for tund to read. The injector keeps going past it until
	// the first hostileTransfers echo transfers are done, so that each of
	// them runs under fire; the transfers go on back to back until the
	// injector stops, so that the whole injection meets live connections.
	hostileMin = 200_000
	// hostileMax stops an injector that would otherwise outlast a very slow
	// transfer by far.
	hostileMax = 1_000_000
	// hostileWarmup packets are injected before the first transfer starts.
	hostileWarmup = 5_000
	// hostileTransfers is the least number of echo transfers; every fifth
	// is over IPv6.
	hostileTransfers = 5
	// hostileRate is the injection rate, packets per second.
	//
	// It is what the test is about, malformed packets, at a rate well below
	// what tund processes on a 2-core machine (about 50,000 packets/s of
	// this mix measured without a backlog forming). A faster flood tests
	// overload instead: tund drains the TUN queue into its internal queues
	// faster than it processes them, its memory then follows the backlog,
	// and the kernel's own segments, which queue behind the flood on the
	// same device queue, are mostly dropped there, so the transfers crawl.
	hostileRate = 25_000
	// hostileBurst bounds the catch-up after a pause of the injector: the
	// TUN device queue holds 500 packets.
	hostileBurst = 200
	// hostileMTU is tund0's MTU: a packet socket refuses anything longer.
	hostileMTU = 1500
	// hostileRetries bounds the retries of one packet that the device's
	// queue refused (ENOBUFS) because tund had not drained it yet.
	hostileRetries = 20_000

	// Source ports of every TCP and UDP packet the injector builds.
	//
	// The legitimate clients of the test (nc, curl) are kernel sockets
	// bound to 198.18.0.1 / 2001:2::1 with ephemeral ports, which the kernel
	// draws from net.ipv4.ip_local_port_range: 32768..60999 in a new
	// namespace, and the test checks that. Hostile packets may well claim
	// the kernel's address as their source, but never a port in that range,
	// so none of them can fall on the 4-tuple of a legitimate connection: a
	// forged RST or in-window data with a correct checksum would otherwise
	// be a legitimate kill, not a bug in tund. What the test asks of tund is
	// that garbage aimed at everything else leaves those connections alone.
	hostilePortMin = 1024
	hostilePortMax = 32767

	// Memory bounds on tund after the injection.
	hostileRSSMax    = 256 << 20
	hostileRSSGrowth = 128 << 20
)

// TestHostilePackets injects at least 200,000 hostile packets into tund0
// from the namespace, through a packet socket, at hostileRate, while nc runs
// 5 MiB echo transfers through tund back to back: random TCP flags and
// sequence numbers, bad data offsets, truncated headers, wrong and right
// checksums, IPv4 and IPv6 fragments, bad IP headers, other protocols,
// extension-header garbage, ICMP and ICMPv6 of every type, and plain random
// bytes. tund must stay up, every transfer must come back intact, it must
// keep serving afterwards (HTTP over both families, one more echo), and its
// RSS must stay under hostileRSSMax and grow by less than hostileRSSGrowth.
//
// The generator is seeded and the seed is logged; TUND_HOSTILE_SEED=<seed>
// replays the same packet sequence.
func TestHostilePackets(t *testing.T) {
	testStart := time.Now()
	ns := newNS(t)
	td := startTund(t, ns)

	// The port separation above rests on the namespace's ephemeral range.
	rng := strings.Fields(ns.MustRun("cat", "/proc/sys/net/ipv4/ip_local_port_range"))
	if len(rng) != 2 {
		t.Fatalf("ip_local_port_range: %q", rng)
	}
	if lo, err := strconv.Atoi(rng[0]); err != nil || lo <= hostilePortMax {
		t.Fatalf("ephemeral ports start at %q, which overlaps the hostile source ports %d..%d", rng[0], hostilePortMin, hostilePortMax)
	}

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TUND_HOSTILE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TUND_HOSTILE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("hostile packet seed %d (replay: TUND_HOSTILE_SEED=%d go test -count=1 -run TestHostilePackets -v ./tests/)", seed, seed)

	// The data the echo transfers send.
	in := filepath.Join(t.TempDir(), "in")
	data := make([]byte, 5<<20)
	crand.Read(data)
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	echo := func(host string) (time.Duration, error) {
		start := time.Now()
		// timeout bounds a stalled transfer well below Run's two minutes;
		// a cut-short transfer shows as a wrong hash.
		out, err := ns.Run("sh", "-c", fmt.Sprintf("timeout 40 nc -N %s 7 < %s | sha256sum", host, in))
		d := time.Since(start)
		if err != nil {
			return d, err
		}
		if got := strings.Fields(out); len(got) == 0 || got[0] != want {
			return d, fmt.Errorf("sha256 of what came back is %q, want %s", out, want)
		}
		return d, nil
	}
	// A transfer before the injection, so that RSS before includes the
	// buffers an echo transfer grows.
	if _, err := echo(stackV4); err != nil {
		t.Fatalf("echo before the injection: %v", err)
	}

	rssBefore, err := td.RSS()
	if err != nil {
		t.Fatal(err)
	}
	linkBefore := tunLinkStats(t, ns)

	inj := &hostileInjector{
		gen:  newHostileGen(seed),
		rss:  td.RSS,
		warm: make(chan struct{}),
		done: make(chan struct{}),
	}
	injStart := time.Now()
	go func() {
		inj.err = ns.Do(inj.run)
		inj.elapsed = time.Since(injStart)
		close(inj.done)
	}()
	// Registered after startTund's cleanup, so it runs before tund is
	// stopped and the namespace removed, even when the test fails early.
	t.Cleanup(func() {
		inj.stop.Store(true)
		<-inj.done
	})

	select {
	case <-inj.warm:
	case <-inj.done:
		t.Fatalf("the injector ended after %d packets, before the transfers could start: %v", inj.sent.Load(), inj.err)
	}

	// Echo transfers back to back while the injector runs, at least
	// hostileTransfers of them; every fifth is over IPv6.
	type transfer struct {
		host    string
		d       time.Duration
		hostile int64
	}
	var transfers []transfer
	for running := true; running || len(transfers) < hostileTransfers; {
		host := stackV4
		if len(transfers)%5 == 2 {
			host = stackV6
		}
		before := inj.sent.Load()
		d, err := echo(host)
		during := inj.sent.Load() - before
		if err != nil {
			t.Errorf("echo transfer %d over %s, %d hostile packets injected meanwhile: %v", len(transfers)+1, host, during, err)
			break
		}
		transfers = append(transfers, transfer{host, d, during})
		if len(transfers) == hostileTransfers {
			inj.transfersDone.Store(true)
		}
		if !td.Alive() {
			break
		}
		select {
		case <-inj.done:
			running = false
		default:
		}
	}
	inj.stop.Store(true)
	select {
	case <-inj.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the injector did not stop within 60 s (%d packets sent)", inj.sent.Load())
	}
	if inj.err != nil {
		t.Errorf("injector: %v", inj.err)
	}
	var v4, v6 int
	var overlapped int64
	var slowest time.Duration
	for i, tr := range transfers {
		if tr.host == stackV6 {
			v6++
		} else {
			v4++
		}
		overlapped += tr.hostile
		slowest = max(slowest, tr.d)
		if i < hostileTransfers {
			t.Logf("echo transfer %d over %s: 5 MiB intact in %v, %d hostile packets injected meanwhile", i+1, tr.host, tr.d.Round(time.Millisecond), tr.hostile)
		}
	}
	t.Logf("%d echo transfers of 5 MiB intact during the injection (%d over IPv4, %d over IPv6, the slowest in %v), %d hostile packets injected while one ran",
		len(transfers), v4, v6, slowest.Round(time.Millisecond), overlapped)

	sent := inj.sent.Load()
	t.Logf("injected %d hostile packets in %v (%.0f/s); %d ENOBUFS/EAGAIN retries, %d packets given up after %d retries each, peak RSS during the injection %.1f MiB",
		sent, inj.elapsed.Round(time.Millisecond), float64(sent)/inj.elapsed.Seconds(), inj.retries, inj.gaveUp, hostileRetries, float64(inj.peakRSS)/(1<<20))
	var kinds []string
	for k, n := range inj.kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", hostileKinds[k].name, n))
	}
	t.Logf("by kind: %s; %d packets with random bytes had their destination or port confined", strings.Join(kinds, ", "), inj.confined)
	linkAfter := tunLinkStats(t, ns)
	t.Logf("tund0 towards tund: %d packets read by tund, %d dropped by the device queue (legitimate traffic included)",
		linkAfter.TX.Packets-linkBefore.TX.Packets, linkAfter.TX.Dropped-linkBefore.TX.Dropped)
	if sent < hostileMin {
		t.Errorf("only %d hostile packets were accepted by the device, want at least %d", sent, hostileMin)
	}
	if inj.capped {
		t.Errorf("the injector stopped at its cap of %d packets before %d transfers were done", hostileMax, hostileTransfers)
	}

	// tund is still there and still serving.
	if !td.Alive() {
		t.Fatalf("tund died under the hostile packets")
	}
	if out, err := ns.Run("ip", "-o", "link", "show", "tund0"); err != nil || !strings.Contains(out, "tund0") {
		t.Fatalf("tund0 is gone after the injection: %q %v", out, err)
	}
	for _, host := range []string{stackV4, "[" + stackV6 + "]"} {
		out, err := ns.Run("curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "http://"+host+"/")
		if err != nil || out != "200" {
			t.Errorf("GET http://%s/ after the injection = %q %v, want 200", host, out, err)
		}
	}
	if d, err := echo(stackV4); err != nil {
		t.Errorf("echo transfer after the injection: %v", err)
	} else {
		t.Logf("echo transfer after the injection: 5 MiB intact in %v", d.Round(time.Millisecond))
	}

	rssAfter, err := td.RSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tund RSS: %.1f MiB before the injection, %.1f MiB after (growth %+.1f MiB; limits %d MiB and +%d MiB)",
		float64(rssBefore)/(1<<20), float64(rssAfter)/(1<<20), float64(rssAfter-rssBefore)/(1<<20), hostileRSSMax>>20, hostileRSSGrowth>>20)
	if rssAfter > hostileRSSMax || rssAfter-rssBefore > hostileRSSGrowth {
		t.Errorf("tund's memory ran away: RSS %d bytes after the injection, %d before", rssAfter, rssBefore)
	}
	if strings.Contains(td.Logs(), "panic") {
		t.Errorf("tund logged a panic")
	}
	t.Logf("test duration %v", time.Since(testStart).Round(time.Millisecond))
}

// tunCounters are the interface counters of one direction, as ip -j shows them.
type tunCounters struct {
	Packets uint64 `json:"packets"`
	Dropped uint64 `json:"dropped"`
}

// tunLinkStats reads tund0's counters. TX is the kernel's transmit side:
// what goes towards tund.
func tunLinkStats(t *testing.T, ns *NS) (s struct{ RX, TX tunCounters }) {
	t.Helper()
	out := ns.MustRun("ip", "-s", "-j", "link", "show", "tund0")
	var links []struct {
		Stats struct {
			RX tunCounters `json:"rx"`
			TX tunCounters `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show tund0: %v: %s", err, out)
	}
	s.RX, s.TX = links[0].Stats.RX, links[0].Stats.TX
	return s
}

// hostileInjector writes hostile packets into tund0 through a packet socket.
// It runs on a goroutine of its own and never touches the testing.T; its
// results are read after done is closed.
type hostileInjector struct {
	gen *hostileGen
	rss func() (int64, error)

	sent          atomic.Int64 // packets the device accepted
	stop          atomic.Bool  // the test is ending: stop at once
	transfersDone atomic.Bool  // the first transfers are done: stop at hostileMin
	warm          chan struct{}
	done          chan struct{}

	// Valid after done.
	err      error
	elapsed  time.Duration
	retries  int64
	gaveUp   int64
	peakRSS  int64
	capped   bool
	confined int64
	kinds    [hkCount]int64
}

func hostileHtons(v uint16) uint16 { return v<<8 | v>>8 }

// run injects; it runs inside the namespace (NS.Do).
func (inj *hostileInjector) run() error {
	ifi, err := net.InterfaceByName("tund0")
	if err != nil {
		return err
	}
	// Protocol 0: the socket only sends; bound to ETH_P_IP it would also
	// get a copy of every IPv4 packet in the namespace to read.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	// Straight to the driver, past the qdisc: when tund has not drained the
	// device's queue yet the send fails with ENOBUFS instead of the packet
	// being dropped silently, so every packet counted as sent is one that
	// tund's reader gets.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
	}
	to4 := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: hostileHtons(unix.ETH_P_IP)}
	to6 := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: hostileHtons(unix.ETH_P_IPV6)}

	buf := make([]byte, 0, 2*hostileMTU)
	warm := false
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		n := inj.sent.Load()
		switch {
		case inj.stop.Load():
			return nil
		case n >= hostileMin && inj.transfersDone.Load():
			return nil
		case n >= hostileMax:
			inj.capped = true
			return nil
		}
		// Pace: wait for the next tick once ahead of the rate, and forget
		// a backlog of more than a burst.
		due := int64(time.Since(start).Seconds() * hostileRate)
		if n >= due {
			<-tick.C
			continue
		}
		if due-n > hostileBurst {
			start = start.Add(time.Duration(due-n-hostileBurst) * time.Second / hostileRate)
		}
		if n%4096 == 0 {
			if r, err := inj.rss(); err == nil {
				inj.peakRSS = max(inj.peakRSS, r)
			}
		}
		p, v6, kind := inj.gen.packet(buf)
		if confine(p) {
			inj.confined++
		}
		if len(p) == 0 || len(p) > hostileMTU {
			return fmt.Errorf("generator bug: a %s packet of %d bytes", hostileKinds[kind].name, len(p))
		}
		to := to4
		if v6 {
			to = to6
		}
		ok := false
		for try := 0; ; try++ {
			err := unix.Sendto(fd, p, 0, to)
			if err == nil {
				ok = true
				break
			}
			if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("sendto after %d packets, a %s packet of %d bytes: %w", n, hostileKinds[kind].name, len(p), err)
			}
			if try == hostileRetries {
				inj.gaveUp++
				break
			}
			if inj.stop.Load() {
				return nil
			}
			inj.retries++
			// Let tund's reader run; this thread is pinned to the
			// namespace, so runtime.Gosched would not give the CPU away.
			unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		}
		if !ok {
			continue
		}
		inj.kinds[kind]++
		if inj.sent.Add(1) == hostileWarmup && !warm {
			warm = true
			close(inj.warm)
		}
	}
}
