import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { UNWATCHED_CAP, type Target } from '../../src/relay/fan-out.js';
import { CHECK_MS, parseStatus, PendingWatch, PROBE_MAX_MS, PROBE_MS, QUOTA_SHARE, STUCK_MS, type SigStatus, type WatchDeps } from '../../src/relay/pending-watch.js';

// The pending watch's decisions on a fake clock and fake /proc/PID/status
// readings; the fan-out's part (count, cap) is played by send() below.

function target(id: number, pid: number): Target {
  return {
    id, pid, pidfd: -1, dropped: 0, droppedSinceLog: 0, lastDropLog: 0,
    unconfirmed: 0, cap: UNWATCHED_CAP, sigs: 0,
    soft: UNWATCHED_CAP, pendingSince: 0, held: false, heldSince: 0, droppedAtHold: 0, uid: -1, limit: 0,
  };
}

/** What the fan-out does per fork for one target, with signal 34. */
function send(t: Target, n = 1): number {
  let sent = 0;
  for (let i = 0; i < n; i++) {
    if (t.unconfirmed >= t.cap) {
      t.dropped++;
      continue;
    }
    t.unconfirmed++;
    t.sigs |= 1;
    sent++;
  }
  return sent;
}

class World implements WatchDeps {
  clock = 1_000_000;
  status = new Map<number, SigStatus>();
  dead = new Set<number>();
  reads: number[] = [];
  lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = [];
  /** Called on every probe step, after the clock moves: a reader may drain here. */
  onSleep: () => void = () => {};
  log = {
    warn: (obj: Record<string, unknown>, msg: string) => this.lines.push({ level: 'warn', msg, obj }),
    info: (obj: Record<string, unknown>, msg: string) => this.lines.push({ level: 'info', msg, obj }),
  } as unknown as WatchDeps['log'];

  readStatus = (pid: number): SigStatus | null => {
    this.reads.push(pid);
    return this.status.get(pid) ?? null;
  };
  alive = (t: Target): boolean => !this.dead.has(t.pid);
  sleep = (ms: number): void => {
    this.clock += ms;
    this.onSleep();
  };
  now = (): number => this.clock;

  set(pid: number, pending: boolean, uid = 0, limit = 96_000): void {
    this.status.set(pid, { uid, queued: 0, limit, pendingRt: pending ? 1 : 0 });
  }
}

describe('parseStatus', () => {
  it('reads uid, SigQ and the pending real-time signals of /proc/PID/status', () => {
    const text = [
      'Name:\treceiver',
      'Uid:\t1000\t1000\t1000\t1000',
      'SigQ:\t1234/96369',
      'SigPnd:\t0000000000000000',
      'ShdPnd:\t8000000200000000', // 34 and 64
      'SigBlk:\tffffffff00000000',
    ].join('\n');
    const st = parseStatus(text)!;
    expect(st).toEqual({ uid: 1000, queued: 1234, limit: 96369, pendingRt: (1 << 0) | (1 << 30) });
    expect(parseStatus(text.replace('SigPnd:\t0000000000000000', 'SigPnd:\t0000000800000000'))!.pendingRt).toBe(
      (1 << 0) | (1 << 2) | (1 << 30), // 36 pending on the main thread
    );
    expect(parseStatus(text.replace(/^SigQ.*$/m, ''))).toBeNull();
  });

  it('parses this process’s own status', () => {
    const st = parseStatus(readFileSync('/proc/self/status', 'latin1'))!;
    expect(st.uid).toBe(process.getuid!());
    expect(st.limit).toBeGreaterThan(0);
  });
});

describe('PendingWatch', () => {
  it('reads a registrant when added and shares a quarter of its user’s limit among that user’s registrants', () => {
    const w = new World();
    const targets: Target[] = [];
    const watch = new PendingWatch(targets, w);
    w.set(10, false, 0, 96_000);
    w.set(11, false, 0, 80_000);
    w.set(12, false, 1000, 4_000);
    for (const [id, pid] of [[1, 10], [2, 11], [3, 12]] as const) {
      const t = target(id, pid);
      targets.push(t);
      watch.added(t);
    }
    expect(targets.map((t) => t.cap)).toEqual([80_000 / QUOTA_SHARE / 2, 80_000 / QUOTA_SHARE / 2, 4_000 / QUOTA_SHARE]);
    expect(targets.map((t) => t.soft)).toEqual([5_000, 5_000, 500]);
    targets.splice(1, 1);
    watch.removed();
    expect(targets.map((t) => t.cap)).toEqual([96_000 / QUOTA_SHARE, 4_000 / QUOTA_SHARE]);
  });

  it('does not read registrants that were sent nothing since they were last seen drained', () => {
    const w = new World();
    const t = target(1, 10);
    const watch = new PendingWatch([t], w);
    w.set(10, false);
    watch.added(t);
    w.reads = [];
    for (let i = 0; i < 10; i++) {
      w.clock += CHECK_MS;
      watch.tick(w.clock);
    }
    expect(w.reads).toEqual([]);
    send(t);
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(w.reads).toEqual([10]);
    expect(t.unconfirmed).toBe(0); // seen drained
  });

  it('checks at most every CHECK_MS', () => {
    const w = new World();
    const t = target(1, 10);
    const watch = new PendingWatch([t], w);
    w.set(10, true);
    watch.added(t);
    w.reads = [];
    send(t);
    for (let ms = 0; ms < 10 * CHECK_MS; ms += 7) watch.tick(w.clock + ms);
    expect(w.reads.length).toBeLessThanOrEqual(10);
    expect(w.reads.length).toBeGreaterThanOrEqual(9);
  });

  it('holds a registrant whose signal stays pending for STUCK_MS, and lets it go once it has drained', () => {
    const w = new World();
    const stuck = target(1, 10);
    const fine = target(2, 11);
    const targets = [stuck, fine];
    const watch = new PendingWatch(targets, w);
    w.set(10, false);
    w.set(11, false);
    targets.forEach((t) => watch.added(t));
    w.set(10, true); // from now on, ours stays pending in 10; 11 reads everything

    const start = w.clock;
    while (w.clock - start < STUCK_MS + 5 * CHECK_MS && !stuck.held) {
      send(stuck, 3);
      send(fine, 3);
      w.clock += CHECK_MS;
      watch.tick(w.clock);
    }
    expect(stuck.held).toBe(true);
    expect(w.clock - start).toBeGreaterThanOrEqual(STUCK_MS);
    expect(w.clock - start).toBeLessThanOrEqual(STUCK_MS + 2 * CHECK_MS);
    expect(stuck.cap).toBe(0);
    expect(fine.held).toBe(false);
    expect(w.lines.map((l) => [l.level, l.obj.registrant])).toEqual([['warn', 10]]);

    // Held: nothing is queued, every fork is a counted drop; the other registrant goes on.
    const unread = stuck.unconfirmed;
    expect(send(stuck, 50)).toBe(0);
    expect(stuck.unconfirmed).toBe(unread);
    expect(send(fine, 50)).toBe(50);

    // A check while it still has them pending changes nothing and logs nothing.
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(stuck.held).toBe(true);
    expect(w.lines).toHaveLength(1);

    // It reads them: the next check lets it go, with the number dropped meanwhile.
    w.set(10, false);
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(stuck.held).toBe(false);
    expect(stuck.unconfirmed).toBe(0);
    expect(stuck.cap).toBeGreaterThan(0);
    expect(w.lines[1]).toMatchObject({ level: 'info', obj: { registrant: 10, dropped: 50 } });
    expect(send(stuck, 5)).toBe(5);
  });

  it('does not hold a busy reader that drains during the probe', () => {
    const w = new World();
    const busy = target(1, 10);
    const watch = new PendingWatch([busy], w);
    w.set(10, false);
    watch.added(busy);
    w.set(10, true); // every check finds one of ours pending...
    let probes = 0;
    w.onSleep = () => {
      probes++;
      w.set(10, false); // ...but once the relay pauses, it catches up
      w.onSleep = () => {};
    };
    const start = w.clock;
    while (w.clock - start < STUCK_MS + 3 * CHECK_MS) {
      send(busy, 10);
      w.clock += CHECK_MS;
      watch.tick(w.clock);
      if (!w.status.get(10)!.pendingRt) {
        w.set(10, true);
        w.onSleep = () => w.set(10, false);
      }
    }
    expect(probes).toBe(1);
    expect(busy.held).toBe(false);
    expect(w.lines).toEqual([]);
  });

  it('probes a registrant as soon as half its cap is unread, and holds it if it does not drain within PROBE_MS', () => {
    const w = new World();
    const t = target(1, 10);
    const watch = new PendingWatch([t], w);
    w.set(10, false, 0, 4_000);
    watch.added(t);
    expect(t.cap).toBe(1_000);
    w.set(10, true, 0, 4_000);
    send(t, 600); // over half the cap within one check interval
    const before = w.clock;
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(t.held).toBe(true);
    expect(w.clock - before - CHECK_MS).toBeGreaterThanOrEqual(PROBE_MS); // it did wait
    expect(w.clock - before - CHECK_MS).toBeLessThanOrEqual(PROBE_MS + 5);
    expect(w.lines[0]).toMatchObject({ level: 'warn', obj: { registrant: 10, unread: 600 } });
  });

  it('gives a reader working through a long backlog more time, as long as its user’s queue keeps shrinking', () => {
    const w = new World();
    const slow = target(1, 10);
    const watch = new PendingWatch([slow], w);
    w.set(10, false, 0, 96_000);
    watch.added(slow);
    send(slow, 13_000); // over half its cap (12k): it will be probed
    let backlog = 13_000;
    const status = () => w.status.set(10, { uid: 0, queued: backlog, limit: 96_000, pendingRt: backlog > 0 ? 1 : 0 });
    status();
    const start = w.clock;
    w.onSleep = () => {
      backlog = Math.max(0, backlog - 200); // 200 per 2 ms: 130 ms to drain
      status();
    };
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(slow.held).toBe(false);
    expect(slow.unconfirmed).toBe(0);
    expect(w.clock - start - CHECK_MS).toBeGreaterThan(PROBE_MS);
    expect(w.clock - start - CHECK_MS).toBeLessThanOrEqual(PROBE_MAX_MS);

    // One that makes no progress is held after PROBE_MS, however long its backlog.
    send(slow, 13_000);
    backlog = 13_000;
    w.onSleep = () => {};
    status();
    const before = w.clock;
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(slow.held).toBe(true);
    expect(w.clock - before - CHECK_MS).toBeLessThanOrEqual(PROBE_MS + 2);
  });

  it('never queues more than the cap between checks', () => {
    const w = new World();
    const t = target(1, 10);
    const watch = new PendingWatch([t], w);
    w.set(10, false, 0, 4_000);
    watch.added(t);
    expect(send(t, 5_000)).toBe(1_000);
    expect(t.dropped).toBe(4_000);
  });

  it('does not cap a registrant whose status it cannot read, and keeps trying', () => {
    const w = new World();
    const t = target(1, 10);
    const watch = new PendingWatch([t], w);
    watch.added(t); // no status for 10
    expect(t.cap).toBe(Infinity);
    expect(send(t, 5_000)).toBe(5_000);
    w.reads = [];
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(w.reads).toEqual([10]);
    expect(t.held).toBe(false);
    w.set(10, false, 0, 4_000);
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(t.cap).toBe(1_000);
    expect(t.unconfirmed).toBe(0);
  });

  it('ignores a reading when the pidfd says the process is gone (its PID may be another’s now)', () => {
    const w = new World();
    const t = target(1, 10);
    const watch = new PendingWatch([t], w);
    w.set(10, false);
    watch.added(t);
    send(t, 10);
    w.dead.add(10);
    w.set(10, false);
    w.clock += CHECK_MS;
    watch.tick(w.clock);
    expect(t.unconfirmed).toBe(10); // not taken as drained
  });
});
