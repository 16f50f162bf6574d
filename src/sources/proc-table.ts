// The process table as the poll source reads it: /proc itself, not `ps`.
// One readdir of /proc and one read of /proc/PID/stat per process gives the
// PID, the ppid and the start time in clock ticks since boot: what `ps` reads
// too, without two fork+execs per listing and ps's dozen other files per
// process. scripts/poll-cost.js measures both (README, "Fork sources").
//
// Synchronous on purpose: it runs in the relay worker, never on the thread that
// serves FUSE, and /proc is not our mount; a listing of 2,000 processes takes
// ~30 ms of that thread, during which nothing else is waiting on it.
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import type { ProcEntry } from './snapshot-diff.js';

/**
 * USER_HZ, the unit of /proc/PID/stat's start time: 100 on every architecture
 * Node runs on (only alpha and ia64 differ).
 */
export const USER_HZ = 100;
const MS_PER_TICK = 1000 / USER_HZ;

/** pid, ppid and start (ms since boot) from the text of /proc/PID/stat, or null if malformed. */
export function parseStat(pid: number, text: string): ProcEntry | null {
  // comm (field 2) is in parentheses and may hold spaces and ')': the fields
  // after it start at the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
  const ppid = Number(f[1]);
  const ticks = Number(f[19]);
  if (f.length < 20 || !Number.isInteger(ppid) || ppid < 0 || !Number.isInteger(ticks) || ticks < 0) return null;
  return { pid, ppid, start: ticks * MS_PER_TICK };
}

/** Milliseconds since boot (CLOCK_BOOTTIME, the clock of the start times), to 10 ms. */
export function uptimeMs(): number {
  const text = readFileSync('/proc/uptime', 'latin1');
  return Math.round(Number(text.slice(0, text.indexOf(' '))) * 1000);
}

const statBuf = Buffer.alloc(4096);

/**
 * Every process in this PID namespace's /proc (thread-group leaders only: the
 * threads are not listed). A process that exits while it is being listed is
 * left out, or, caught as a zombie, listed with the parent that reaps it.
 */
export function readProcessTable(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync('/proc')) {
    const c = name.charCodeAt(0);
    if (c < 0x31 || c > 0x39) continue; // PIDs: digits, no leading 0
    const pid = Number(name);
    let fd: number;
    try {
      fd = openSync(`/proc/${name}/stat`, 'r');
    } catch {
      continue; // gone since the readdir
    }
    try {
      const n = readSync(fd, statBuf, 0, statBuf.length, 0);
      const entry = parseStat(pid, statBuf.toString('latin1', 0, n));
      if (entry !== null) out.push(entry);
    } catch {
      // ESRCH: it exited between open and read
    } finally {
      closeSync(fd);
    }
  }
  return out;
}
