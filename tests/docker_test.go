package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tund/tund/internal/netns"
)

// The container tests (container_test.go) run tund's image, built from the
// repository's Dockerfile with README's own command, in a Docker engine
// that scripts/test installs and starts.
//
// Every container and network they make carries the label
// io.tund.test.pid=PID of the test process, and a compose project the name
// tundt-PID-composeN; the first container test of a run sweeps what dead
// runs left and never touches anything else. README's `docker run --name
// tund` cannot carry a label as written, so the ID of that one container is
// recorded in a file under dockerRecords instead. The images (tund and the
// base images) are kept, for the next run to reuse.
//
// Test networks use 198.19.N.0/24 and 2001:2:0:N::/64 with N from 10 to 89
// (the compose examples use 198.19.0-1.0/24 and 2001:2:0:100::/64); tund's container is .2 (::2) on
// each, fixed addresses stay below .128 (::100), where Docker's own
// allocation starts, and every container's default routes are removed, so
// test traffic stays between the test's own containers.

// testLabel is the label on every container and network the tests make.
const testLabel = "io.tund.test.pid"

// dockerRecords holds the IDs of unlabelled containers, one empty file
// named PID-ID each.
const dockerRecords = "/run/tund/test-containers"

var labelArg = "--label=" + testLabel + "=" + strconv.Itoa(os.Getpid())

// dockerRun runs a docker command with a bound and returns its stdout; the
// error carries stderr.
func dockerRun(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerRun(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var docker struct {
	once sync.Once
	err  error
}

// needDocker fails the test unless a Docker engine answers and the image
// "tund" has been built from the repository's Dockerfile with README's
// build command (once per run, after the sweep and scripts/docker-images).
func needDocker(t testing.TB) {
	t.Helper()
	docker.once.Do(func() { docker.err = prepareDocker() })
	if docker.err != nil {
		t.Fatal(docker.err)
	}
}

func prepareDocker() error {
	if _, err := dockerRun("info"); err != nil {
		return fmt.Errorf("no Docker engine answers; scripts/test installs docker.io and starts dockerd: %v", err)
	}
	sweepDocker()
	images := exec.Command("../scripts/docker-images")
	if out, err := images.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/docker-images: %v: %s", err, out)
	}
	cmds, err := readmeBlock("## Containers", 0)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(cmds[0], "docker build ") {
		return fmt.Errorf("README's Containers section starts with %q, want its docker build command", cmds[0])
	}
	build := exec.Command("sh", "-c", cmds[0])
	build.Dir = ".."
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", cmds[0], err, out)
	}
	fmt.Fprintf(os.Stderr, "tests: %s: %v\n", cmds[0], time.Since(start).Round(time.Millisecond))
	return nil
}

// sweepDocker removes the containers, compose projects and networks that
// test runs no longer alive left behind.
func sweepDocker() {
	dead := func(pid string) bool {
		n, err := strconv.Atoi(pid)
		return err == nil && n != os.Getpid() && syscall.Kill(n, 0) == syscall.ESRCH
	}
	composePID := func(project string) string { // tundt-PID-NAME
		rest, ok := strings.CutPrefix(project, "tundt-")
		if !ok {
			return ""
		}
		pid, _, _ := strings.Cut(rest, "-")
		return pid
	}
	for _, q := range []struct {
		kind, label string
		pid         func(string) string
	}{
		{"container", testLabel, func(v string) string { return v }},
		{"container", "com.docker.compose.project", composePID},
		{"network", testLabel, func(v string) string { return v }},
		{"network", "com.docker.compose.project", composePID},
	} {
		args := []string{q.kind, "ls", "--filter", "label=" + q.label, "--format", `{{.ID}} {{.Label "` + q.label + `"}}`}
		if q.kind == "container" {
			args = append(args, "--all")
		}
		out, _ := dockerRun(args...)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			id, value, _ := strings.Cut(line, " ")
			if id == "" || !dead(q.pid(value)) {
				continue
			}
			if q.kind == "container" {
				dockerRun("rm", "-f", id)
			} else {
				dockerRun("network", "rm", id)
			}
		}
	}
	files, _ := os.ReadDir(dockerRecords)
	for _, f := range files {
		pid, id, _ := strings.Cut(f.Name(), "-")
		if dead(pid) {
			dockerRun("rm", "-f", id)
			os.Remove(filepath.Join(dockerRecords, f.Name()))
		}
	}
}

// recordContainer keeps the ID of an unlabelled container for the sweep
// until the test ends, and removes the container then.
func recordContainer(t testing.TB, id string) {
	t.Helper()
	if err := os.MkdirAll(dockerRecords, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dockerRecords, fmt.Sprintf("%d-%s", os.Getpid(), id))
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dockerRun("rm", "-f", id)
		os.Remove(file)
	})
}

// readmeBlock returns the commands of the n-th ```sh block after README's
// heading, one per line, as written.
func readmeBlock(heading string, n int) ([]string, error) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		return nil, err
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		return nil, fmt.Errorf("README has no %q section", heading)
	}
	for i := 0; ; i++ {
		_, rest, ok := strings.Cut(section, "```sh\n")
		if !ok {
			return nil, fmt.Errorf("README's %q section has no sh block %d", heading, n)
		}
		block, after, _ := strings.Cut(rest, "```")
		if i < n {
			section = after
			continue
		}
		var cmds []string
		for _, line := range strings.Split(block, "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				cmds = append(cmds, line)
			}
		}
		return cmds, nil
	}
}

// Network is a Docker bridge network made for one test.
type Network struct {
	Name string
	n    int // the third IPv4 byte and the fourth IPv6 group
}

var netCounter atomic.Int64

// newNetwork makes a labelled bridge network with an IPv4 and an IPv6
// subnet, and removes it when the test ends.
func newNetwork(t testing.TB) *Network {
	t.Helper()
	needDocker(t)
	// 10 to 89: clear of the compose examples' 0, 1 and 100.
	n := 10 + int(netCounter.Add(1)+int64(os.Getpid()))%80
	nw := &Network{Name: fmt.Sprintf("tundt-%d-%d", os.Getpid(), n), n: n}
	mustDocker(t, "network", "create", labelArg, "--ipv6",
		"--subnet", fmt.Sprintf("198.19.%d.0/24", n), "--ip-range", fmt.Sprintf("198.19.%d.128/25", n),
		"--subnet", fmt.Sprintf("2001:2:0:%d::/64", n), "--ip-range", fmt.Sprintf("2001:2:0:%d::100/120", n), nw.Name)
	t.Cleanup(func() {
		if _, err := dockerRun("network", "rm", nw.Name); err != nil {
			t.Errorf("removing the test network: %v", err)
		}
	})
	return nw
}

// IPv4 and IPv6 return the network's address of host number h.
func (nw *Network) IPv4(h int) string { return fmt.Sprintf("198.19.%d.%d", nw.n, h) }
func (nw *Network) IPv6(h int) string { return fmt.Sprintf("2001:2:0:%d::%d", nw.n, h) }

// Container is a container made for one test, with its network namespace
// attached under a tundt- name, so that the harness's NS methods (Dial,
// Do, Run, capture) act inside it.
type Container struct {
	t  testing.TB
	ID string
	NS *NS
}

// runContainer starts a labelled container with args (docker create
// options, the image and its arguments), removes it when the test ends,
// attaches its namespace and removes its default routes.
func runContainer(t testing.TB, args ...string) *Container {
	t.Helper()
	id := strings.TrimSpace(mustDocker(t, append([]string{"create", labelArg}, args...)...))
	c := &Container{t: t, ID: id}
	t.Cleanup(func() { dockerRun("rm", "-f", id) })
	mustDocker(t, "start", id)
	c.attach()
	return c
}

// attach names the container's network namespace, so that ip netns exec
// and the harness reach it, and removes the name when the test ends.
func (c *Container) attach() {
	c.t.Helper()
	out := strings.TrimSpace(mustDocker(c.t, "inspect", "-f", "{{.State.Pid}}", c.ID))
	pid, err := strconv.Atoi(out)
	if err != nil {
		c.t.Fatalf("docker inspect %.12s: the PID is %q: %v", c.ID, out, err)
	}
	if pid == 0 {
		logs, _ := dockerRun("logs", c.ID)
		c.t.Fatalf("container %.12s exited at start: %s", c.ID, logs)
	}
	n, err := netns.Attach(nsPrefix, pid)
	if err != nil {
		c.t.Fatal(err)
	}
	c.NS = &NS{NS: n, t: c.t}
	c.t.Cleanup(func() {
		if err := n.Remove(); err != nil {
			c.t.Error(err)
		}
	})
	c.NS.Run("ip", "route", "del", "default")
	c.NS.Run("ip", "-6", "route", "del", "default")
}

// Exec runs a shell command in the container and returns its stdout.
func (c *Container) Exec(script string) (string, error) {
	return dockerRun("exec", c.ID, "sh", "-c", script)
}

// MustExec is Exec that fails t (the test or subtest running it) on error.
func (c *Container) MustExec(t testing.TB, script string) string {
	t.Helper()
	out, err := c.Exec(script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Logs returns what the container wrote to stdout and stderr.
func (c *Container) Logs() string {
	out, err := exec.Command("docker", "logs", c.ID).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs: %v)", err)
	}
	return string(out)
}

// awaitLog waits until the output of a process (docker run attached, or
// docker logs -f) shows s, and fails the test if it ends first.
func awaitLog(t testing.TB, r *bufio.Scanner, s string, timeout time.Duration) {
	t.Helper()
	found := make(chan bool, 1)
	go func() {
		for r.Scan() {
			if strings.Contains(r.Text(), s) {
				found <- true
				for r.Scan() { // keep draining, so the writer never blocks
				}
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("the output ended without %q", s)
		}
	case <-time.After(timeout):
		t.Fatalf("no %q within %v", s, timeout)
	}
}

// tundContainer starts tund's image on nw as host 2, with the sysctls that
// let other containers reach the stack by routing (IPv6 enabled, both
// families forwarded), extra docker run options and tund's args, and
// returns once tund is ready.
func tundContainer(t testing.TB, nw *Network, dockerArgs []string, tundArgs ...string) *Container {
	t.Helper()
	args := []string{"--network", nw.Name, "--ip", nw.IPv4(2), "--ip6", nw.IPv6(2),
		"--cap-add", "NET_ADMIN", "--device", "/dev/net/tun",
		"--sysctl", "net.ipv6.conf.all.disable_ipv6=0", "--sysctl", "net.ipv6.conf.all.forwarding=1",
		"--sysctl", "net.ipv4.ip_forward=1"}
	args = append(append(args, dockerArgs...), "tund")
	c := runContainer(t, append(args, tundArgs...)...)
	logs := exec.Command("docker", "logs", "-f", c.ID)
	out, err := logs.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { logs.Process.Kill(); logs.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tund's container log:\n%s", c.Logs())
		}
	})
	awaitLog(t, bufio.NewScanner(out), "msg=ready", 20*time.Second)
	return c
}

// clientContainer starts a container of tund's image on nw that routes the
// stack's prefixes via tund's container and idles, for tests to run
// clients in.
func clientContainer(t testing.TB, nw *Network) *Container {
	t.Helper()
	c := runContainer(t, "--network", nw.Name, "--sysctl", "net.ipv6.conf.all.disable_ipv6=0",
		"--entrypoint", "sleep", "tund", "infinity")
	c.NS.MustRun("ip", "route", "add", "198.18.0.0/24", "via", nw.IPv4(2))
	c.NS.MustRun("ip", "-6", "route", "add", "2001:2::/64", "via", nw.IPv6(2))
	return c
}
