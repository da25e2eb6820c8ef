package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tund/tund/stack/internal/wire"
)

// TestRTOArmedAfterTailLossProbe pins patch 0007: after a SACK recovery
// the sender's pipe estimate (Outstanding) can be zero while data or a FIN
// is still unacknowledged, and gVisor armed the RTO only when it was not.
// Here the FIN leaves during the recovery (SetPipe never counts a FIN), the
// ACK that ends the recovery takes the retransmitted segment off the
// estimate, the tail loss probe resends the FIN, and the probe is lost: the
// RTO must still bring the FIN back (RFC 8985 §7.3, RFC 6298 §5.1), or the
// connection stays in LAST-ACK (here FIN-WAIT-1) for ever.
func TestRTOArmedAfterTailLossProbe(t *testing.T) {
	p := connectSACK(t)

	// Four segments' worth of data; the first segment is lost on its way
	// to the peer.
	if _, err := p.conn.Write(make([]byte, 4*sackMSS)); err != nil {
		t.Fatal(err)
	}
	var data []wire.Fields
	for n := 0; n < 4*sackMSS; {
		f := p.next(time.Second)
		if f.PayloadLen == 0 {
			t.Fatalf("want data segment %d, got %+v", len(data)+1, f)
		}
		data = append(data, f)
		n += f.PayloadLen
	}
	if len(data) < 4 {
		t.Fatalf("want at least 4 data segments, got %d", len(data))
	}
	last := data[len(data)-1]
	end := func(f wire.Fields) uint32 { return f.Seq + uint32(f.PayloadLen) }

	// Three duplicate ACKs, each SACKing one more segment: tund enters
	// SACK recovery (RFC 6675 §5) and retransmits the first segment.
	for i := 1; i <= 3; i++ {
		p.sendSACK(header.TCPFlagAck, peerISS+1, data[0].Seq, header.SACKBlock{Start: seqOf(data[1].Seq), End: seqOf(end(data[i]))})
	}
	if f := p.next(2 * time.Second); f.Seq != data[0].Seq || f.PayloadLen == 0 {
		t.Fatalf("want the first segment retransmitted, got %+v", f)
	}

	// tund closes during the recovery: its FIN goes out.
	p.conn.Close()
	fin := p.next(time.Second)
	if fin.Flags&header.TCPFlagFin == 0 || fin.Seq != end(last) {
		t.Fatalf("want tund's FIN at %d, got %+v", end(last), fin)
	}

	// The retransmission arrives, the FIN is lost: the ACK covers all data
	// and ends the recovery, with the FIN still outstanding.
	p.sendSACK(header.TCPFlagAck, peerISS+1, fin.Seq)

	// The tail loss probe (RFC 8985 §7.3) resends the FIN; it is lost too.
	probe := p.next(2 * time.Second)
	if probe.Flags&header.TCPFlagFin == 0 || probe.Seq != fin.Seq {
		t.Fatalf("want the FIN probe, got %+v", probe)
	}
	sent := time.Now()

	// Only the RTO is left to recover it: SRTT + 4 RTTVAR = 3 handshake
	// round trips here (RFC 6298 §2.2); allow for a loaded machine.
	again, ok := p.nextOrNone(3 * time.Second)
	if !ok {
		t.Fatalf("tund did not retransmit its FIN within 3 s of a lost tail loss probe: no RTO was armed")
	}
	if again.Flags&header.TCPFlagFin == 0 || again.Seq != fin.Seq {
		t.Fatalf("want tund's FIN retransmitted, got %+v", again)
	}
	t.Logf("FIN retransmitted %v after the lost probe", time.Since(sent).Round(time.Millisecond))
}

const (
	// sackMSS is the MSS the hand-played peer announces.
	sackMSS = 1000
	// handshakeRTT is the round trip the peer simulates in its handshake.
	handshakeRTT = 200 * time.Millisecond
)

func seqOf(v uint32) seqnum.Value { return seqnum.Value(v) }

// connectSACK is connect with a peer whose SYN offers SACK (RFC 2018), as
// Linux's does: tail loss probes (RFC 8985) need it.
func connectSACK(t *testing.T) *peer {
	t.Helper()
	p, accept := listenPeer(t, Config{MSL: time.Second, FinWait2: time.Second})
	// A path of handshakeRTT round trip: the handshake gives tund its
	// first RTT sample (RFC 6298 §2.2), so its tail loss probe comes two
	// of them after a flight (RFC 8985 §7.2) and the peer, which answers
	// at once, has time to answer before it.
	p.handshake(accept, p.sendSYNWithSACK, handshakeRTT)
	return p
}

// sendSYNWithSACK sends the peer's SYN with the MSS and SACK-permitted
// options.
func (p *peer) sendSYNWithSACK() {
	var opts [8]byte
	n := header.EncodeMSSOption(sackMSS, opts[:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeSACKPermittedOption(opts[n:])
	p.sendOptions(header.TCPFlagSyn, peerISS, 0, opts[:n])
}

// sendSACK sends a segment from the peer with the given SACK blocks.
func (p *peer) sendSACK(flags header.TCPFlags, seq, ack uint32, blocks ...header.SACKBlock) {
	var opts [header.TCPOptionsMaximumSize]byte
	n := header.EncodeNOP(opts[:])
	n += header.EncodeNOP(opts[n:])
	n += header.EncodeSACKBlocks(blocks, opts[n:])
	if len(blocks) == 0 {
		n = 0
	}
	p.sendOptions(flags, seq, ack, opts[:n])
}

// sendOptions injects one segment from the peer with TCP options opts (a
// multiple of 4 bytes long).
func (p *peer) sendOptions(flags header.TCPFlags, seq, ack uint32, opts []byte) {
	p.sendRaw(flags, seq, ack, opts, nil)
}

// sendRaw injects one segment from the peer with TCP options opts (a
// multiple of 4 bytes long) and payload.
func (p *peer) sendRaw(flags header.TCPFlags, seq, ack uint32, opts, payload []byte) {
	b := peerPacket(flags, seq, ack, opts, payload)
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	p.ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
	if p.injected != nil {
		p.injected()
	}
}

// peerPacket builds the IPv4 packet of a segment from the peer.
func peerPacket(flags header.TCPFlags, seq, ack uint32, opts, payload []byte) []byte {
	hdrLen := header.TCPMinimumSize + len(opts)
	tcpLen := hdrLen + len(payload)
	size := header.IPv4MinimumSize + tcpLen
	b := make([]byte, size)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(size), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: peerAddr, DstAddr: stackAddr})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: peerPort, DstPort: 7, SeqNum: seq, AckNum: ack, DataOffset: uint8(hdrLen), Flags: flags, WindowSize: 65535})
	copy(tcp[header.TCPMinimumSize:], opts)
	copy(tcp[hdrLen:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, peerAddr, stackAddr, uint16(tcpLen))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return b
}
