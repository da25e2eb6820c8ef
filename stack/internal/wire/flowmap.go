package wire

// FlowMap maps flows to small values, keeping IPv4 flows under a 12-byte
// key instead of the 38 bytes of a Flow: for a table of 100,000 TIME-WAIT
// connections the key is most of an entry's cost.
type FlowMap[V any] struct {
	m4 map[flow4]V
	m6 map[Flow]V
}

// flow4 is an IPv4 Flow, as compact as the wire has it.
type flow4 struct {
	local, remote         [4]byte
	localPort, remotePort uint16
}

// NewFlowMap returns an empty map.
func NewFlowMap[V any]() FlowMap[V] {
	return FlowMap[V]{m4: make(map[flow4]V), m6: make(map[Flow]V)}
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
		v, ok := m.m6[f]
		return v, ok
	}
	v, ok := m.m4[f.key4()]
	return v, ok
}

// Set sets the value of f.
func (m FlowMap[V]) Set(f Flow, v V) {
	if f.V6 {
		m.m6[f] = v
	} else {
		m.m4[f.key4()] = v
	}
}

// Delete forgets f.
func (m FlowMap[V]) Delete(f Flow) {
	if f.V6 {
		delete(m.m6, f)
	} else {
		delete(m.m4, f.key4())
	}
}

// Len returns how many flows the map holds.
func (m FlowMap[V]) Len() int { return len(m.m4) + len(m.m6) }

// All calls yield for each entry until it returns false; yield may delete
// the entry it is given.
func (m FlowMap[V]) All(yield func(Flow, V) bool) {
	for k, v := range m.m4 {
		if !yield(k.flow(), v) {
			return
		}
	}
	for k, v := range m.m6 {
		if !yield(k, v) {
			return
		}
	}
}

// Clear empties the map.
func (m FlowMap[V]) Clear() {
	clear(m.m4)
	clear(m.m6)
}
