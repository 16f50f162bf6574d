#!/usr/bin/env bash
# on-fork.sh: told by relayfork about every new process on the host, with a trap.
#
#   sudo bash examples/on-fork.sh [DIR]        DIR defaults to /run/relayfork/relayfork
#
# It reads the signal number from DIR/signal, traps it, and only then registers
# itself (writing its PID to DIR/processes takes root; otherwise it prints the
# command for root). It prints "fork N" each time its trap runs.
#
# Limits of a trap:
# - It cannot see siginfo: bash knows that a process forked, not which one or whose.
#   For the parent and the child, read DIR/events instead (examples/events.sh), or
#   use a language with signalfd or SA_SIGINFO (on_fork.py, on-fork.c).
# - It cannot count: signals that arrive while bash is busy (or between two traps)
#   run the trap once, not once each. Count forks with DIR/stats or DIR/events.
# - bash runs a trap between commands: while a foreground command runs, traps wait
#   for it to end. So this script waits in the `read` builtin, on a pipe nobody writes
#   to, which runs each trap as it comes. Not `sleep` in a loop: that would fork, and
#   be relayed back here, once a second. Not `wait` on a background sleep either:
#   bash 5.2 dies of a segmentation fault when thousands of trapped signals hit `wait`.
# - Anything the trap runs that forks (a command that is not a builtin, $(...), a
#   pipe) is itself a fork relayed back to this script: keep the trap to builtins.
set -u
dir=${1:-/run/relayfork/relayfork}
read -r sig < "$dir/signal" || { echo "on-fork.sh: cannot read $dir/signal (is relayfork running?)" >&2; exit 1; }

n=0
# One builtin command: the trap can start again before it ends (bash does not block
# the signal while its trap runs), and `n=...; echo $n` would then print one N twice.
trap 'echo "fork $((n += 1))"' "$sig"   # first: the default action terminates

if echo $$ 2>/dev/null > "$dir/processes"; then
  echo "on-fork.sh: registered $$ with $dir for signal $sig" >&2
else
  echo "on-fork.sh: cannot register; as root run: echo $$ > $dir/processes" >&2
fi

trap 'exit 130' INT
trap 'exit 143' TERM
exec 3<> <(:)                 # a pipe this shell holds both ends of: never readable
while :; do
  read -r -u 3 _              # interrupted by each trapped signal, its trap run
done
