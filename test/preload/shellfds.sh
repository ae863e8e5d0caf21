# preload_shellfds: a shell script under a budget takes descriptors 3-9 for
# itself (exec 3>file, as scripts do) once its memory is paged out. They
# must not be upager's (its userfaultfd, rings, swap file): paging goes on
# and every value reads back right.
. "$(dirname "$0")/lib.sh"
need bash
cat >"$WORK/fds.sh" <<'EOF'
a=()
for i in $(seq 1 200000); do a[$i]="value-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; done
for fd in 3 4 5 6 7 8 9; do eval "exec $fd>\"\$1.$fd\""; done
for fd in 3 4 5 6 7 8 9; do echo "fd $fd" >&$fd; done
for i in $(seq 1 200000); do
	[ "${a[$i]}" = "value-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" ] || { echo "bad $i"; exit 1; }
done
echo ok
EOF
out=$("$UPAGER" run --mem 16M --swap "$WORK" --stats -- bash "$WORK/fds.sh" "$WORK/out" 2>"$WORK/stats") ||
	{ cat "$WORK/stats"; fail "the script failed: $out"; }
[ "$out" = ok ] || fail "the script said: $out"
# Its last summary is the script's own: pages came back from swap after the
# redirections.
awk '/^upager: pid/ { s = 0 } /^swap_ins / { s = $2 } END { exit !(s > 0) }' "$WORK/stats" ||
	{ cat "$WORK/stats"; fail "nothing was read back from swap"; }
for fd in 3 4 5 6 7 8 9; do
	[ "$(cat "$WORK/out.$fd")" = "fd $fd" ] || fail "fd $fd: $(cat "$WORK/out.$fd")"
done
echo ok
