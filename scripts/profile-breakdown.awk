# Reads `go tool pprof -traces` of tund under load (scripts/bench-profile)
# and prints, for each kind of work, its share of the CPU samples. Each
# sample goes to one kind: a system call to what made it
# (TUN write, TUN read, other); any other sample to the innermost frame that
# is not the Go runtime or a lock (so an allocation or a map lookup counts
# for the code that asked for it); a stack of runtime frames only (GC
# workers, the scheduler) to the runtime.
function val(s) { if (s ~ /ms$/) return substr(s, 1, length(s) - 2) / 1000; if (s ~ /us$/) return substr(s, 1, length(s) - 2) / 1e6; if (s ~ /s$/) return substr(s, 1, length(s) - 1) + 0; return s + 0 }
function runtimeish(f) { return f ~ /^(runtime\.|internal\/|sync\.|sync\/atomic|syscall\.|aeshash|memeqbody|indexbyte|cmpbody|gogo|gosave|time\.now|time\.Now)/ || f ~ /^gvisor\.dev\/gvisor\/pkg\/(sync|atomicbitops)\./ }
function kind(   i, f, sys) {
	sys = frames[1] ~ /Syscall|RawSyscall|^syscall\./
	for (i = 1; i <= n; i++) {
		f = frames[i]
		if (sys) {
			if (f ~ /NonBlockingWriteIovec|writev|\.Write(Packets)?$/) return "system calls: TUN writes (the kernel runs the client's TCP in them)"
			if (f ~ /unix\.read|syscall\.read|readLoop/) return "system calls: TUN reads"
			if (!runtimeish(f) && f !~ /rawfile/) return "system calls: other"
			continue
		}
		if (runtimeish(f)) continue
		if (f ~ /^gvisor\.dev\/gvisor\/pkg\/tcpip\/transport\/tcp\./) return "gVisor TCP"
		if (f ~ /^gvisor\.dev\/gvisor\/pkg\/(tcpip\/adapters\/gonet|waiter)\./) return "gVisor's net.Conn (gonet: reads, writes, deadlines) and waiter queues"
		if (f ~ /^gvisor\.dev\/gvisor\//) return "gVisor IP, routes, link layer, packet buffers"
		if (f ~ /^github\.com\/tund\//) return "tund (tracer, merge, TIME-WAIT table, inline, device)"
		if (f ~ /^(net\/http|bufio|net\/textproto|net\/url|fmt|strconv|strings|bytes|unicode|net\.|context|io\.|errors|mime|sort|slices|maps|time)/) return "Go net/http and the handler"
		return "other (type hashes, netip, crypto, ...)"
	}
	if (sys) return "system calls: other"
	for (i = 1; i <= n; i++) {
		if (frames[i] ~ /gcBgMarkWorker|bgsweep|bgscavenge|gcAssist|gcStart|gcDrain/) return "runtime: GC"
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
