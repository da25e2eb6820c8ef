package stack

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/stack/internal/wiretest"
)

// The tracer's cost, measured where it is paid: BenchmarkClose runs whole
// connections (handshake, a request, a reply, tund closes first as an HTTP
// server with Connection: close does) between tund's stack and a second
// gVisor stack over channel endpoints, with the tracer on and off;
// package closes' BenchmarkSegment and BenchmarkTraceClose time the tracer
// alone. scripts/bench-trace measures the same against kernel clients.

// BenchmarkClose reports ns, CPU ns (cpu-ns/op, all goroutines: both
// stacks, the carriers, the tracer) and allocations per complete
// connection, tracer on and off. The difference between the two is the tracer's cost per
// close (and per segment of the close); run with -count and compare.
func BenchmarkClose(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noTrace bool
	}{{"trace=on", false}, {"trace=off", true}} {
		b.Run(tc.name, func(b *testing.B) {
			tundStack, client := benchPair(b, tc.noTrace)
			ln, err := tundStack.Listen(80)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go benchServe(ln)
			to := tcpip.FullAddress{NIC: 1, Addr: stackAddr, Port: 80}
			b.ReportAllocs()
			b.SetParallelism(4) // 8 clients on 2 cores, as wrk -c keeps several open
			b.ResetTimer()
			cpu := cpuTime()
			var next atomic.Uint32
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 64)
				for pb.Next() {
					c, err := gonet.DialTCPWithBind(context.Background(), client, benchClientAddr(next.Add(1)), to, ipv4.ProtocolNumber)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Write([]byte("GET\n")); err != nil {
						b.Error(err)
					}
					for {
						if _, err := c.Read(buf); err != nil {
							if err != io.EOF {
								b.Error(err)
							}
							break
						}
					}
					c.Close()
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time the process used so far, user and system, in
// ns. Per close it is a steadier measure than the wall clock on a machine
// whose cores are shared: it does not count the time other programs ran.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchClientAddr is the client end of the i-th connection of a run, on
// its own 4-tuple (wiretest.ClientAddr).
func benchClientAddr(i uint32) tcpip.FullAddress {
	a := wiretest.ClientAddr(i)
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(a.Addr().As4()), Port: a.Port()}
}

// benchServe answers each connection as tund's http service answers a
// Connection: close request: read the request, reply, close first.
func benchServe(ln *Listener) {
	for {
		c, err := ln.AcceptConn()
		if err != nil {
			return
		}
		go func() {
			buf := make([]byte, 64)
			if _, err := c.Read(buf); err == nil {
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"))
			}
			c.Close()
		}()
	}
}

// benchPair builds tund's stack (198.18.0.2, default close-path settings)
// and a plain gVisor client stack (198.18.1.1 to .64), joined by two channel
// endpoints and a goroutine per direction that carries the packets.
func benchPair(b *testing.B, noTrace bool) (*Stack, *gstack.Stack) {
	b.Helper()
	tundLink, clientLink := channel.New(1024, 1500, ""), channel.New(1024, 1500, "")
	st, err := New(tundLink, Config{
		Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")}, MSL: DefaultMSL, FinWait2: DefaultFinWait2,
		FINACKMerge: DefaultFINACKMerge, NoTrace: noTrace,
	})
	if err != nil {
		b.Fatal(err)
	}
	client := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := client.CreateNIC(1, clientLink); err != nil {
		b.Fatal(err)
	}
	for i := range uint32(wiretest.ClientAddrs) {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: benchClientAddr(i * wiretest.ClientPorts).Addr.WithPrefix()}
		if err := client.AddProtocolAddress(1, pa, gstack.AddressProperties{}); err != nil {
			b.Fatal(err)
		}
	}
	client.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); benchCarry(ctx, tundLink, clientLink) }()
	go func() { defer wg.Done(); benchCarry(ctx, clientLink, tundLink) }()
	b.Cleanup(func() {
		cancel()
		wg.Wait()
		client.Close()
		client.Wait()
		st.Close()
	})
	return st, client
}

// benchCarry moves the packets that from's stack sends into to's stack.
func benchCarry(ctx context.Context, from, to *channel.Endpoint) {
	for {
		pkt := from.ReadContext(ctx)
		if pkt == nil {
			return
		}
		v := pkt.ToView()
		pkt.DecRef()
		in := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		to.InjectInbound(header.IPv4ProtocolNumber, in)
		in.DecRef()
	}
}
