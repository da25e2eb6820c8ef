package conform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tund/tund/internal/netns"
	"github.com/tund/tund/internal/rawpeer"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/tun"
)

// The addresses of a run. The peer's are on the devices' subnets but not
// owned by any kernel, so that only the side under test answers them.
var (
	tundAddr    = netip.MustParseAddr("198.18.0.2")  // tund's stack, behind tund0
	tundPeer    = netip.MustParseAddr("198.18.0.77") // the peer, written into tund0
	linuxAddr   = netip.MustParseAddr("198.18.1.2")  // the Linux namespace's veth end
	linuxPeer   = netip.MustParseAddr("198.18.1.77") // the peer, written into the other end
	linuxPrefix = "198.18.1.2/24"
)

// FINWait2 is both sides' FIN-WAIT-2 timeout for a run (Linux's
// tcp_fin_timeout, tund's --fin-wait2): short, so that the case that
// waits it out takes seconds, not a minute.
const FINWait2 = 2 * time.Second

// target is one side under test: where the peer's packets go and the
// servers that answer them.
type target struct {
	Name   string // "linux", "tund", "tund --like linux"
	ns     *netns.NS
	dev    string
	mac    net.HardwareAddr // the other end's link address (veth), nil on a TUN
	addr   netip.Addr       // the server's address
	peer   netip.Addr       // the peer's
	listen func(port uint16) (net.Listener, error)
	close  func()
}

// open returns a peer for the case's port on t; peerPort is the peer's.
func (t *target) open(port, peerPort uint16) (*rawpeer.Peer, error) {
	return rawpeer.Open(t.ns, t.dev, t.mac, netip.AddrPortFrom(t.peer, peerPort), netip.AddrPortFrom(t.addr, port))
}

// serve runs each case's application on its port of t.
func (t *target) serve(ctx context.Context, cases []*Case) error {
	for _, c := range cases {
		ln, err := t.listen(c.Port)
		if err != nil {
			return fmt.Errorf("%s: listening on port %d: %w", t.Name, c.Port, err)
		}
		context.AfterFunc(ctx, func() { ln.Close() })
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				// A case that fails before its peer's FIN leaves a server
				// reading: the end of the run closes its connection.
				stop := context.AfterFunc(ctx, func() { nc.Close() })
				go func() {
					defer stop()
					c.Server(asConn(nc))
				}()
			}
		}()
	}
	return nil
}

// linuxTarget makes a namespace for the Linux kernel under test, and one
// for the peer with a veth pair between them. The kernel answers the
// peer's address at the peer's end of the veth (a permanent neighbour
// entry), so that no ARP is needed; the peer's end has no address, so its
// namespace drops what the kernel sends there.
func linuxTarget() (*target, error) {
	ns, err := netns.New("tund-conf-p")
	if err != nil {
		return nil, err
	}
	lns, err := netns.New("tund-conf-l")
	if err != nil {
		ns.Remove()
		return nil, err
	}
	t := &target{Name: "linux", ns: ns, addr: linuxAddr, peer: linuxPeer}
	t.close = func() { lns.Remove(); ns.Remove() }
	// The pair is made in the peer's namespace, both new: names need be
	// unique in them only.
	const peerEnd, linuxEnd = "conform-peer", "conform-linux"
	steps := [][]string{
		{"ip", "link", "add", peerEnd, "type", "veth", "peer", "name", linuxEnd, "netns", lns.Name},
		{"ip", "link", "set", peerEnd, "up"},
	}
	ctx := context.Background()
	for _, s := range steps {
		if _, err := ns.Run(ctx, s[0], s[1:]...); err != nil {
			t.close()
			return nil, err
		}
	}
	var peerMAC string
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(peerEnd)
		if err == nil {
			peerMAC = ifi.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.close()
		return nil, err
	}
	for _, s := range [][]string{
		{"ip", "addr", "add", linuxPrefix, "dev", linuxEnd},
		{"ip", "link", "set", linuxEnd, "up"},
		{"ip", "neigh", "replace", linuxPeer.String(), "lladdr", peerMAC, "dev", linuxEnd, "nud", "permanent"},
		{"sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=" + strconv.Itoa(int(FINWait2/time.Second))},
	} {
		if _, err := lns.Run(ctx, s[0], s[1:]...); err != nil {
			t.close()
			return nil, err
		}
	}
	if err := lns.Do(func() error {
		ifi, err := net.InterfaceByName(linuxEnd)
		if err == nil {
			t.mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.close()
		return nil, err
	}
	t.dev = peerEnd
	t.listen = func(port uint16) (net.Listener, error) {
		var ln net.Listener
		err := lns.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(linuxAddr, port).String())
			return err
		})
		return ln, err
	}
	return t, nil
}

// TundConfig is how tund is made for a run: its device and its stack, as
// tund's flags set them.
type TundConfig struct {
	Name  string // how the report names it
	Tun   tun.Config
	Stack stack.Config
}

// tundTarget runs tund's stack on a TUN device in a namespace of its own,
// in this process, with the FIN-WAIT-2 timeout of the run.
func tundTarget(c TundConfig) (*target, error) {
	ns, err := netns.New("tund-conf-t")
	if err != nil {
		return nil, err
	}
	var dev *tun.Device
	if err := ns.Do(func() error {
		var err error
		dev, err = tun.Open(c.Tun)
		return err
	}); err != nil {
		ns.Remove()
		return nil, fmt.Errorf("%s: %w", c.Name, err)
	}
	fail := func(err error) (*target, error) {
		dev.Close()
		ns.Remove()
		return nil, fmt.Errorf("%s: %w", c.Name, err)
	}
	link, err := dev.LinkEndpoint()
	if err != nil {
		return fail(err)
	}
	c.Stack.FinWait2 = FINWait2
	st, err := stack.New(link, c.Stack)
	if err != nil {
		return fail(err)
	}
	if !slices.Contains(st.Addrs(), tundAddr) {
		st.Close()
		return fail(errors.New("the stack does not hold " + tundAddr.String() + " (conform needs tund's default addresses)"))
	}
	var once sync.Once
	t := &target{Name: c.Name, ns: ns, dev: dev.Name(), addr: tundAddr, peer: tundPeer}
	t.close = func() {
		once.Do(func() {
			st.Close()
			dev.Close()
			ns.Remove()
		})
	}
	t.listen = func(port uint16) (net.Listener, error) { return st.Listen(port) }
	return t, nil
}
