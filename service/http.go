package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// bytesChunk is what /bytes/N repeats; it is shared and never written.
var bytesChunk = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// maxBytes bounds /bytes/N at 1 TiB: enough for any benchmark, small enough
// that a typo does not stream for days.
const maxBytes = 1 << 40

// NewHTTPHandler returns the http service's handler, for serving it on a
// kernel socket too (the benchmarks' baseline).
func NewHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "tund: you are %s, talking to the userspace TCP stack at %s\n",
			r.RemoteAddr, r.Context().Value(http.LocalAddrContextKey))
	})
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, fmt.Sprintf("want /bytes/N with N in [0, %d]", int64(maxBytes)), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			m := min(n, int64(len(bytesChunk)))
			if _, err := w.Write(bytesChunk[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	return mux
}

// serveHTTP serves newHTTPHandler on ln until ctx ends, then shuts down:
// idle connections are closed at once, active ones when their response is
// done, and whatever is left after drain is closed.
func serveHTTP(ctx context.Context, ln net.Listener, drain time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           NewHTTPHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		dctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if srv.Shutdown(dctx) != nil {
			srv.Close()
		}
	})
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped // Serve returns at once; Shutdown is what waits
		return nil
	}
	return fmt.Errorf("http:%s: %w", ln.Addr(), err)
}
