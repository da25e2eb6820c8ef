package tests

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/tund/tund/conform"
)

// TestConform runs `tund conform --json` as ./scripts/test does: every
// case against the Linux kernel and against tund (defaults and --like
// linux). It fails on an undocumented difference (tund conform exits 1),
// and when Linux does not keep a rule it should: the peer and the cases
// are then what is broken, and a run where every side fails would prove
// nothing.
func TestConform(t *testing.T) {
	cmd := exec.Command(tundBin, "conform", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res conform.Result
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		t.Fatalf("tund conform: %v; output not JSON (%v):\n%s\n%s", err, jerr, stdout.String(), stderr.String())
	}
	if f := res.Failures(); err != nil || len(f) > 0 {
		t.Errorf("tund conform: %v, undocumented differences from Linux:\n  %s\n%s", err, strings.Join(f, "\n  "), stderr.String())
	}
	if want := []string{"linux", "tund", "tund --like linux"}; strings.Join(res.Targets, ",") != strings.Join(want, ",") {
		t.Fatalf("targets %q, want %q", res.Targets, want)
	}
	if len(res.Cases) != len(conform.Cases()) {
		t.Errorf("%d cases ran, want %d", len(res.Cases), len(conform.Cases()))
	}
	for _, c := range res.Cases {
		linux := c.Sides[0]
		if linux.Pass() == conform.LinuxBreaks(c.Name) {
			t.Errorf("%s on Linux: pass %v, want %v: %s", c.Name, linux.Pass(), !conform.LinuxBreaks(c.Name), linux.Err)
		}
		for _, s := range c.Sides[1:] {
			t.Logf("%s on %s: pass %v, diff %v %s", c.Name, s.Target, s.Pass(), s.Diff, s.Known)
		}
	}
}
