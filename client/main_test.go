package client_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tund/tund/internal/netns"
)

// inNamespace marks the copy of the test binary that runs inside tund's
// namespace.
const inNamespace = "TUND_CLIENT_TEST_IN_NAMESPACE"

// TestMain runs the package's tests as a test suite that uses the package
// runs: in a network namespace with a tund in it (default flags), so that
// the Example talks to tund as it is written. It builds tund, makes the
// namespace, starts tund there and runs this test binary again inside it.
// It needs root and ip (iproute2); without them it fails.
func TestMain(m *testing.M) {
	if os.Getenv(inNamespace) != "" {
		os.Exit(m.Run())
	}
	code, err := runInNamespace()
	if err != nil {
		fmt.Fprintf(os.Stderr, "client tests: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runInNamespace() (int, error) {
	if os.Geteuid() != 0 {
		return 0, fmt.Errorf("need root, to make a network namespace and a TUN device for tund")
	}
	dir, err := os.MkdirTemp("", "tund-client-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "tund")
	build := exec.Command("go", "build", "-o", bin, "../cmd/tund")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("building tund: %w", err)
	}
	ns, err := netns.New("tundt")
	if err != nil {
		return 0, err
	}
	defer ns.Remove()

	tund := ns.Command(context.Background(), bin)
	tund.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := tund.StderrPipe()
	if err != nil {
		return 0, err
	}
	if err := tund.Start(); err != nil {
		return 0, fmt.Errorf("starting tund: %w", err)
	}
	defer func() {
		tund.Process.Signal(syscall.SIGTERM)
		tund.Wait()
	}()
	ready, done := make(chan struct{}), make(chan struct{})
	var logs strings.Builder // read once done is closed
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if logs.Len() < 64<<10 {
				logs.WriteString(sc.Text() + "\n")
			}
			if strings.Contains(sc.Text(), "msg=ready") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		tund.Process.Kill()
		<-done
		return 0, fmt.Errorf("tund not ready after 20s:\n%s", logs.String())
	}

	tests := ns.Command(context.Background(), os.Args[0], os.Args[1:]...)
	tests.Env = append(os.Environ(), inNamespace+"=1")
	tests.Stdout, tests.Stderr = os.Stdout, os.Stderr
	err = tests.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}
