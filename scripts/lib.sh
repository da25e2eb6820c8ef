# Shared by tund's scripts: sourced, not run.

# die prints its arguments and exits 1.
die() { echo "$(basename "$0"): $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root: tund creates TUN devices and network namespaces"

# need_packages installs the Debian packages that provide the given commands
# ("command:package" pairs), with one apt-get update, only when one is missing.
need_packages() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
	echo "installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2 || die "apt-get update failed"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# need_go puts Go 1.26 (what go.mod asks for) on PATH. Where only an older
# Go is at hand (Debian's golang-go is installed if there is none), the
# release is fetched as the module golang.org/toolchain through the module
# proxy, as GOTOOLCHAIN=auto does, and made runnable.
GO_RELEASE=go1.26.8
need_go() {
	export PATH="$PATH:/usr/local/go/bin"
	if ! command -v go >/dev/null; then
		need_packages go:golang-go
	fi
	case "$(go env GOVERSION 2>/dev/null)" in
	go1.2[6-9]* | go1.[3-9][0-9]*) return 0 ;;
	esac
	local arch mod dir
	arch="$(go env GOARCH)"
	mod="golang.org/toolchain@v0.0.1-$GO_RELEASE.linux-$arch"
	echo "fetching $GO_RELEASE ($(go version) is too old)" >&2
	dir="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
	[ -x "$dir/bin/go" ] || { chmod -R u+w "$dir" && chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/*; } || die "could not fetch $mod"
	export PATH="$dir/bin:$PATH" GOTOOLCHAIN=local
	go version >/dev/null || die "no working Go toolchain: install Go 1.26 and retry"
}

# repo is the root of the checkout.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# wait_ready log pid waits, at most 15 s, for tund's "ready" line in log,
# and dies with the log if tund exits or stays silent first.
wait_ready() {
	timeout 15 grep -q -m1 'msg=ready' <(tail -n +1 -F "$1" --pid "$2" 2>/dev/null) || die "tund did not start: $(cat "$1")"
}

# busy_ticks prints the machine's busy time since boot in clock ticks
# (/proc/stat's "cpu" line, all fields but idle and iowait, as
# scripts/benchclient counts it); pid_ticks PID the process's utime+stime.
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
pid_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# need_docker makes sure a Docker engine answers: it installs Debian's
# docker.io (and docker-compose) when they are missing and, when no engine
# answers, starts dockerd and waits for it. A daemon it started is recorded
# in docker_pid for stop_docker, and in docker_pidfile with the PID of the
# script that owns it: a daemon whose owner was killed before its
# stop_docker is taken over by the next run, to be stopped at its end. An
# engine that someone else started, or that a live run owns (scripts/test
# running scripts/docker-images), is left alone. Set the EXIT trap
# (stop_docker) before calling it.
docker_pid=""
docker_pidfile=/run/tund/dockerd.pid
need_docker() {
	need_packages dockerd:docker.io docker-compose:docker-compose
	local pid="" owner=""
	read -r pid owner 2>/dev/null <"$docker_pidfile" || true
	if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && ! kill -0 "${owner:-0}" 2>/dev/null; then
		docker_pid="$pid" # started by a run that was killed: ours now
		echo "$docker_pid $$" >"$docker_pidfile"
	fi
	docker info >/dev/null 2>&1 && return 0
	mkdir -p /run/tund
	local log=/run/tund/dockerd.log i
	echo "starting dockerd (log $log)" >&2
	dockerd >"$log" 2>&1 &
	docker_pid=$!
	echo "$docker_pid $$" >"$docker_pidfile"
	for i in $(seq 150); do
		docker info >/dev/null 2>&1 && return 0
		kill -0 "$docker_pid" 2>/dev/null || die "dockerd exited at start: $(tail -5 "$log")"
		sleep 0.2
	done
	die "dockerd did not answer within 30 s: $(tail -5 "$log")"
}

# stop_docker stops the daemon that need_docker started, if it started one,
# and waits for it (it stops the containerd it started itself too).
stop_docker() {
	[ -n "$docker_pid" ] || return 0
	kill -TERM "$docker_pid" 2>/dev/null || true
	timeout 30 tail --pid "$docker_pid" -f /dev/null || kill -KILL "$docker_pid" 2>/dev/null || true
	rm -f "$docker_pidfile"
	docker_pid=""
}

# report_profile BIN PPROF prints a CPU profile of tund (binary BIN): its
# top functions, then tund's CPU by kind of work
# (scripts/profile-breakdown.awk says how each sample is assigned).
# PROFILE_OUT=FILE keeps the profile, with the binary beside it as FILE.bin.
report_profile() {
	go tool pprof -top "$1" "$2" >"$2.top" 2>/dev/null
	head -40 "$2.top" # not piped: head's early exit would fail pprof under pipefail
	echo
	echo "tund's CPU by kind of work (share of the samples):"
	go tool pprof -traces "$1" "$2" 2>/dev/null | awk -f "$repo/scripts/profile-breakdown.awk"
	if [ -n "${PROFILE_OUT:-}" ]; then
		cp "$2" "$PROFILE_OUT" && cp "$1" "$PROFILE_OUT.bin"
	fi
}
