# preload_python: python3 builds and sums a large list and dict, under a
# budget far below their size, compared with a plain run.
. "$(dirname "$0")/lib.sh"
PY=$(command -v python3 || true)
[ -n "$PY" ] || skip "python3 is not installed (tools/dev.sh installs it)"
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3    # not a shim that starts more processes
run_plain python "$PY" "$(dirname "$0")/listdict.py"
run_paged python 32M "$PY" "$(dirname "$0")/listdict.py"
compare python 32
