package tests

import (
	"testing"
)

// TestDelayedACKOnTheWire: curl's request through tund0, and what tund
// sends next. With --delayed-ack the next segment is the response, which
// acknowledges the request (one packet, as from Linux); without it, gVisor's
// bare ACK comes first.
func TestDelayedACKOnTheWire(t *testing.T) {
	for _, c := range []struct {
		name      string
		args      []string
		wantAlone bool // a bare ACK of the request before the response
	}{
		{"default", nil, true},
		{"delayed-ack=40ms", []string{"--delayed-ack", "40ms"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := newNS(t)
			startTund(t, ns, append([]string{"--serve", "http"}, c.args...)...)
			capt := capture(t, ns, "tund0", "tcp port 80")
			ns.MustRun("curl", "-sS", "-o", "/dev/null", "-m", "5", "http://"+stackV4+"/")
			segs := capt.Stop()
			req := -1
			for i, s := range segs {
				if s.Dst.Port() == 80 && s.Len > 0 {
					req = i
					break
				}
			}
			if req < 0 {
				t.Fatalf("no request on tund0: %v", segs)
			}
			reqEnd := segs[req].Seq + uint32(segs[req].Len)
			for _, s := range segs[req+1:] {
				if s.Src.Port() != 80 {
					continue
				}
				if s.Ack != reqEnd {
					t.Fatalf("tund's first segment after the request %v acknowledges %d, want %d: %v", segs[req], s.Ack, reqEnd, s)
				}
				switch {
				case c.wantAlone && !s.PureACK():
					t.Errorf("without --delayed-ack, want gVisor's bare ACK before the response, got %v", s)
				case !c.wantAlone && s.Len == 0:
					t.Errorf("with --delayed-ack, want the response carrying the ACK of the request, got a bare ACK %v", s)
				}
				return
			}
			t.Fatalf("tund sent nothing after the request: %v", segs)
		})
	}
}
