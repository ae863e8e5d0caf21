# preload_env: a wrong UPAGER_* value stops the program at start with a
# message on stderr and status 125; a wrong option of `upager run`, status 2.
. "$(dirname "$0")/lib.sh"
LIB=$(dirname "$("$UPAGER" run -- sh -c 'echo $LD_PRELOAD' | cut -d' ' -f1)")/libupager-preload.so
[ -r "$LIB" ] || fail "upager run does not find the preload library"

expect125() {
	local want=$1 out rc=0
	shift
	out=$(env "$@" LD_PRELOAD="$LIB" /bin/echo ran 2>&1) || rc=$?
	[ "$rc" -eq 125 ] || fail "$*: status $rc, not 125 (output: $out)"
	case $out in *"$want"*) ;; *) fail "$*: message '$out' does not say '$want'" ;; esac
	case $out in *ran*) fail "$*: the program ran" ;; esac
	echo "ok: $* -> $out"
}
expect125 'UPAGER_MEM=lots: not a size' UPAGER_MEM=lots
expect125 'UPAGER_MEM=1M: at least 16M' UPAGER_MEM=1M
expect125 'UPAGER_MEM=12Q' UPAGER_MEM=12Q
expect125 'UPAGER_SWAP_SIZE=-1' UPAGER_MEM=64M UPAGER_SWAP_SIZE=-1
expect125 'no directory /nonexistent' UPAGER_MEM=64M UPAGER_SWAP=/nonexistent/dir/file
expect125 'UPAGER_THREADS=two' UPAGER_THREADS=two
expect125 'UPAGER_THREADS=5000' UPAGER_THREADS=5000
expect125 'UPAGER_STATS=maybe' UPAGER_STATS=maybe
expect125 'UPAGER_POLICY=lru: cooling or fifo' UPAGER_POLICY=lru
expect125 'UPAGER_MMAP_THRESHOLD=1' UPAGER_MMAP_THRESHOLD=1
expect125 'UPAGER_REPLICAS=3' UPAGER_MEM=64M UPAGER_REMOTE=127.0.0.1:1 UPAGER_REPLICAS=3
expect125 'needs UPAGER_REMOTE' UPAGER_MEM=64M UPAGER_REPLICAS=2
expect125 'one or the other' UPAGER_MEM=64M UPAGER_REMOTE=127.0.0.1:1 UPAGER_SWAP=/var/tmp

rc=0
"$UPAGER" run --mem lots -- true 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "upager run --mem lots: status $rc, not 2"
rc=0
"$UPAGER" run --policy lru -- true 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "upager run --policy lru: status $rc, not 2"
rc=0
"$UPAGER" run --mem 64M 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "upager run without a program: status $rc, not 2"
# Good values run, and the program's status comes through.
rc=0
"$UPAGER" run --mem 64M --threads 1 --policy fifo --swap "$WORK" --swap-size 256M -- sh -c 'exit 7' || rc=$?
[ $rc -eq 7 ] || fail "the program's status $rc, not 7"
out=$(UPAGER_MEM=0 UPAGER_STATS=0 LD_PRELOAD="$LIB" /bin/echo fine)
[ "$out" = fine ] || fail "UPAGER_MEM=0 (no limit) does not run"
# Swap files are unlinked: nothing is left in the swap directory.
[ -z "$(ls -A "$WORK" | grep -v stats || true)" ] || fail "files left in the swap directory: $(ls -A "$WORK")"
echo ok
