package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tund/tund/internal/tcpflag"
)

// TestContainerREADME runs README's three docker commands as written: the
// image builds (needDocker ran the build line), tund starts in a container
// whose namespace has IPv6 disabled (Docker's default) with one warning,
// curl in the container gets the greeting, and docker stop ends it with
// exit status 0 and removes it (--rm).
func TestContainerREADME(t *testing.T) {
	needDocker(t)
	cmds, err := readmeBlock("## Containers", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 3 || !strings.HasPrefix(cmds[1], "docker run ") || !strings.HasPrefix(cmds[2], "docker exec ") {
		t.Fatalf("README's first Containers block is %q, want docker build, run and exec", cmds)
	}
	if _, err := dockerRun("container", "inspect", "tund"); err == nil {
		t.Fatal("a container named tund exists already (perhaps yours): README's docker run needs the name; remove it and rerun")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, "sh", "-c", cmds[1])
	run.Dir = ".."
	stderr, err := run.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	// The copy ends when docker run exits; Wait only after it (os/exec).
	var logs bytes.Buffer
	copied := make(chan struct{})
	r, w := io.Pipe()
	go func() {
		defer close(copied)
		io.Copy(io.MultiWriter(&logs, w), stderr)
		w.Close()
	}()
	waited := false
	t.Cleanup(func() {
		if !waited {
			run.Process.Kill()
			<-copied
			run.Wait()
		}
	})
	var id string
	for deadline := time.Now().Add(20 * time.Second); id == ""; time.Sleep(50 * time.Millisecond) {
		id = strings.TrimSpace(func() string { out, _ := dockerRun("container", "inspect", "-f", "{{.Id}}", "tund"); return out }())
		if time.Now().After(deadline) {
			t.Fatalf("no container named tund 20 s after %q", cmds[1])
		}
	}
	recordContainer(t, id)
	awaitLog(t, bufio.NewScanner(r), "msg=ready", 20*time.Second)

	out, err := exec.CommandContext(ctx, "sh", "-c", cmds[2]).Output()
	if err != nil {
		t.Fatalf("%s: %v", cmds[2], err)
	}
	if want := "talking to the userspace TCP stack at 198.18.0.2:80"; !strings.Contains(string(out), want) {
		t.Errorf("%s answered %q, want it to say %q", cmds[2], out, want)
	}
	mustDocker(t, "stop", "tund")
	<-copied
	waited = true
	if err := run.Wait(); err != nil {
		t.Errorf("%s ended with %v after docker stop, want exit status 0:\n%s", cmds[1], err, logs.String())
	}
	if n := strings.Count(logs.String(), "IPv6 is disabled in this network namespace"); n != 1 ||
		!strings.Contains(logs.String(), "--sysctl net.ipv6.conf.all.disable_ipv6=0") {
		t.Errorf("want one warning that IPv6 is disabled, with Docker's --sysctl to enable it; got %d:\n%s", n, logs.String())
	}
	if _, err := dockerRun("container", "inspect", id); err == nil {
		t.Errorf("the container is still there after docker stop (README runs it with --rm)")
	}
}

// TestContainerBadStarts: each missing start condition in a container
// makes tund exit 1 at once with the docker option that supplies it.
func TestContainerBadStarts(t *testing.T) {
	needDocker(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no TUN device", []string{"--cap-add", "NET_ADMIN", "tund"}, "--device /dev/net/tun"},
		{"no CAP_NET_ADMIN", []string{"--device", "/dev/net/tun", "tund"}, "--cap-add NET_ADMIN"},
		{"IPv6 address with IPv6 disabled", []string{"--cap-add", "NET_ADMIN", "--device", "/dev/net/tun", "tund", "--addr", "198.18.0.2", "--addr", "2001:2::2"},
			"--addr 2001:2::2: IPv6 is disabled in this network namespace: enable it with sysctl -w net.ipv6.conf.all.disable_ipv6=0, in Docker with docker run --sysctl net.ipv6.conf.all.disable_ipv6=0"},
		{"IPv6 kernel address with IPv6 disabled", []string{"--cap-add", "NET_ADMIN", "--device", "/dev/net/tun", "tund", "--tun-addr", "2001:db8::1/64"},
			"--tun-addr 2001:db8::1/64: IPv6 is disabled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Bounded: a tund that served instead of failing would not exit.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "docker", append([]string{"run", "--rm", labelArg}, c.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("docker run %s: %v, want exit status 1:\n%s", strings.Join(c.args, " "), err, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("tund's message does not say %q:\n%s", c.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "msg=ready") {
				t.Errorf("tund got ready:\n%s", stderr.String())
			}
		})
	}
}

// TestContainerClients: two client containers reach tund's container by
// routing the stack's prefixes via it, over IPv4, then IPv6, both at once
// in each: one fetches 10,000,000 bytes of /bytes (sha256 of the documented pattern),
// the other sends 20 MB through echo (sha256 back equal). Then a client
// half-closes on chargen under each policy, seen on the TUN device inside
// tund's container: allow streams on after the client's FIN, close answers
// it with tund's FIN at once.
func TestContainerClients(t *testing.T) {
	nw := newNetwork(t)
	td := tundContainer(t, nw, nil, "--serve", "http,echo,chargen,chargen:1919/half-close=close")
	a, b := clientContainer(t, nw), clientContainer(t, nw)
	want := fmt.Sprintf("%x", sha256.Sum256(httpBytes(10_000_000)))
	for _, fam := range []struct{ name, host string }{{"IPv4", stackV4}, {"IPv6", "[" + stackV6 + "]"}} {
		t.Run(fam.name, func(t *testing.T) {
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				out, err := a.Exec(fmt.Sprintf("curl -sS --fail -m 60 http://%s/bytes/10000000 | sha256sum", fam.host))
				if err != nil || strings.Fields(out)[0] != want {
					t.Errorf("curl /bytes/10000000 from a client container: sha256 %q (%v), want %s", out, err, want)
				}
			}()
			go func() {
				defer wg.Done()
				host := strings.Trim(fam.host, "[]")
				out, err := b.Exec(fmt.Sprintf("head -c 20000000 /dev/urandom > /tmp/in && sha256sum < /tmp/in && timeout 60 nc -N %s 7 < /tmp/in | sha256sum", host))
				sums := strings.Fields(out)
				if err != nil || len(sums) != 4 || sums[0] != sums[2] {
					t.Errorf("20 MB through echo from a client container: %q (%v), want the same sha256 twice", out, err)
				}
			}()
			wg.Wait()
		})
	}

	t.Run("chargen half-close", func(t *testing.T) {
		cap := capture(t, td.NS, "tund0", "tcp port 19 or tcp port 1919")
		allow := a.MustExec(t, fmt.Sprintf("nc -N %s 19 </dev/null | head -c 5000000 | wc -c", stackV4))
		closed := a.MustExec(t, fmt.Sprintf("timeout 20 nc -N %s 1919 </dev/null | wc -c", stackV4))
		if strings.TrimSpace(allow) != "5000000" {
			t.Errorf("allow: %s bytes after the client's half-close, want 5000000", strings.TrimSpace(allow))
		}
		convs := conversations(cap.Stop())
		if len(convs) != 2 {
			t.Fatalf("%d connections captured, want 2", len(convs))
		}
		for _, conv := range convs {
			cf, sf := conv.firstFIN(false), conv.firstFIN(true)
			if cf < 0 {
				t.Fatalf("no FIN from the client:%s", conv)
			}
			after := payload(conv, conv.Segs[cf:], true)
			switch conv.Server.Port() {
			case 19:
				if after < 4_000_000 || sf >= 0 && sf < cf {
					t.Errorf("allow: tund sent %d bytes after the client's FIN, want it streaming on (MBs), and no FIN of its own first", after)
				}
			case 1919:
				if sf < 0 {
					t.Fatalf("close: no FIN from tund:%s", conv)
				}
				gap := conv.Segs[sf].T.Sub(conv.Segs[cf].T)
				t.Logf("close: %s bytes arrived, tund's FIN %v after the client's", strings.TrimSpace(closed), gap)
				if gap < 0 || gap > 200*time.Millisecond {
					t.Errorf("close: tund's FIN came %v after the client's, want at once (< 200 ms)", gap)
				}
				noRST(t, conv)
			}
		}
	})
}

// TestContainerSidecar: tund's container as a close-path sidecar between a
// client container and a server container (kernel sockets in each, made
// by the test inside their namespaces). Half-close is carried both ways
// through the proxy, and with /drop-final-ack=once on a port where the
// server closes first, the client's FIN is retransmitted and re-ACKed by
// tund in TIME-WAIT, on the wire and in `tund closes --json`.
func TestContainerSidecar(t *testing.T) {
	nw := newNetwork(t)
	server := runContainer(t, "--network", nw.Name, "--ip", nw.IPv4(3), "--entrypoint", "sleep", "tund", "infinity")
	td := tundContainer(t, nw, nil, "--serve",
		fmt.Sprintf("proxy:8080=%s:7100,proxy:8013=%s:7013/drop-final-ack=once", nw.IPv4(3), nw.IPv4(3)))
	client := clientContainer(t, nw)
	proxied := stackV4 + ":8080"
	t.Run("client half-closes first", func(t *testing.T) {
		halfClose(t, client.NS, server.NS, td.NS, proxied, ":7100", proxied, true)
	})
	t.Run("server half-closes first", func(t *testing.T) {
		halfClose(t, client.NS, server.NS, td.NS, proxied, ":7100", proxied, false)
	})

	t.Run("drop-final-ack", func(t *testing.T) {
		const wire = stackV4 + ":8013"
		cap := capture(t, td.NS, "tund0", "tcp port 8013")
		ln := listenIn(t, server.NS, ":7013")
		served := serveOne(ln, func(c *net.TCPConn) error {
			if _, err := c.Write([]byte("bye\n")); err != nil {
				return err
			}
			return c.Close()
		})
		c := dialIn(t, client.NS, wire)
		if got := readAll(t, c); string(got) != "bye\n" {
			t.Errorf("the client read %q, want the server's %q", got, "bye\n")
		}
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		// readAll closed the client: its FIN, the dropped ACK, its FIN again
		// after its RTO, and tund's ACK of that from TIME-WAIT.
		conv := conversationTo(t, stopWhen(cap, func(segs []Segment) bool {
			fins, acked := 0, false
			for _, s := range segs {
				if s.Dst.String() == wire && s.Has(tcpflag.FIN) {
					fins++
				}
				acked = acked || fins == 2 && s.Src.String() == wire && s.PureACK()
			}
			return acked
		}), wire)
		var clientFINs []Segment
		for _, s := range conv.Segs {
			if !conv.FromServer(s) && s.Has(tcpflag.FIN) {
				clientFINs = append(clientFINs, s)
			}
		}
		if len(clientFINs) != 2 || clientFINs[0].Seq != clientFINs[1].Seq {
			t.Fatalf("want the client's FIN twice with one sequence number (its retransmission):%s", conv)
		}
		acks := 0
		for _, s := range conv.Segs {
			if conv.FromServer(s) && s.PureACK() && s.Ack == clientFINs[0].Seq+1 {
				acks++
				if s.T.Before(clientFINs[1].T) {
					t.Errorf("tund's ACK of the client's FIN reached the wire before the retransmission; drop-final-ack dropped nothing:%s", conv)
				}
			}
		}
		if acks != 1 {
			t.Errorf("tund ACKed the client's FIN %d times on the wire, want once (after the retransmission):%s", acks, conv)
		}
		noRST(t, conv)

		rec := awaitContainerRecord(t, td, localAddr(c))
		if !rec.FinalACKLost || rec.FINRetransmits != 1 || rec.Initiator != "tund" {
			t.Errorf("tund closes --json: final ACK lost %v, %d FIN retransmissions, initiator %s; want true, 1, tund: %+v",
				rec.FinalACKLost, rec.FINRetransmits, rec.Initiator, rec)
		}
	})
}

// awaitContainerRecord reads `tund closes --json` in tund's container (the
// admin API from inside) until it has the close of the client at remote.
func awaitContainerRecord(t *testing.T, td *Container, remote netip.AddrPort) closeRecord {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out := td.MustExec(t, "tund closes --json")
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec closeRecord
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("tund closes --json: %v: %s", err, sc.Text())
			}
			if rec.Remote == remote {
				return rec
			}
		}
	}
	t.Fatalf("no close record for %v in tund closes --json after 10 s", remote)
	return closeRecord{}
}

// TestContainerStop: docker stop with 200 connections open from a client
// container. tund ends every one with its FIN (captured on the TUN inside
// the container), the container exits 0 before docker's grace period runs
// out (a SIGKILL would be status 137), and once the test's cleanup has run
// no container, network or attached namespace of it is left.
func TestContainerStop(t *testing.T) {
	var tundNS string
	t.Run("stop", func(t *testing.T) {
		nw := newNetwork(t)
		td := tundContainer(t, nw, nil, "--serve", "echo")
		tundNS = td.NS.Name
		client := clientContainer(t, nw)
		cap := capture(t, td.NS, "tund0", "tcp port 7")
		const n = 200
		conns := make([]net.Conn, n)
		for i := range conns {
			c, err := client.NS.Dial("tcp", stackV4+":7")
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatalf("connection %d: echo: %v", i, err)
			}
			conns[i] = c
		}
		// Each client closes once it reads tund's FIN, as a well-behaved
		// client does; an error is a reset.
		errs := make(chan error, n)
		for _, c := range conns {
			go func() {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err := io.ReadAll(c)
				c.Close()
				errs <- err
			}()
		}
		start := time.Now()
		mustDocker(t, "stop", td.ID)
		took := time.Since(start)
		state := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", td.ID))
		t.Logf("docker stop with %d connections open took %v; exit code, OOM-killed: %s", n, took.Round(time.Millisecond), state)
		if state != "0 false" {
			t.Errorf("tund's container ended with %q (exit code, OOM-killed), want 0 false:\n%s", state, td.Logs())
		}
		for range conns {
			if err := <-errs; err != nil {
				t.Errorf("a client read %v, want tund's FIN (EOF)", err)
			}
		}
		segs := cap.Stop()
		fins := map[netip.AddrPort]bool{}
		for _, conv := range conversations(segs) {
			if conv.firstFIN(true) >= 0 && !sentBy(conv, true, tcpflag.RST) {
				fins[conv.Client] = true
			}
		}
		for _, c := range conns {
			if !fins[localAddr(c)] {
				t.Errorf("no FIN from tund without RST on the wire for the client at %v", localAddr(c))
			}
		}
		// tund's own account of the stop: every connection ended with its
		// FIN within the drain, and the device removed by tund itself.
		logs := td.Logs()
		for _, want := range []string{"drained: every connection closed with FIN", "removed the interface"} {
			if !strings.Contains(logs, want) {
				t.Errorf("tund's log does not say %q:\n%s", want, logs)
			}
		}
	})
	if t.Failed() {
		return
	}
	label := strings.TrimPrefix(labelArg, "--label=")
	for _, kind := range [][]string{{"container", "ls", "--all"}, {"network", "ls"}} {
		if out := mustDocker(t, append(kind, "--quiet", "--filter", "label="+label)...); strings.TrimSpace(out) != "" {
			t.Errorf("docker %s shows what the test made still there: %s", strings.Join(kind, " "), out)
		}
	}
	if _, err := os.Stat("/run/netns/" + tundNS); err == nil {
		t.Errorf("namespace %s is still attached", tundNS)
	}
}

// TestContainerAdmin: with --admin 0.0.0.0:9180 and the port published,
// the admin API answers on the host's published port and on the
// container's network address, and never on the TUN side: not at the
// stack's address, not at the device's own kernel address (reset by tund,
// from another container or from tund's own).
func TestContainerAdmin(t *testing.T) {
	nw := newNetwork(t)
	td := tundContainer(t, nw, []string{"-p", "127.0.0.1::9180"}, "--admin", "0.0.0.0:9180")
	client := clientContainer(t, nw)
	published := strings.TrimSpace(strings.Split(mustDocker(t, "port", td.ID, "9180/tcp"), "\n")[0])
	out, err := exec.Command("curl", "-sS", "-m", "5", "http://"+published+"/metrics").Output()
	if err != nil || !strings.Contains(string(out), "tund_tcp_") {
		t.Errorf("the published admin port %s on the host: %v, %.80q", published, err, out)
	}
	if out, err := client.Exec("curl -sS -m 5 http://" + nw.IPv4(2) + ":9180/metrics"); err != nil || !strings.Contains(out, "tund_tcp_") {
		t.Errorf("the admin API at tund's container address from another container: %v, %.80q", err, out)
	}
	for _, c := range []struct {
		from *Container
		addr string
	}{{client, stackV4}, {client, kernV4}, {td, stackV4}, {td, kernV4}} {
		if out, err := c.from.Exec("curl -sS -m 3 http://" + c.addr + ":9180/metrics"); err == nil {
			t.Errorf("the admin API answered at %s:9180 (through the TUN side), from %.12s: %.80q", c.addr, c.from.ID, out)
		}
	}
	if out := td.MustExec(t, "tund conns"); !strings.Contains(out, "State") {
		t.Errorf("tund conns inside the container: %q", out)
	}
}

// TestContainerCompose runs README's two compose examples as written, each
// as a compose project of the test's own name: the client containers reach
// tund over both families, and the sidecar echoes through tund's proxy,
// carries the one-line server's close with the final ACK dropped, and shows
// that close in tund closes.
func TestContainerCompose(t *testing.T) {
	needDocker(t)
	for i, c := range []struct {
		heading string
		want    []string
	}{
		{"### Other containers as its clients", []string{
			"talking to the userspace TCP stack at 198.18.0.2:80",
			"talking to the userspace TCP stack at [2001:2::2]:80"}},
		{"### A close-path sidecar", []string{
			"hello through tund\n", "hello from the server\n",
			"started by tund", "1 FIN retransmission(s), final ACK lost"}},
	} {
		t.Run(strings.TrimPrefix(c.heading, "### "), func(t *testing.T) {
			cmds, err := readmeBlock(c.heading, 0)
			if err != nil {
				t.Fatal(err)
			}
			project := fmt.Sprintf("tundt-%d-compose%d", os.Getpid(), i)
			env := append(os.Environ(), "COMPOSE_PROJECT_NAME="+project)
			down := cmds[len(cmds)-1]
			if !strings.Contains(down, " down") {
				t.Fatalf("README's block under %q ends with %q, want docker-compose down", c.heading, down)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, "sh", "-c", down)
				cmd.Dir, cmd.Env = "..", env
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s: %v: %s", down, err, out)
				}
			})
			var all strings.Builder
			for _, line := range cmds[:len(cmds)-1] {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, "sh", "-c", line)
				cmd.Dir, cmd.Env = "..", env
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s: %v: %s%s", line, err, out, stderr.String())
				}
				all.Write(out)
			}
			for _, w := range c.want {
				if !strings.Contains(all.String(), w) {
					t.Errorf("README's commands under %q printed no %q:\n%s", c.heading, w, all.String())
				}
			}
		})
	}
}
