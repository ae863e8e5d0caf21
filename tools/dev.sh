#!/usr/bin/env bash
# dev.sh - set up, build, demo, test and benchmark upager on Debian.
#
#   tools/dev.sh demo            install what is missing, build, run the demo
#   tools/dev.sh test            the same set-up, then the whole test suite
#   tools/dev.sh build           set-up and a Release build in build/
#   tools/dev.sh bench           every benchmark in bench/, with its RESULT line
#   tools/dev.sh sanitize KIND   test suite under KIND=address (ASan+UBSan) or thread (TSan)
#   tools/dev.sh cross           cross-build for aarch64 (tools/cross-aarch64.sh)
#   tools/dev.sh arm64           the test suite on Debian's arm64 kernel in qemu (tools/arm64-lane.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

# memcached, iproute2: remote paging's tests start servers, some in network
# namespaces. coreutils, python3, sqlite3, redis: programs the preload tests
# run under upager.
PACKAGES=(build-essential cmake pkg-config liburing-dev libjemalloc-dev libcriterion-dev
	memcached iproute2 binutils coreutils python3 sqlite3 redis-server redis-tools)
# gnuplot: the benchmarks' throughput plots (tools/dev.sh bench only).
BENCH_PACKAGES=(gnuplot-nox)
JOBS=$(nproc)

say() { printf '\033[1mdev.sh: %s\033[0m\n' "$*" >&2; }
die() { say "$*"; exit 1; }

ensure_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root or install them"
	say "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build DIR [cmake options...]
build() {
	local dir=$1
	shift
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DUPAGER_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j"$JOBS"
}

run_tests() {
	(cd "$1" && ctest --output-on-failure --timeout 900)
}

cmd=${1:-}
case "$cmd" in
build)
	ensure_packages
	build build
	say "CLI at build/tools/upager"
	;;
demo)
	ensure_packages
	build build
	build/tools/upager demo
	;;
test)
	ensure_packages
	build build
	run_tests build
	;;
bench)
	ensure_packages "${BENCH_PACKAGES[@]}"
	build build
	status=0
	for b in build/bench/bench_*; do
		[ -x "$b" ] || continue
		say "running $b"
		rc=0
		"$b" | tee "build/$(basename "$b").out" || rc=${PIPESTATUS[0]}
		case $rc in
		0) ;;
		77) say "$(basename "$b"): skipped (see above)" ;;
		*) say "$(basename "$b"): failed ($rc)"; status=1 ;;
		esac
	done
	say "results:"
	grep -h '^RESULT' build/bench_*.out || true
	exit $status
	;;
sanitize)
	kind=${2:-}
	case "$kind" in address | thread) ;; *) die "usage: tools/dev.sh sanitize address|thread" ;; esac
	ensure_packages
	build "build-$kind" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUPAGER_SANITIZE="$kind" -DUPAGER_BENCH=OFF
	# A report must fail the test, not just be printed.
	export TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}"
	export ASAN_OPTIONS="abort_on_error=1 ${ASAN_OPTIONS:-}"
	run_tests "build-$kind"
	;;
cross)
	exec tools/cross-aarch64.sh
	;;
arm64)
	exec tools/arm64-lane.sh
	;;
*)
	echo "usage: tools/dev.sh demo|test|build|bench|sanitize address|thread|cross|arm64" >&2
	exit 2
	;;
esac
