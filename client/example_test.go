package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"time"

	"github.com/tund/tund/client"
)

// A test that loses tund's final ACK of one close and sees the peer send
// its FIN again. The daytime service (port 13) closes first, so the
// client's FIN is the last one and tund's ACK of it the final ACK. The
// example runs in tund's network namespace (see main_test.go).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := client.New("127.0.0.1:9180") // tund's --admin address

	// The next close on port 13 loses its final ACK, once.
	if _, err := c.SetPort(ctx, 13, client.Knobs{"drop-final-ack": "once"}); err != nil {
		log.Fatal(err)
	}
	defer c.Reset(context.Background()) // back to tund's command line

	conn, err := net.Dial("tcp", "198.18.0.2:13")
	if err != nil {
		log.Fatal(err)
	}
	io.ReadAll(conn) // the time of day, then tund's FIN
	conn.Close()     // the client's FIN, whose ACK tund loses
	peer := netip.MustParseAddrPort(conn.LocalAddr().String())

	// The record is filed when the close completes, and amended when the
	// client's retransmission timer sends its FIN again.
	rec, err := c.WaitCloseWhere(ctx, peer, func(r *client.Close) bool { return r.FinalACKLost })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("initiator:", rec.Initiator)
	fmt.Println("final ACK lost:", rec.FinalACKLost)
	fmt.Println("FINs sent again:", rec.FINRetransmits)
	// Output:
	// initiator: tund
	// final ACK lost: true
	// FINs sent again: 1
}
