package wire

import (
	"math/rand/v2"
	"testing"
)

// value is a pointer-free value of the size of the tables' entries.
type value struct {
	a, b uint64
	c    uint32
}

// flowOf makes one of a few thousand flows, IPv4 or IPv6, so that random
// operations meet the same flows again and the tables' clusters grow.
func flowOf(n uint32) Flow {
	f := Flow{LocalPort: 80, RemotePort: uint16(1024 + n%3000), V6: n%5 == 0}
	f.Local[0], f.Remote[0] = 198, 198
	f.Remote[3] = byte(n / 3000)
	return f
}

// play applies ops (op, flow, value) to a FlowMap and to a Go map, and
// fails at the first difference; an All deletes what its callback is told
// to.
func play(t *testing.T, ops []uint32) {
	t.Helper()
	m, want := NewFlowMap[value](), map[Flow]value{}
	for i := 0; i+2 < len(ops); i += 3 {
		f, v := flowOf(ops[i+1]), value{a: uint64(ops[i+2]), c: ops[i+1]}
		switch ops[i] % 8 {
		case 0, 1, 2:
			m.Set(f, v)
			want[f] = v
		case 3, 4:
			m.Delete(f)
			delete(want, f)
		case 5, 6:
			got, ok := m.Get(f)
			if w, wok := want[f]; ok != wok || got != w {
				t.Fatalf("op %d: Get(%v) = %v %v, want %v %v", i/3, f, got, ok, w, wok)
			}
		case 7:
			// Visit all, deleting those the value picks: each entry once.
			seen := map[Flow]bool{}
			m.All(func(f Flow, v value) bool {
				if seen[f] {
					t.Fatalf("op %d: All visited %v twice", i/3, f)
				}
				seen[f] = true
				if w, ok := want[f]; !ok || w != v {
					t.Fatalf("op %d: All gave %v = %v, want %v %v", i/3, f, v, w, ok)
				}
				if (v.a+uint64(ops[i+2]))%3 == 0 {
					m.Delete(f)
					delete(want, f)
				}
				return true
			})
			for f := range want {
				if !seen[f] {
					t.Fatalf("op %d: All missed %v", i/3, f)
				}
			}
		}
		if m.Len() != len(want) {
			t.Fatalf("op %d: Len %d, want %d", i/3, m.Len(), len(want))
		}
	}
	for f, w := range want {
		if got, ok := m.Get(f); !ok || got != w {
			t.Fatalf("at the end: Get(%v) = %v %v, want %v", f, got, ok, w)
		}
	}
	m.Clear()
	if m.Len() != 0 {
		t.Fatalf("Len %d after Clear", m.Len())
	}
}

func TestFlowMapAgainstMap(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 1))
		ops := make([]uint32, 3*50000)
		for i := range ops {
			ops[i] = r.Uint32()
		}
		// Some runs fill up before they empty out, to cross the grow and
		// shrink bounds both ways.
		if seed%2 == 0 {
			for i := 0; i < len(ops)/2; i += 3 {
				ops[i] = 0
			}
			for i := len(ops) / 2; i < len(ops); i += 3 {
				ops[i] = 3
			}
		}
		play(t, ops)
	}
}

func FuzzFlowMap(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 3, 4, 7, 1, 0, 3, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ops := make([]uint32, len(b))
		for i, c := range b {
			ops[i] = uint32(c)
		}
		play(t, ops)
	})
}

func TestFlowMapRefusesPointers(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewFlowMap took a value that holds a pointer")
		}
	}()
	NewFlowMap[struct{ p *int }]()
}

// BenchmarkFlowMapGet looks up IPv4 flows in a table of 100,000, as the
// TIME-WAIT table and the tracer do for each segment while they hold
// entries; BenchmarkGoMapGet does the same in the Go map that FlowMap
// replaced, for comparison in the same run.
func BenchmarkFlowMapGet(b *testing.B) {
	m := NewFlowMap[value]()
	flows := benchFlows()
	for i, f := range flows {
		m.Set(f, value{a: uint64(i)})
	}
	b.ResetTimer()
	for i := range b.N {
		if _, ok := m.Get(flows[i%len(flows)]); !ok {
			b.Fatal("missing")
		}
	}
}

func BenchmarkGoMapGet(b *testing.B) {
	m := map[flow4]value{}
	flows := benchFlows()
	for i, f := range flows {
		m[f.key4()] = value{a: uint64(i)}
	}
	b.ResetTimer()
	for i := range b.N {
		if _, ok := m[flows[i%len(flows)].key4()]; !ok {
			b.Fatal("missing")
		}
	}
}

func benchFlows() []Flow {
	flows := make([]Flow, 100000)
	for i := range flows {
		f := Flow{LocalPort: 13, RemotePort: uint16(2000 + i/25000)}
		f.Local = [16]byte{198, 18, 0, 2}
		f.Remote = [16]byte{198, 18, byte(i >> 8), byte(i)}
		flows[i] = f
	}
	rand.Shuffle(len(flows), func(i, j int) { flows[i], flows[j] = flows[j], flows[i] })
	return flows
}

// BenchmarkFlowMapMiss looks up flows that the table of 100,000 does not
// hold, the common case (each segment of a connection not in TIME-WAIT);
// BenchmarkGoMapMiss is the Go map's.
func BenchmarkFlowMapMiss(b *testing.B) {
	m := NewFlowMap[value]()
	flows := benchFlows()
	for i, f := range flows {
		m.Set(f, value{a: uint64(i)})
	}
	misses := missFlows()
	b.ResetTimer()
	for i := range b.N {
		if _, ok := m.Get(misses[i%len(misses)]); ok {
			b.Fatal("found")
		}
	}
}

func BenchmarkGoMapMiss(b *testing.B) {
	m := map[flow4]value{}
	for i, f := range benchFlows() {
		m[f.key4()] = value{a: uint64(i)}
	}
	misses := missFlows()
	b.ResetTimer()
	for i := range b.N {
		if _, ok := m[misses[i%len(misses)].key4()]; ok {
			b.Fatal("found")
		}
	}
}

func missFlows() []Flow {
	flows := benchFlows()
	for i := range flows {
		flows[i].LocalPort = 80
	}
	return flows
}
