# preload_python: python3 builds and sums a large list and dict, under a
# budget far below their size, compared with a plain run.
. "$(dirname "$0")/lib.sh"
PY=$(command -v python3 || true)
[ -n "$PY" ] || skip "python3 is not installed (tools/dev.sh installs it)"
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3    # not a shim that starts more processes
cat >"$WORK/work.py" <<'PYEOF'
n = 600000
l = [str(i) * 4 for i in range(n)]
d = {i: str(i) for i in range(n)}
print(len(l), sum(len(s) for s in l), sum(len(v) for v in d.values()), sum(d))
PYEOF
run_plain python "$PY" "$WORK/work.py"
run_paged python 32M "$PY" "$WORK/work.py"
compare python 32
