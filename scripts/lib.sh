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

# need_go puts a Go toolchain on PATH. go.mod asks for Go 1.26; a Go of 1.21
# or later fetches that version itself (GOTOOLCHAIN=auto, from the module
# proxy), so Debian's golang-go is enough where /usr/local/go is absent.
need_go() {
	export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
	if ! command -v go >/dev/null; then
		need_packages go:golang-go
	fi
	export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
	go version >/dev/null 2>&1 || die "no working Go toolchain: install Go 1.26 (https://go.dev/doc/install) and retry"
}

# repo is the root of the checkout.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
