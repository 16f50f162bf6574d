import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseStat, readProcessTable, uptimeMs, USER_HZ } from '../../src/sources/proc-table.js';

// A real /proc/PID/stat line (bash), then one whose comm holds spaces and ')'.
const BASH = '4721 (bash) S 4719 4721 4721 34816 4790 4194304 1585 5617 0 0 3 1 7 4 20 0 1 0 123456 9015296 1353 18446744073709551615 1 1 0 0 0 0 65536 3686404 1266761467 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n';
const ODD = '999 (a) b) (c d) R 1 999 999 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 500 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n';

describe('parseStat', () => {
  it('reads ppid (field 4) and starttime (field 22, in USER_HZ ticks) as ms since boot', () => {
    expect(parseStat(4721, BASH)).toEqual({ pid: 4721, ppid: 4719, start: (123456 * 1000) / USER_HZ });
  });

  it('finds the fields after the last ")", whatever comm holds', () => {
    expect(parseStat(999, ODD)).toEqual({ pid: 999, ppid: 1, start: (500 * 1000) / USER_HZ });
  });

  it('returns null for a truncated or malformed line', () => {
    expect(parseStat(1, '')).toBeNull();
    expect(parseStat(1, '1 (init) S')).toBeNull();
    expect(parseStat(1, BASH.slice(0, 60))).toBeNull();
    expect(parseStat(1, BASH.replace(' 4719 ', ' x '))).toBeNull();
  });
});

describe('readProcessTable, on the real /proc', () => {
  it('lists this process and a child just started, with its parent and a start time near now', async () => {
    const child = spawn('/bin/sleep', ['5'], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      const before = uptimeMs();
      const table = readProcessTable();
      const byPid = new Map(table.map((e) => [e.pid, e]));
      expect(byPid.get(process.pid)?.ppid).toBe(process.ppid);
      const mine = byPid.get(child.pid!);
      expect(mine?.ppid).toBe(process.pid);
      expect(mine!.start).toBeLessThanOrEqual(before + 10);
      expect(mine!.start).toBeGreaterThan(before - 5000);
      // Thread-group leaders only, each once.
      expect(new Set(table.map((e) => e.pid)).size).toBe(table.length);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
