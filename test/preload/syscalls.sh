# preload_syscalls: system calls into managed memory and changes to managed
# mappings, under a budget a third of what the program touches.
. "$(dirname "$0")/lib.sh"
out=$("$UPAGER" run --mem 32M --swap "$WORK" --stats -- "$HELPERS/syscalls" 2>"$WORK/stats") ||
	{ cat "$WORK/stats"; fail "syscalls failed"; }
[ "$out" = ok ] || fail "syscalls said: $out"
grep -q '^swap_outs [1-9]' "$WORK/stats" || { cat "$WORK/stats"; fail "nothing was paged out"; }
echo ok
