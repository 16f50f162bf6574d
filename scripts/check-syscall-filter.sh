#!/usr/bin/env bash
# Checks the unit's SystemCallFilter= against what the daemon really calls.
#
# Runs the built daemon under strace (following every thread and child), drives
# it through what a service does (mount, register, forks relayed, a registrant
# exits, bad writes, a signal change, stats, SIGTERM and unmount), collects the
# names of the system calls made, expands the unit's filter groups with
# `systemd-analyze syscall-filter`, and prints every call the filter would
# refuse. Exit 0 when there is none, 1 when there is, 2 when it cannot run.
#
# Needs root, strace, systemd-analyze and a build (npm run build).
# Usage: scripts/check-syscall-filter.sh [--source S]   (extra daemon options)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
UNIT=scripts/relayfork.service

for tool in strace systemd-analyze; do
  command -v "$tool" >/dev/null || { echo "check-syscall-filter: needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "check-syscall-filter: needs root (it mounts)" >&2; exit 2; }
[ -f dist/cli.js ] || { echo "check-syscall-filter: run npm run build first" >&2; exit 2; }

filters=$(sed -n 's/^SystemCallFilter=//p' "$UNIT" | tr '\n' ' ')
[ -n "$filters" ] || { echo "check-syscall-filter: $UNIT has no SystemCallFilter=" >&2; exit 2; }
case $filters in *'~'*) echo "check-syscall-filter: deny lists (~) are not supported here" >&2; exit 2;; esac

T=$(mktemp -d /tmp/relayfork-syscalls-XXXXXX)
MNT=$T/mnt
DIR=$MNT/relayfork
mkdir "$MNT"
STRACE_PID=
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill -KILL "$REG_PID" 2>/dev/null || true
  [ -n "$STRACE_PID" ] && kill -KILL "$STRACE_PID" 2>/dev/null || true
  for _ in 1 2 3; do grep -q " $MNT " /proc/self/mounts || break; umount -l "$MNT" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

# Every group named in the filter, expanded to system call names.
expand() {
  systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/#.*//; s/[[:space:]]//g' | grep -v '^$' |
    while read -r entry; do
      case $entry in @*) expand "$entry" ;; *) echo "$entry" ;; esac
    done
}
for f in $filters; do
  case $f in @*) expand "$f" ;; *) echo "$f" ;; esac
done | sort -u > "$T/allowed"

strace -f -qq -o "$T/trace" -- node "$ROOT/bin/relayfork.js" mount "$MNT" --log-level debug "$@" > "$T/log" 2>&1 &
STRACE_PID=$!
for _ in $(seq 100); do
  grep -q '"msg":"mounted"' "$T/log" 2>/dev/null && break
  kill -0 "$STRACE_PID" 2>/dev/null || { cat "$T/log" >&2; echo "check-syscall-filter: the daemon did not start" >&2; exit 2; }
  sleep 0.2
done
grep -q '"msg":"mounted"' "$T/log" || { cat "$T/log" >&2; echo "check-syscall-filter: no mount within 20 s" >&2; exit 2; }
DAEMON_PID=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$T/log" | head -n 1)

# A registrant that ignores the relay's signals, so that it outlives them.
bash -c 'trap "" RTMIN RTMIN+1; exec sleep 30' &
REG_PID=$!
sleep 0.2
echo "$REG_PID" > "$DIR/processes"
cat "$DIR/processes" "$DIR/signal" > /dev/null
for _ in 1 2 3 4 5; do /bin/true; done
echo 35 > "$DIR/signal"
/bin/true
echo 12abc > "$DIR/processes" 2>/dev/null || true
echo 1 > "$DIR/processes" 2>/dev/null || true
[ -e "$DIR/stats" ] && cat "$DIR/stats" > /dev/null
kill -KILL "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=
sleep 0.5
/bin/true
kill -TERM "$DAEMON_PID"
wait "$STRACE_PID" || true
STRACE_PID=
grep -q '"msg":"unmounted"' "$T/log" || { cat "$T/log" >&2; echo "check-syscall-filter: the daemon did not unmount" >&2; exit 2; }

# "123 name(args" and "123 <... name resumed>" both name a call.
sed -n 's/^[0-9]\{1,\} \{1,\}\(<\.\.\. \)\{0,1\}\([a-z_0-9]\{1,\}\)[( ].*/\2/p' "$T/trace" | sort -u > "$T/used"
refused=$(comm -23 "$T/used" "$T/allowed")
echo "filter: $filters"
echo "system calls made: $(wc -l < "$T/used"), of which outside the filter: $(printf '%s' "$refused" | grep -c . || true)"
if [ -n "$refused" ]; then
  echo "$refused" | sed 's/^/  refused: /'
  exit 1
fi
