# preload_syscalls: system calls into managed memory and changes to managed
# mappings, under a budget a third of what the program touches.
. "$(dirname "$0")/lib.sh"
run_helper syscalls
echo ok
