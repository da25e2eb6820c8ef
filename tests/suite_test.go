package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tund/tund/internal/netns"
)

// suiteFile is README's complete Go test that drives tund with the client
// package.
const suiteFile = "testdata/suite/close_test.go"

// TestSuiteInREADME: README shows the suite's test file as it is.
func TestSuiteInREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(suiteFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, append(append([]byte("```go\n"), file...), "```"...)) {
		t.Errorf("README does not hold %s as it is: copy the file into its \"The Go package\" section", suiteFile)
	}
}

// TestSuiteREADME runs README's two ways of running that test, as written:
// in a namespace that scripts/up makes, and from the sidecar setup's client
// container. The names README uses (the namespace, the test binary's file,
// the compose project) are made the test's own.
func TestSuiteREADME(t *testing.T) {
	for i, c := range []struct {
		name   string
		docker bool
	}{{"namespace", false}, {"sidecar", true}} {
		t.Run(c.name, func(t *testing.T) {
			if c.docker {
				needDocker(t)
			}
			cmds, err := readmeBlock("### The Go package", i)
			if err != nil {
				t.Fatal(err)
			}
			ns := netns.Name(nsPrefix)
			bin := filepath.Join(t.TempDir(), "suite.test")
			env := append(os.Environ(), "TUND_BIN="+tundBin, fmt.Sprintf("COMPOSE_PROJECT_NAME=tundt-%d-suite", os.Getpid()))
			run := func(line string) (string, error) {
				line = strings.ReplaceAll(strings.ReplaceAll(line, "tund-suite", ns), "/tmp/suite.test", bin)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, "sh", "-c", line)
				cmd.Dir, cmd.Env = "..", env
				out, err := cmd.CombinedOutput()
				if err != nil {
					return string(out), fmt.Errorf("%s: %v\n%s", line, err, out)
				}
				return string(out), nil
			}
			down := cmds[len(cmds)-1]
			if !strings.Contains(down, "down") {
				t.Fatalf("README's block %d under \"The Go package\" ends with %q, want its undoing", i, down)
			}
			t.Cleanup(func() {
				if _, err := run(down); err != nil {
					t.Error(err)
				}
			})
			var all strings.Builder
			for _, line := range cmds[:len(cmds)-1] {
				out, err := run(line)
				if err != nil {
					t.Fatal(err)
				}
				all.WriteString(out)
			}
			if !strings.Contains(all.String(), "--- PASS: TestFinalACKLost") {
				t.Errorf("README's suite did not pass:\n%s", all.String())
			}
			t.Logf("%s", strings.TrimSpace(all.String()[strings.LastIndex(all.String(), "=== RUN"):]))
		})
	}
}
