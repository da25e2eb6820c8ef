package inline

import (
	"strings"
	"testing"
)

// TestBurstLengthDecides: EndBurst processes a short burst on the caller's
// goroutine and hands a long one to the processors.
func TestBurstLengthDecides(t *testing.T) {
	var calls []string
	e := &Endpoint{tcp: recordingTCP{&calls}}
	for _, n := range []int{1, MaxBurst, MaxBurst + 1, 64} {
		e.EndBurst(n)
	}
	want := "inline inline hand-off hand-off"
	if got := strings.Join(calls, " "); got != want {
		t.Errorf("bursts of 1, %d, %d, 64 packets: %s; want %s", MaxBurst, MaxBurst+1, got, want)
	}
	if !e.bursts.Load() {
		t.Error("after EndBurst, packets are not marked for inline processing")
	}
}

type recordingTCP struct{ calls *[]string }

func (r recordingTCP) ProcessInline() { *r.calls = append(*r.calls, "inline") }
func (r recordingTCP) HandOffInline() { *r.calls = append(*r.calls, "hand-off") }
