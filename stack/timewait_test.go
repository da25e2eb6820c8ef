package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tund/tund/internal/tcpflag"
	"github.com/tund/tund/stack/internal/wire"
)

// timeWaitPeer connects with c, closes from tund's side and completes the
// close from the peer: tund is then in TIME-WAIT. It returns the peer and
// tund's FIN.
func timeWaitPeer(t *testing.T, c Config) (*peer, wire.Fields) {
	t.Helper()
	p := connectConfig(t, c)
	p.conn.Close()
	fin := p.next(time.Second)
	p.send(header.TCPFlagAck, peerISS+1, fin.Seq+1)
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	if ack := p.next(time.Second); ack.Flags != header.TCPFlagAck || ack.Ack != peerISS+2 {
		t.Fatalf("final ACK: got %s ack=%d, want ACK ack=%d", tcpflag.String(uint8(ack.Flags)), ack.Ack, peerISS+2)
	}
	return p, fin
}

// gvisorTimeWaits counts gVisor's own endpoints in TIME-WAIT.
func gvisorTimeWaits(s *Stack) int {
	n := 0
	for _, ep := range s.endpoints() {
		if ep.EndpointState() == tcp.StateTimeWait {
			n++
		}
	}
	return n
}

// awaitCount polls f until it returns want, for up to 2 s: the handoff
// happens on the stack's processor, after the final ACK left.
func awaitCount(t *testing.T, what string, want int, f func() int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for f() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, f(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCompactTimeWait(t *testing.T) {
	p, fin := timeWaitPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	awaitCount(t, "compact TIME-WAITs", 1, p.st.tw.Len)
	if n := gvisorTimeWaits(p.st); n != 0 {
		t.Errorf("gVisor still holds %d endpoints in TIME-WAIT", n)
	}
	if n := p.st.StateCounts()["TIME-WAIT"]; n != 1 {
		t.Errorf("StateCounts TIME-WAIT = %d, want 1", n)
	}
	conns := p.st.Conns()
	found := false
	for _, c := range conns {
		found = found || c.State == "TIME-WAIT" && c.Remote.Port() == peerPort
	}
	if !found {
		t.Errorf("Conns lists no TIME-WAIT for the peer: %+v", conns)
	}

	// The peer's FIN again: ACKed again, exactly as the first time.
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	if ack := p.next(time.Second); ack.Flags != header.TCPFlagAck || ack.Seq != fin.Seq+1 || ack.Ack != peerISS+2 {
		t.Fatalf("replayed FIN: got %s seq=%d ack=%d, want ACK seq=%d ack=%d", tcpflag.String(uint8(ack.Flags)), ack.Seq, ack.Ack, fin.Seq+1, peerISS+2)
	}
	// Data, or a segment out of sequence: ACKed, TIME-WAIT not restarted.
	p.send(header.TCPFlagAck, peerISS+7, fin.Seq+1)
	if ack := p.next(time.Second); ack.Flags != header.TCPFlagAck || ack.Ack != peerISS+2 {
		t.Fatalf("segment out of sequence: got %s ack=%d, want an ACK of RCV.NXT", tcpflag.String(uint8(ack.Flags)), ack.Ack)
	}
	// A pure ACK in sequence and a RST are dropped in silence (RFC 1337:
	// the RST does not end TIME-WAIT).
	p.send(header.TCPFlagAck, peerISS+2, fin.Seq+1)
	p.send(header.TCPFlagRst, peerISS+2, 0)
	p.noSegment(100*time.Millisecond, "an in-sequence ACK and a RST need no answer")
	if n := p.st.tw.Len(); n != 1 {
		t.Fatalf("%d TIME-WAITs after the RST, want 1 (ignored)", n)
	}
	// A SYN at or below RCV.NXT: see TestTimeWaitOldSYNDrawsACK.
	p.send(header.TCPFlagSyn, peerISS+1, 0)
	if ack := p.next(time.Second); ack.Flags != header.TCPFlagAck || ack.Ack != peerISS+2 {
		t.Fatalf("old SYN: got %s ack=%d, want an ACK of RCV.NXT", tcpflag.String(uint8(ack.Flags)), ack.Ack)
	}
	if s := p.st.TimeWaitStats(); s.Entered.Load() != 1 || s.Reacked.Load() != 1 || s.Challenged.Load() != 1 {
		t.Errorf("entered %d, re-ACKed %d, SYNs challenged %d; want 1, 1, 1", s.Entered.Load(), s.Reacked.Load(), s.Challenged.Load())
	}

	// A SYN above RCV.NXT is a new incarnation (RFC 1122 §4.2.2.13): the
	// listener answers it.
	p.send(header.TCPFlagSyn, peerISS+100000, 0)
	if synAck := p.next(time.Second); synAck.Flags != header.TCPFlagSyn|header.TCPFlagAck || synAck.Ack != peerISS+100001 {
		t.Fatalf("new SYN: got %s ack=%d, want SYN|ACK", tcpflag.String(uint8(synAck.Flags)), synAck.Ack)
	}
	if n := p.st.tw.Len(); n != 0 {
		t.Errorf("%d TIME-WAITs after the new SYN, want 0", n)
	}
}

// TestTimeWaitOldSYNDrawsACK: a SYN that reaches TIME-WAIT at or below
// RCV.NXT may not open a new connection (RFC 1122 §4.2.2.13); it draws an
// ACK of the old one (RFC 9293 §3.10.7.4, RFC 5961 §4), as on Linux, at
// most one per 500 ms, from the compact table and from gVisor's own
// TIME-WAIT (patch 0018) alike. It was dropped in silence.
func TestTimeWaitOldSYNDrawsACK(t *testing.T) {
	for _, full := range []bool{false, true} {
		name := map[bool]string{false: "compact", true: "full"}[full]
		t.Run(name, func(t *testing.T) {
			p, fin := timeWaitPeer(t, Config{MSL: time.Second, FinWait2: time.Second, FullTimeWait: full})
			if !full {
				awaitCount(t, "compact TIME-WAITs", 1, p.st.tw.Len)
			} else {
				awaitCount(t, "gVisor's TIME-WAITs", 1, func() int { return gvisorTimeWaits(p.st) })
			}
			for _, iss := range []uint32{peerISS, peerISS + 1} { // below, at RCV.NXT - 1
				p.send(header.TCPFlagSyn, iss, 0)
				ack := p.next(time.Second)
				if ack.Flags != header.TCPFlagAck || ack.Seq != fin.Seq+1 || ack.Ack != peerISS+2 {
					t.Fatalf("SYN at %d: got %s seq=%d ack=%d, want ACK seq=%d ack=%d", iss-peerISS, tcpflag.String(uint8(ack.Flags)), ack.Seq, ack.Ack, fin.Seq+1, peerISS+2)
				}
				p.send(header.TCPFlagSyn, iss, 0)
				p.noSegment(100*time.Millisecond, "a second old SYN within 500 ms")
				time.Sleep(500 * time.Millisecond) // the rate limit's period: what is tested
			}
		})
	}
}

// TestCompactTimeWaitLateSegments: a segment that waited on the endpoint
// while it handed its TIME-WAIT to the table (gVisor patch 0019) is
// answered by the table as TIME-WAIT answers: the peer's FIN again draws
// the ACK, a RST at RCV.NXT ends it under --time-wait-rst close. Before,
// such segments went to the listener and drew nothing.
func TestCompactTimeWaitLateSegments(t *testing.T) {
	p, fin := timeWaitPeer(t, Config{MSL: time.Second, FinWait2: time.Second, TimeWaitRSTCloses: true})
	awaitCount(t, "compact TIME-WAITs", 1, p.st.tw.Len)
	if !p.st.tw.Late(peerPacket(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1, nil, nil)) {
		t.Fatal("the table did not take the late FIN of a connection it holds")
	}
	if ack := p.next(time.Second); ack.Flags != header.TCPFlagAck || ack.Seq != fin.Seq+1 || ack.Ack != peerISS+2 {
		t.Fatalf("late FIN: got %s seq=%d ack=%d, want ACK seq=%d ack=%d", tcpflag.String(uint8(ack.Flags)), ack.Seq, ack.Ack, fin.Seq+1, peerISS+2)
	}
	if !p.st.tw.Late(peerPacket(header.TCPFlagRst, peerISS+2, 0, nil, nil)) {
		t.Fatal("the table did not take the late RST")
	}
	if n := p.st.tw.Len(); n != 0 {
		t.Fatalf("%d TIME-WAITs after the late RST, want 0 (--time-wait-rst close)", n)
	}
	if p.st.tw.Late(peerPacket(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1, nil, nil)) {
		t.Error("the table took a segment of a connection it no longer holds")
	}
}

func TestCompactTimeWaitExpires(t *testing.T) {
	p, fin := timeWaitPeer(t, Config{MSL: 50 * time.Millisecond, FinWait2: time.Second})
	start := time.Now()
	awaitCount(t, "compact TIME-WAITs", 1, p.st.tw.Len)
	awaitCount(t, "compact TIME-WAITs", 0, p.st.tw.Len)
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("TIME-WAIT ended after %v, want 2 x MSL = 100ms", d)
	}
	// Gone: the peer's FIN now draws a RST, as with no TIME-WAIT at all.
	p.send(header.TCPFlagFin|header.TCPFlagAck, peerISS+1, fin.Seq+1)
	if rst := p.next(time.Second); rst.Flags&header.TCPFlagRst == 0 {
		t.Errorf("FIN after TIME-WAIT: got %s, want RST", tcpflag.String(uint8(rst.Flags)))
	}
}

func TestCompactTimeWaitRSTCloses(t *testing.T) {
	p, _ := timeWaitPeer(t, Config{MSL: time.Second, FinWait2: time.Second, TimeWaitRSTCloses: true})
	awaitCount(t, "compact TIME-WAITs", 1, p.st.tw.Len)
	p.send(header.TCPFlagRst, peerISS+5, 0) // not at RCV.NXT: ignored
	p.send(header.TCPFlagRst, peerISS+2, 0)
	awaitCount(t, "compact TIME-WAITs", 0, p.st.tw.Len)
	if n := p.st.TimeWaitStats().Reset.Load(); n != 1 {
		t.Errorf("TIME-WAITs reset: %d, want 1", n)
	}
}

func TestFullTimeWait(t *testing.T) {
	p, _ := timeWaitPeer(t, Config{MSL: time.Second, FinWait2: time.Second, FullTimeWait: true})
	awaitCount(t, "gVisor's TIME-WAITs", 1, func() int { return gvisorTimeWaits(p.st) })
	if p.st.tw != nil {
		t.Error("a compact table with FullTimeWait")
	}
}

func TestCompactTimeWaitYieldsToLiveConnection(t *testing.T) {
	// A SYN that waited in the old endpoint's queue during the handoff
	// reaches the listener after the entry went in: the entry then stands
	// over a live connection. Here the entry is made by hand over an
	// established one; the peer's next segment must reach the stack, and
	// the entry go.
	p := connectConfig(t, Config{MSL: time.Second, FinWait2: time.Second})
	taken := p.st.tw.Handoff(tcpip.TimeWaitHandoff{
		NetProto: header.IPv4ProtocolNumber, LocalAddress: stackAddr, RemoteAddress: peerAddr,
		LocalPort: 7, RemotePort: peerPort, SndNxt: 12345, RcvNxt: peerISS + 1000,
	})
	if !taken {
		t.Fatal("the table refused the handoff")
	}
	p.send(header.TCPFlagAck, peerISS+1, p.iss+1)
	if f, ok := p.nextOrNone(100 * time.Millisecond); ok && f.Seq == 12345 {
		t.Fatalf("the stale entry answered the live connection's segment: %s seq=%d ack=%d", tcpflag.String(uint8(f.Flags)), f.Seq, f.Ack)
	}
	if n := p.st.tw.Len(); n != 0 {
		t.Errorf("%d entries after a segment of a live connection, want 0", n)
	}
	if n := p.st.TimeWaitStats().Reopened.Load(); n != 1 {
		t.Errorf("reopened %d, want 1", n)
	}
}

// rstPacket builds tund's RST to the peer's port as the stack would send it.
func rstPacket(peerPort uint16) gstack.PacketBufferList {
	tcpHdr := make([]byte, header.TCPMinimumSize)
	header.TCP(tcpHdr).Encode(&header.TCPFields{SrcPort: 7, DstPort: peerPort, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagRst})
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{ReserveHeaderBytes: header.IPv4MinimumSize + header.TCPMinimumSize})
	copy(pkt.TransportHeader().Push(len(tcpHdr)), tcpHdr)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize)).Encode(&header.IPv4Fields{
		TotalLength: header.IPv4MinimumSize + header.TCPMinimumSize, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: stackAddr, DstAddr: peerAddr,
	})
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	var l gstack.PacketBufferList
	l.PushBack(pkt)
	return l
}

func TestCompactTimeWaitSuppressesListenerRST(t *testing.T) {
	// A segment that waited in the old endpoint's queue goes to the
	// listener as the endpoint closes, and the listener would reset the
	// connection in TIME-WAIT: the table drops that RST. A RST for a
	// connection not in the table passes.
	p, _ := timeWaitPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	awaitCount(t, "compact TIME-WAITs", 1, p.st.tw.Len)
	l := rstPacket(peerPort)
	p.st.tw.WritePackets(l)
	l.Reset()
	p.noSegment(100*time.Millisecond, "the RST was for a connection in TIME-WAIT")
	if n := p.st.TimeWaitStats().SuppressedRSTs.Load(); n != 1 {
		t.Errorf("suppressed %d RSTs, want 1", n)
	}
	l = rstPacket(peerPort + 1)
	p.st.tw.WritePackets(l)
	l.Reset()
	if f := p.next(time.Second); f.Flags&header.TCPFlagRst == 0 || f.Flow.LocalPort != peerPort+1 {
		t.Errorf("got %s to port %d, want the RST to port %d", tcpflag.String(uint8(f.Flags)), f.Flow.LocalPort, peerPort+1)
	}
}
