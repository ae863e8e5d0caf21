# preload_remote: python3 builds and sums a large list and dict under
# `upager run --remote`, its pages beyond the budget in a memcached server on
# loopback, compared with a plain run.
. "$(dirname "$0")/lib.sh"
need memcached
PY=$(command -v python3 || true)
[ -n "$PY" ] || skip "python3 is not installed (tools/dev.sh installs it)"
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# A server of the test's own on a free port: memcached exits at once when
# its port is taken, so try a few.
MC=
for port in $((20000 + $$ % 20000)) $((21000 + $$ % 20000)) $((22000 + $$ % 20000)); do
	memcached -l 127.0.0.1 -p "$port" -U 0 -m 512 -M -t 1 -u root &
	MC=$!
	sleep 0.3
	kill -0 "$MC" 2>/dev/null && break
	MC=
done
[ -n "$MC" ] || fail "memcached did not start"
trap 'kill "$MC" 2>/dev/null; rm -rf "$WORK"' EXIT

run_plain python "$PY" "$(dirname "$0")/listdict.py"
PAGED_TO="--remote 127.0.0.1:$port" run_paged python 32M "$PY" "$(dirname "$0")/listdict.py"
compare python 32
grep -E '^swap_outs [1-9]' "$WORK/python.stats" >/dev/null ||
	fail "no page went to the server: $(cat "$WORK/python.stats")"

# The program is gone without destroying its context (none under upager run
# does): its reaper deletes its pages from the server.
items() {
	"$PY" - "$port" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"stats\r\n")
d = b""
while not d.endswith(b"END\r\n"):
    d += s.recv(65536)
print(next(l.split()[2] for l in d.decode().splitlines() if l.startswith("STAT curr_items ")))
EOF
}
n=$(items) i=0
while [ "$n" != 0 ] && [ $i -lt 100 ]; do
	sleep 0.1
	n=$(items) i=$((i + 1))
done
[ "$n" = 0 ] || fail "$n pages left on the server after the program exited"
echo "ok: nothing left on the server"

# A server that is not there stops the program at start.
rc=0
UPAGER_MEM=64M UPAGER_REMOTE=127.0.0.1:1 "$UPAGER" run -- /bin/echo ran >"$WORK/out" 2>&1 || rc=$?
[ $rc -eq 125 ] || fail "an unreachable server: status $rc, not 125 ($(cat "$WORK/out"))"
echo "ok: unreachable server -> $(cat "$WORK/out")"
echo ok
