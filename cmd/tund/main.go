// Command tund runs a userspace TCP endpoint behind a TUN device.
//
// See README.md or `tund --help` for what it does and how to run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/tund/tund/admin"
	"github.com/tund/tund/control"
	"github.com/tund/tund/service"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/tun"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main without the process: it returns the exit status. 2 is a bad
// command line, 1 a failure to start or to run.
func run(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "conns":
			return connsCommand(args[1:], os.Stdout, stderr)
		case "closes":
			return closesCommand(args[1:], os.Stdout, stderr)
		case "get":
			return getCommand(args[1:], os.Stdout, stderr)
		case "set":
			return setCommand(args[1:], os.Stdout, stderr)
		case "reset":
			return resetCommand(args[1:], os.Stdout, stderr)
		case "proxy":
			return proxyCommand(args[1:], os.Stdout, stderr)
		case "scenario":
			return scenarioCommand(args[1:], os.Stdout, stderr)
		case "conform":
			return conformCommand(args[1:], os.Stdout, stderr)
		case "bench-server":
			return benchServerCommand(args[1:], stderr)
		case "bench-conns":
			return benchConnsCommand(args[1:], os.Stdout, stderr)
		}
	}
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tund: %v\n", err)
		return 2
	}
	log := newLogger(stderr, o)
	stack.SetLogger(log)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := daemon(ctx, o, log); err != nil {
		// The log line is for collectors; the plain line is for the person
		// at the terminal, without the log format's quoting.
		log.Error("tund failed", "err", err)
		fmt.Fprintf(stderr, "tund: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, o *options) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.logLevel}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// daemon brings up the device, the stack and the services, serves until ctx
// ends, and takes everything down in reverse order.
func daemon(ctx context.Context, o *options, log *slog.Logger) error {
	if err := fitIPv6(o, log); err != nil {
		return err
	}
	dev, err := tun.Open(o.tun)
	if err != nil {
		return err
	}
	defer func() {
		if err := dev.Close(); err != nil {
			log.Warn("closing the device", "err", err)
		}
		log.Info("removed the interface", "tun", dev.Name())
	}()
	log.Info("created the interface", "tun", dev.Name(), "index", dev.Index(), "mtu", dev.MTU(),
		"queues", len(dev.FDs()), "offload", dev.Offload(), "kernel_addrs", fmt.Sprint(o.tun.Addrs), "routes", fmt.Sprint(o.tun.Routes))
	logReachability(dev, o, log)

	link, err := dev.LinkEndpoint()
	if err != nil {
		return err
	}
	if o.pcap != "" {
		f, err := os.Create(o.pcap)
		if err != nil {
			return fmt.Errorf("--pcap: %w", err)
		}
		defer f.Close()
		o.stack.Pcap = f
	}
	st, err := stack.New(link, o.stack)
	if err != nil {
		return err
	}
	defer st.Close()
	adminLn, err := listenAdmin(o.admin, o.adminToken, o.tun.Addrs, log)
	if err != nil {
		return err
	}
	dialLns, err := listenDials(o.dials)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(o.dials)+2)
	fail := func(err error) {
		select {
		case errc <- err:
		default: // the first error is the one reported
		}
		cancel()
	}
	group := service.NewGroup(ctx, st, o.drain, log, fail)
	defer group.Wait()
	ctl, err := control.New(st, group, o.stack, o.defaults, o.services, log)
	if err != nil {
		return err
	}
	if adminLn != nil {
		ctl.ForbidTarget(netip.MustParseAddrPort(adminLn.Addr().String()))
	}
	if err := ctl.Start(); err != nil {
		cancel()
		return err
	}
	if adminLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := admin.Serve(ctx, adminLn, admin.NewHandler(st, ctl, o.adminToken), log); err != nil {
				fail(err)
			}
		}()
	}
	serveDials(ctx, &wg, dialLns, o.dials, st, o.drain, log, fail)
	log.Info("ready", "admin", adminAddr(adminLn), "pcap", o.pcap, "addrs", fmt.Sprint(st.Addrs()), "services", fmt.Sprint(o.services),
		"msl", o.stack.MSL, "fin_wait2", o.stack.FinWait2, "fin_ack_merge", o.stack.FINACKMerge, "time_wait_rst_closes", o.stack.TimeWaitRSTCloses)

	<-ctx.Done()
	deadline := time.Now().Add(o.drain)
	log.Info("stopping: no new connections; ending the open ones with FIN, proxied and dialed pairs by their peers' FINs", "drain", o.drain)
	cancel()
	wg.Wait()
	group.Wait()
	if open := st.AwaitClosed(deadline); len(open) > 0 {
		log.Warn("drain time over: resetting the connections still open", "open", fmt.Sprint(open))
	} else {
		log.Info("drained: every connection closed with FIN")
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// listenAdmin opens the admin address. A failure on the default address
// (a fresh namespace has its loopback down) is logged and tund goes on
// without the admin server; on an address the user chose it is an error.
//
// The admin API can change how tund closes connections: on an address
// other than loopback without a token, tund warns that anyone who reaches
// it can.
func listenAdmin(addr, token string, tunAddrs []netip.Prefix, log *slog.Logger) (net.Listener, error) {
	if addr == "off" || addr == "" {
		return nil, nil
	}
	var device []netip.Addr
	for _, p := range tunAddrs {
		device = append(device, p.Addr())
	}
	ln, err := admin.Listen(addr, device)
	if err == nil {
		if ap, perr := netip.ParseAddrPort(ln.Addr().String()); perr == nil && !ap.Addr().IsLoopback() && token == "" {
			log.Warn("admin writes are open: anyone who reaches the admin address can change settings and proxies; give --admin-token FILE to require a token", "admin", ln.Addr().String())
		}
		return ln, nil
	}
	if addr == admin.DefaultAddr {
		log.Warn("no admin server: the default address cannot be bound (is loopback up? ip link set lo up)", "err", err)
		return nil, nil
	}
	return nil, fmt.Errorf("--admin %s: %w", addr, err)
}

func adminAddr(ln net.Listener) string {
	if ln == nil {
		return "off"
	}
	return ln.Addr().String()
}
