package wire

import "time"

// Compact entries (the TIME-WAIT table's, the tracer's) keep times as
// monotonic nanoseconds in an int64, not as a 24-byte time.Time: at
// 100,000 entries that is most of their cost.

// monoStart anchors the clock; time.Since reads the monotonic clock.
var monoStart = time.Now()

// MonoNow returns the monotonic time now, in nanoseconds.
func MonoNow() int64 { return int64(time.Since(monoStart)) }

// MonoOf returns t as monotonic nanoseconds.
func MonoOf(t time.Time) int64 { return int64(t.Sub(monoStart)) }

// TimeOf returns the time of monotonic nanoseconds ns.
func TimeOf(ns int64) time.Time { return monoStart.Add(time.Duration(ns)) }

// MsOf returns monotonic nanoseconds in milliseconds, wrapping as TCP
// timestamps do.
func MsOf(mono int64) uint32 { return uint32(mono / int64(time.Millisecond)) }
