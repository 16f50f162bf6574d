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
#   for it to end. `wait` is the exception (it returns at once for a trap), so this
#   script waits on one background `sleep` instead of running `sleep` in a loop —
#   which would also fork, and be relayed back here, once a second.
# - Anything the trap runs that forks (a command that is not a builtin, $(...), a
#   pipe) is itself a fork relayed back to this script: keep the trap to builtins.
set -u
dir=${1:-/run/relayfork/relayfork}
read -r sig < "$dir/signal" || { echo "on-fork.sh: cannot read $dir/signal (is relayfork running?)" >&2; exit 1; }

n=0
trap 'n=$((n + 1)); echo "fork $n"' "$sig"   # first: the default action terminates

if echo $$ 2>/dev/null > "$dir/processes"; then
  echo "on-fork.sh: registered $$ with $dir for signal $sig" >&2
else
  echo "on-fork.sh: cannot register; as root run: echo $$ > $dir/processes" >&2
fi

sleep infinity &
sleeper=$!
trap 'kill "$sleeper" 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
while kill -0 "$sleeper" 2>/dev/null; do   # builtins: no fork
  wait "$sleeper"   # returns (>128) after each trapped signal, its trap run
done
