package suite

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tund/tund/client"
)

// TUND_ADMIN is tund's admin address; TUND_SERVER is a server behind
// tund's stack that closes first: daytime in a namespace, the sidecar's
// proxy to its one-line server in docker/sidecar.yaml.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// TestFinalACKLost: tund's final ACK of a close is lost once, so the
// client's kernel sends its FIN again and tund, in TIME-WAIT, ACKs it.
func TestFinalACKLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tund := client.New(env("TUND_ADMIN", "127.0.0.1:9180"))
	server := netip.MustParseAddrPort(env("TUND_SERVER", "198.18.0.2:13"))

	if _, err := tund.SetPort(ctx, server.Port(), client.Knobs{"drop-final-ack": "once"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tund.Reset(context.Background()) }) // as tund's flags set it

	conn, err := net.Dial("tcp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(conn); err != nil { // the server's line, then its FIN
		t.Fatal(err)
	}
	conn.Close() // the client's FIN: tund's ACK of it is the final ACK
	peer := netip.MustParseAddrPort(conn.LocalAddr().String())

	rec, err := tund.WaitCloseWhere(ctx, peer, func(r *client.Close) bool { return r.FinalACKLost })
	if err != nil {
		t.Fatalf("no close of %v with its final ACK lost: %v (last record: %+v)", peer, err, rec)
	}
	if rec.Initiator != client.SideTund || rec.FINRetransmits != 1 {
		t.Errorf("%s close started by %s, %d FINs sent again; want tund's, 1", rec.Kind, rec.Initiator, rec.FINRetransmits)
	}
	t.Logf("%s close started by %s; the client's FIN came %d time(s) again; %v from the first FIN to the last segment",
		rec.Kind, rec.Initiator, rec.FINRetransmits, rec.Duration())
}
