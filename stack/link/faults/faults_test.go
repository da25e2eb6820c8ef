package faults

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/stack/internal/layer"
	"github.com/tund/tund/stack/internal/wire"
)

func TestFaultLoss(t *testing.T) {
	// The handshake could not pass a certain loss: the decisions are
	// tested on their own.
	def, ports, stats := Set{LossIn: 1}, map[uint16]Set{8: {LossOut: 1}}, new(Stats)
	table := NewTable(def, ports)
	e := New(channel.New(1, 1500, ""), table, nil, NewInboundLoss(table, stats), stats)
	f := wire.Fields{Flow: wire.Flow{LocalPort: 7}, Flags: header.TCPFlagAck}
	if !e.Watching(layer.In) {
		t.Fatal("loss-in is set, but the layer does not watch the peer's segments")
	}
	if e.Inbound(f, nil) {
		t.Error("loss-in 1 delivered a segment")
	}
	if v, _ := e.verdict(f); v != pass {
		t.Error("loss-out 0 on port 7 dropped a segment")
	}
	f.Flow.LocalPort = 8
	if !e.Inbound(f, nil) {
		t.Error("loss-in 0 on port 8 dropped a segment")
	}
	if v, fault := e.verdict(f); v != drop || fault != LossOut {
		t.Errorf("loss-out 1 on port 8: %v %q, want a drop by loss-out", v, fault)
	}
	if n := e.Stats().Count(LossIn); n != 1 {
		t.Errorf("loss-in struck %d times, want 1", n)
	}

	// Cleared while the layer runs: it watches nothing, and drops nothing.
	table.Set(Set{}, nil)
	if e.Watching(layer.In) || e.Watching(layer.Out) {
		t.Error("no fault is set, but the layer still watches segments")
	}
	if !e.Inbound(f, nil) {
		t.Error("loss-in cleared, but a segment was dropped")
	}
	// Set again, for one port only.
	table.Set(Set{}, map[uint16]Set{8: {LossIn: 1}})
	if !e.Watching(layer.In) || e.Inbound(f, nil) {
		t.Error("loss-in 1 set on port 8 while the layer runs: a segment was delivered")
	}
}

func TestSetParse(t *testing.T) {
	for _, c := range []struct {
		key, value string
		want       Set
		bad        bool
	}{
		{key: "drop-final-ack", value: "once", want: Set{DropFinalACK: Chance{Once: true}}},
		{key: "drop-fin", value: "30%", want: Set{DropFIN: Chance{P: 0.3}}},
		{key: "drop-fin", value: "0", want: Set{}},
		{key: "drop-fin", value: "off", want: Set{}},
		{key: "drop-fin", value: "1.5", bad: true},
		{key: "delay-fin", value: "250ms", want: Set{DelayFIN: 250 * time.Millisecond}},
		{key: "delay-fin", value: "-1s", bad: true},
		{key: "no-fin", value: "", want: Set{NoFIN: true}},
		{key: "no-fin", value: "x", bad: true},
		{key: "loss-in", value: "0.05", want: Set{LossIn: 0.05}},
		{key: "loss-out", value: "5%", want: Set{LossOut: 0.05}},
		{key: "loss-out", value: "NaN", bad: true},
	} {
		var f Set
		known, err := f.Parse(c.key, c.value)
		if !known || (err != nil) != c.bad || (!c.bad && f != c.want) {
			t.Errorf("Parse(%q, %q) = %v, %v, %+v; want known, bad=%v, %+v", c.key, c.value, known, err, f, c.bad, c.want)
		}
	}
	var f Set
	if known, _ := f.Parse("nope", "1"); known {
		t.Error("Parse knew an unknown fault")
	}
	f = Set{DropFinalACK: Chance{Once: true}, LossIn: 0.5, NoFIN: true}
	if got := f.String(); got != "drop-final-ack=once/no-fin/loss-in=0.5" {
		t.Errorf("String() = %q", got)
	}
}
