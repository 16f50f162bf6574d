// Pure: what the poll source concludes from two process-table snapshots, and
// how many forks it missed by the kernel's fork counter. No I/O here.

/** One row of a snapshot: a process as /proc/PID/stat shows it. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  /** Start time in ms on the snapshot's clock (since boot), or NaN if unknown. */
  start: number;
}

export interface Snapshot {
  /** The time, on the same clock as the start times, just before the listing began. */
  takenAt: number;
  procs: ReadonlyMap<number, ProcEntry>;
}

export interface DiffOptions {
  /** The daemon's own PID: neither it nor any child of its is a fork anyone asked about. */
  self: number;
  /** How far a start time may lie before the previous listing and still count as new (clock resolution). */
  slackMs: number;
}

export function snapshotOf(takenAt: number, entries: Iterable<ProcEntry>): Snapshot {
  const procs = new Map<number, ProcEntry>();
  for (const e of entries) {
    if (Number.isInteger(e.pid) && e.pid > 0) procs.set(e.pid, e);
  }
  return { takenAt, procs };
}

/**
 * The processes of `cur` that were forked since `prev`, parents before their
 * children. A process is new when its PID is absent from `prev`, or present
 * with a different start time (the PID was recycled). Not new:
 * - the daemon and its children (ppid = self: it starts none, but a helper
 *   it ran would be its own doing, not a fork anyone asked about);
 * - a process whose start time lies before `prev` was taken (less the
 *   slack): it existed then and was only missing from that listing (it could
 *   not be read, or the listing was partial), so relaying it now would be a
 *   second, bogus fork;
 * - a recycled PID that also kept the start time to the tick
 *   (indistinguishable: it is missed, and the fork counter counts it so).
 * A process that left between the snapshots, or in the middle of one, is
 * simply absent and produces nothing. PIDs are compared as identities only,
 * never ordered, so wrap-around past pid_max changes nothing.
 */
export function newProcesses(prev: Snapshot, cur: Snapshot, opts: DiffOptions): ProcEntry[] {
  const oldest = prev.takenAt - opts.slackMs;
  const fresh = new Map<number, ProcEntry>();
  for (const e of cur.procs.values()) {
    if (e.pid === opts.self || e.ppid === opts.self) continue;
    const before = prev.procs.get(e.pid);
    if (before !== undefined && (before.start === e.start || Number.isNaN(before.start) || Number.isNaN(e.start))) continue;
    if (!Number.isNaN(e.start) && e.start < oldest) continue;
    fresh.set(e.pid, e);
  }
  // Parents before children, so a registrant sees the same causal order as
  // the proc connector gives. Otherwise in start order, then listing order.
  const byStart = [...fresh.values()].sort((a, b) => (a.start || 0) - (b.start || 0));
  const out: ProcEntry[] = [];
  const placed = new Set<number>();
  const place = (e: ProcEntry, depth: number): void => {
    if (placed.has(e.pid)) return;
    placed.add(e.pid);
    const parent = fresh.get(e.ppid);
    if (parent !== undefined && depth < fresh.size) place(parent, depth + 1);
    out.push(e);
  };
  for (const e of byStart) place(e, 0);
  return out;
}

/**
 * Missed forks, estimated from the kernel's fork counter (`processes` in
 * /proc/stat): every clone() on the host since boot — processes and threads,
 * in every PID namespace. Whatever that counter grew by and the poll source
 * did not relay (less the daemon's own forks, if any) was missed: a child that
 * came and went between two snapshots, a thread, a process in a PID namespace
 * this daemon cannot see, a recycled PID. So the figure is an upper bound on
 * missed processes, exact on a host without threads and namespaces.
 *
 * The counter is read just before each snapshot, so a fork that happens during
 * the snapshot may be relayed before it is counted; the running estimate is
 * therefore never allowed to go down, and increments are reported only when
 * it rises.
 */
export class LossEstimator {
  private reported = 0;

  constructor(private readonly baseline: number) {}

  /**
   * @param counter   the fork counter read before the latest snapshot
   * @param relayed   forks relayed so far, including the latest snapshot's
   * @param own       the daemon's own forks counted by `counter`, which nobody asked about
   * @returns how many more forks are now known to be missed (0 or more)
   */
  update(counter: number, relayed: number, own: number): number {
    const estimate = counter - this.baseline - own - relayed;
    if (estimate <= this.reported) return 0;
    const more = estimate - this.reported;
    this.reported = estimate;
    return more;
  }

  get total(): number {
    return this.reported;
  }
}

/** The `processes` line of /proc/stat: forks since boot. */
export function parseForkCounter(procStat: string): number {
  const m = /^processes\s+(\d+)\s*$/m.exec(procStat);
  if (!m) throw new Error('no "processes" line in /proc/stat');
  return Number(m[1]);
}
