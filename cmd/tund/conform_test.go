package main

import (
	"slices"
	"testing"
)

// TestNotForConform: conform warns of the flags it takes but does not
// apply (services and daemon), and of no stack flag.
func TestNotForConform(t *testing.T) {
	got := notForConform([]string{"--serve", "echo", "--msl=5s", "-abort", "--time-wait-rst", "close", "--pcap=x.pcap"})
	if want := []string{"serve", "abort", "pcap"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
