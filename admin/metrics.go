package admin

import (
	"github.com/prometheus/client_golang/prometheus"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/closes"
	"github.com/tund/tund/stack/link/faults"
	"github.com/tund/tund/stack/tcpstate"
)

// collector reads the stack's counters at scrape time: nothing is counted
// twice and the data path pays nothing for metrics.
type collector struct {
	st       *stack.Stack
	conns    *prometheus.Desc
	merge    *prometheus.Desc
	closes   *prometheus.Desc
	states   *prometheus.Desc
	retx     *prometheus.Desc
	lostACK  *prometheus.Desc
	halfOpen *prometheus.Desc
	resets   *prometheus.Desc
	refused  *prometheus.Desc
	open     *prometheus.Desc
	faults   *prometheus.Desc
	tw       *prometheus.Desc
	wire     *prometheus.Desc
	resent   *prometheus.Desc
	tables   *prometheus.Desc
	counters []counter
}

type counter struct {
	desc  *prometheus.Desc
	value func(*tcpip.TCPStats) uint64
}

func newCollector(st *stack.Stack) *collector {
	c := &collector{
		st:       st,
		conns:    prometheus.NewDesc("tund_tcp_connections", "TCP endpoints of the stack by RFC 9293 state.", []string{"state"}, nil),
		tables:   prometheus.NewDesc("tund_close_tables_bytes", "Memory of the close path's per-connection tables (the compact TIME-WAIT table's entries and the close tracer's), kept outside the Go heap: in process_resident_memory_bytes, not in go_memstats_*.", nil, nil),
		closes:   prometheus.NewDesc("tund_tcp_closes_total", "Closes seen on the wire, by kind (four-way, three-way, simultaneous, reset, fin-wait2-timeout, retransmission-limit, half-close-policy, unfinished) and initiator: the side that sent the first FIN or RST, or both where the other side's first FIN or RST crossed it (neither end can tell which left first). A reset close is counted once its initiator is final: at the other side's first FIN or RST, or 500 ms after it ended.", []string{"kind", "initiator"}, nil),
		states:   prometheus.NewDesc("tund_tcp_close_state_seconds", "Time tund's side of a connection spent in each closing state, as the wire shows it; TIME-WAIT runs from entering it to 2 x MSL after the last ACK tund sent in it, or to the RST or SYN that ended it.", []string{"state"}, nil),
		retx:     prometheus.NewDesc("tund_tcp_close_retransmits_total", "FINs sent again, and pure ACKs of a FIN their sender had acknowledged already, during a close and after it completed, on the wire, by the side that sent them.", []string{"side", "segment"}, nil),
		lostACK:  prometheus.NewDesc("tund_tcp_final_ack_lost_total", "tund's final ACKs that did not reach the peer, as far as tund can see: each FIN the peer sent again while tund was in TIME-WAIT, and each final ACK that --drop-final-ack dropped.", nil, nil),
		halfOpen: prometheus.NewDesc("tund_half_close_actions_total", "What services' half-close policies did when a peer half-closed: allowed (went on sending), closed (at the FIN), timeout (when the half-open time ran out).", []string{"action"}, nil),
		refused:  prometheus.NewDesc("tund_tcp_conns_refused_total", "Connections reset at once because --max-conns connections were open.", nil, nil),
		open:     prometheus.NewDesc("tund_tcp_conns_open", "Connections that services hold open (what --max-conns bounds).", nil, nil),
		resets:   prometheus.NewDesc("tund_tcp_resets_total", "RST segments by direction (sent, received) and reason (sent: abort, no-connection, refused; received: established, closing, time-wait, no-connection, refused).", []string{"direction", "reason"}, nil),
		faults:   prometheus.NewDesc("tund_faults_total", "Segments that the close-path faults dropped or delayed, by fault (drop-final-ack, drop-fin, delay-fin, no-fin, loss-in, loss-out).", []string{"fault"}, nil),
		wire:     prometheus.NewDesc("tund_tcp_wire_segments_total", "TCP segments that crossed the TUN device, as a capture on it counts them, by direction: sent by tund (after the faults, the compact TIME-WAIT table and the FIN/ACK merge had their say) and received (before --loss-in dropped any). Counted by the close tracer: absent with --trace=false.", []string{"direction"}, nil),
		resent:   prometheus.NewDesc("tund_tcp_wire_retransmits_total", "Segments tund sent again (data and FINs, by RTO, fast retransmit or tail-loss probe) that crossed the TUN device, as a capture on it counts them: gVisor's retransmissions less those a fault dropped (gVisor patch 0015 marks them). Counted by the close tracer: absent with --trace=false.", nil, nil),
		tw:       prometheus.NewDesc("tund_time_wait_table_total", "Events of the compact TIME-WAIT table: entered (a connection's TIME-WAIT taken over from gVisor), reacked (the peer's FIN ACKed again, 2 x MSL restarted), reopened (a SYN above RCV.NXT started a new connection), syn-challenged (any other SYN, answered with an ACK of the old connection, RFC 5961 §4), reset (an RST ended it, --time-wait-rst close), rst-suppressed (a RST the stack's listener would have sent to a connection in TIME-WAIT, for a segment that waited in the old endpoint's queue during the handoff).", []string{"event"}, nil),
		merge:    prometheus.NewDesc("tund_fin_ack_merge_total", "ACKs of peer FINs by what became of them: merged (rode on tund's FIN), carried (rode on data), released (sent alone when the window ended), flushed (sent early: the peer retransmitted its FIN); and data-acked: FINs whose data before them was acknowledged at once by an ACK of its own, so that only the FIN's ACK waited.", []string{"outcome"}, nil),
	}
	add := func(name, help string, v func(*tcpip.TCPStats) uint64) {
		c.counters = append(c.counters, counter{prometheus.NewDesc(name, help, nil, nil), v})
	}
	add("tund_tcp_passive_opens_total", "Connections accepted.", func(s *tcpip.TCPStats) uint64 { return s.PassiveConnectionOpenings.Value() })
	add("tund_tcp_active_opens_total", "Connections opened by tund.", func(s *tcpip.TCPStats) uint64 { return s.ActiveConnectionOpenings.Value() })
	add("tund_tcp_established_closed_total", "Established connections that closed.", func(s *tcpip.TCPStats) uint64 { return s.EstablishedClosed.Value() })
	add("tund_tcp_established_resets_total", "Established or CLOSE-WAIT connections that went to CLOSED by a reset.", func(s *tcpip.TCPStats) uint64 { return s.EstablishedResets.Value() })
	add("tund_tcp_established_timedout_total", "Connections dropped after retransmission or keepalive gave up.", func(s *tcpip.TCPStats) uint64 { return s.EstablishedTimedout.Value() })
	// gVisor counts segments when its TCP writes or reads them, above
	// tund's layers, which drop, hold and answer some: those counts are
	// named tund_stack_tcp_* and their help says what the wire's are.
	add("tund_stack_tcp_resets_sent_total", "RSTs gVisor's TCP sent, counted above tund's layers: it includes those the compact TIME-WAIT table suppressed (tund_time_wait_table_total{event=\"rst-suppressed\"}) and those a fault dropped, which never reached the wire. tund_tcp_resets_total{direction=\"sent\"} counts the wire's.", func(s *tcpip.TCPStats) uint64 { return s.ResetsSent.Value() })
	add("tund_stack_tcp_resets_received_total", "RSTs that reached gVisor's TCP: not those --loss-in dropped or the compact TIME-WAIT table took. tund_tcp_resets_total{direction=\"received\"} counts the wire's.", func(s *tcpip.TCPStats) uint64 { return s.ResetsReceived.Value() })
	add("tund_stack_tcp_retransmits_total", "Segments gVisor's TCP retransmitted, FINs included, counted when its write returns, above tund's layers: resends that a fault dropped (--loss-out, --drop-fin, --no-fin) count though they never reached the wire. tund_tcp_wire_retransmits_total counts the wire's.", func(s *tcpip.TCPStats) uint64 { return s.Retransmits.Value() })
	add("tund_tcp_timeouts_total", "Retransmission timeouts.", func(s *tcpip.TCPStats) uint64 { return s.Timeouts.Value() })
	add("tund_stack_tcp_segments_sent_total", "Segments gVisor's TCP sent, counted above tund's layers: with the ACKs the FIN/ACK merge held and dropped and what the faults dropped, without what the compact TIME-WAIT table answered. tund_tcp_wire_segments_total{direction=\"sent\"} counts the wire's.", func(s *tcpip.TCPStats) uint64 { return s.SegmentsSent.Value() })
	add("tund_stack_tcp_segments_received_total", "Valid segments that reached gVisor's TCP: not those --loss-in dropped or the compact TIME-WAIT table answered. tund_tcp_wire_segments_total{direction=\"received\"} counts the wire's.", func(s *tcpip.TCPStats) uint64 { return s.ValidSegmentsReceived.Value() })
	add("tund_stack_tcp_segment_send_errors_total", "Segments gVisor's TCP could not hand to the link (the device refused the write): never on the wire, and not in tund_stack_tcp_segments_sent_total. Under a SYN flood these are SYN|ACKs.", func(s *tcpip.TCPStats) uint64 { return s.SegmentSendErrors.Value() })
	add("tund_tcp_invalid_segments_received_total", "Segments dropped as invalid (bad header or checksum).", func(s *tcpip.TCPStats) uint64 { return s.InvalidSegmentsReceived.Value() })
	add("tund_tcp_listen_overflow_syn_cookies_sent_total", "SYN cookies sent because a listen queue was full.", func(s *tcpip.TCPStats) uint64 { return s.ListenOverflowSynCookieSent.Value() })
	add("tund_tcp_listen_overflow_syn_drop_total", "SYNs dropped because a listen queue was full.", func(s *tcpip.TCPStats) uint64 { return s.ListenOverflowSynDrop.Value() })
	// Overload (SYN floods): what listeners answered with cookies, what
	// they refused, and what the stack dropped before TCP processed it (a
	// full segment queue, see gVisor patch 0006).
	add("tund_tcp_listen_overflow_syn_cookies_received_total", "Valid SYN cookies received: connections a full listen queue still accepted.", func(s *tcpip.TCPStats) uint64 { return s.ListenOverflowSynCookieRcvd.Value() })
	add("tund_tcp_listen_overflow_invalid_syn_cookies_received_total", "ACKs that reached a listener with no connection of theirs and did not verify as a SYN cookie: forged or stale cookies, and also stray ACKs of connections already gone (gVisor checks every such ACK as a cookie; the name is its counter's).", func(s *tcpip.TCPStats) uint64 { return s.ListenOverflowInvalidSynCookieRcvd.Value() })
	add("tund_tcp_listen_overflow_ack_drop_total", "Handshake ACKs dropped because the accept queue was full.", func(s *tcpip.TCPStats) uint64 { return s.ListenOverflowAckDrop.Value() })
	add("tund_dropped_packets_total", "Packets the stack dropped at any layer: full segment queues, no endpoint, bad headers.", func(*tcpip.TCPStats) uint64 { return st.GVisor().Stats().DroppedPackets.Value() })
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.conns
	ch <- c.merge
	ch <- c.closes
	ch <- c.tables
	ch <- c.states
	ch <- c.retx
	ch <- c.lostACK
	ch <- c.halfOpen
	ch <- c.resets
	ch <- c.refused
	ch <- c.open
	ch <- c.faults
	ch <- c.tw
	ch <- c.wire
	ch <- c.resent
	for _, k := range c.counters {
		ch <- k.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	// Every state is reported, so that a state with no connection reads 0
	// rather than vanishing.
	counts := c.st.StateCounts()
	for _, s := range tcpstate.All() {
		ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(counts[s.String()]), s.String())
	}
	ch <- prometheus.MustNewConstMetric(c.tables, prometheus.GaugeValue, float64(stack.TableBytes()))
	m := c.st.MergeStats()
	for outcome, v := range map[string]uint64{
		"merged": m.Merged.Load(), "carried": m.Carried.Load(),
		"released": m.Released.Load(), "flushed": m.Flushed.Load(),
		"data-acked": m.DataACKed.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(c.merge, prometheus.CounterValue, float64(v), outcome)
	}
	cs := c.st.CloseStats()
	for k, v := range cs.Closes {
		ch <- prometheus.MustNewConstMetric(c.closes, prometheus.CounterValue, float64(v), k.Kind, k.Initiator)
	}
	for state, h := range cs.StateTimes {
		ch <- prometheus.MustNewConstHistogram(c.states, h.Count, h.Sum, h.Buckets, state)
	}
	for _, side := range []string{closes.SideTund, closes.SidePeer} {
		for _, seg := range []string{"FIN", "ACK"} {
			v := cs.Retransmits[closes.RetransmitKey{Side: side, Segment: seg}]
			ch <- prometheus.MustNewConstMetric(c.retx, prometheus.CounterValue, float64(v), side, seg)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.lostACK, prometheus.CounterValue, float64(cs.FinalACKLost))
	if c.st.Tracing() {
		ch <- prometheus.MustNewConstMetric(c.wire, prometheus.CounterValue, float64(cs.SegmentsSent), "sent")
		ch <- prometheus.MustNewConstMetric(c.wire, prometheus.CounterValue, float64(cs.SegmentsReceived), "received")
		ch <- prometheus.MustNewConstMetric(c.resent, prometheus.CounterValue, float64(cs.SegmentsResent))
	}
	for _, a := range []string{closes.HalfCloseAllowed, closes.HalfCloseClosed, closes.HalfCloseTimeout} {
		ch <- prometheus.MustNewConstMetric(c.halfOpen, prometheus.CounterValue, float64(cs.HalfClose[a]), a)
	}
	for k, v := range cs.Resets {
		ch <- prometheus.MustNewConstMetric(c.resets, prometheus.CounterValue, float64(v), k.Direction, k.Reason)
	}
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.st.Refused()))
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(c.st.OpenConns()))
	tw := c.st.TimeWaitStats()
	for event, v := range map[string]uint64{
		"entered": tw.Entered.Load(), "reacked": tw.Reacked.Load(), "reopened": tw.Reopened.Load(), "reset": tw.Reset.Load(), "syn-challenged": tw.Challenged.Load(), "rst-suppressed": tw.SuppressedRSTs.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(c.tw, prometheus.CounterValue, float64(v), event)
	}
	fs := c.st.FaultStats()
	for _, f := range faults.Names {
		ch <- prometheus.MustNewConstMetric(c.faults, prometheus.CounterValue, float64(fs.Count(f)), f)
	}
	stats := c.st.GVisor().Stats().TCP
	for _, k := range c.counters {
		ch <- prometheus.MustNewConstMetric(k.desc, prometheus.CounterValue, float64(k.value(&stats)))
	}
}
