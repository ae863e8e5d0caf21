# preload_fork: fork in the middle of heavy paging; parent and child keep
# running and writing, each sees only its own writes, the child executes a
# program. (What the child reads of memory its parent had paged out at the
# fork is not checked: it reads as zeros, and the child says so on stderr.)
. "$(dirname "$0")/lib.sh"
out=$("$UPAGER" run --mem 32M --swap "$WORK" --stats -- "$HELPERS/forker" 2>"$WORK/stats") ||
	{ cat "$WORK/stats"; fail "forker failed"; }
[ "$out" = ok ] || fail "forker said: $out"
grep -q '^swap_outs [1-9]' "$WORK/stats" || { cat "$WORK/stats"; fail "nothing was paged out"; }
grep -q 'fork: ' "$WORK/stats" || { cat "$WORK/stats"; fail "the child did not warn about paged-out memory"; }
echo ok
