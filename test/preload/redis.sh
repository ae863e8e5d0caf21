# preload_redis: redis-server under a budget well below its data set, loaded
# by redis-benchmark; BGSAVE (a fork while paging) writes an RDB file that
# redis-check-rdb accepts and that a plain redis-server loads with the same
# DEBUG DIGEST as the data set under upager.
. "$(dirname "$0")/lib.sh"
for p in redis-server redis-cli redis-benchmark redis-check-rdb; do need $p; done
port=$((20000 + $$ % 20000))
mem=32
cli() { redis-cli -p "$port" "$@"; }
wait_up() {
	for _ in $(seq 100); do [ "$(cli ping 2>/dev/null)" = PONG ] && return 0; sleep 0.1; done
	fail "redis-server on $port did not start"
}
stop() { cli shutdown nosave >/dev/null 2>&1 || true; wait "$1" 2>/dev/null || true; }
"$UPAGER" run --mem ${mem}M --swap "$WORK" -- redis-server --port "$port" --dir "$WORK" \
	--dbfilename dump.rdb --save '' --appendonly no --enable-debug-command yes >"$WORK/redis.log" 2>&1 &
pid=$!
trap 'stop $pid; rm -rf "$WORK"' EXIT
wait_up
redis-benchmark -p "$port" -t set -n 150000 -r 1000000 -d 512 -P 16 -q >/dev/null
used=$(cli info memory | awk -F: '/^used_memory:/ { print int($2 / 1048576) }')
hwm=$(awk '/^VmHWM/ { print int($2 / 1024) }' /proc/$pid/status)
echo "redis: $(cli dbsize) keys, used_memory ${used} MiB, peak RSS ${hwm} MiB under a ${mem} MiB budget"
[ "$used" -gt $((mem * 2)) ] || fail "the data set is not well above the budget"
[ "$hwm" -le $((mem + 40)) ] || fail "peak RSS ${hwm} MiB above the budget + 40 MiB"
digest=$(cli debug digest)
# The child pages too, under a budget of its own: it reads the whole data
# set, at random, through its swap.
persistence() { cli info persistence | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }
cli bgsave >/dev/null
start=$(date +%s)
while [ "$(persistence rdb_bgsave_in_progress)" != 0 ]; do
	[ $(($(date +%s) - start)) -lt 200 ] || fail "BGSAVE still running after 200 s"
	sleep 0.2
done
hwm=$(awk '/^VmHWM/ { print int($2 / 1024) }' /proc/$pid/status)
echo "redis: BGSAVE took $(($(date +%s) - start)) s; peak RSS since start ${hwm} MiB"
[ "$(persistence rdb_last_bgsave_status)" = ok ] || fail "BGSAVE failed"
# The fork read nothing back: the parent's peak stayed within the budget.
[ "$hwm" -le $((mem + 40)) ] || fail "peak RSS ${hwm} MiB across BGSAVE above the budget + 40 MiB"
redis-check-rdb "$WORK/dump.rdb" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; fail "redis-check-rdb rejects the RDB"; }
[ "$(cli debug digest)" = "$digest" ] || fail "the data set changed across BGSAVE"
stop $pid
# The saved file, loaded by a plain redis-server, holds the same data.
redis-server --port "$port" --dir "$WORK" --dbfilename dump.rdb --save '' --appendonly no \
	--enable-debug-command yes >"$WORK/plain.log" 2>&1 &
pid=$!
wait_up
[ "$(cli debug digest)" = "$digest" ] || fail "the RDB saved under upager holds other data"
echo ok
