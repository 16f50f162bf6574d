// The process-table poll as a fork source, for where the proc connector is out
// of reach (containers, user namespaces). Every intervalMs it lists the
// processes with ps-list (which runs `ps` twice); each process new since the
// previous listing is reported as a fork of its ppid. The first listing is the
// baseline and reports nothing. A child that comes and goes between two
// listings cannot be seen: those are counted from the kernel's fork counter.
import { readFile, readlink } from 'node:fs/promises';
import psList from 'ps-list';
import type { ForkSink, ForkSource } from './source.js';
import {
  LossEstimator, newProcesses, parseForkCounter, snapshotOf, START_SLACK_MS, type ProcEntry, type Snapshot,
} from './snapshot-diff.js';

/** See README ("Fork sources"): ~2% of one core at a normal process count, and a child living 3 s is always seen. */
export const DEFAULT_POLL_INTERVAL_MS = 1000;
export const MIN_POLL_INTERVAL_MS = 10;
export const MAX_POLL_INTERVAL_MS = 3_600_000;

/**
 * ps-list 9 runs `ps` twice per listing (fields, then args): the daemon's own
 * forks, which the kernel's counter counts and no registrant asked about.
 */
export const PS_FORKS_PER_SNAPSHOT = 2;

export class PollUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PollUnavailable';
  }
}

export interface PollOptions {
  intervalMs: number;
  /** Called when a listing fails (the previous one stays the baseline). */
  onSnapshotError?: (err: unknown) => void;
}

/** One listing of the process table through ps-list. */
export async function listProcesses(): Promise<ProcEntry[]> {
  const rows = await psList({ all: true });
  const out: ProcEntry[] = [];
  for (const r of rows) out.push({ pid: r.pid, ppid: r.ppid, start: r.startTime?.getTime() ?? Number.NaN });
  return out;
}

export async function readForkCounter(): Promise<number> {
  return parseForkCounter(await readFile('/proc/stat', 'latin1'));
}

export class PollSource implements ForkSource {
  readonly name = 'poll' as const;
  readonly fd = null;
  private readonly self = process.pid;
  private relayed = 0;
  private snapshots = 0;
  private failing = false;

  private constructor(
    readonly intervalMs: number,
    private prev: Snapshot,
    private readonly losses: LossEstimator,
    private readonly opts: PollOptions,
  ) {}

  /**
   * Takes the baseline listing and the fork counter. Throws PollUnavailable
   * when `ps` cannot run or /proc is not this PID namespace's (then ps would
   * list PIDs the daemon cannot signal and count its own `ps` as forks).
   */
  static async open(opts: PollOptions): Promise<PollSource> {
    let procSelf: string;
    try {
      procSelf = await readlink('/proc/self');
    } catch (err) {
      throw new PollUnavailable('/proc is not mounted', { cause: err });
    }
    if (procSelf !== String(process.pid)) {
      throw new PollUnavailable(`the /proc mounted here belongs to another PID namespace (it calls this process ${procSelf}, not ${process.pid}); mount this namespace's /proc`);
    }
    const takenAt = Date.now();
    let baseline: Snapshot;
    try {
      baseline = snapshotOf(takenAt, await listProcesses());
    } catch (err) {
      throw new PollUnavailable(`listing processes with ps failed (is procps installed?): ${firstLine(err)}`, { cause: err });
    }
    if (!baseline.procs.has(process.pid)) {
      throw new PollUnavailable('ps does not list this process; it cannot see the processes of this PID namespace');
    }
    // Read after the baseline listing: its own ps children are already counted.
    const counter = await readForkCounter();
    return new PollSource(opts.intervalMs, baseline, new LossEstimator(counter), opts);
  }

  /** Processes in the baseline listing. */
  get baselineSize(): number {
    return this.prev.procs.size;
  }

  async drain(sink: ForkSink): Promise<void> {
    const takenAt = Date.now();
    let counter: number;
    let cur: Snapshot;
    try {
      counter = await readForkCounter();
      // ps is started after the counter is read: its forks are the next round's.
      cur = snapshotOf(takenAt, await listProcesses());
    } catch (err) {
      // Keep the previous listing as the baseline: the next good one is
      // compared with it, and only processes started since then are new.
      if (!this.failing) this.opts.onSnapshotError?.(err);
      this.failing = true;
      this.snapshots++; // ps may have run before it failed; count its forks as ours
      return;
    }
    this.failing = false;
    const own = PS_FORKS_PER_SNAPSHOT * this.snapshots;
    this.snapshots++;
    const fresh = newProcesses(this.prev, cur, { self: this.self, slackMs: START_SLACK_MS });
    this.prev = cur;
    for (const p of fresh) {
      this.relayed++;
      sink.fork(p.ppid, p.pid, p.pid);
    }
    const missed = this.losses.update(counter, this.relayed, own);
    if (missed > 0) sink.lost(missed, 'poll: forks counted by the kernel (processes and threads) that no snapshot saw');
  }

  close(): void {
    // nothing held between listings
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}
