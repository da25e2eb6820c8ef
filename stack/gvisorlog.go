package stack

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	glog "gvisor.dev/gvisor/pkg/log"
)

// SetLogger routes gVisor's own log lines (martian packets dropped, failed
// handshakes, ...), which it writes to stderr in glog format by default,
// into l at debug level: under hostile traffic they come by the thousand and
// say nothing a tund user acts on, but they help when debugging.
func SetLogger(l *slog.Logger) {
	glog.SetTarget(emitter{l})
	// gVisor formats a line only at or above its level; its debug lines
	// sit on packet paths, so they stay off.
	level := glog.Warning
	if l.Enabled(context.Background(), slog.LevelDebug) {
		level = glog.Info
	}
	glog.SetLevel(level)
}

type emitter struct{ l *slog.Logger }

func (e emitter) Emit(_ int, level glog.Level, _ time.Time, format string, v ...any) {
	if !e.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	e.l.Debug(fmt.Sprintf(format, v...), "source", "gvisor", "gvisor_level", level.String())
}
