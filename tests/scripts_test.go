package tests

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// nsExists reports whether ip netns lists name.
func nsExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// TestUpAndDown runs the README's first command, scripts/up, as a new user
// would: it must leave tund running in its namespace and show a curl
// answered by the stack; scripts/down must remove both.
func TestUpAndDown(t *testing.T) {
	name := fmt.Sprintf("tundt-up-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("../scripts/down", name).Run() })
	out, err := exec.Command("../scripts/up", name).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/up %s: %v\n%s", name, err, out)
	}
	if !strings.Contains(string(out), "talking to the userspace TCP stack at 198.18.0.2") {
		t.Errorf("scripts/up printed no answer from tund's http service:\n%s", out)
	}
	if !nsExists(t, name) {
		t.Fatalf("scripts/up left no namespace %s", name)
	}
	if out, err := exec.Command("../scripts/down", name).CombinedOutput(); err != nil {
		t.Fatalf("scripts/down %s: %v\n%s", name, err, out)
	}
	if nsExists(t, name) {
		t.Errorf("scripts/down left namespace %s", name)
	}
}

// TestUpRefusesBadFlags checks that scripts/up with a flag tund refuses
// fails with tund's reason and leaves no namespace behind (it once left
// one: its cleanup stopped at the kill of a tund that had already exited).
func TestUpRefusesBadFlags(t *testing.T) {
	name := fmt.Sprintf("tundt-upbad-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("../scripts/down", name).Run() })
	out, err := exec.Command("../scripts/up", name, "--", "--msl", "-5s").CombinedOutput()
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
