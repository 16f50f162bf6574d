#!/usr/bin/env bash
# events.sh: follow every fork on the host through relayfork's events file.
#
#   bash examples/events.sh [DIR]              DIR defaults to /run/relayfork/relayfork
#
# No signal and no registration: events is readable by everyone, and each open of
# it is a live stream of "PARENT CHILD" lines from that moment on. This prints
#
#   parent <pid> child <pid> <the child's command name, or "gone">
#
# and, when this reader fell behind and relayfork dropped lines for it, "lost N".
# The loop uses builtins only: a command that forks inside it would be a fork
# reported back to it, once per line, for ever.
set -u
dir=${1:-/run/relayfork/relayfork}
[ -r "$dir/events" ] || { echo "events.sh: no $dir/events (is relayfork running, and new enough?)" >&2; exit 1; }
echo "events.sh: following $dir/events" >&2

while read -r parent child; do
  if [ "$parent" = lost ]; then
    echo "lost $child"
    continue
  fi
  comm=gone
  { read -r comm < "/proc/$child/comm"; } 2>/dev/null
  echo "parent $parent child $child $comm"
done < "$dir/events"
