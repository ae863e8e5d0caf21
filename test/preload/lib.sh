# lib.sh - what the preload tests share. Sourced with the test's arguments:
#   $1  the upager CLI     $2  the directory of the helper programs (maxrss, syscalls)
set -eu
UPAGER=$1
HELPERS=$2
WORK=$(mktemp -d /var/tmp/upager-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export UPAGER_STATS_DIR="$WORK/stats"
MiB=1048576

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || skip "$1 is not installed (tools/dev.sh installs it)"; }

[ "$(id -u)" -eq 0 ] || [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" = 1 ] ||
	skip "userfaultfd needs root or vm.unprivileged_userfaultfd=1"

# run_plain NAME CMD...: run CMD, output in $WORK/NAME.plain, peak RSS (KiB) in PLAIN_RSS.
run_plain() {
	local name=$1
	shift
	"$HELPERS/maxrss" 3 "$@" 3>"$WORK/$name.plain.rss" >"$WORK/$name.plain"
	PLAIN_RSS=$(cat "$WORK/$name.plain.rss")
}

# run_paged NAME MEM CMD...: the same under `upager run --mem MEM`; UPAGER_RSS.
# Pages go to a swap file in $WORK, or where PAGED_TO says (upager run options).
run_paged() {
	local name=$1 mem=$2
	shift 2
	"$HELPERS/maxrss" 3 "$UPAGER" run --mem "$mem" ${PAGED_TO:---swap "$WORK"} --stats -- "$@" \
		3>"$WORK/$name.upager.rss" >"$WORK/$name.upager" 2>"$WORK/$name.stats" ||
		{ cat "$WORK/$name.stats"; fail "$name failed under upager (status $?)"; }
	UPAGER_RSS=$(cat "$WORK/$name.upager.rss")
}

# compare NAME MEM_MIB: same output; the plain run needed more than
# ABOVE_PCT percent of the budget (default 200); under upager the peak stayed within the budget plus what is
# not managed (program text, stacks, upager's own metadata and I/O buffers).
compare() {
	local name=$1 mem=$2 slack=${SLACK_MIB:-40} above=${ABOVE_PCT:-200}
	cmp -s "$WORK/$name.plain" "$WORK/$name.upager" ||
		fail "$name: output differs from the plain run"
	echo "$name: peak RSS plain $((PLAIN_RSS / 1024)) MiB, under upager $((UPAGER_RSS / 1024)) MiB (budget $mem MiB)"
	grep -E '^(faults_major|swap_outs|swap_ins) ' "$WORK/$name.stats" || true
	[ "$PLAIN_RSS" -gt $((mem * above * 1024 / 100)) ] ||
		fail "$name: the plain run's footprint is not well above the budget"
	[ "$UPAGER_RSS" -le $(((mem + slack) * 1024)) ] ||
		fail "$name: peak RSS $((UPAGER_RSS / 1024)) MiB above budget $mem MiB + $slack MiB"
}

# run_helper PROG: the helper program PROG under `upager run --mem 32M`; it
# must print "ok", and pages must have gone out to swap.
run_helper() {
	local out
	out=$("$UPAGER" run --mem 32M --swap "$WORK" --stats -- "$HELPERS/$1" 2>"$WORK/stats") ||
		{ cat "$WORK/stats"; fail "$1 failed"; }
	[ "$out" = ok ] || fail "$1 said: $out"
	grep -q '^swap_outs [1-9]' "$WORK/stats" || { cat "$WORK/stats"; fail "nothing was paged out"; }
}
