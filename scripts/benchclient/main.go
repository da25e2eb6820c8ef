// Command benchclient is the bulk-transfer client of scripts/bench. It moves
// bytes for a fixed time over one or more TCP connections and prints one
// line of figures, so that the kernel and tund are measured by the same
// program:
//
//	benchclient -mode in -addr 198.18.0.2:9 -streams 4 -time 3s -pid 1234
//	gbps=9.81 bytes=3678000000 seconds=3.00 machine_cpu_s_per_gb=0.41 pid_cpu_s_per_gb=0.12
//
// Mode in sends to a discard server (RFC 863) and counts a stream as done
// when the server, having read everything, closes after the client's FIN.
// Mode out reads GET /bytes/N from tund's http service (or tund
// bench-server) for the given time and closes.
//
// CPU is taken from /proc: machine_cpu_s_per_gb is the whole machine's busy
// time (every CPU, all but idle and iowait, from /proc/stat) per GB moved,
// which counts the kernel's softirq work that no process is charged for;
// pid_cpu_s_per_gb is the user+system time of process -pid (utime+stime in
// /proc/PID/stat). Both include whatever else runs on the machine.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	mode := flag.String("mode", "in", "in: send to a discard server; out: read GET /bytes/N; stream: read what the server sends unasked (chargen)")
	addr := flag.String("addr", "", "server `host:port`")
	streams := flag.Int("streams", 1, "parallel connections")
	dur := flag.Duration("time", 3*time.Second, "how long to move bytes")
	pid := flag.Int("pid", 0, "also report the CPU time of this process per GB (0: none)")
	flag.Parse()
	if *addr == "" || *streams < 1 || (*mode != "in" && *mode != "out" && *mode != "stream") {
		fmt.Fprintln(os.Stderr, "benchclient: need -addr, -streams >= 1 and -mode in, out or stream")
		os.Exit(2)
	}
	machine0, err := machineBusy()
	if err != nil {
		fail(err)
	}
	proc0, err := procCPU(*pid)
	if err != nil {
		fail(err)
	}
	start := time.Now()
	deadline := start.Add(*dur)
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *streams)
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			var err error
			switch *mode {
			case "in":
				n, err = sendUntil(*addr, deadline)
			case "out":
				n, err = receiveUntil(*addr, deadline, true)
			default:
				n, err = receiveUntil(*addr, deadline, false)
			}
			total.Add(n)
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		fail(err)
	}
	machine1, err := machineBusy()
	if err != nil {
		fail(err)
	}
	proc1, err := procCPU(*pid)
	if err != nil {
		fail(err)
	}
	gb := float64(total.Load()) / 1e9
	fmt.Printf("gbps=%.2f bytes=%d seconds=%.2f machine_cpu_s_per_gb=%.3f pid_cpu_s_per_gb=%.3f\n",
		gb*8/secs, total.Load(), secs, (machine1-machine0)/gb, (proc1-proc0)/gb)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "benchclient: %v\n", err)
	os.Exit(1)
}

// sendUntil writes zeros until the deadline, half-closes and waits for the
// server's close, so that the bytes counted are bytes the server read.
func sendUntil(addr string, deadline time.Time) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	var n int64
	c.SetWriteDeadline(deadline)
	for {
		m, err := c.Write(buf)
		n += int64(m)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("sending to %s: %w", addr, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return n, fmt.Errorf("half-closing %s: %w", addr, err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		return n, fmt.Errorf("waiting for %s to close after reading %d bytes: %w", addr, n, err)
	}
	return n, nil
}

// receiveUntil reads an endless GET /bytes/N (get), or what the server
// sends unasked (chargen), until the deadline.
func receiveUntil(addr string, deadline time.Time, get bool) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer c.Close()
	c.SetReadDeadline(deadline)
	r := bufio.NewReaderSize(c, 256<<10)
	if get {
		host, _, _ := net.SplitHostPort(addr)
		if _, err := fmt.Fprintf(c, "GET /bytes/1000000000000 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
			return 0, fmt.Errorf("requesting from %s: %w", addr, err)
		}
		status, err := r.ReadString('\n')
		if err != nil || !strings.Contains(status, " 200 ") {
			return 0, fmt.Errorf("GET /bytes from %s: status %q, %v", addr, status, err)
		}
	}
	n, err := io.Copy(io.Discard, r)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	} else if err == nil {
		err = fmt.Errorf("%s closed after %d bytes, before the time was up", addr, n)
	}
	return n, err
}

// machineBusy returns the CPU-seconds that every CPU together spent not
// idle since boot (/proc/stat "cpu" line: all fields but idle and iowait;
// guest time is already counted in user).
func machineBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy float64
	for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return busy / clockTicks, nil
}

// clockTicks is USER_HZ, which is 100 on every Linux architecture Go
// supports.
const clockTicks = 100

// procCPU returns utime+stime of process pid in seconds, 0 for pid 0.
func procCPU(pid int) (float64, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields count from the
	// last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return (ut + st) / clockTicks, nil
}
