package tests

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Ports of the soak's services. The lossy ones are second instances of echo
// and http on their own ports, so that loss (iptables, see addPortLoss)
// falls on them alone and any error elsewhere is tund's.
const (
	soakEchoLossy = 7007
	soakHTTPLossy = 8080
	// soakLoss is the probability of a drop in each direction on the
	// lossy ports.
	soakLoss = 0.05
	// soakOpTimeout bounds one operation of a class, loss included.
	soakOpTimeout = 90 * time.Second
)

// soakServe is tund's --serve list for the soak.
var soakServe = fmt.Sprintf("http,echo,discard,daytime,chargen,echo:%d,http:%d", soakEchoLossy, soakHTTPLossy)

// soakClass is one kind of traffic: a function that runs one operation,
// run back to back by some workers until the soak's end.
type soakClass struct {
	name    string
	workers int
	op      func(rng *rand.Rand) (bytes int64, err error)

	mu     sync.Mutex
	ops    int
	bytes  int64
	errs   int
	sample []string // the first errors, for the report
}

func (c *soakClass) record(n int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops++
	c.bytes += n
	if err != nil {
		c.errs++
		if len(c.sample) < 5 {
			c.sample = append(c.sample, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		}
	}
}

// soakClasses returns the soak's traffic mix against tund in ns: short
// connections (curl with Connection: close, daytime: tund closes first),
// long transfers checked by hash (echo both ways with a half-close, an http
// download, chargen's pattern, discard), half-closes (nc -N, Go CloseWrite),
// and echo and http on the lossy ports.
func soakClasses(ns *NS) []*soakClass {
	host := stackV4
	url := func(port int, path string) string { return fmt.Sprintf("http://%s:%d%s", host, port, path) }
	return []*soakClass{
		{name: "curl-short", workers: 2, op: func(rng *rand.Rand) (int64, error) {
			return curlMany(ns, url(80, ""), 10, 1+rng.IntN(20000))
		}},
		{name: "daytime", workers: 1, op: func(*rand.Rand) (int64, error) { return soakDaytime(ns) }},
		{name: "echo-long", workers: 2, op: func(rng *rand.Rand) (int64, error) {
			return soakEcho(ns, 7, (1+rng.IntN(4))<<20)
		}},
		{name: "nc-half-close", workers: 1, op: func(rng *rand.Rand) (int64, error) {
			return soakNC(ns, 1+rng.IntN(128<<10))
		}},
		{name: "http-download", workers: 1, op: func(rng *rand.Rand) (int64, error) {
			return soakDownload(ns, url(80, ""), (1+rng.IntN(16))<<20)
		}},
		{name: "chargen", workers: 1, op: func(rng *rand.Rand) (int64, error) {
			return soakChargen(ns, 1+rng.IntN(1<<20))
		}},
		{name: "discard", workers: 1, op: func(rng *rand.Rand) (int64, error) {
			return soakDiscard(ns, 1+rng.IntN(4<<20))
		}},
		{name: "echo-lossy", workers: 2, op: func(rng *rand.Rand) (int64, error) {
			return soakEcho(ns, soakEchoLossy, 1+rng.IntN(512<<10))
		}},
		{name: "curl-lossy", workers: 1, op: func(rng *rand.Rand) (int64, error) {
			return curlMany(ns, url(soakHTTPLossy, ""), 5, 1+rng.IntN(100000))
		}},
	}
}

// runSoakTraffic runs every class until deadline; each worker stops after
// the operation in progress at the deadline.
func runSoakTraffic(classes []*soakClass, deadline time.Time, pause time.Duration) {
	var wg sync.WaitGroup
	for _, c := range classes {
		for w := range c.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
				for time.Now().Before(deadline) {
					c.record(c.op(rng))
					time.Sleep(pause) // pacing: other work shares the machine
				}
			}()
		}
	}
	wg.Wait()
}

// addPortLoss drops TCP packets to and from the given ports of the stack at
// random with probability p, in both directions of dev, inside ns.
func addPortLoss(ns *NS, dev string, p float64, ports ...int) error {
	prob := fmt.Sprint(p)
	for _, port := range ports {
		ps := strconv.Itoa(port)
		for _, rule := range [][]string{
			{"-A", "OUTPUT", "-o", dev, "-p", "tcp", "--dport", ps},
			{"-A", "INPUT", "-i", dev, "-p", "tcp", "--sport", ps},
		} {
			args := append(rule, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP")
			if _, err := ns.Run("iptables", args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// runIn runs a command in ns with stdin, bounded by soakOpTimeout, and
// returns its stdout and stderr.
func runIn(ns *NS, stdin []byte, name string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	cmd := ns.Command(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), errOut.Bytes(), nil
}

// curlMany fetches base/bytes/size n times in one curl, each on a new
// connection that tund closes (Connection: close), and checks every status
// and size.
func curlMany(ns *NS, base string, n, size int) (int64, error) {
	args := []string{"-sS", "--max-time", fmt.Sprint(int(soakOpTimeout.Seconds())), "-H", "Connection: close",
		"-w", "%{http_code} %{size_download} %{exitcode} %{local_port}\n"}
	for range n {
		args = append(args, "-o", "/dev/null", fmt.Sprintf("%s/bytes/%d", base, size))
	}
	out, stderr, err := runIn(ns, nil, "curl", args...)
	if err != nil {
		return 0, err
	}
	lines := strings.Fields(strings.ReplaceAll(string(out), "\n", " "))
	if len(lines) != 4*n {
		return 0, fmt.Errorf("curl: %q, want %d results", out, n)
	}
	for i := 0; i < len(lines); i += 4 {
		if lines[i] != "200" || lines[i+1] != strconv.Itoa(size) {
			// curl goes on to the next URL after a failed one: what failed
			// is in its exit code for that transfer and on stderr.
			return 0, fmt.Errorf("curl %s/bytes/%d from port %s: status %s, %s bytes, curl error %s: %s",
				base, size, lines[i+3], lines[i], lines[i+1], lines[i+2], strings.TrimSpace(string(stderr)))
		}
	}
	return int64(n * size), nil
}

// soakDaytime reads daytime's line: tund closes first, so its side goes
// through FIN-WAIT and TIME-WAIT.
func soakDaytime(ns *NS) (int64, error) {
	c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "13"))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(soakOpTimeout))
	b, err := io.ReadAll(c)
	if err != nil {
		return 0, fmt.Errorf("daytime: %w", err)
	}
	if !bytes.HasSuffix(b, []byte("\n")) || len(b) < 10 {
		return 0, fmt.Errorf("daytime: %q is not a line of time", b)
	}
	return int64(len(b)), nil
}

// soakEcho sends n random bytes to an echo port, half-closes, and checks
// that the same bytes come back before echo's FIN.
func soakEcho(ns *NS, port, n int) (int64, error) {
	data := make([]byte, n)
	crand.Read(data)
	c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(soakOpTimeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return 0, fmt.Errorf("echo :%d reading: %w", port, err)
	}
	if err := <-werr; err != nil {
		return 0, fmt.Errorf("echo :%d writing: %w", port, err)
	}
	if want := sha256.Sum256(data); got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return 0, fmt.Errorf("echo :%d: %d bytes back (sha256 %x), sent %d (%x)", port, got, h.Sum(nil), n, want)
	}
	return 2 * int64(n), nil
}

// soakNC sends n random bytes through nc -N (which half-closes at the end
// of its input) to echo and compares what nc prints.
func soakNC(ns *NS, n int) (int64, error) {
	data := make([]byte, n)
	crand.Read(data)
	out, _, err := runIn(ns, data, "nc", "-N", stackV4, "7")
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(out, data) {
		return 0, fmt.Errorf("nc -N echo: %d bytes back, sent %d, equal=%v", len(out), n, bytes.Equal(out, data))
	}
	return 2 * int64(n), nil
}

// httpBytes is what tund's http service answers for /bytes/n.
func httpBytes(n int) []byte {
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'a' + byte(i%26)
	}
	b := bytes.Repeat(chunk, n/len(chunk)+1)
	return b[:n]
}

// soakDownload fetches base/bytes/n with curl and compares the hash.
func soakDownload(ns *NS, base string, n int) (int64, error) {
	out, _, err := runIn(ns, nil, "curl", "-sS", "--fail", "--max-time", fmt.Sprint(int(soakOpTimeout.Seconds())), fmt.Sprintf("%s/bytes/%d", base, n))
	if err != nil {
		return 0, err
	}
	if got, want := sha256.Sum256(out), sha256.Sum256(httpBytes(n)); got != want {
		return 0, fmt.Errorf("curl /bytes/%d: %d bytes, sha256 %x, want %x", n, len(out), got, want)
	}
	return int64(n), nil
}

// chargenLine is RFC 864's pattern: line k is 72 characters starting with
// the k-th printable character, wrapping, then CRLF.
func chargenBytes(n int) []byte {
	var b []byte
	for line := 0; len(b) < n; line++ {
		for i := range 72 {
			b = append(b, byte(' '+(line+i)%95))
		}
		b = append(b, '\r', '\n')
	}
	return b[:n]
}

// soakChargen reads n bytes of chargen, checks the pattern, and closes
// with the stream still coming: the kernel answers what follows with RST,
// as for any client that stops reading chargen.
func soakChargen(ns *NS, n int) (int64, error) {
	c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "19"))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(soakOpTimeout))
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return 0, fmt.Errorf("chargen: %w", err)
	}
	if !bytes.Equal(got, chargenBytes(n)) {
		return 0, fmt.Errorf("chargen: the first %d bytes are not RFC 864's pattern", n)
	}
	return int64(n), nil
}

// soakDiscard writes n bytes to discard, half-closes and waits for
// discard's FIN.
func soakDiscard(ns *NS, n int) (int64, error) {
	c, err := ns.Dial("tcp", net.JoinHostPort(stackV4, "9"))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(soakOpTimeout))
	if _, err := c.Write(make([]byte, n)); err != nil {
		return 0, fmt.Errorf("discard writing: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, err
	}
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		return 0, fmt.Errorf("discard: %d bytes and %v where its FIN was due", len(b), err)
	}
	return int64(n), nil
}
