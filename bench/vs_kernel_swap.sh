#!/usr/bin/env bash
# vs_kernel_swap.sh - upager's swap paging against the kernel's, built as
# build/bench/bench_vs_kernel_swap next to the workload bench_swap_workload.
#
# One workload binary, two pagers, the same budget:
#   kernel  bench_swap_workload --kernel in a memory cgroup (v2 memory.max, or
#           v1 memory.limit_in_bytes) of the budget, swapping to a swap file
#           of its own that this script makes and enables at top priority
#   upager  bench_swap_workload --upager --mem BUDGET --swap DIR, outside the
#           cgroup: upager enforces its own budget, with its swap file in DIR
# Both swap files go in one directory, so on one filesystem and disk.
#
# Cases: random reads-and-writes with 1, 2 and 8 threads, and a sequential
# scan. Each run of the workload populates the working set (twice the budget
# by default) and then runs one case, so that every case starts from the same
# state. Interleaved: each case runs on both pagers before the next, the pager
# going first alternating from case to case and round to round, so that the
# host's drifts (10x on these VMs) hit both alike.
#
# Output: the workload's lines, a table of median ops/s per case, a CSV of
# every per-second sample (system,phase,threads,t,ops_per_s,round), a PNG of
# throughput over time (gnuplot), and last
#   RESULT name=vs-kernel-swap rand_ratio_1t=... rand_ratio_2t=...
#          rand_ratio_8t=... seq_ratio=...          (upager / kernel ops/s)
# or, when this build of upager cannot page to swap, the kernel's figures and
#   RESULT name=vs-kernel-swap status=upager-unavailable kernel_rand_1t=...
#          kernel_rand_2t=... kernel_rand_8t=... kernel_seq_mbps=...
#
# Run as bench_vs_remote (a copy of this script under that name), it adds
# upager paging to memcached servers on loopback, which it starts (one, and
# three), to the same runs: systems kernel, upager (the swap file), remote1
# and remote3, cases rand:1 and rand:2, and last
#   RESULT name=remote p50_us=... p99_us=... vs_swapfile=... vs_kernel_swap=...
#          vs_kernel_swap_2t=... remote3_vs_kernel_swap=... remote3_vs_kernel_swap_2t=...
# p50/p99: upager's fault service time over remote1's rand:1 phase; vs_*:
# remote1's ops/s over the swap file's and the kernel's (rand:1 unless _2t).
#
# Exit status: 0; 1 on an error (a verification failure included); 2 on bad
# usage; 77 when it cannot run here (not root, no swap, no memory cgroup) or
# the upager side is unavailable. The swap file is switched off and deleted
# and the cgroup removed on every exit but SIGKILL.
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
workload=$here/bench_swap_workload
SWAP_PRIO=32767                 # the highest: the kernel side uses ours first
CASES=(rand:1 rand:2 rand:8 seq)
SYSTEMS=(kernel upager)
remote=0 me=vs-kernel-swap
case $(basename "$0") in
*remote*)
	remote=1 me=vs-remote
	CASES=(rand:1 rand:2)
	SYSTEMS=(kernel upager remote1 remote3)
	;;
esac

say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { say "$*"; exit 1; }
skip() { say "SKIP: $*"; exit 77; }
bad() { say "$*"; exit 2; }

usage() {
	cat <<EOF
usage: bench_vs_kernel_swap [-q] [-w SIZE] [-m SIZE] [-d SECS] [-r ROUNDS]
                            [-s DIR] [-o PREFIX]
  -w SIZE    working set (default 2G; -q: 256M)
  -m SIZE    memory budget of both pagers (default 1G; -q: 128M)
  -d SECS    seconds per case (default 10; -q: 3)
  -r ROUNDS  rounds of all cases on both pagers (default 1)
  -s DIR     where both swap files go (default /var/tmp), in a temporary
             directory made there and removed at exit
  -o PREFIX  writes PREFIX.csv and PREFIX.png (default: vs_kernel_swap
             next to this program)
  -q         quick smoke run
Needs root (swapon, cgroups).
EOF
	exit "$1"
}

wset='' budget='' secs='' rounds=1 base=/var/tmp prefix=$here/vs_kernel_swap
quick=0
while getopts "w:m:d:r:s:o:qh" opt; do
	case $opt in
	w) wset=$OPTARG ;;
	m) budget=$OPTARG ;;
	d) secs=$OPTARG ;;
	r) rounds=$OPTARG ;;
	s) base=$OPTARG ;;
	o) prefix=$OPTARG ;;
	q) quick=1 ;;
	h) usage 0 ;;
	*) usage 2 >&2 ;;
	esac
done
[ $OPTIND -gt $# ] || usage 2 >&2
if [ $quick = 1 ]; then
	: "${wset:=256M}" "${budget:=128M}" "${secs:=3}"
else
	: "${wset:=2G}" "${budget:=1G}" "${secs:=10}"
fi
page_b=$(getconf PAGESIZE)
# 2G, 2GiB, 1.5G: bytes, rounded down to whole pages.
bytes() { local b; b=$(numfmt --from=iec "${1%iB}" 2>/dev/null) && echo $((b / page_b * page_b)); }
wset_b=$(bytes "$wset") || bad "-w: '$wset' is not a size"
budget_b=$(bytes "$budget") || bad "-m: '$budget' is not a size"
[[ $secs =~ ^[0-9]+([.][0-9]+)?$ ]] || bad "-d: '$secs' is not a duration"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || bad "-r: '$rounds' is not a count"
((budget_b > 0 && budget_b < wset_b)) ||
	bad "the budget ($budget) must be below the working set ($wset), or nothing swaps"
[ -x "$workload" ] || die "$workload not found: build bench/ first"

# ---------------------------------------------------------------------------
# Clean-up, armed before anything is made. Traps run between commands, so the
# workload runs in the background with `wait`, which a signal interrupts; the
# workload itself ignores SIGINT then (bash does that to background jobs
# without job control), so it is killed here by its pid.
work='' kswap='' swap_on=0 cg='' child='' mc_pids=()
# shellcheck disable=SC2317 # reached through the trap
cleanup() {
	local rc=$? i
	# Once: a second Ctrl-C must not cut the clean-up short (swapoff and
	# the rest inherit the ignoring).
	trap - EXIT
	trap '' INT TERM HUP
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$child" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	for i in "${mc_pids[@]}"; do
		kill -KILL "$i" 2>/dev/null || true
		wait "$i" 2>/dev/null || true
	done
	if [ "$swap_on" = 1 ]; then
		# Never delete a swap file still in use: its blocks would stay
		# held, with no path left to swapoff.
		if swapoff "$kswap"; then
			rm -f "$kswap"
		else
			say "WARNING: swapoff $kswap failed: it is left in place"
			work=''
			rc=1
		fi
	fi
	if [ -n "$cg" ]; then
		# A memory cgroup lingers briefly after its last task exits.
		for ((i = 0; i < 50; i++)); do
			if [ ! -d "$cg" ] || rmdir "$cg" 2>/dev/null; then
				break
			fi
			sleep 0.1
		done
		[ ! -d "$cg" ] || say "WARNING: could not remove cgroup $cg"
	fi
	[ -z "$work" ] || rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

[ "$(id -u)" -eq 0 ] || skip "needs root (swapon, memory cgroups)"

# ---------------------------------------------------------------------------
# The kernel's swap file: 2x the working set (it needs wset - budget), next to
# where upager's goes; upager's own is as large, so room for both is checked.
[ -d "$base" ] || bad "-s: $base is not a directory"
fstype=$(stat -f -c %T "$base")
case $fstype in
tmpfs | ramfs) skip "$base is on $fstype: swap files need a disk filesystem (-s DIR)" ;;
esac
swap_b=$((2 * wset_b))
avail=$(df --output=avail -B1 "$base" | tail -1)
((avail > 2 * swap_b + (1 << 30))) ||
	skip "$base has $((avail >> 20)) MiB free; both swap files need $((2 * swap_b >> 20)) MiB and 1 GiB to spare"
while read -r f; do
	case $f in */upager-vs-kswap.*) say "WARNING: a killed run's swap file is still active: $f (swapoff it, delete it)" ;; esac
done < <(swapon --show=NAME --noheadings)
other_swap=$(swapon --show=NAME,PRIO --noheadings | tr -s ' \n' ' ')
work=$(mktemp -d "$(readlink -f "$base")/upager-vs-kswap.XXXXXX")
mkdir "$work/upager" "$work/runs"
kswap=$work/kernel.swap
fallocate -l "$swap_b" "$kswap" || skip "fallocate $kswap failed"
chmod 600 "$kswap"
mkswap "$kswap" >/dev/null 2>"$work/err" || skip "mkswap: $(cat "$work/err")"
swapon -p $SWAP_PRIO "$kswap" 2>"$work/err" || skip "swapon $kswap: $(cat "$work/err")"
swap_on=1

# ---------------------------------------------------------------------------
# The memory cgroup. v2 where the unified hierarchy has the memory controller
# (then made under the root: a non-root v2 group with tasks cannot enable
# controllers for children); else v1, nested in this process's own memory
# group so that whatever accounts for us accounts for the workload too.
cg_v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
cg_v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ { print $2; exit }' /proc/mounts)
if [ -n "$cg_v2" ] && grep -qw memory "$cg_v2/cgroup.controllers"; then
	cgver=v2
	# v2 has no per-group swappiness: 0 would keep anonymous pages in
	# memory until OOM, a different experiment.
	[ "$(cat /proc/sys/vm/swappiness)" -gt 0 ] || skip "vm.swappiness is 0"
	grep -qw memory "$cg_v2/cgroup.subtree_control" ||
		echo +memory >"$cg_v2/cgroup.subtree_control"
	cg=$cg_v2/upager-vs-kswap.$$
	mkdir "$cg"
	echo "$budget_b" >"$cg/memory.max"
	# Absent without swap accounting, where swap is unlimited anyway.
	[ ! -e "$cg/memory.swap.max" ] || echo max >"$cg/memory.swap.max"
elif [ -n "$cg_v1" ]; then
	cgver=v1
	own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3; exit }' /proc/self/cgroup)
	cg=$cg_v1${own%/}/upager-vs-kswap.$$
	mkdir "$cg"
	echo "$budget_b" >"$cg/memory.limit_in_bytes"
	# memsw.limit_in_bytes stays unlimited: swap is not capped. 60 is the
	# kernel's default; a parent's 0 would be inherited otherwise.
	echo 60 >"$cg/memory.swappiness"
else
	skip "no memory cgroup controller (neither cgroup2 with memory nor v1 memory)"
fi

zswap=$(cat /sys/module/zswap/parameters/enabled 2>/dev/null || echo absent)
echo "$me: wset=$((wset_b >> 20))MiB budget=$((budget_b >> 20))MiB" \
	"secs=$secs rounds=$rounds kernel=$(uname -r) cgroup=$cgver:$cg zswap=$zswap" \
	"page-cluster=$(cat /proc/sys/vm/page-cluster)"
echo "$me: swap dir $work ($fstype), kernel swap file $((swap_b >> 20))MiB" \
	"prio $SWAP_PRIO${other_swap:+; other swap areas: $other_swap}"

# ---------------------------------------------------------------------------
# memcached servers on loopback for the remote systems: remote1 pages to the
# first, remote3 to all three. Each has room for the whole working set.
if [ $remote = 1 ]; then
	command -v memcached >/dev/null || skip "memcached is not installed (tools/dev.sh installs it)"
	mc_list=()
	for i in 0 1 2; do
		# A port where nothing answers.
		while port=$((20000 + RANDOM % 30000)); (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
			:
		done
		memcached -U 0 -l 127.0.0.1 -p "$port" -m $((wset_b * 5 / 4 >> 20)) -M -t 1 \
			-u "$(id -un)" >/dev/null 2>&1 &
		mc_pids+=($!)
		mc_list+=("127.0.0.1:$port")
	done
	for i in 0 1 2; do
		for ((t = 0; t < 100; t++)); do
			(exec 3<>"/dev/tcp/127.0.0.1/${mc_list[i]#*:}") 2>/dev/null && break
			sleep 0.05
		done
	done
	remote1=${mc_list[0]}
	remote3=$(IFS=,; echo "${mc_list[*]}")
	echo "$me: memcached $(memcached -V | cut -d' ' -f2) servers $remote3, one thread each"
fi

# ---------------------------------------------------------------------------
# Runs.
csv=$prefix.csv
echo "system,phase,threads,t,ops_per_s,round" >"$csv"
declare -A ops=()               # [system/case] = ops/s of each round
declare -A lat=()               # [system/case/p50|p99] = µs of each round (upager's)
upager_ok=1
upager_skip=''

# run_one SYSTEM CASE ROUND: one workload run, its samples into the CSV.
run_one() {
	local sys=$1 case=$2 round=$3 rc=0 phase threads v
	local tag=$work/runs/$sys.${case/:/}.$round
	local args=(-w "$wset_b" -d "$secs" -p "$case" -o "$tag.csv")

	if [ "$sys" = kernel ]; then
		# The wrapper joins the cgroup, then becomes the workload: the
		# pid waited for is the workload's.
		# shellcheck disable=SC2016 # $$ and $@ are the inner shell's
		sh -c 'echo $$ >"$0" && exec "$@"' "$cg/cgroup.procs" \
			"$workload" --kernel "${args[@]}" >"$tag.out" 2>&1 &
	elif [ "$sys" = upager ]; then
		"$workload" --upager --mem "$budget_b" --swap "$work/upager" \
			"${args[@]}" >"$tag.out" 2>&1 &
	else
		local servers=$remote1
		[ "$sys" = remote1 ] || servers=$remote3
		"$workload" --upager --mem "$budget_b" --remote "$servers" \
			"${args[@]}" >"$tag.out" 2>&1 &
	fi
	child=$!
	wait "$child" || rc=$?
	child=''
	sed "s/^/  $sys: /" "$tag.out"
	if [ "$sys" != kernel ] && [ $rc = 77 ]; then
		upager_ok=0
		upager_skip=$(sed -n 's/^swap_workload: SKIP: //p' "$tag.out")
		return
	fi
	[ $rc = 0 ] || die "$sys $case failed (exit status $rc)"

	phase=${case%%:*}
	threads=1
	[ "$phase" = seq ] || threads=${case#*:}
	v=$(awk -v p="phase=$phase" -v t="threads=$threads" '
		$1 == p && $2 == t { for (i = 3; i <= NF; i++)
			if (sub(/^ops_per_s=/, "", $i)) print $i }' "$tag.out")
	[ -n "$v" ] || die "$sys $case: no result line"
	ops[$sys/$case]+="$v "
	for v in p50 p99; do
		lat[$sys/$case/$v]+="$(sed -n "s/^upager latency in the phases: .*${v}_us=\([0-9.]*\).*/\1/p" "$tag.out") "
	done
	if [ "$sys" = kernel ]; then
		# Without swapping the comparison would be against RAM.
		v=$(sed -n 's/^memory after populate: .*swap_mb=\([0-9]*\).*/\1/p' "$tag.out")
		[ "${v:-0}" -gt 0 ] || die "the kernel did not swap: is the cgroup's limit in force?"
	fi
	awk -F, -v s="$sys" -v r="$round" 'NR > 1 && $1 != "populate" {
		print s "," $0 "," r }' "$tag.csv" >>"$csv"
}

for ((r = 0; r < rounds; r++)); do
	for c in "${!CASES[@]}"; do
		# Each system goes first in turn.
		order=()
		for ((i = 0; i < ${#SYSTEMS[@]}; i++)); do
			order+=("${SYSTEMS[(i + r + c) % ${#SYSTEMS[@]}]}")
		done
		for sys in "${order[@]}"; do
			[ "$sys" = kernel ] || [ $upager_ok = 1 ] || continue
			echo "$me: round $((r + 1))/$rounds ${CASES[c]} $sys"
			run_one "$sys" "${CASES[c]}" "$r"
		done
	done
done

# ---------------------------------------------------------------------------
# Report: medians over rounds.
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 }
	END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
	      else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A med=()
# ratio CASE [SYSTEM [REFERENCE]]: median ops/s of SYSTEM (upager) over REFERENCE's (kernel).
ratio() { awk -v u="${med[${2:-upager}/$1]}" -v k="${med[${3:-kernel}/$1]}" 'BEGIN { printf "%.3f", u / k }'; }
mbps() { awk -v o="$1" -v p="$page_b" 'BEGIN { printf "%.1f", o * p / 1e6 }'; }
printf '%-8s %14s %14s %8s\n' case kernel_ops/s upager_ops/s ratio
for c in "${CASES[@]}"; do
	med[kernel/$c]=$(median <<<"${ops[kernel/$c]:-}")
	med[upager/$c]=$(median <<<"${ops[upager/$c]:-}")
	for sys in "${SYSTEMS[@]:2}"; do
		med[$sys/$c]=$(median <<<"${ops[$sys/$c]:-}")
		for v in p50 p99; do
			med[$sys/$c/$v]=$(median <<<"${lat[$sys/$c/$v]:-}")
		done
	done
	if [ $upager_ok = 1 ]; then
		printf '%-8s %14.1f %14.1f %8s' "$c" "${med[kernel/$c]}" \
			"${med[upager/$c]}" "$(ratio "$c")"
		for sys in "${SYSTEMS[@]:2}"; do
			printf '   %s %.1f ops/s (%s of the kernel'"'"'s, p50 %sus p99 %sus)' "$sys" \
				"${med[$sys/$c]}" "$(ratio "$c" "$sys")" "${med[$sys/$c/p50]}" \
				"${med[$sys/$c/p99]}"
		done
		echo
	else
		printf '%-8s %14.1f %14s %8s\n' "$c" "${med[kernel/$c]}" - -
	fi
done
if [ $remote = 1 ]; then
	:
elif [ $upager_ok = 1 ]; then
	echo "seq MB/s: kernel $(mbps "${med[kernel/seq]}") upager $(mbps "${med[upager/seq]}")"
else
	echo "seq MB/s: kernel $(mbps "${med[kernel/seq]}")"
fi
echo "samples: $csv"

# Throughput over time, one panel per case, every round's line in its
# system's colour.
if command -v gnuplot >/dev/null; then
	plot=$prefix.png
	{
		echo "set terminal pngcairo size 1400,900 noenhanced"
		echo "set output '$plot'"
		echo "set multiplot layout 2,2 title 'upager vs kernel swap:" \
			"wset $((wset_b >> 20)) MiB, budget $((budget_b >> 20)) MiB'"
		echo "set xlabel 'seconds'; set grid; set key bottom right"
		for c in "${CASES[@]}"; do
			phase=${c%%:*} threads=1
			[ "$phase" = seq ] || threads=${c#*:}
			echo "set title '$c'; set ylabel '$([ "$phase" = seq ] && echo pages || echo ops)/s'"
			cmd='' color=''
			for sys in "${SYSTEMS[@]}"; do
				dat=$work/$sys.${c/:/}.dat
				awk -F, -v s="$sys" -v p="$phase" -v t="$threads" '
					$1 == s && $2 == p && $3 == t {
						if (n++ && $6 != r) print ""; r = $6; print $4, $5 }' \
					"$csv" >"$dat"
				[ -s "$dat" ] || continue
				case $sys in
				kernel) color='#c0392b' ;;
				upager) color='#2471a3' ;;
				remote1) color='#27ae60' ;;
				*) color='#8e44ad' ;;
				esac
				cmd+="${cmd:+, }'$dat' using 1:2 with linespoints lc rgb '$color' title '$sys'"
			done
			echo "plot [0:] [0:] $cmd"
		done
		echo "unset multiplot"
	} >"$work/plot.gp"
	if gnuplot "$work/plot.gp" 2>"$work/err"; then
		echo "plot: $plot"
	else
		say "gnuplot failed: $(cat "$work/err")"
	fi
else
	say "gnuplot not installed: no plot"
fi

if [ $upager_ok = 1 ] && [ $remote = 1 ]; then
	echo "RESULT name=remote p50_us=${med[remote1/rand:1/p50]} p99_us=${med[remote1/rand:1/p99]}" \
		"vs_swapfile=$(ratio rand:1 remote1 upager) vs_kernel_swap=$(ratio rand:1 remote1)" \
		"vs_kernel_swap_2t=$(ratio rand:2 remote1)" \
		"remote3_vs_kernel_swap=$(ratio rand:1 remote3)" \
		"remote3_vs_kernel_swap_2t=$(ratio rand:2 remote3)"
	exit 0
fi
if [ $upager_ok = 1 ]; then
	echo "RESULT name=vs-kernel-swap rand_ratio_1t=$(ratio rand:1)" \
		"rand_ratio_2t=$(ratio rand:2) rand_ratio_8t=$(ratio rand:8) seq_ratio=$(ratio seq)"
	exit 0
fi
say "upager side unavailable: $upager_skip"
if [ $remote = 1 ]; then
	printf 'RESULT name=remote status=upager-unavailable kernel_rand_1t=%.1f kernel_rand_2t=%.1f\n' \
		"${med[kernel/rand:1]}" "${med[kernel/rand:2]}"
	exit 77
fi
printf 'RESULT name=vs-kernel-swap status=upager-unavailable kernel_rand_1t=%.1f kernel_rand_2t=%.1f kernel_rand_8t=%.1f kernel_seq_mbps=%s\n' \
	"${med[kernel/rand:1]}" "${med[kernel/rand:2]}" "${med[kernel/rand:8]}" \
	"$(mbps "${med[kernel/seq]}")"
exit 77
