#!/usr/bin/env bash
# preload_vs_kernel.sh - an unmodified program under `upager run` against the
# same program under the kernel's swap, at the same budget. Built as
# build/bench/bench_preload_vs_kernel, next to ../tools/upager.
#
#   kernel  python3 WORKLOAD in a memory cgroup (v2 or v1) of the budget, with a
#           swap file of its own (made here, enabled at top priority)
#   upager  upager run --mem BUDGET --swap DIR -- python3 WORKLOAD
#
# The workload builds a list of strings and a dict of ints to strings (about
# 760 MiB at the default size, 3x the budget), then walks and sums both.
# Runs alternate between the pagers, the first pager alternating by round;
# outputs must match. Last line:
#   RESULT name=preload-vs-kernel workload=... budget=... ratio=...
#          kernel_s=... upager_s=...       (ratio = kernel time / upager time,
#                                          medians)
# Exit status 0; 1 on an error or differing output; 77 when it cannot run here.
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
upager=$here/../tools/upager
n=3000000 budget=256M rounds=2 base=/var/tmp
say() { printf 'preload-vs-kernel: %s\n' "$*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
while getopts "n:m:r:s:q" opt; do
	case $opt in
	n) n=$OPTARG ;;
	m) budget=$OPTARG ;;
	r) rounds=$OPTARG ;;
	s) base=$OPTARG ;;
	q) n=600000 budget=64M ;;
	*) echo "usage: bench_preload_vs_kernel [-q] [-n ITEMS] [-m BUDGET] [-r ROUNDS] [-s DIR]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || skip "needs root (swapon, memory cgroups)"
py=/usr/bin/python3
[ -x $py ] || skip "no $py"
[ -x "$upager" ] || skip "no $upager"
cg_v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
cg_v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ { print $2; exit }' /proc/mounts)
budget_b=$(numfmt --from=iec "$budget")

work='' swap_on=0 cg=''
cleanup() {
	local rc=$?
	trap - EXIT
	[ "$swap_on" = 0 ] || swapoff "$work/kernel.swap" || { say "WARNING: swapoff failed, $work left"; work=''; }
	[ -z "$cg" ] || for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
	[ -z "$work" ] || rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

work=$(mktemp -d "$base/upager-pvk.XXXXXX")
fallocate -l $((8 * budget_b)) "$work/kernel.swap" || skip "fallocate failed in $base"
chmod 600 "$work/kernel.swap"
mkswap "$work/kernel.swap" >/dev/null && swapon -p 32767 "$work/kernel.swap" || skip "swapon failed"
swap_on=1
# The memory group: as in vs_kernel_swap.sh, v2 under the root, else v1
# nested in our own group, swap not capped.
if [ -n "$cg_v2" ] && grep -qw memory "$cg_v2/cgroup.controllers"; then
	grep -qw memory "$cg_v2/cgroup.subtree_control" || echo +memory >"$cg_v2/cgroup.subtree_control"
	cg=$cg_v2/upager-pvk.$$
	mkdir "$cg"
	echo "$budget_b" >"$cg/memory.max"
	[ ! -e "$cg/memory.swap.max" ] || echo max >"$cg/memory.swap.max"
elif [ -n "$cg_v1" ]; then
	own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3; exit }' /proc/self/cgroup)
	cg=$cg_v1${own%/}/upager-pvk.$$
	mkdir "$cg"
	echo "$budget_b" >"$cg/memory.limit_in_bytes"
	echo 60 >"$cg/memory.swappiness"
else
	skip "no memory cgroup controller"
fi

cat >"$work/work.py" <<PYEOF
n = $n
l = [str(i) * 4 for i in range(n)]
d = {i: str(i) for i in range(n)}
print(len(l), sum(len(s) for s in l), sum(len(v) for v in d.values()), sum(d))
PYEOF

# run PAGER: one timed run; seconds on stdout.
run() {
	local t0 t1
	t0=$(date +%s.%N)
	if [ "$1" = kernel ]; then
		sh -c 'echo $$ >"$0" && exec "$@"' "$cg/cgroup.procs" $py "$work/work.py" >"$work/out.$1"
	else
		"$upager" run --mem "$budget" --swap "$work" -- $py "$work/work.py" >"$work/out.$1"
	fi
	t1=$(date +%s.%N)
	echo "$t0 $t1" | awk '{ printf "%.2f\n", $2 - $1 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

say "workload python3 list+dict n=$n, budget $budget, $rounds round(s), swap in $base, kernel $(uname -r)"
: >"$work/kernel.t"
: >"$work/upager.t"
for ((r = 0; r < rounds; r++)); do
	if ((r % 2)); then order="upager kernel"; else order="kernel upager"; fi
	for p in $order; do
		s=$(run $p)
		echo "$s" >>"$work/$p.t"
		say "round $r $p ${s}s"
	done
	cmp -s "$work/out.kernel" "$work/out.upager" || { say "outputs differ"; exit 1; }
done
ks=$(median <"$work/kernel.t")
us=$(median <"$work/upager.t")
ratio=$(echo "$ks $us" | awk '{ printf "%.2f", $1 / $2 }')
echo "RESULT name=preload-vs-kernel workload=python3-list-dict-n$n budget=$budget ratio=$ratio kernel_s=$ks upager_s=$us"
