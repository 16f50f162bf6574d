// The soak script in its short form: a fork storm with bursts and registrants
// coming and going (some stuck for a while) against the built daemon. The
// daemon's RSS must stay flat within a generous bound, it must relay throughout
// and stop cleanly. RELAYFORK_SOAK_SECONDS runs it longer (scripts/soak.mjs
// defaults to 10 minutes when run by hand).
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, expect, it } from 'vitest';
import { ensureBuilt } from '../helpers/daemon.js';
import { REPO_ROOT } from '../helpers/native.js';

const execFileAsync = promisify(execFile);
const SECONDS = Number(process.env.RELAYFORK_SOAK_SECONDS ?? 20);

beforeAll(ensureBuilt, 120_000);

interface Report {
  ok: boolean;
  forksMade: number;
  forksSeen: number | null;
  forksLost: number;
  signalsSent: number | null;
  signalsReceived: number;
  registrantsCycled: number;
  stuckRegistrants: number;
  holds: number;
  drains: number;
  rssMb: { first: number; early: number; late: number; max: number };
  growthMb: number;
  exit: { code: number | null; signal: string | null } | null;
  stopMs: number;
  errors: number;
}

it(`soaks for ${SECONDS} s: RSS holds, forks are relayed or counted, registrants come and go, it stops cleanly`, async () => {
  const args = [
    path.join(REPO_ROOT, 'scripts', 'soak.mjs'),
    '--seconds', String(SECONDS),
    '--rate', '2000',
    '--burst-every', String(Math.max(5, Math.floor(SECONDS / 3))),
    '--burst-forks', '10000',
    '--churn-ms', '500',
    '--sample-s', '1',
    '--max-growth-mb', '40',
    '--json',
  ];
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(process.execPath, args, { cwd: REPO_ROOT, timeout: (SECONDS + 60) * 1000, maxBuffer: 16 << 20 }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message?: string };
    throw new Error(`soak failed: ${e.message}\n${e.stderr ?? ''}\n${e.stdout ?? ''}`);
  }
  const report = JSON.parse(stdout.trim().split('\n').at(-1)!) as Report;

  expect(report.ok).toBe(true);
  expect(report.exit).toEqual({ code: 0, signal: null });
  expect(report.stopMs).toBeLessThan(5000);
  expect(report.errors).toBe(0);
  // The storm reached the daemon: every fork it made was seen or counted lost
  // (seen also counts everything else forking on the host).
  expect(report.forksMade).toBeGreaterThan(SECONDS * 1000);
  expect(report.forksSeen! + report.forksLost).toBeGreaterThanOrEqual(report.forksMade);
  expect(report.signalsSent).toBeGreaterThan(0);
  expect(report.signalsReceived).toBeGreaterThan(0);
  expect(report.registrantsCycled).toBeGreaterThanOrEqual(SECONDS);
  if (report.stuckRegistrants > 0) expect(report.holds).toBeGreaterThanOrEqual(1);
  // Flat memory, generously: the bound is for leaks, not for the heap's warm-up.
  expect(report.growthMb).toBeLessThanOrEqual(40);
  expect(report.rssMb.max).toBeLessThan(300);
}, (SECONDS + 90) * 1000);
