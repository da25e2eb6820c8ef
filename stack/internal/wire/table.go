package wire

import (
	"fmt"
	"math/bits"
	"reflect"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// table is a hash table of pointer-free keys and values kept outside the
// Go heap, in memory of its own (mmap). The collector neither scans it nor
// counts it, so it costs no heap headroom: at 100,000 TIME-WAITs the Go
// maps that held the compact table's and the tracer's entries cost more
// than twice their live size in resident memory, the heap's headroom over
// them (BENCHMARKS.md). Open addressing with linear probing and
// backward-shift deletion, no tombstones; it grows by half when it is
// four-fifths full and shrinks to half full when under a quarter full.
//
// Most lookups miss: each segment of a connection that is not in
// TIME-WAIT is looked up while others are. A byte per slot, apart from
// the slots, holds 7 bits of its key's hash (0: empty), so that a probe
// walks a dense run of those bytes and reads a slot only where they
// match, one time in 128 by chance, as Go's own maps do with theirs.
//
// A table is not safe for concurrent use.
type table[K comparable, V any] struct {
	r         *region // the memory; stable while the table lives, for the cleanup
	ctrl      []uint8 // per slot: 0 empty, else 0x80 | 7 bits of the hash
	slots     []slot[K, V]
	n         int
	hasher    func(K) uint64
	iterating bool // All runs: no shrinking under it
}

// slot is one place of the table.
type slot[K comparable, V any] struct {
	key K
	val V
}

// region is a table's memory, freed when the table is collected.
type region struct{ mem []byte }

func (r *region) free() {
	if r.mem != nil {
		mapped.Add(-int64(len(r.mem)))
		syscall.Munmap(r.mem)
		r.mem = nil
	}
}

// mapped is the memory that the tables of the process hold.
var mapped atomic.Int64

// TableBytes returns the memory that the process's flow tables (FlowMap)
// hold outside the Go heap.
func TableBytes() int64 { return mapped.Load() }

// minSlots is the least size of a table that holds anything.
const minSlots = 64

// newTable returns an empty table whose keys hash with hasher, seeded per
// table (a peer that could choose flows that collide would otherwise make
// every probe walk a long cluster).
func newTable[K comparable, V any](hasher func(K) uint64) *table[K, V] {
	var s slot[K, V]
	if hasPointers(reflect.TypeOf(s)) {
		panic(fmt.Sprintf("wire: %T holds pointers: it cannot live outside the Go heap", s))
	}
	t := &table[K, V]{r: new(region), hasher: hasher}
	runtime.AddCleanup(t, (*region).free, t.r)
	return t
}

// hasPointers reports whether values of type t hold pointers the collector
// would have to see.
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	}
	return true
}

// hash returns the slot where k's probe starts and its control byte.
func (t *table[K, V]) hash(k K) (int, uint8) {
	h := t.hasher(k)
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(hi), uint8(h)&0x7f | 0x80
}

// find returns k's slot, or the empty slot where it would go, and its
// control byte.
func (t *table[K, V]) find(k K) (int, uint8, bool) {
	if len(t.slots) == 0 {
		return -1, 0, false
	}
	i, c := t.hash(k)
	for {
		switch t.ctrl[i] {
		case 0:
			return i, c, false
		case c:
			if t.slots[i].key == k {
				return i, c, true
			}
		}
		i = t.next(i)
	}
}

func (t *table[K, V]) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

func (t *table[K, V]) get(k K) (V, bool) {
	if i, _, ok := t.find(k); ok {
		return t.slots[i].val, true
	}
	var zero V
	return zero, false
}

func (t *table[K, V]) set(k K, v V) {
	i, c, ok := t.find(k)
	if ok {
		t.slots[i].val = v
		return
	}
	if (t.n+1)*5 > len(t.slots)*4 {
		t.resize(max(minSlots, len(t.slots)*3/2))
		i, c, _ = t.find(k)
	}
	t.ctrl[i], t.slots[i] = c, slot[K, V]{key: k, val: v}
	t.n++
}

// del removes k, moving back the entries after it in its cluster that
// may take its place, so that no probe ever meets a hole it must step over.
func (t *table[K, V]) del(k K) {
	i, _, ok := t.find(k)
	if !ok {
		return
	}
	t.ctrl[i], t.slots[i] = 0, slot[K, V]{}
	t.n--
	for j := t.next(i); t.ctrl[j] != 0; j = t.next(j) {
		// The entry at j may move to the hole at i if its home is not
		// in (i, j], cyclically.
		h, _ := t.hash(t.slots[j].key)
		if i <= j && (h <= i || h > j) || i > j && h <= i && h > j {
			t.ctrl[i], t.slots[i] = t.ctrl[j], t.slots[j]
			t.ctrl[j], t.slots[j] = 0, slot[K, V]{}
			i = j
		}
	}
	if !t.iterating {
		t.maybeShrink()
	}
}

// maybeShrink gives memory back when the table is under a quarter full.
// It keeps the least size once used, even empty: a table that empties and
// fills again at every close (the tracer's ended closes, under a light
// load) would otherwise map and unmap its memory each time.
func (t *table[K, V]) maybeShrink() {
	if len(t.slots) > minSlots && t.n*4 < len(t.slots) {
		t.resize(max(minSlots, t.n*2))
	}
}

// resize moves the entries to a table of n slots (none: no memory).
func (t *table[K, V]) resize(n int) {
	oldCtrl, old, oldRegion := t.ctrl, t.slots, *t.r
	t.ctrl, t.slots, t.r.mem = nil, nil, nil
	if n > 0 {
		// The control bytes, then the slots, aligned for them.
		align := int(unsafe.Alignof(slot[K, V]{}))
		off := (n + align - 1) / align * align
		size := off + n*int(unsafe.Sizeof(slot[K, V]{}))
		mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
		if err != nil {
			panic(fmt.Sprintf("wire: mapping %d bytes for a table of %d entries: %v", size, t.n, err))
		}
		t.r.mem = mem
		mapped.Add(int64(size))
		t.ctrl = mem[:n:n]
		t.slots = unsafe.Slice((*slot[K, V])(unsafe.Pointer(&mem[off])), n)
		for i, c := range oldCtrl {
			if c != 0 {
				j, c, _ := t.find(old[i].key)
				t.ctrl[j], t.slots[j] = c, old[i]
			}
		}
	}
	oldRegion.free()
}

// all calls yield for each entry until it returns false; yield may delete
// the entry it is given, and nothing else.
func (t *table[K, V]) all(yield func(K, V) bool) bool {
	if t.n == 0 {
		return true
	}
	t.iterating = true
	defer func() {
		t.iterating = false
		t.maybeShrink()
	}()
	// Start after an empty slot: no cluster runs across the start, so an
	// entry that a deletion moves back comes from a slot not yet visited
	// into the one being visited, which is looked at again.
	start := 0
	for t.ctrl[start] != 0 {
		start++
	}
	for i, left := t.next(start), len(t.slots); left > 0; {
		if t.ctrl[i] == 0 {
			i, left = t.next(i), left-1
			continue
		}
		s := t.slots[i]
		if !yield(s.key, s.val) {
			return false
		}
		if t.ctrl[i] != 0 && t.slots[i].key != s.key {
			continue // deleted, and a later entry moved in
		}
		i, left = t.next(i), left-1
	}
	return true
}

func (t *table[K, V]) clear() {
	t.n = 0
	t.resize(0)
}
