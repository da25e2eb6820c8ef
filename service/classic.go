package service

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"time"
)

// serveEcho sends back whatever arrives (RFC 862). When the peer ends its
// direction, the echo of everything it sent has been written; then the
// connection is closed.
func serveEcho(ctx context.Context, c *conn, log *slog.Logger) {
	defer c.finish()
	n, err := io.Copy(c, c)
	if err == nil {
		c.afterEOF(ctx)
	}
	log.Debug("echo done", "bytes", n, "err", err)
}

// serveDiscard reads and drops everything until the peer ends its direction
// (RFC 863), then closes.
func serveDiscard(ctx context.Context, c *conn, log *slog.Logger) {
	defer c.finish()
	n, err := io.Copy(io.Discard, c)
	if err == nil {
		c.afterEOF(ctx)
	}
	log.Debug("discard done", "bytes", n, "err", err)
}

// serveDaytime sends the date and time as one line and closes at once
// (RFC 867): tund is the side that closes first.
func serveDaytime(_ context.Context, c *conn, log *slog.Logger) {
	defer c.finish()
	line := time.Now().UTC().Format("Monday, January 2, 2006 15:04:05-MST") + "\r\n"
	if _, err := io.WriteString(c, line); err != nil {
		log.Debug("daytime write failed", "err", err)
	}
}

// chargenPattern is one full cycle of the RFC 864 pattern: 95 lines of 72
// printable characters, each line starting one character further on, each
// ended by CRLF. Writing it over and over continues the pattern exactly.
var chargenPattern = func() []byte {
	const first, count, width = ' ', 95, 72
	b := make([]byte, 0, count*(width+2))
	for line := 0; line < count; line++ {
		for i := 0; i < width; i++ {
			b = append(b, byte(first+(line+i)%count))
		}
		b = append(b, '\r', '\n')
	}
	return b
}()

// chargenBlock is what chargen writes at a time: whole cycles of the
// pattern, so that the stream goes on exactly, about as much as the http
// service's /bytes writes (64 KB): one 7 KB cycle a write cost each write's
// fixed work ten times as often, and chargen's stream ran at 0.4 of
// /bytes'. It is shared and never written.
var chargenBlock = bytes.Repeat(chargenPattern, (64<<10+len(chargenPattern)-1)/len(chargenPattern))

// serveChargen streams the character pattern until the peer goes away
// (RFC 864). What the peer sends is read and dropped, so that its FIN and
// its RST are seen.
//
// The peer's FIN while chargen streams is the textbook half-close: what
// happens next is the service's half-close policy.
func serveChargen(_ context.Context, c *conn, log *slog.Logger) {
	defer c.finish()
	go func() {
		if _, err := io.Copy(io.Discard, c); err == nil {
			// peerClosed ignores the EOF of our own close.
			c.peerClosed()
		}
	}()
	var n int64
	for {
		m, err := c.Write(chargenBlock)
		n += int64(m)
		if err != nil {
			log.Debug("chargen done", "bytes", n, "err", err)
			return
		}
	}
}
