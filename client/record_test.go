package client_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/tund/tund/client"
	"github.com/tund/tund/stack/closes"
)

// TestCloseMatchesRecord checks that client.Close decodes every field of
// the record tund encodes (closes.Record), so that the two cannot drift
// apart: a field added to one and not the other fails here. It is an
// external test so that the client package itself still imports only the
// standard library.
func TestCloseMatchesRecord(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	rec := closes.Record{
		ID: 9, Local: netip.MustParseAddrPort("[2001:2::2]:7"), Remote: netip.MustParseAddrPort("[2001:2::1]:40000"),
		Initiator: closes.SideBoth, Kind: closes.KindFinWait2Timeout, ResetBy: closes.SideTund,
		FINRetransmits: 2, ACKRetransmits: 3, FinalACKLost: true, Start: t0, End: t0.Add(time.Second),
		Segments: []closes.Segment{{At: t0, From: closes.SideTund, Flags: "FA", Seq: 1, Ack: 2, Len: 3,
			TundState: "FIN-WAIT-1", PeerState: "CLOSE-WAIT", Fault: "drop-fin"}},
		Truncated: true,
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var c client.Close
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	back, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var x, y any
	json.Unmarshal(b, &x)
	json.Unmarshal(back, &y)
	if !reflect.DeepEqual(x, y) {
		t.Errorf("tund encodes\n%s\nthe client re-encodes\n%s", b, back)
	}
	for _, k := range [][2]string{
		{client.KindFourWay, closes.KindFourWay}, {client.KindThreeWay, closes.KindThreeWay},
		{client.KindSimultaneous, closes.KindSimultaneous}, {client.KindReset, closes.KindReset},
		{client.KindFinWait2Timeout, closes.KindFinWait2Timeout}, {client.KindRetransmitLimit, closes.KindRetransmitLimit},
		{client.KindHalfClosePolicy, closes.KindHalfClosePolicy}, {client.KindUnfinished, closes.KindUnfinished},
		{client.SideTund, closes.SideTund}, {client.SidePeer, closes.SidePeer}, {client.SideBoth, closes.SideBoth},
	} {
		if k[0] != k[1] {
			t.Errorf("client says %q, tund %q", k[0], k[1])
		}
	}
}
