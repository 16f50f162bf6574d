// The process-table poll as a fork source, for where the proc connector is out
// of reach (containers, user namespaces). Every intervalMs it lists the
// processes (src/sources/proc-table.ts); each process new since the previous
// listing is reported as a fork of its ppid. The first listing is the baseline
// and reports nothing. A child that comes and goes between two listings cannot
// be seen: those are counted from the kernel's fork counter.
import { readFileSync, readlinkSync } from 'node:fs';
import { readProcessTable, uptimeMs } from './proc-table.js';
import type { ForkSink, ForkSource } from './source.js';
import { LossEstimator, newProcesses, parseForkCounter, snapshotOf, type Snapshot } from './snapshot-diff.js';

/** See README ("Fork sources"): under 1% of a core with 100 processes, ~3% with 2,000; a child living 3 s is always seen. */
export const DEFAULT_POLL_INTERVAL_MS = 1000;
export const MIN_POLL_INTERVAL_MS = 10;
export const MAX_POLL_INTERVAL_MS = 3_600_000;

/**
 * Start times and the listing time are both CLOCK_BOOTTIME to 10 ms (USER_HZ
 * ticks, /proc/uptime's two decimals); a process forked after a listing began
 * cannot look more than a tick older. 50 ms is ample.
 */
export const START_SLACK_MS = 50;

export class PollUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PollUnavailable';
  }
}

export interface PollOptions {
  intervalMs: number;
  /** Called when a listing fails (the previous one stays the baseline); once per run of failures. */
  onSnapshotError?: (err: unknown) => void;
}

export function readForkCounter(): number {
  return parseForkCounter(readFileSync('/proc/stat', 'latin1'));
}

function takeSnapshot(): Snapshot {
  const takenAt = uptimeMs();
  return snapshotOf(takenAt, readProcessTable());
}

export class PollSource implements ForkSource {
  readonly name = 'poll' as const;
  readonly fd = null;
  private readonly self = process.pid;
  private relayed = 0;
  private failing = false;

  private constructor(
    readonly intervalMs: number,
    private prev: Snapshot,
    private readonly losses: LossEstimator,
    private readonly opts: PollOptions,
  ) {}

  /**
   * Takes the baseline listing and the fork counter. Throws PollUnavailable
   * when /proc cannot be read, or is not this PID namespace's (then it would
   * list PIDs the daemon cannot signal, and none of them would be its own).
   */
  static open(opts: PollOptions): PollSource {
    let procSelf: string;
    let baseline: Snapshot;
    let counter: number;
    try {
      procSelf = readlinkSync('/proc/self');
    } catch (err) {
      throw new PollUnavailable('/proc is not mounted', { cause: err });
    }
    if (procSelf !== String(process.pid)) {
      throw new PollUnavailable(`the /proc mounted here belongs to another PID namespace (it calls this process ${procSelf}, not ${process.pid}); mount this namespace's /proc`);
    }
    try {
      counter = readForkCounter();
      baseline = takeSnapshot();
    } catch (err) {
      throw new PollUnavailable(`reading the process table in /proc failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (!baseline.procs.has(process.pid)) throw new PollUnavailable('/proc does not list this process');
    return new PollSource(opts.intervalMs, baseline, new LossEstimator(counter), opts);
  }

  /** Processes in the baseline listing. */
  get baselineSize(): number {
    return this.prev.procs.size;
  }

  drain(sink: ForkSink): void {
    let counter: number;
    let cur: Snapshot;
    try {
      // The counter first: every fork it counts was visible before the listing began.
      counter = readForkCounter();
      cur = takeSnapshot();
    } catch (err) {
      // Keep the previous listing as the baseline: the next good one is
      // compared with it, and only processes started since then are new.
      if (!this.failing) this.opts.onSnapshotError?.(err);
      this.failing = true;
      return;
    }
    this.failing = false;
    const fresh = newProcesses(this.prev, cur, { self: this.self, slackMs: START_SLACK_MS });
    this.prev = cur;
    for (const p of fresh) {
      this.relayed++;
      sink.fork(p.ppid, p.pid, p.pid);
    }
    // The daemon forks nothing (no `ps`), so nothing is subtracted for it; the
    // one or two threads it starts after the baseline (FUSE's) count as missed.
    const missed = this.losses.update(counter, this.relayed, 0);
    if (missed > 0) sink.lost(missed, 'forks (processes and threads) the kernel counted that no listing saw');
  }

  close(): void {
    // nothing held between listings
  }
}
