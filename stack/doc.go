// Package stack builds the gVisor TCP/IP stack that answers for tund's
// addresses, with the close path that tund shapes and records, and hands
// out its connections (Listener, Conn, DialTCP).
//
// # The chain
//
// The stack reaches the TUN device through a chain of link endpoints, each
// nested over the next as gVisor's own are (pkg/tcpip/link/nested). The
// close-path layers share one skeleton (internal/layer): each is a rule that
// sees the TCP segments crossing it. From the device up:
//
//	TUN device (package tun)
//	  link/inline     processes a burst's segments on the reading goroutine
//	  pcap            --pcap: the packets as the wire carries them (gVisor's sniffer)
//	  closes.Tracer   records every close as the wire sees it; applies --loss-in
//	  link/faults     drops or delays tund's segments (idle while no fault is set)
//	  link/timewait   the compact TIME-WAIT table (unless --time-wait full; idle with --msl 0)
//	  link/merge      holds the ACK of a peer's FIN to ride on tund's FIN
//	gVisor's network and TCP layers (with tund's patches, third_party/gvisor-patches)
//
// The order is what makes the records true: the tracer sits beneath every
// layer that changes what is sent, so it records what the wire carries, and
// it applies --loss-in beneath itself, so a segment lost on the way in is
// recorded as crossing the wire and never reaching the stack. The faults
// act beneath the merge and the TIME-WAIT table, so what those send is
// faulted like the stack's own segments.
//
// Every layer is in the chain from the start, so that Stack.Tune can
// change the close-path settings while tund runs: each layer reads the
// settings in force from an atomic pointer or value, per segment.
//
// # Packages
//
//   - closes: the close records (Record, Segment), the tracer that builds
//     them, the log that keeps them, and the counters behind /metrics.
//   - link/merge, link/faults, link/timewait, link/inline: the layers.
//   - tcpstate: the RFC 9293 state names, once.
//   - internal/wire: the segment parser and per-connection tables the
//     layers share; internal/layer: their skeleton.
package stack
