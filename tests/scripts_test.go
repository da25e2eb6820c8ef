package tests

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tund/tund/internal/netns"
)

// nsExists reports whether ip netns lists name.
func nsExists(t *testing.T, name string) bool {
	t.Helper()
	ok, err := netns.Exists(name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// scriptNS names a namespace for a script under test as newNS does, so
// that scripts/test's sweep finds it if the test run is killed.
func scriptNS() string { return netns.Name(nsPrefix) }

// runScript runs a script of scripts/ with the tund that TestMain built
// (scripts/up would otherwise build the checkout's bin/tund).
func runScript(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("../scripts/"+name, args...)
	cmd.Env = append(os.Environ(), "TUND_BIN="+tundBin)
	return cmd.CombinedOutput()
}

// TestUpAndDown runs the README's first command, scripts/up, as a new user
// would: it must leave tund running in its namespace and show a curl
// answered by the stack; scripts/down must stop tund and remove the
// namespace.
func TestUpAndDown(t *testing.T) {
	name := scriptNS()
	t.Cleanup(func() { runScript("down", name) })
	out, err := runScript("up", name)
	if err != nil {
		t.Fatalf("scripts/up %s: %v\n%s", name, err, out)
	}
	if !strings.Contains(string(out), "talking to the userspace TCP stack at 198.18.0.2") {
		t.Errorf("scripts/up printed no answer from tund's http service:\n%s", out)
	}
	if !nsExists(t, name) {
		t.Fatalf("scripts/up left no namespace %s", name)
	}
	b, err := os.ReadFile("/run/tund/" + name + ".pid")
	if err != nil {
		t.Fatalf("scripts/up wrote no pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("scripts/up's pid file: %v", err)
	}
	if out, err := runScript("down", name); err != nil {
		t.Fatalf("scripts/down %s: %v\n%s", name, err, out)
	}
	if nsExists(t, name) {
		t.Errorf("scripts/down left namespace %s", name)
	}
	// down waits for tund to exit; a process of that pid now would be
	// tund still running (or, rarely, the pid reused).
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("tund (pid %d) still runs after scripts/down", pid)
	}
}

// TestUpRefusesBadFlags checks that scripts/up with a flag tund refuses
// fails with tund's reason and leaves no namespace behind (it once left
// one: its cleanup stopped at the kill of a tund that had already exited).
func TestUpRefusesBadFlags(t *testing.T) {
	name := scriptNS()
	t.Cleanup(func() { runScript("down", name) })
	out, err := runScript("up", name, "--", "--msl", "-5s")
	if err == nil {
		t.Fatalf("scripts/up with --msl -5s succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "--msl must not be negative") {
		t.Errorf("scripts/up did not say why tund failed:\n%s", out)
	}
	if nsExists(t, name) {
		t.Errorf("scripts/up left namespace %s behind after failing", name)
	}
}
