# preload_sort: coreutils sort of a file three times the budget, with a
# sort buffer (-S) larger than the budget, compared with a plain run. (Its
# peak is the buffer: a buffer twice the budget sorts, but for minutes.)
. "$(dirname "$0")/lib.sh"
need sort
need awk
seq 1 1700000 | awk '{ printf "%d %s %d\n", ($1 * 7919) % 1000003, "abcdefghijabcdefghijabcdefghij", $1 }' >"$WORK/in"
[ "$(wc -c <"$WORK/in")" -gt $((72 * MiB)) ] || fail "input smaller than three budgets"
run_plain sort sort --parallel=1 -S 40M "$WORK/in"
run_paged sort 24M sort --parallel=1 -S 40M "$WORK/in"
ABOVE_PCT=150 compare sort 24
