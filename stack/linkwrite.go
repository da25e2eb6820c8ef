package stack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The link endpoints of the close path (merge, faults, compact TIME-WAIT)
// each keep some of the packets the stack writes (hold, drop, delay) and
// pass the rest on; these write what they pass.

// writeKept writes to link the packets of pkts whose taken entry is false,
// and reports every packet as written: a taken one is the caller's now.
func writeKept(link stack.LinkEndpoint, pkts stack.PacketBufferList, taken []bool) (int, tcpip.Error) {
	var rest stack.PacketBufferList
	for i, pkt := range pkts.AsSlice() {
		if !taken[i] {
			rest.PushBack(pkt.IncRef())
		}
	}
	defer rest.Reset()
	n := pkts.Len() - rest.Len()
	if rest.Len() == 0 {
		return n, nil
	}
	m, err := link.WritePackets(rest)
	return n + m, err
}

// writeOne writes one packet to link, taking the caller's reference.
func writeOne(link stack.LinkEndpoint, pkt *stack.PacketBuffer) {
	var l stack.PacketBufferList
	l.PushBack(pkt)
	link.WritePackets(l)
	l.Reset()
}
