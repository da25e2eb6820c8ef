# Reads `go tool pprof -traces` of tund under load (scripts/bench-profile)
# and prints, for each kind of work, its share of the CPU samples. Each
# sample goes to one kind, decided by its innermost frame that belongs to
# an owner: gVisor, tund's packages, or Go's HTTP server (and tund's
# handler). Frames of the runtime and of the rest of the standard library
# are passed over, so that an allocation, a map lookup, a clock read or a
# string search counts for the code that asked for it. A system call goes
# to what made it: the TUN device's writes or reads, or other. A stack with
# no owner at all (GC workers, the scheduler) goes to the runtime.
BEGIN { tundKind = "tund (tracer, merge, TIME-WAIT table, inline, device)" }
function val(s) {
	if (s ~ /ns$/) return substr(s, 1, length(s) - 2) / 1e9
	if (s ~ /us$/) return substr(s, 1, length(s) - 2) / 1e6
	if (s ~ /ms$/) return substr(s, 1, length(s) - 2) / 1000
	if (s ~ /mins$/) return substr(s, 1, length(s) - 4) * 60
	if (s ~ /s$/) return substr(s, 1, length(s) - 1) + 0
	return s + 0
}
# owner names the kind of work of frame f, or "" for a frame to pass over.
function owner(f) {
	if (f ~ /^gvisor\.dev\/gvisor\/pkg\/rawfile\.NonBlockingWriteIovec/) return "tun-write"
	if (f ~ /^gvisor\.dev\/gvisor\/pkg\/rawfile\.Blocking/ || f ~ /^github\.com\/tund\/tund\/tun\.\(\*offloadEndpoint\)\.readLoop/) return "tun-read"
	if (f ~ /^gvisor\.dev\/gvisor\/pkg\/(sync|atomicbitops)\./) return ""
	if (f ~ /^gvisor\.dev\/gvisor\/pkg\/tcpip\/transport\/tcp\./) return "gVisor TCP"
	if (f ~ /^gvisor\.dev\/gvisor\/pkg\/(tcpip\/adapters\/gonet|waiter)\./) return "gVisor's net.Conn (gonet: reads, writes, deadlines) and waiter queues"
	if (f ~ /^gvisor\.dev\/gvisor\//) return "gVisor IP, routes, link layer, packet buffers"
	if (f ~ /^github\.com\/tund\/tund\/(forward\.|service\.(serve\.)?proxyTo)/) return "proxy"
	if (f ~ /^github\.com\/tund\/tund\/service\./ || f ~ /^(net\/http|net\/textproto|vendor\/golang\.org\/x\/net\/http)/) return "Go net/http and tund's handler"
	if (f ~ /^github\.com\/tund\//) return tundKind
	if (f ~ /^(golang\.org\/x\/|type:)/ || std(f)) return ""
	return "other (" f ")"
}
# std reports a frame of the standard library or the runtime: its import
# path's first element has no dot ("strings.Index", "crypto/sha256.New",
# "aeshashbody"), unlike "github.com/...".
function std(f,   slash) {
	slash = index(f, "/")
	return slash == 0 || substr(f, 1, slash - 1) !~ /\./
}
function kind(   i, o, sys) {
	sys = frames[1] ~ /Syscall|RawSyscall|^syscall\./
	for (i = 1; i <= n; i++) {
		o = owner(frames[i])
		if (o == "") continue
		if (sys) {
			if (o == "tun-write") return "system calls: TUN writes (the kernel runs the client's TCP in them)"
			if (o == "tun-read") return "system calls: TUN reads and polls"
			if (o == "proxy") return "system calls: the proxy's kernel sockets (the kernel runs the server's TCP in them)"
			return "system calls: other"
		}
		if (o == "tun-write" || o == "tun-read") # outside the system call: by package
			return frames[i] ~ /^github\.com\/tund\// ? tundKind : "gVisor IP, routes, link layer, packet buffers"
		if (o == "proxy") return "tund's proxy (forward: the splice, its kernel ends)"
		return o
	}
	if (sys) return "system calls: other"
	for (i = 1; i <= n; i++) {
		if (frames[i] ~ /gcBgMarkWorker|bgsweep|bgscavenge|gcAssist|gcStart|gcDrain|runtime\._GC/) return "runtime: GC"
		if (frames[i] ~ /runtime\.(schedule|findRunnable|park_m|mstart|goexit|mcall)/) return "runtime: scheduler"
	}
	return "runtime: other"
}
function flush() { if (n > 0) { k = kind(); t[k] += v; all += v }; n = 0 }
/^-+\+-+$/ { flush(); next }
/^ +[0-9.]+[mun]?s +/ { flush(); v = val($1); frames[++n] = $2; next }
n > 0 && /^ +[^ ]/ { frames[++n] = $1; next }
END {
	flush()
	for (k in t) printf "%5.1f%%  %s\n", 100 * t[k] / all, k | "sort -rn"
}
