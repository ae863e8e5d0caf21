# preload_fork: fork in the middle of heavy paging; the child sees the
# parent's data at the fork, swapped-out pages included; parent and child
# keep running and writing, each sees only its own writes; the child
# executes a program.
. "$(dirname "$0")/lib.sh"
run_helper forker
echo ok
