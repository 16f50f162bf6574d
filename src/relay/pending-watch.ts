// Watches that registrants take their signals. Every queued signal is charged
// to the receiver's real user until it is read, and RLIMIT_SIGPENDING bounds
// that count per user, shared by all the user's processes: one root registrant
// that never reads would otherwise use up root's queue for the whole host, and
// then no root process could be sent a queued signal (sigqueue, timers, AIO).
//
// The kernel shows no per-process queue length, only whether a signal is
// pending (SigPnd/ShdPnd in /proc/PID/status) and the user's count and limit
// (SigQ). So the watch counts, per registrant, the signals sent since its queue
// was last seen holding none of ours ("unconfirmed": an upper bound of what it
// holds), and the fan-out sends nothing while that count is at the registrant's
// cap. Caps share a quarter of each user's limit among that user's registrants,
// so relayfork alone never holds more than a quarter of any user's queue.
//
// A registrant is held (sent nothing until it has drained) when ours has stayed
// pending at every check for STUCK_MS, or when it reaches half its cap, but only
// after a probe: the relay stops sending for PROBE_MS (longer, up to
// PROBE_MAX_MS, while the user's queue keeps shrinking) and looks again, so a
// reader that is merely busy in a storm drains and goes on receiving. Checks
// run at most every CHECK_MS, from the relay's loop, never per fork, and read
// /proc only for registrants sent something since they were last seen drained.
import { closeSync, openSync, readSync } from 'node:fs';
import type { Logger } from 'pino';
import { pidfdExited } from '../kernel/syscalls.js';
import { UNWATCHED_CAP, type Target } from './fan-out.js';

export const CHECK_MS = 100;
export const STUCK_MS = 2000;
export const PROBE_MS = 20;
/** A probe goes on while the user's queue keeps shrinking (a reader at work), up to this. */
export const PROBE_MAX_MS = 200;
const PROBE_STEP_MS = 2;
/** Registrants of one user may hold at most limit / QUOTA_SHARE of its queue. */
export const QUOTA_SHARE = 4;
/** An unlimited RLIMIT_SIGPENDING still costs kernel memory: count it as this. */
const LIMIT_CEILING = 1 << 20;

export interface SigStatus {
  /** Real uid. */
  uid: number;
  /** Signals queued for that user (SigQ), and the process's RLIMIT_SIGPENDING. */
  queued: number;
  limit: number;
  /** Pending real-time signals 34..64 of the process or its main thread, as bit s - 34. */
  pendingRt: number;
}

const STATUS_RE = {
  uid: /^Uid:\s+(\d+)/m,
  sigq: /^SigQ:\s+(\d+)\/(\d+)/m,
  sigpnd: /^SigPnd:\s+([0-9a-f]{16})/m,
  shdpnd: /^ShdPnd:\s+([0-9a-f]{16})/m,
};

/** The signal fields of /proc/PID/status, or null if any is missing. */
export function parseStatus(text: string): SigStatus | null {
  const uid = STATUS_RE.uid.exec(text);
  const sigq = STATUS_RE.sigq.exec(text);
  const sigpnd = STATUS_RE.sigpnd.exec(text);
  const shdpnd = STATUS_RE.shdpnd.exec(text);
  if (!uid || !sigq || !sigpnd || !shdpnd) return null;
  // Signal s is bit s - 1 of the 64-bit mask: 34..64 are bits 1..31 of the high word.
  const high = parseInt(sigpnd[1]!.slice(0, 8), 16) | parseInt(shdpnd[1]!.slice(0, 8), 16);
  return {
    uid: Number(uid[1]),
    queued: Number(sigq[1]),
    limit: Number(sigq[2]),
    pendingRt: (high >>> 1) & 0x7fffffff,
  };
}

const statusBuf = Buffer.alloc(8192);

/** Reads /proc/PID/status (procfs, never our own mount). */
export function readProcStatus(pid: number): SigStatus | null {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/status`, 'r');
  } catch {
    return null;
  }
  try {
    const n = readSync(fd, statusBuf, 0, statusBuf.length, 0);
    return parseStatus(statusBuf.toString('latin1', 0, n));
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

export interface WatchDeps {
  /** /proc/PID/status of a registrant. */
  readStatus(pid: number): SigStatus | null;
  /** Still the process the registrant's pidfd names (so the status read was its own). */
  alive(t: Target): boolean;
  /** Blocks the relay for ms milliseconds (a probe lets busy readers drain). */
  sleep(ms: number): void;
  now(): number;
  log: Pick<Logger, 'warn' | 'info'>;
}

export function defaultDeps(log: Pick<Logger, 'warn' | 'info'>): WatchDeps {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  return {
    readStatus: readProcStatus,
    alive: (t) => !pidfdExited(t.pidfd),
    sleep: (ms) => void Atomics.wait(nap, 0, 0, ms),
    now: () => Date.now(),
    log,
  };
}

export class PendingWatch {
  private next = 0;

  constructor(private readonly targets: readonly Target[], private readonly deps: WatchDeps) {}

  /** A new registrant: learn its user and limit before the next fork. */
  added(t: Target): void {
    this.sample(t);
    this.setCaps();
  }

  /** A registrant went: the others of its user get its share. */
  removed(): void {
    this.setCaps();
  }

  /** From the relay's loop; checks at most every CHECK_MS. */
  tick(now: number): void {
    if (now < this.next) return;
    this.next = now + CHECK_MS;
    this.check(now);
  }

  check(now: number): void {
    let suspects: Target[] | null = null;
    for (const t of this.targets) {
      if (t.uid >= 0 && t.unconfirmed === 0 && !t.held) continue; // nothing of ours can be pending
      const pending = this.sample(t);
      if (pending === null) continue; // gone: the relay's exit watch drops it
      if (!pending) {
        this.drained(t, now);
        continue;
      }
      if (t.pendingSince === 0) t.pendingSince = now;
      if (!t.held && (now - t.pendingSince >= STUCK_MS || t.unconfirmed >= t.soft)) (suspects ??= []).push(t);
    }
    if (suspects) this.probe(suspects, now);
    this.setCaps();
  }

  /**
   * Stops sending (the relay is blocked here) and looks again: a registrant
   * that reads drains. The probe lasts PROBE_MS, and goes on (up to
   * PROBE_MAX_MS) while some suspect's user queue keeps shrinking, so a reader
   * with a long backlog is given the time to work through it. The rest are held.
   */
  private probe(suspects: Target[], now: number): void {
    const start = this.deps.now();
    let deadline = start + PROBE_MS;
    const queued = new Map<Target, number>();
    let left = suspects;
    while (left.length > 0 && this.deps.now() < deadline) {
      this.deps.sleep(PROBE_STEP_MS);
      let progress = false;
      left = left.filter((t) => {
        const st = this.read(t);
        if (st === null) return false; // gone
        const before = queued.get(t);
        if (before !== undefined && st.queued < before) progress = true;
        queued.set(t, st.queued);
        if ((st.pendingRt & t.sigs) !== 0) return true;
        this.drained(t, this.deps.now());
        return false;
      });
      if (progress) deadline = Math.min(this.deps.now() + PROBE_MS, start + PROBE_MAX_MS);
    }
    for (const t of left) this.hold(t, now);
  }

  private hold(t: Target, now: number): void {
    t.held = true;
    t.heldSince = now;
    t.droppedAtHold = t.dropped;
    this.deps.log.warn(
      { registrant: t.pid, unread: t.unconfirmed, pendingMs: now - t.pendingSince, uid: t.uid, limit: t.limit },
      'registrant is not taking its signals; not queueing to it until it drains',
    );
  }

  private drained(t: Target, now: number): void {
    t.unconfirmed = 0;
    t.sigs = 0;
    t.pendingSince = 0;
    if (!t.held) return;
    t.held = false;
    this.deps.log.info(
      { registrant: t.pid, dropped: t.dropped - t.droppedAtHold, heldMs: now - t.heldSince },
      'registrant has drained its signals; queueing to it again',
    );
  }

  /**
   * Reads a registrant's status: true when one of the signals sent to it since
   * it was last seen drained is still pending, false when none is, null when
   * it cannot be read or the process is gone.
   */
  private sample(t: Target): boolean | null {
    const st = this.read(t);
    return st === null ? null : (st.pendingRt & t.sigs) !== 0;
  }

  /** Its status, with its user and limit noted; null when unreadable or gone. */
  private read(t: Target): SigStatus | null {
    const st = this.deps.readStatus(t.pid);
    // Read first, then check the pidfd: alive afterwards means the PID was still
    // this process's while it was read.
    if (st === null || !this.deps.alive(t)) return null;
    t.uid = st.uid;
    t.limit = Math.min(st.limit, LIMIT_CEILING);
    return st;
  }

  /** Shares limit / QUOTA_SHARE of each user's queue among that user's registrants. */
  private setCaps(): void {
    const perUser = new Map<number, { n: number; limit: number }>();
    for (const t of this.targets) {
      if (t.uid < 0) continue;
      const u = perUser.get(t.uid);
      if (u) {
        u.n++;
        u.limit = Math.min(u.limit, t.limit);
      } else {
        perUser.set(t.uid, { n: 1, limit: t.limit });
      }
    }
    for (const t of this.targets) {
      const u = t.uid < 0 ? undefined : perUser.get(t.uid);
      const cap = u ? Math.max(1, Math.floor(u.limit / QUOTA_SHARE / u.n)) : UNWATCHED_CAP;
      t.cap = t.held ? 0 : cap;
      t.soft = u ? Math.max(1, Math.floor(cap / 2)) : UNWATCHED_CAP;
    }
  }
}
