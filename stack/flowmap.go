package stack

// flowMap maps flows to small values, keeping IPv4 flows under a 12-byte
// key instead of the 38 bytes of a flow: for a table of 100,000 TIME-WAIT
// connections the key is most of an entry's cost.
type flowMap[V any] struct {
	v4 map[flow4]V
	v6 map[flow]V
}

// flow4 is an IPv4 flow, as compact as the wire has it.
type flow4 struct {
	local, remote         [4]byte
	localPort, remotePort uint16
}

func newFlowMap[V any]() flowMap[V] {
	return flowMap[V]{v4: make(map[flow4]V), v6: make(map[flow]V)}
}

func (f flow) key4() flow4 {
	return flow4{[4]byte(f.local[:4]), [4]byte(f.remote[:4]), f.localPort, f.remotePort}
}

func (k flow4) flow() flow {
	f := flow{localPort: k.localPort, remotePort: k.remotePort}
	copy(f.local[:4], k.local[:])
	copy(f.remote[:4], k.remote[:])
	return f
}

func (m flowMap[V]) get(f flow) (V, bool) {
	if f.v6 {
		v, ok := m.v6[f]
		return v, ok
	}
	v, ok := m.v4[f.key4()]
	return v, ok
}

func (m flowMap[V]) set(f flow, v V) {
	if f.v6 {
		m.v6[f] = v
	} else {
		m.v4[f.key4()] = v
	}
}

func (m flowMap[V]) delete(f flow) {
	if f.v6 {
		delete(m.v6, f)
	} else {
		delete(m.v4, f.key4())
	}
}

func (m flowMap[V]) len() int { return len(m.v4) + len(m.v6) }

// all calls yield for each entry until it returns false; yield may delete
// the entry it is given.
func (m flowMap[V]) all(yield func(flow, V) bool) {
	for k, v := range m.v4 {
		if !yield(k.flow(), v) {
			return
		}
	}
	for k, v := range m.v6 {
		if !yield(k, v) {
			return
		}
	}
}

func (m flowMap[V]) clear() {
	clear(m.v4)
	clear(m.v6)
}
