package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tund/tund/admin"
	"github.com/tund/tund/control"
	"github.com/tund/tund/forward"
	"github.com/tund/tund/service"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/link/faults"
	"github.com/tund/tund/tun"
)

// Default addresses: 198.18.0.0/15 is reserved for network testing
// (RFC 2544) and 2001:2::/48 for benchmarking (RFC 5180), so neither can
// collide with a real network.
var (
	defaultTunAddrs  = []string{"198.18.0.1/24", "2001:2::1/64"}
	defaultAddrs     = []string{"198.18.0.2", "2001:2::2"}
	defaultServeList = "http:80,echo:7,discard:9,daytime:13,chargen:19"
)

// options is the parsed command line of the daemon.
type options struct {
	admin      string
	adminToken string // writes to the admin API need it ("": any)
	pcap       string
	tun        tun.Config
	stack      stack.Config
	services   []service.Spec
	defaults   service.Options // the services' options the stack-wide flags set
	dials      []forward.Rule
	drain      time.Duration
	logLevel   slog.Level
	logFormat  string
	// explicitIPv6 names the IPv6 values the user gave (such as
	// "--addr 2001:db8::2"); tund's default IPv6 addresses are not in it,
	// so that they alone can be left out where IPv6 is disabled.
	explicitIPv6 []string
}

// listFlag is a repeatable flag whose first use replaces the default.
type listFlag struct {
	values []string
	set    bool
}

func (l *listFlag) String() string { return strings.Join(l.values, ",") }
func (l *listFlag) Set(v string) error {
	if !l.set {
		l.values, l.set = nil, true
	}
	l.values = append(l.values, v)
	return nil
}

const usageHead = `tund: a userspace TCP endpoint behind a TUN device, with a visible close path.

Usage:
  tund [flags]          run the daemon
  tund conns [--json]   the connection table of a running tund, like ss -tan
  tund closes [--follow] [--json]
                        its closes, as ladder diagrams
  tund get [--port N] [--json]
                        the settings in force in a running tund: stack-wide, and each port's overrides
  tund set [--port N] KNOB=VALUE...
                        change knobs while it runs, stack-wide or for one port (all or none)
  tund reset [--port N] everything back as the command line set it, or one port to the stack-wide values
  tund proxy add PORT=IP:PORT [KNOB=VALUE...] | rm PORT | ls [--json]
                        add, remove or list proxies while it runs
  tund scenario [NAME] [--json] [--pcap FILE]
                        the classic close-path stories, each run in a namespace of its own
  tund conform [--json|--markdown] [--case NAME]... [-- FLAGS]
                        close-path cases against the Linux kernel and tund, segment by segment
  (conns, closes, get, set, reset and proxy take --admin ADDR; the writes --token-file FILE)

tund creates the TUN interface --tun in the current network namespace, gives
its kernel side the --tun-addr addresses, and answers for the --addr
addresses with a gVisor TCP/IP stack that hosts the --serve services. Any
program in the namespace reaches them by routing, e.g.
  curl http://198.18.0.2/    printf hi | nc -N 198.18.0.2 7
The proxy service carries the stack's connections on to a kernel server;
--dial carries kernel clients out through the stack, tund as their client.

Needs CAP_NET_ADMIN (root) and /dev/net/tun. SIGINT or SIGTERM stops tund:
it ends its connections with FIN and leaves proxied and --dial pairs to
end by their peers' FINs (waiting up to --drain for both), removes the
interface and exits 0.

Flags:
`

// parseFlags parses the daemon's flags. Errors are returned, not printed,
// so that nothing is created from a bad command line.
func parseFlags(args []string, out io.Writer) (*options, error) {
	fs := flag.NewFlagSet("tund", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHead)
		fs.PrintDefaults()
	}
	tunAddrs := &listFlag{values: defaultTunAddrs}
	addrs := &listFlag{values: defaultAddrs}
	o := &options{}
	fs.StringVar(&o.tun.Name, "tun", tun.DefaultName, "`name` of the TUN interface to create; it must not exist yet")
	fs.Var(tunAddrs, "tun-addr", "`CIDR` address of the kernel side of the link; its prefix is routed into the device.\nRepeat for more; the first use replaces the default")
	fs.Var(addrs, "addr", "the stack's own `IP` address, answered by tund. Repeat for more; the first use replaces\nthe default. One that no --tun-addr prefix covers gets a host route into the device")
	fs.IntVar(&o.tun.MTU, "mtu", tun.DefaultMTU, "link `MTU` in bytes, 1280 to 65535")
	fs.IntVar(&o.tun.Queues, "queues", 1, "number of TUN queues (`N` > 1 opens the device multi-queue)")
	offload := fs.String("offload", "auto", "TUN offloads (`auto|off`): auto asks the kernel for IFF_VNET_HDR with TSO and partial checksums\n(64 KB segments both ways) and falls back to the plain device if it refuses; off always uses the plain device")
	serve := fs.String("serve", defaultServeList, "comma-separated `services` to host, each NAME[:PORT][/OPTION...]; names: "+strings.Join(service.Names(), ", ")+
		";\nproxy:PORT=IP:PORT[/OPTION...] carries connections to PORT on to a kernel address (e.g. proxy:8080=127.0.0.1:80);\noptions: half-close=allow|close|DURATION, abort (RST instead of FIN), fin-wait2=DURATION,\nfin-ack-merge=DURATION, close-delay=DURATION (echo, discard), and the faults below\n(drop-final-ack=, drop-fin=, delay-fin=, no-fin, loss-in=, loss-out=). Example: http,echo/fin-ack-merge=0,chargen:1919/half-close=close")
	fs.DurationVar(&o.stack.MSL, "msl", stack.DefaultMSL, "maximum segment lifetime; TIME-WAIT lasts 2 x MSL. 0 disables TIME-WAIT (unsafe, see README)")
	halfClose := fs.String("half-close", "allow", "`policy`: what services do when the peer half-closes (sends FIN while tund still sends):\nallow (RFC 9293: go on until done), close (close at once), or a DURATION to stay half-open")
	twKeep := fs.String("time-wait", "compact", "how TIME-WAIT is kept (`compact|full`): compact hands each accepted connection's TIME-WAIT to a\n48-byte table entry that answers exactly as gVisor would; full keeps gVisor's ~5 KB endpoint")
	twRST := fs.String("time-wait-rst", "ignore", "`what` an RST does to a connection in TIME-WAIT: ignore (RFC 1337, gVisor) or close\n(RFC 9293 and Linux's default: TIME-WAIT ends early)")
	fs.DurationVar(&o.stack.FinWait2, "fin-wait2", stack.DefaultFinWait2, "how long a connection that tund closed waits in FIN-WAIT-2 for the peer's FIN")
	fs.DurationVar(&o.stack.FINACKMerge, "fin-ack-merge", stack.DefaultFINACKMerge, "when the peer closes first, how long the ACK of its FIN may wait to ride on tund's FIN\n(a three-way close); 0 always sends it alone (four-way). Keep it under the peer's minimum RTO (200ms on Linux)")
	fs.DurationVar(&o.stack.DelayedACK, "delayed-ack", 0, "how long the ACK of a small request may wait to ride on tund's reply (a delayed ACK, as\nLinux's); 0 acknowledges each segment at once (gVisor)")
	fs.StringVar(&o.admin, "admin", admin.DefaultAddr, "`address` of the admin HTTP server (/metrics, /conns, /closes, /settings, /proxies, /debug/pprof) on the\nnamespace's side, never the TUN's; \"off\" disables it. If the default cannot be bound (loopback down), tund goes on without it")
	tokenFile := fs.String("admin-token", "", "`file` holding a token that writes to the admin API (tund set, reset, proxy) must present\n(Authorization: Bearer TOKEN); without it anyone who reaches --admin can change settings")
	fs.IntVar(&o.stack.MaxConns, "max-conns", 0, "at most `N` connections open in services at once; beyond it a new connection is reset at once\nand counted (tund_tcp_conns_refused_total). 0: no limit")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "on SIGINT or SIGTERM, how long tund waits for its connections to close with FIN\n(services: tund's FIN after what they wrote; proxy and --dial pairs: their peers' FINs)\nbefore it resets the rest and exits")
	abort := fs.Bool("abort", false, "services end their connections with RST instead of FIN (SO_LINGER 0); per service: /abort.\nhttp always closes with FIN")
	faultFlags(fs, &o.stack.Faults)
	portRange := fs.String("port-range", "", "ephemeral ports `LO-HI` for the connections tund opens (--dial), e.g. 40000-40099;\ndefault gVisor's 16000-65535")
	twReuse := fs.String("time-wait-reuse", "off", "whether (`off|on`) a connection tund opens may take the port of one of its own TIME-WAIT\nconnections to the same peer (ending that TIME-WAIT early, like Linux's tcp_tw_reuse)")
	trace := fs.Bool("trace", true, "record every close (/closes, tund closes); false only to measure what tracing costs")
	fs.StringVar(&o.pcap, "pcap", "", "write every packet crossing the TUN device to `file` in pcap format (tcpdump -r, Wireshark)")
	dial := dialFlag(fs)
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	like := fs.String("like", "", "`linux`: close as the Linux kernel does where tund's defaults differ (tund conform, CONFORMANCE.md):\n"+likeLinuxHelp+"; a flag given on its own wins")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := applyLike(fs, *like); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	for _, v := range tunAddrs.values {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("--tun-addr %q: want an address with a prefix length, such as 198.18.0.1/24", v)
		}
		o.tun.Addrs = append(o.tun.Addrs, p)
		if tunAddrs.set && p.Addr().Is6() {
			o.explicitIPv6 = append(o.explicitIPv6, "--tun-addr "+v)
		}
	}
	for _, v := range addrs.values {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("--addr %q: want a plain IP address, such as 198.18.0.2", v)
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return nil, fmt.Errorf("--addr %v: not a unicast address the kernel can route to a device", a)
		}
		covered := false
		for _, p := range o.tun.Addrs {
			if p.Addr() == a {
				return nil, fmt.Errorf("--addr %v is also a --tun-addr: the kernel would answer for it itself", a)
			}
			covered = covered || p.Contains(a)
		}
		if !covered {
			o.tun.Routes = append(o.tun.Routes, netip.PrefixFrom(a, a.BitLen()))
		}
		o.stack.Addrs = append(o.stack.Addrs, a)
		if addrs.set && a.Is6() {
			o.explicitIPv6 = append(o.explicitIPv6, "--addr "+v)
		}
	}
	if o.drain < 0 {
		return nil, errors.New("--drain must not be negative")
	}
	var err error
	if o.stack.TimeWaitRSTCloses, err = control.ParseTimeWaitRST(*twRST); err != nil {
		return nil, fmt.Errorf("--time-wait-rst %w", err)
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-token: %w", err)
		}
		if o.adminToken = strings.TrimSpace(string(b)); o.adminToken == "" {
			return nil, fmt.Errorf("--admin-token %s: the file is empty", *tokenFile)
		}
	}
	o.stack.NoTrace = !*trace
	switch *offload {
	case "auto":
	case "off":
		o.tun.NoOffload = true
	default:
		return nil, fmt.Errorf("--offload %q: want auto or off", *offload)
	}
	if *portRange != "" {
		if o.stack.PortRange, err = parsePortRange(*portRange); err != nil {
			return nil, err
		}
	}
	switch *twKeep {
	case "compact":
	case "full":
		o.stack.FullTimeWait = true
	default:
		return nil, fmt.Errorf("--time-wait %q: want compact or full", *twKeep)
	}
	switch *twReuse {
	case "off":
	case "on":
		o.stack.TimeWaitReuse = true
	default:
		return nil, fmt.Errorf("--time-wait-reuse %q: want off or on", *twReuse)
	}
	if err := parseDials(dial, o); err != nil {
		return nil, err
	}
	if err := o.tun.Validate(); err != nil {
		return nil, fmt.Errorf("%w (see --help)", err)
	}
	defaults := service.Options{Abort: *abort, Faults: o.stack.Faults}
	if defaults.HalfClose, err = service.ParseHalfClose(*halfClose); err != nil {
		return nil, fmt.Errorf("--half-close: %w", err)
	}
	o.defaults = defaults
	if o.services, err = service.ParseList(*serve, defaults); err != nil {
		return nil, fmt.Errorf("--serve: %w", err)
	}
	if admin, err := netip.ParseAddrPort(o.admin); err == nil {
		for _, spec := range o.services {
			if err := control.CheckTarget(spec.Target, admin); spec.Name == "proxy" && err != nil {
				return nil, fmt.Errorf("--serve %s: %w", spec, err)
			}
		}
	}
	service.Configure(&o.stack, o.services)
	if err := o.stack.Validate(); err != nil {
		return nil, fmt.Errorf("--%w", err)
	}
	return o, nil
}

// faultFlags defines a flag for each close-path fault, setting it in f.
func faultFlags(fs *flag.FlagSet, f *faults.Set) {
	set := func(name string) func(string) error {
		return func(v string) error {
			_, err := f.Parse(name, v)
			return err
		}
	}
	fs.Func(faults.DropFinalACK, "drop tund's final ACK (its ACK of the peer's FIN after its own FIN), `once|P`: the first in each\nconnection, or each with probability P (0.3 or 30%). The peer retransmits its FIN; tund in TIME-WAIT ACKs again", set(faults.DropFinalACK))
	fs.Func(faults.DropFIN, "drop tund's FIN, `once|P`: the first transmission in each connection, or each with probability P;\ntund retransmits it after its RTO", set(faults.DropFIN))
	fs.Func(faults.DelayFIN, "send each of tund's FINs this `duration` late", set(faults.DelayFIN))
	fs.BoolFunc(faults.NoFIN, "tund's FINs never reach the wire: the peer sees a CLOSE-WAIT leak and waits in FIN-WAIT-2", set(faults.NoFIN))
	fs.Func(faults.LossIn, "drop each TCP segment from the kernel to tund with probability `P` (0.05 or 5%)", set(faults.LossIn))
	fs.Func(faults.LossOut, "drop each TCP segment from tund to the kernel with probability `P`", set(faults.LossOut))
}

// parsePortRange parses LO-HI, two port numbers; stack.Config.Validate
// checks that they make a range.
func parsePortRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || l == 0 || h == 0 {
		return [2]uint16{}, fmt.Errorf("--port-range %q: want LO-HI, two ports such as 40000-40099", s)
	}
	return [2]uint16{uint16(l), uint16(h)}, nil
}

// likeLinux are the flags --like linux sets: where tund's defaults differ
// from Linux's close path by choice (tund conform measures it), Linux's
// value. The others already match: TIME-WAIT lasts 2 x 30 s, as Linux's
// 60 s; the 40 ms FIN/ACK merge window lets the ACK of a peer's FIN ride
// on the application's FIN, as Linux's delayed ACK does; and Linux
// acknowledges a new connection's first segments at once (quick ACKs), as
// tund's --delayed-ack 0 does.
var likeLinux = [][2]string{
	{"time-wait-rst", "close"}, // tcp_rfc1337=0: a RST ends TIME-WAIT
}

var likeLinuxHelp = func() string {
	var parts []string
	for _, f := range likeLinux {
		parts = append(parts, "--"+f[0]+" "+f[1])
	}
	return strings.Join(parts, ", ")
}()

// applyLike sets the flags of --like VALUE that the command line did not
// set itself.
func applyLike(fs *flag.FlagSet, like string) error {
	switch like {
	case "":
		return nil
	case "linux":
	default:
		return fmt.Errorf("--like %q: the only value is linux", like)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, f := range likeLinux {
		if !given[f[0]] {
			if err := fs.Set(f[0], f[1]); err != nil {
				return fmt.Errorf("--like linux: --%s %s: %w", f[0], f[1], err)
			}
		}
	}
	return nil
}
