package tests

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runTund runs tund to completion in ns (it is expected to fail fast) and
// returns its exit status and stderr.
func runTund(t *testing.T, ns *NS, prefix []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append(append(prefix, tundBin), args...)
	cmd := ns.Command(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("running tund: %v\n%s", err, out)
	return 0, ""
}

// noTunLeft fails the test if any TUN device exists in ns.
func noTunLeft(t *testing.T, ns *NS) {
	t.Helper()
	if out := ns.MustRun("ip", "-o", "link", "show", "type", "tun"); strings.TrimSpace(out) != "" {
		t.Errorf("a TUN device was left behind: %s", out)
	}
}

// TestBadInput checks that a bad command line or a start that cannot work
// exits non-zero with a message that says what to do, and leaves no device.
func TestBadInput(t *testing.T) {
	ns := newNS(t)
	for _, c := range []struct {
		name   string
		prefix []string
		args   []string
		status int
		want   string
	}{
		{"bad addr", nil, []string{"--addr", "198.18.0.300"}, 2, "--addr \"198.18.0.300\""},
		{"bad tun-addr", nil, []string{"--tun-addr", "198.18.0.1"}, 2, "prefix length"},
		{"addr is tun-addr", nil, []string{"--addr", "198.18.0.1"}, 2, "also a --tun-addr"},
		{"unknown service", nil, []string{"--serve", "gopher:70"}, 2, "unknown service \"gopher\""},
		{"unknown service option", nil, []string{"--serve", "echo/linger"}, 2, "unknown option \"linger\""},
		{"bad half-close", nil, []string{"--half-close", "sometimes"}, 2, "want allow, close or a positive duration"},
		{"port twice", nil, []string{"--serve", "echo:7,discard:7"}, 2, "both want port 7"},
		{"bad MTU", nil, []string{"--mtu", "100"}, 2, "MTU 100"},
		{"bad queues", nil, []string{"--queues", "999"}, 2, "999 queues"},
		{"bad name", nil, []string{"--tun", "a/b"}, 2, "not a valid interface name"},
		{"stray argument", nil, []string{"now"}, 2, "unexpected argument"},
		{"unknown flag", nil, []string{"--frobnicate"}, 2, "flag provided but not defined"},
		// The same address twice fails after the device exists: it must go.
		{"half configured", nil, []string{"--tun-addr", "198.18.0.1/24", "--tun-addr", "198.18.0.1/24"}, 1, "file exists"},
		{"no CAP_NET_ADMIN", []string{"setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"}, nil, 1, "needs CAP_NET_ADMIN"},
		{"no /dev/net/tun", []string{"unshare", "--mount", "sh", "-c", `mount -t tmpfs none /dev/net && exec "$0" "$@"`}, nil, 1, "/dev/net/tun is missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out := runTund(t, ns, c.prefix, c.args...)
			if status != c.status || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want %d, with output containing %q; got:\n%s", status, c.status, c.want, out)
			}
			noTunLeft(t, ns)
		})
	}
}

// TestNameTaken checks that tund refuses an interface name that exists and
// leaves that interface alone.
func TestNameTaken(t *testing.T) {
	ns := newNS(t)
	ns.MustRun("ip", "link", "add", "tund0", "type", "veth", "peer", "name", "other0")
	status, out := runTund(t, ns, nil)
	if status != 1 || !strings.Contains(out, `interface "tund0" already exists`) {
		t.Errorf("exit %d, output:\n%s", status, out)
	}
	if out := ns.MustRun("ip", "-o", "link", "show", "tund0"); !strings.Contains(out, "other0") {
		t.Errorf("the existing tund0 was disturbed: %s", out)
	}
}

// TestHelp checks that --help names every flag and exits 0.
func TestHelp(t *testing.T) {
	out, err := exec.Command(tundBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("tund --help: %v", err)
	}
	for _, flag := range []string{"-tun ", "-tun-addr", "-addr", "-mtu", "-queues", "-serve", "-msl", "-fin-wait2", "-log-level", "-log-format", "-fin-ack-merge", "-half-close", "-time-wait-rst", "-admin", "-pcap", "-trace", "-max-conns", "-drain", "-dial LISTEN=TARGET", "proxy:PORT=IP:PORT",
		"-drop-final-ack", "-drop-fin", "-delay-fin", "-no-fin", "-loss-in", "-loss-out", "-abort", "-port-range", "-time-wait-reuse", "-time-wait compact|full", "-offload"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

// TestCustomAddressesAndQueues runs tund with its own addresses, one outside
// the link prefix (it gets a host route), a smaller MTU and two queues.
func TestCustomAddressesAndQueues(t *testing.T) {
	ns := newNS(t)
	startTund(t, ns, "--tun", "lab7", "--tun-addr", "198.18.5.1/30", "--addr", "198.18.5.2",
		"--addr", "198.19.1.1", "--mtu", "1400", "--queues", "2", "--serve", "http:8080,echo")
	out := ns.MustRun("ip", "-d", "-o", "link", "show", "lab7")
	for _, want := range []string{"mtu 1400", ",UP,", "multi_queue numqueues 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab7 lacks %q: %s", want, out)
		}
	}
	for _, host := range []string{"198.18.5.2", "198.19.1.1"} {
		out := ns.MustRun("curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "http://"+host+":8080/bytes/3000000")
		if out != "200 3000000" {
			t.Errorf("curl %s: %q", host, out)
		}
	}
	if out := ns.MustRun("sh", "-c", "printf ping | nc -N 198.19.1.1 7"); out != "ping" {
		t.Errorf("echo on the routed address: %q", out)
	}
}

// TestIPv6Disabled: in a namespace with IPv6 disabled (as Docker makes a
// container's), tund leaves its default IPv6 addresses out with one
// warning and serves IPv4; an IPv6 address asked for explicitly exits 1
// with how to enable IPv6, before any device is made.
func TestIPv6Disabled(t *testing.T) {
	ns := newNS(t)
	ns.MustRun("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"--addr", []string{"--addr", "198.18.0.2", "--addr", "2001:2::2"}, "--addr 2001:2::2: IPv6 is disabled"},
		{"--tun-addr", []string{"--tun-addr", "198.18.0.1/24", "--tun-addr", "2001:2::1/64"}, "--tun-addr 2001:2::1/64: IPv6 is disabled"},
		{"--dial", []string{"--dial", "127.0.0.1:7000=[2001:2::1]:80"}, "--dial 127.0.0.1:7000=[2001:2::1]:80: IPv6 is disabled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out := runTund(t, ns, nil, c.args...)
			if status != 1 || !strings.Contains(out, c.want) || !strings.Contains(out, "sysctl -w net.ipv6.conf.all.disable_ipv6=0") {
				t.Errorf("exit %d, want 1 with %q and the sysctl that enables IPv6; got:\n%s", status, c.want, out)
			}
			noTunLeft(t, ns)
		})
	}
	t.Run("defaults", func(t *testing.T) {
		td := startTund(t, ns)
		if n := strings.Count(td.Logs(), "IPv6 is disabled in this network namespace: serving IPv4 only"); n != 1 {
			t.Errorf("%d warnings that IPv6 is left out, want 1:\n%s", n, td.Logs())
		}
		if out := ns.MustRun("curl", "-sS", "-m", "5", "http://"+stackV4+"/"); !strings.Contains(out, "talking to the userspace TCP stack") {
			t.Errorf("curl over IPv4: %q", out)
		}
		if out := ns.MustRun("ip", "-o", "addr", "show", "dev", "tund0"); strings.Contains(out, "inet6") {
			t.Errorf("tund0 has an IPv6 address: %s", out)
		}
	})
}

// TestForwardingHint: where tund's namespace has another interface up but
// does not forward, tund says at start that only the namespace's own
// programs reach the stack, naming the sysctl; where it forwards, it says
// nothing of it.
func TestForwardingHint(t *testing.T) {
	const hint = "this namespace does not forward"
	for _, forward := range []string{"0", "1"} {
		t.Run("ip_forward="+forward, func(t *testing.T) {
			ns := newNS(t)
			ns.MustRun("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
			ns.MustRun("ip", "link", "set", "veth0", "up")
			ns.MustRun("sysctl", "-q", "-w", "net.ipv4.ip_forward="+forward, "net.ipv6.conf.all.forwarding="+forward)
			td := startTund(t, ns)
			logged := strings.Contains(td.Logs(), hint)
			if forward == "0" && (!logged || !strings.Contains(td.Logs(), "--sysctl net.ipv4.ip_forward=1")) {
				t.Errorf("no hint that the namespace does not forward, with Docker's --sysctl:\n%s", td.Logs())
			}
			if forward == "1" && logged {
				t.Errorf("a forwarding hint where the namespace forwards:\n%s", td.Logs())
			}
		})
	}
}
