package admin

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/stack"
)

// TestMetricsScrape builds the handler over a real stack and scrapes
// /metrics: every metric the README lists is there, with its labels.
func TestMetricsScrape(t *testing.T) {
	st, err := stack.New(channel.New(16, 1500, ""), stack.Config{Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := httptest.NewRecorder()
	NewHandler(st, nil, "").ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`tund_tcp_connections{state="TIME-WAIT"} 0`,
		`tund_tcp_close_state_seconds_bucket{state="FIN-WAIT-2",le="60"} 0`,
		`tund_tcp_close_retransmits_total{segment="FIN",side="tund"} 0`,
		`tund_tcp_final_ack_lost_total 0`,
		`tund_fin_ack_merge_total{outcome="merged"} 0`,
		`tund_half_close_actions_total{action="timeout"} 0`,
		`tund_tcp_conns_refused_total 0`,
		`tund_tcp_conns_open 0`,
		`tund_faults_total{fault="drop-final-ack"} 0`,
		`tund_time_wait_table_total{event="reacked"} 0`,
		`tund_tcp_listen_overflow_syn_cookies_sent_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
