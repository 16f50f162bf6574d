import { describe, expect, it } from 'vitest';
import { LONG_MS, LossLog, QUIET_MS } from '../../src/relay/loss-log.js';

function recorder() {
  const lines: Array<Record<string, unknown>> = [];
  const log = { warn: (obj: Record<string, unknown>) => lines.push(obj) };
  return { lines, log: log as unknown as ConstructorParameters<typeof LossLog>[0] };
}

describe('LossLog', () => {
  it('logs an overrun once, with its total, when the losses stop', () => {
    const { lines, log } = recorder();
    const l = new LossLog(log);
    let t = 0;
    for (let i = 0; i < 500; i++) {
      l.report(100, 'netlink receive buffer overrun (ENOBUFS)', (t += 2));
      l.tick(t, 0);
    }
    expect(lines).toEqual([]);
    l.tick(t + QUIET_MS - 1, 50_000);
    expect(lines).toEqual([]);
    l.tick(t + QUIET_MS, 50_000);
    expect(lines).toEqual([{ lost: 50_000, why: 'netlink receive buffer overrun (ENOBUFS)', ms: 998, ongoing: false, lostTotal: 50_000 }]);
    l.tick(t + 10 * QUIET_MS, 50_000);
    expect(lines).toHaveLength(1);
    expect(l.episodes).toBe(1);
  });

  it('logs a second overrun as a second episode', () => {
    const { lines, log } = recorder();
    const l = new LossLog(log);
    l.report(5, 'x', 0);
    l.tick(QUIET_MS, 5);
    l.report(7, 'y', 5 * QUIET_MS);
    l.tick(6 * QUIET_MS, 12);
    expect(lines.map((x) => [x.lost, x.why, x.lostTotal])).toEqual([[5, 'x', 5], [7, 'y', 12]]);
    expect(l.episodes).toBe(2);
  });

  it('summarises an overrun that never ends every LONG_MS', () => {
    const { lines, log } = recorder();
    const l = new LossLog(log);
    for (let t = 0; t <= 3 * LONG_MS; t += 100) {
      l.report(1, 'x', t);
      l.tick(t, 0);
    }
    expect(lines.map((x) => [x.lost, x.ongoing])).toEqual([[601, true], [600, true], [600, true]]); // the first window holds t = 0 and t = LONG_MS
    expect(l.episodes).toBe(1);
  });
});
