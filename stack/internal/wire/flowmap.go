package wire

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
)

// FlowMap maps flows to small values, keeping IPv4 flows under a 12-byte
// key instead of the 38 bytes of a Flow: for a table of 100,000 TIME-WAIT
// connections the key is most of an entry's cost.
//
// Its entries live outside the Go heap (see table): V must hold no
// pointers, which NewFlowMap checks.
type FlowMap[V any] struct {
	m4 *table[flow4, V]
	m6 *table[Flow, V]
}

// flow4 is an IPv4 Flow, as compact as the wire has it.
type flow4 struct {
	local, remote         [4]byte
	localPort, remotePort uint16
}

// NewFlowMap returns an empty map.
func NewFlowMap[V any]() FlowMap[V] {
	seed := maphash.MakeSeed()
	s4 := [2]uint64{maphash.Comparable(seed, 4), maphash.Comparable(seed, 6)}
	return FlowMap[V]{
		m4: newTable[flow4, V](func(k flow4) uint64 { return k.hash(s4) }),
		m6: newTable[Flow, V](func(f Flow) uint64 { return maphash.Comparable(seed, f) }),
	}
}

// hash mixes the 12 bytes of an IPv4 flow with a random seed, as
// wyhash does (its 64 x 64 -> 128-bit multiply folded): a few
// nanoseconds, where maphash.Comparable of the struct costs more than the
// probe it leads to.
func (k flow4) hash(seed [2]uint64) uint64 {
	a := uint64(binary.LittleEndian.Uint32(k.local[:]))<<32 | uint64(binary.LittleEndian.Uint32(k.remote[:]))
	b := uint64(k.localPort)<<16 | uint64(k.remotePort)
	hi, lo := bits.Mul64(a^seed[0]^0xa0761d6478bd642f, b^seed[1]^0xe7037ed1a0b428db)
	hi, lo = bits.Mul64(hi^lo^0x8ebc6af09c88c6e3, 0x589965cc75374cc3^seed[0])
	return hi ^ lo
}

func (f Flow) key4() flow4 {
	return flow4{[4]byte(f.Local[:4]), [4]byte(f.Remote[:4]), f.LocalPort, f.RemotePort}
}

func (k flow4) flow() Flow {
	f := Flow{LocalPort: k.localPort, RemotePort: k.remotePort}
	copy(f.Local[:4], k.local[:])
	copy(f.Remote[:4], k.remote[:])
	return f
}

// Get returns the value of f.
func (m FlowMap[V]) Get(f Flow) (V, bool) {
	if f.V6 {
		return m.m6.get(f)
	}
	return m.m4.get(f.key4())
}

// Set sets the value of f.
func (m FlowMap[V]) Set(f Flow, v V) {
	if f.V6 {
		m.m6.set(f, v)
	} else {
		m.m4.set(f.key4(), v)
	}
}

// Delete forgets f.
func (m FlowMap[V]) Delete(f Flow) {
	if f.V6 {
		m.m6.del(f)
	} else {
		m.m4.del(f.key4())
	}
}

// Len returns how many flows the map holds.
func (m FlowMap[V]) Len() int { return m.m4.n + m.m6.n }

// All calls yield for each entry until it returns false; yield may delete
// the entry it is given, and must change nothing else.
func (m FlowMap[V]) All(yield func(Flow, V) bool) {
	if !m.m4.all(func(k flow4, v V) bool { return yield(k.flow(), v) }) {
		return
	}
	m.m6.all(yield)
}

// Clear empties the map.
func (m FlowMap[V]) Clear() {
	m.m4.clear()
	m.m6.clear()
}
