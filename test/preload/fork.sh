# preload_fork: fork in the middle of heavy paging; the child sees the
# parent's data at the fork, swapped-out pages included; parent and child
# keep running and writing, each sees only its own writes; the child
# executes a program.
. "$(dirname "$0")/lib.sh"
out=$("$UPAGER" run --mem 32M --swap "$WORK" --stats -- "$HELPERS/forker" 2>"$WORK/stats") ||
	{ cat "$WORK/stats"; fail "forker failed"; }
[ "$out" = ok ] || fail "forker said: $out"
grep -q '^swap_outs [1-9]' "$WORK/stats" || { cat "$WORK/stats"; fail "nothing was paged out"; }
echo ok
