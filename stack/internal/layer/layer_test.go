package layer_test

import (
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
	"github.com/tund/tund/stack/internal/wiretest"
)

// rule drops the peer's RSTs and takes tund's FINs; it watches only while
// on is set, and counts what it saw and how often it was stopped.
type rule struct {
	on       bool
	in, out  int
	stops    int
	keptFINs []*stack.PacketBuffer
}

func (r *rule) Watching(layer.Direction) bool { return r.on }

func (r *rule) Inbound(f wire.Fields, hdr []byte) bool {
	r.in++
	if len(hdr) == 0 || len(hdr) > wire.MaxPeek {
		panic("Inbound without the packet's first bytes")
	}
	return f.Flags&header.TCPFlagRst == 0
}

func (r *rule) Outbound(f wire.Fields, pkt *stack.PacketBuffer) bool {
	r.out++
	if f.Flags&header.TCPFlagFin == 0 {
		return false
	}
	r.keptFINs = append(r.keptFINs, pkt.IncRef())
	return true
}

func (r *rule) Stop() { r.stops++ }

type layerUnderTest struct{ layer.Layer }

// dispatcher counts what the layer passes up.
type dispatcher struct{ delivered int }

func (d *dispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.delivered++
}
func (d *dispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// outbound builds a segment as the stack hands it to the link: headers in
// their own views.
func outbound(flags header.TCPFlags) *stack.PacketBuffer {
	b := wiretest.BuildSegment(wiretest.Stack4, wiretest.Peer4, flags, 1, 2, 0)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: len(b)})
	copy(pkt.TransportHeader().Push(header.TCPMinimumSize), b[header.IPv4MinimumSize:])
	copy(pkt.NetworkHeader().Push(header.IPv4MinimumSize), b[:header.IPv4MinimumSize])
	pkt.NetworkProtocolNumber, pkt.TransportProtocolNumber = header.IPv4ProtocolNumber, header.TCPProtocolNumber
	return pkt
}

func TestLayer(t *testing.T) {
	ch := channel.New(8, 1500, "")
	r := &rule{on: true}
	var l layerUnderTest
	l.Init(ch, r)
	up := &dispatcher{}
	l.Attach(up)

	// In: the RST is dropped, the ACK goes up.
	for _, flags := range []header.TCPFlags{header.TCPFlagRst, header.TCPFlagAck} {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(wiretest.BuildSegment(wiretest.Peer4, wiretest.Stack4, flags, 1, 2, 0))})
		ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	if r.in != 2 || up.delivered != 1 {
		t.Errorf("inbound: the rule saw %d segments and %d went up; want 2 and 1 (the RST dropped)", r.in, up.delivered)
	}

	// Out: of ACK, FIN, ACK the FIN is taken, the ACKs written in order,
	// and all three reported written.
	var pkts stack.PacketBufferList
	for _, flags := range []header.TCPFlags{header.TCPFlagAck, header.TCPFlagFin | header.TCPFlagAck, header.TCPFlagAck | header.TCPFlagPsh} {
		pkts.PushBack(outbound(flags))
	}
	n, err := l.WritePackets(pkts)
	pkts.Reset()
	if n != 3 || err != nil {
		t.Fatalf("WritePackets = %d, %v; want 3, nil", n, err)
	}
	var written []string
	for ch.NumQueued() > 0 {
		pkt := ch.Read()
		written = append(written, header.TCP(pkt.TransportHeader().Slice()).Flags().String())
		pkt.DecRef()
	}
	if len(written) != 2 || len(r.keptFINs) != 1 {
		t.Fatalf("written %v, kept %d FINs; want the two ACKs written and the FIN kept", written, len(r.keptFINs))
	}
	// What the rule kept, it writes later.
	l.WriteOne(r.keptFINs[0])
	if ch.NumQueued() != 1 {
		t.Errorf("WriteOne wrote %d packets, want 1", ch.NumQueued())
	}
	ch.Drain()

	// Not watching: packets pass untouched, and the rule sees none.
	r.on = false
	pkts.PushBack(outbound(header.TCPFlagFin | header.TCPFlagAck))
	l.WritePackets(pkts)
	pkts.Reset()
	if r.out != 3 || ch.NumQueued() != 1 {
		t.Errorf("not watching: the rule saw %d segments (want 3, none new), %d written (want 1)", r.out, ch.NumQueued())
	}
	ch.Drain()

	// The rule is stopped once, when the stack detaches or the link closes.
	l.Attach(nil)
	l.Close()
	if r.stops != 1 {
		t.Errorf("stopped %d times, want once", r.stops)
	}
}

// finRule is a rule that asks to see only the FINs it sends.
type finRule struct{ rule }

func (*finRule) OutboundFlags() header.TCPFlags { return header.TCPFlagFin }

// TestLayerOutboundFilter: a rule that names the flags it needs is shown
// only the segments with one of them; the others are written untouched.
func TestLayerOutboundFilter(t *testing.T) {
	ch := channel.New(8, 1500, "")
	r := &finRule{rule{on: true}}
	var l layerUnderTest
	l.Init(ch, r)
	var pkts stack.PacketBufferList
	for _, flags := range []header.TCPFlags{header.TCPFlagAck, header.TCPFlagFin | header.TCPFlagAck, header.TCPFlagRst} {
		pkts.PushBack(outbound(flags))
	}
	if n, err := l.WritePackets(pkts); n != 3 || err != nil {
		t.Fatalf("WritePackets = %d, %v; want 3, nil", n, err)
	}
	pkts.Reset()
	if r.out != 1 || len(r.keptFINs) != 1 || ch.NumQueued() != 2 {
		t.Errorf("the rule saw %d segments and kept %d, %d written; want the FIN alone seen and kept, 2 written", r.out, len(r.keptFINs), ch.NumQueued())
	}
	for _, p := range r.keptFINs {
		p.DecRef()
	}
	ch.Drain()
}
