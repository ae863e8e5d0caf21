# preload_stat: `upager stat PID` shows a running program's statistics;
# the file behind it goes when the program exits.
. "$(dirname "$0")/lib.sh"
need python3
"$UPAGER" run --mem 32M --swap "$WORK" -- python3 -c '
import time
data = [bytearray(4096) for _ in range(30000)]
for b in data:
    b[0] = 1
time.sleep(3)
' &
pid=$!
for _ in $(seq 50); do
	out=$("$UPAGER" stat $pid 2>/dev/null) && case $out in *swap_outs*[1-9]*) break ;; esac
	sleep 0.2
done
echo "$out"
case $out in *"pid $pid"*) ;; *) fail "upager stat shows nothing for $pid" ;; esac
for k in faults resident_bytes swap_outs swap_ins cooling_hit_pct readahead_hit_pct; do
	case $out in *"$k"*) ;; *) fail "no $k in upager stat" ;; esac
done
wait $pid || fail "the program failed"
[ ! -e "$UPAGER_STATS_DIR/$pid.stats" ] || fail "statistics file left after exit"
rc=0
"$UPAGER" stat $pid 2>/dev/null || rc=$?
[ $rc -eq 1 ] || fail "upager stat of a finished program: status $rc"

# A forked child pages under its own budget and has statistics of its own.
# It leaves through _exit(), so its file stays until the next program under
# upager starts and removes the files of processes gone.
"$UPAGER" run --mem 32M --swap "$WORK" -- python3 -c '
import os, time
pid = os.fork()
if pid == 0:
    data = [bytearray(4096) for _ in range(30000)]
    for b in data:
        b[0] = 1
    time.sleep(3)
    os._exit(0)
print(pid, flush=True)
os.waitpid(pid, 0)
' >"$WORK/child.pid" &
pid=$!
for _ in $(seq 50); do [ -s "$WORK/child.pid" ] && break; sleep 0.1; done
child=$(cat "$WORK/child.pid")
[ -n "$child" ] || fail "the forking program printed no child"
for _ in $(seq 50); do
	out=$("$UPAGER" stat "$child" 2>/dev/null) && case $out in *swap_outs*[1-9]*) break ;; esac
	sleep 0.2
done
echo "$out"
case $out in *swap_outs*[1-9]*) ;; *) fail "the child $child shows no paging of its own" ;; esac
wait $pid || fail "the forking program failed"
"$UPAGER" run --mem 32M --swap "$WORK" -- true
[ ! -e "$UPAGER_STATS_DIR/$child.stats" ] || fail "the file of the child gone stays"

# --stats: one summary, the program's, however many children it forks (the
# $(...)) and programs it runs (true), under bash and under sh.
for shell in bash sh; do
	n=$("$UPAGER" run --mem 16M --swap "$WORK" --stats -- "$shell" -c \
		'for i in 1 2 3; do x=$(echo $i); true; /bin/true; done' 2>&1 >/dev/null |
		grep -c '^upager: pid') || true
	[ "$n" = 1 ] || fail "$shell: --stats printed $n summaries for one program"
	# A program that executes another (a launcher script): the summary is
	# the one of what it executed, still one.
	n=$("$UPAGER" run --mem 16M --swap "$WORK" --stats -- "$shell" -c \
		"exec $shell -c 'for i in 1 2 3; do x=\$(echo \$i); /bin/true; done'" 2>&1 >/dev/null |
		grep -c '^upager: pid') || true
	[ "$n" = 1 ] || fail "$shell: --stats printed $n summaries for a program that executes another"
done
echo ok
