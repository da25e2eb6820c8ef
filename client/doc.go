// Package client drives a running tund over its admin HTTP API: it reads
// and changes the close-path knobs (--msl, --drop-fin, ...) stack-wide or
// for one port while tund runs, adds and removes proxies, and waits for
// the record of a connection's close. Integration tests import it to set
// up a scenario, play it, and check how the connection ended, without
// restarting tund between cases.
//
// It imports only the standard library, so that a test suite that uses it
// does not pull in tund's TCP/IP stack.
//
// A test that loses tund's final ACK of a close once: the daytime service
// (port 13) closes first, so the client's FIN is the last one and tund's
// ACK of it the final ACK (the package's Example runs it):
//
//	c := client.New("127.0.0.1:9180") // tund's --admin address
//	if _, err := c.SetPort(ctx, 13, client.Knobs{"drop-final-ack": "once"}); err != nil {
//		t.Fatal(err)
//	}
//	t.Cleanup(func() { c.Reset(context.Background()) })
//
//	conn, err := net.Dial("tcp", "198.18.0.2:13")
//	// ... read to EOF (tund's FIN), then conn.Close() ...
//	peer := netip.MustParseAddrPort(conn.LocalAddr().String()) // the peer, as tund sees it
//	rec, err := c.WaitCloseWhere(ctx, peer, func(r *client.Close) bool { return r.FinalACKLost })
//	if err != nil {
//		t.Fatal(err) // the client never sent its FIN again
//	}
//
// Values are spelled as tund's flags take them ("200ms", "once", "0.3",
// "close"). Every write takes effect whole or not at all; a refused one
// returns an *Error naming the knob at fault. A tund started with
// --admin-token FILE wants the token on writes: set Client.Token. A tund
// in another network namespace is reached with an http.Client whose
// Transport dials there (Client.HTTPClient).
package client
