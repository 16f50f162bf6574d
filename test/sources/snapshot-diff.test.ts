import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { START_SLACK_MS } from '../../src/sources/poll.js';
import {
  LossEstimator, newProcesses, parseForkCounter, snapshotOf, type ProcEntry, type Snapshot,
} from '../../src/sources/snapshot-diff.js';

const SELF = 900;
const opts = { self: SELF, slackMs: START_SLACK_MS };
/** ms since boot, the clock of /proc/PID/stat's start time and /proc/uptime */
const T0 = 3_600_000;
const sec = (s: number) => T0 + s * 1000;

const p = (pid: number, ppid: number, start: number): ProcEntry => ({ pid, ppid, start });
const snap = (takenAt: number, ...entries: ProcEntry[]): Snapshot => snapshotOf(takenAt, entries);
/** [parent, child] pairs, in the order they would be relayed. */
const forks = (prev: Snapshot, cur: Snapshot) => newProcesses(prev, cur, opts).map((e) => [e.ppid, e.pid]);

describe('newProcesses: one poll snapshot against the previous one', () => {
  const base = [p(1, 0, sec(-1000)), p(500, 1, sec(-100)), p(SELF, 500, sec(-50))];

  it('reports nothing when nothing changed', () => {
    expect(forks(snap(sec(0), ...base), snap(sec(1), ...base))).toEqual([]);
  });

  it('reports a new PID as a fork of its ppid', () => {
    expect(forks(snap(sec(0), ...base), snap(sec(1), ...base, p(501, 500, sec(0))))).toEqual([[500, 501]]);
  });

  it('reports nothing for processes that left, whether between snapshots or during one', () => {
    // 500 left; its child 700 (seen before) was reparented to 1 when it did.
    const prev = snap(sec(0), ...base, p(700, 500, sec(-10)));
    const cur = snap(sec(1), p(1, 0, sec(-1000)), p(SELF, 1, sec(-50)), p(700, 1, sec(-10)));
    expect(forks(prev, cur)).toEqual([]);
  });

  it('does not relay a process again that was missing from one listing and is back', () => {
    // 600 has lived for a minute; listing 2 lacked it (ps could not read it, a
    // partial listing). Listing 3 has it again: not a fork.
    const s1 = snap(sec(0), ...base, p(600, 500, sec(-60)));
    const s2 = snap(sec(1), ...base);
    const s3 = snap(sec(2), ...base, p(600, 500, sec(-60)));
    expect(forks(s1, s2)).toEqual([]);
    expect(forks(s2, s3)).toEqual([]);
  });

  it('still reports a child that looks up to the slack older than the previous listing (clock resolution)', () => {
    // Start times are in 10 ms ticks and the listing time is /proc/uptime to
    // 10 ms: a child forked just after a listing may look a tick older.
    const prev = snap(sec(10), ...base);
    const cur = snap(sec(11), ...base, p(501, 500, sec(10) - 10), p(502, 500, sec(10) - START_SLACK_MS));
    expect(forks(prev, cur)).toEqual([[500, 502], [500, 501]]); // in start order
    // Older than that, it was there at the previous listing.
    expect(forks(prev, snap(sec(11), ...base, p(503, 500, sec(10) - START_SLACK_MS - 10)))).toEqual([]);
  });

  it('ignores the daemon itself and any child of its', () => {
    const prev = snap(sec(0), ...base);
    const cur = snap(sec(1), ...base, p(950, SELF, sec(1)), p(951, SELF, sec(1)), p(502, 500, sec(1)));
    expect(forks(prev, cur)).toEqual([[500, 502]]);
    // Even the first time the daemon is seen (it never is new, but say it were).
    expect(forks(snap(sec(0), p(1, 0, sec(-1000))), snap(sec(1), p(1, 0, sec(-1000)), p(SELF, 1, sec(0))))).toEqual([]);
  });

  it('handles PID wrap-around: new low PIDs after high ones are new, and nothing is inferred from PID order', () => {
    const PID_MAX = 4194304;
    const prev = snap(sec(0), ...base, p(PID_MAX - 2, 500, sec(-5)), p(PID_MAX - 1, 500, sec(-1)));
    const cur = snap(
      sec(1),
      ...base,
      p(PID_MAX - 1, 500, sec(-1)), // still there
      p(300, 500, sec(0)), // the counter wrapped: new children get low PIDs
      p(301, 300, sec(1)), // a child of the new one
      p(PID_MAX - 3, 500, sec(-200)), // a high PID never seen, older than the previous listing: not new
    );
    expect(forks(prev, cur)).toEqual([[500, 300], [300, 301]]);
  });

  it('reports a recycled PID (same PID, later start) as a new fork of its new parent', () => {
    const prev = snap(sec(0), ...base, p(777, 500, sec(-30)));
    const cur = snap(sec(1), ...base, p(777, 1, sec(0.5)));
    expect(forks(prev, cur)).toEqual([[1, 777]]);
  });

  it('does not report a recycled PID twice, nor mistake the previous owner for the new one', () => {
    const s1 = snap(sec(0), ...base, p(777, 500, sec(-30)));
    const s2 = snap(sec(1), ...base, p(777, 1, sec(0.5)));
    const s3 = snap(sec(2), ...base, p(777, 1, sec(0.5)));
    expect(forks(s1, s2)).toEqual([[1, 777]]);
    expect(forks(s2, s3)).toEqual([]);
  });

  it('does not take a reparented process (same PID and start, new ppid) for a new one', () => {
    const prev = snap(sec(0), ...base, p(777, 500, sec(-30)));
    const cur = snap(sec(1), ...base, p(777, 1, sec(-30)));
    expect(forks(prev, cur)).toEqual([]);
  });

  it('places a new parent before its new children, whatever their PIDs and listing order', () => {
    const prev = snap(sec(0), ...base);
    // After a wrap the grandchild has the lowest PID and ps lists it first.
    const cur = snap(sec(1), p(5, 9000, sec(1)), ...base, p(9000, 8000, sec(1)), p(8000, 500, sec(1)), p(42, 1, sec(1)));
    const order = forks(prev, cur);
    expect(order).toHaveLength(4);
    const at = (child: number) => order.findIndex(([, c]) => c === child);
    expect(at(8000)).toBeLessThan(at(9000));
    expect(at(9000)).toBeLessThan(at(5));
    expect(order).toContainEqual([1, 42]);
  });

  it('without a start time, judges by the PID alone', () => {
    const prev = snap(sec(0), ...base, p(600, 500, Number.NaN));
    const cur = snap(sec(1), ...base, p(600, 500, Number.NaN), p(601, 500, Number.NaN));
    expect(forks(prev, cur)).toEqual([[500, 601]]);
  });

  it('property: exactly the processes added since the previous listing are reported, each once', () => {
    const entry = fc.record({ pid: fc.integer({ min: 2, max: 4194304 }), ppid: fc.integer({ min: 1, max: 4194304 }) });
    fc.assert(
      fc.property(fc.uniqueArray(entry, { selector: (e) => e.pid, maxLength: 60 }), fc.uniqueArray(entry, { selector: (e) => e.pid, maxLength: 30 }), fc.array(fc.boolean(), { maxLength: 60 }), (olds, news, keep) => {
        const oldPids = new Set(olds.map((e) => e.pid));
        const born = news.filter((e) => !oldPids.has(e.pid) && e.pid !== SELF && e.ppid !== SELF);
        const survivors = olds.filter((e, i) => keep[i] !== false && e.pid !== SELF && e.ppid !== SELF);
        const prev = snapshotOf(sec(0), olds.map((e) => p(e.pid, e.ppid, sec(-100))));
        const cur = snapshotOf(sec(1), [...survivors.map((e) => p(e.pid, e.ppid, sec(-100))), ...born.map((e) => p(e.pid, e.ppid, sec(0.5)))]);
        const got = newProcesses(prev, cur, opts);
        expect(got.map((e) => e.pid).sort((a, b) => a - b)).toEqual(born.map((e) => e.pid).sort((a, b) => a - b));
        for (const e of got) expect(e.ppid).toBe(born.find((b) => b.pid === e.pid)!.ppid);
      }),
    );
  });
});

describe('LossEstimator: forks missed, from the kernel fork counter', () => {
  it('counts what the counter grew by, less relays and the daemon own forks', () => {
    const l = new LossEstimator(1000);
    expect(l.update(1000, 0, 0)).toBe(0);
    expect(l.update(1010, 4, 2)).toBe(4); // 10 forks: 4 relayed, 2 were our ps
    expect(l.total).toBe(4);
    expect(l.update(1010, 4, 2)).toBe(0);
    expect(l.update(1030, 10, 4)).toBe(12); // 30 - 10 - 4 = 16 in all
    expect(l.total).toBe(16);
  });

  it('never goes down when a relayed fork is counted only at the next read', () => {
    const l = new LossEstimator(0);
    expect(l.update(5, 1, 0)).toBe(4);
    // The snapshot relayed 3 forks the counter (read before it) did not have yet.
    expect(l.update(6, 5, 0)).toBe(0);
    expect(l.total).toBe(4);
    expect(l.update(12, 5, 0)).toBe(3); // 12 - 5 = 7
  });
});

describe('parseForkCounter', () => {
  it('reads the processes line of /proc/stat', () => {
    const text = 'cpu  1 2 3 4\nintr 5 6\nctxt 77\nbtime 1700000000\nprocesses 14093\nprocs_running 2\n';
    expect(parseForkCounter(text)).toBe(14093);
  });

  it('throws when there is none', () => {
    expect(() => parseForkCounter('cpu 1 2 3\n')).toThrow(/processes/);
  });
});
