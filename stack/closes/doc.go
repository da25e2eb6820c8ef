// Package closes records how each TCP connection of tund's stack ends, as
// the wire shows it: the Tracer, a close-path layer (see package layer),
// follows both sides of every close through the RFC 9293 states
// (sides.go), files a Record of its segments, kind and initiator in the
// Log, and counts what it saw (counters.go) for /metrics.
package closes
