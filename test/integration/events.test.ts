// relayfork/stats and relayfork/events through a real mount: the built daemon,
// real readers (cat, head, bash, and this process), real forks, a real C
// receiver. The host is shared: other forks show up in every stream, so the
// tests look for their own children's lines among them and never assume a
// quiet host; where a test needs a reader to be blocked, it checks the daemon
// really answered a blocked read.
import { spawn, type ChildProcess } from 'node:child_process';
import { open, readFile, readdir, readlink, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, ensureBuilt, makeMountDir, mountsAt, runCli, startDaemon, type Daemon } from '../helpers/daemon.js';
import { forkTrue, readText, runAsNobody, sleep, writeCtl } from '../helpers/fsio.js';
import { compileHelper } from '../helpers/native.js';
import { startReceiver } from '../helpers/receiver.js';

beforeAll(async () => {
  await Promise.all([compileHelper('receiver'), compileHelper('forker'), ensureBuilt()]);
}, 120_000);

const readers = new Set<ChildProcess>();
afterEach(async () => {
  for (const p of readers) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  readers.clear();
  await cleanupAll();
});
afterAll(cleanupAll);

const statsOf = (d: Daemon) => path.join(d.dir, 'stats');
const eventsOf = (d: Daemon) => path.join(d.dir, 'events');
const LINE = /^(\d+ \d+|lost \d+)$/;

async function stats(d: Daemon): Promise<Record<string, string>> {
  const text = await readText(statsOf(d));
  return Object.fromEntries(text.trimEnd().split('\n').map((l) => l.split(' ') as [string, string]));
}
const num = (s: Record<string, string>, key: string): number => {
  expect(s[key], `stats has ${key}`).toMatch(/^\d+$/);
  return Number(s[key]);
};

interface Reader {
  proc: ChildProcess;
  pid: number;
  out(): string;
  lines(): string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

/**
 * Spawns `cmd args…` reading `file` and resolves once it holds `file` open (or
 * has already exited: on a busy host `head` may be done before we look).
 */
async function startReader(cmd: string, args: string[], file: string): Promise<Reader> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  readers.add(proc);
  let out = '';
  proc.stdout!.setEncoding('latin1').on('data', (c: string) => (out += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  const pid = proc.pid!;
  const deadline = Date.now() + 5000;
  for (;;) {
    if (await holdsOpen(pid, file)) break;
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    if (Date.now() > deadline) throw new Error(`${cmd} did not open ${file} within 5 s`);
    await sleep(10);
  }
  return { proc, pid, out: () => out, lines: () => out.split('\n').filter((l) => l !== ''), exited };
}

/** Whether process `pid` has `file` open (procfs only, never the mount). */
async function holdsOpen(pid: number, file: string): Promise<boolean> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === file) return true;
  }
  return false;
}

/** Whether `pid` waits inside a FUSE request (our read) right now. */
async function blockedInFuse(pid: number): Promise<boolean> {
  const wchan = await readFile(`/proc/${pid}/wchan`, 'latin1').catch(() => '');
  return /request_wait_answer|fuse/.test(wchan);
}

async function waitUntil(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
}

/** Runs the forker: `n` children of one parent, as fast as the host lets it. */
async function forkStorm(n: number): Promise<number> {
  const bin = await compileHelper('forker');
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [String(n)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 && out.startsWith('done ') ? resolve(p.pid!) : reject(new Error(`forker exited ${code}: ${out}`))));
  });
}

async function rssKiB(pid: number): Promise<number> {
  const m = /^VmRSS:\s*(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'latin1'));
  return Number(m![1]);
}

describe('relayfork/stats', () => {
  it('is read-only for everyone, and names every counter', async () => {
    const d = await startDaemon();
    for (const f of [statsOf(d), eventsOf(d)]) {
      const st = await stat(f);
      expect(st.mode & 0o7777).toBe(0o444);
      expect([st.uid, st.gid]).toEqual([0, 0]);
      expect(await writeCtl(f, '1\n')).toBe('EACCES');
      expect(await writeCtl(f, '1\n', 'r+')).toBe('EACCES');
    }
    expect(await readdir(d.dir)).toEqual(expect.arrayContaining(['processes', 'signal', 'stats', 'events']));

    const s = await stats(d);
    expect(Object.keys(s)).toEqual(expect.arrayContaining([
      'source', 'signal', 'registrants', 'forks_seen', 'forks_lost', 'signals_sent',
      'signals_dropped', 'registrants_pruned', 'uptime_s',
    ]));
    expect(s.source).toBe('netlink');
    expect(s.signal).toBe('34');
    for (const [k, v] of Object.entries(s)) if (k !== 'source') expect({ k, v }).toEqual({ k, v: expect.stringMatching(/^\d+$/) });

    const nobody = await runAsNobody('cat "$1"', [statsOf(d)]);
    expect(nobody.code).toBe(0);
    expect(nobody.stdout).toMatch(/^source netlink\n/);
  });

  it('counts the forks the test makes and exactly the signals its receiver gets; monotonic', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    expect(await writeCtl(path.join(d.dir, 'processes'), `${r.pid}\n`)).toBeNull();
    const s0 = await stats(d);
    expect(num(s0, 'registrants')).toBe(1);

    const children: number[] = [];
    for (let i = 0; i < 6; i++) children.push(await forkTrue());
    // Every child reached the receiver, or the kernel refused some signal (the
    // pending-signal limit is per user and the host is shared: then it counts
    // as dropped, and the test still checks the accounting below).
    await waitUntil('the daemon relayed our children', async () =>
      children.every((c) => r.signals.some((x) => x.value === c)) || num(await stats(d), 'signals_dropped') > 0);
    const s1 = await stats(d);
    expect(await writeCtl(path.join(d.dir, 'processes'), `-${r.pid}\n`)).toBeNull();
    const s2 = await stats(d); // no signal goes to r after this

    // Every signal the daemon sent went to r (its only registrant), and r got
    // each one: it reads them all, so the count settles at signals_sent.
    await waitUntil('the receiver has read every signal sent', () => r.signals.length >= num(s2, 'signals_sent'));
    await sleep(300);
    expect(r.signals.length).toBe(num(s2, 'signals_sent'));
    expect(num(s2, 'registrants')).toBe(0);
    const ours = children.filter((c) => r.signals.some((x) => x.value === c)).length;
    expect(ours + num(s2, 'signals_dropped')).toBeGreaterThanOrEqual(children.length);
    // Our six forks are among the forks seen between s0 and s1 (the host forks too).
    expect(num(s1, 'forks_seen') - num(s0, 'forks_seen')).toBeGreaterThanOrEqual(children.length);
    expect(num(s2, 'forks_seen')).toBeGreaterThanOrEqual(num(s2, 'signals_sent') + num(s2, 'signals_dropped'));

    // Monotonic, uptime included.
    await sleep(1100);
    const s3 = await stats(d);
    for (const k of ['forks_seen', 'forks_lost', 'signals_sent', 'signals_dropped', 'registrants_pruned']) {
      expect({ k, later: num(s3, k) >= num(s2, k) }).toEqual({ k, later: true });
    }
    expect(num(s3, 'uptime_s')).toBeGreaterThan(num(s0, 'uptime_s'));
  });

  it('shows the current signal and counts a registrant that exits as pruned, once', async () => {
    const d = await startDaemon();
    expect(await writeCtl(path.join(d.dir, 'signal'), 'SIGRTMIN+6\n')).toBeNull();
    const stays = await startReceiver(40);
    const goes = await startReceiver(40);
    expect(await writeCtl(path.join(d.dir, 'processes'), `${stays.pid} ${goes.pid}\n`)).toBeNull();
    let s = await stats(d);
    expect([s.signal, s.registrants, s.registrants_pruned]).toEqual(['40', '2', '0']);

    await goes.stop();
    await waitUntil('the registrant that exited is dropped', async () => (await stats(d)).registrants === '1');
    await forkTrue(); // the worker and the registry both see it end: still one
    await sleep(300);
    s = await stats(d);
    expect([s.registrants, s.registrants_pruned]).toEqual(['1', '1']);
    // Unregistering is not pruning.
    expect(await writeCtl(path.join(d.dir, 'processes'), `-${stays.pid}\n`)).toBeNull();
    s = await stats(d);
    expect([s.registrants, s.registrants_pruned]).toEqual(['0', '1']);
  });
});

describe('relayfork/events', () => {
  it('streams a `PARENT CHILD` line for each child forked after cat opened it, to two readers at once', async () => {
    const d = await startDaemon();
    const a = await startReader('cat', [eventsOf(d)], eventsOf(d));
    const b = await startReader('cat', [eventsOf(d)], eventsOf(d));
    expect((await stats(d)).events_readers).toBe('2');
    const before = await forkTrue(); // forked after both opened: in both

    const children = [before];
    for (let i = 0; i < 4; i++) children.push(await forkTrue());
    children.push(...(await Promise.all(Array.from({ length: 4 }, () => forkTrue()))));
    const want = children.map((c) => `${process.pid} ${c}`);
    for (const r of [a, b]) {
      await waitUntil(`reader ${r.pid} sees every child`, () => want.every((w) => r.lines().includes(w)));
    }
    for (const r of [a, b]) {
      for (const w of want) expect(r.lines().filter((l) => l === w)).toHaveLength(1); // once each
      expect(r.lines().filter((l) => !LINE.test(l))).toEqual([]);
      expect(r.out().endsWith('\n') || r.out() === '').toBe(true);
    }
    // Both saw the same stream from the moment both were open.
    const common = (r: Reader) => r.lines().slice(r.lines().indexOf(want[0]!));
    expect(common(a).slice(0, 50)).toEqual(common(b).slice(0, 50));
  });

  it('does not show forks from before the open', async () => {
    const d = await startDaemon();
    const early = await forkTrue();
    const r = await startReader('cat', [eventsOf(d)], eventsOf(d));
    const late = await forkTrue();
    await waitUntil('the late child is streamed', () => r.lines().includes(`${process.pid} ${late}`));
    expect(r.lines()).not.toContain(`${process.pid} ${early}`);
  });

  it('lets `head -n 3` exit after three lines', async () => {
    const d = await startDaemon();
    const h = await startReader('head', ['-n', '3', eventsOf(d)], eventsOf(d));
    let done = false;
    void h.exited.then(() => (done = true));
    for (let i = 0; i < 20 && !done; i++) await forkTrue();
    const exit = await h.exited;
    expect([exit.code, exit.signal]).toEqual([0, null]);
    expect(h.lines()).toHaveLength(3);
    for (const l of h.lines()) expect(l).toMatch(/^\d+ \d+$/);
    await waitUntil('head released the file', async () => (await stats(d)).events_readers === '0');
  });

  it('feeds a bash `while read parent child` loop every line, in order', async () => {
    const d = await startDaemon();
    // bash's read reads ahead, then seeks back to the end of the line it used.
    const script = 'while read parent child; do echo "$parent $child"; done < "$1"';
    const loop = await startReader('bash', ['-c', script, 'sh', eventsOf(d)], eventsOf(d));
    const children: number[] = [];
    for (let i = 0; i < 8; i++) children.push(await forkTrue());
    const want = children.map((c) => `${process.pid} ${c}`);
    await waitUntil('bash printed every child', () => want.every((w) => loop.lines().includes(w)));
    for (const l of loop.lines()) expect(l).toMatch(LINE);
    // In fork order, each once.
    expect(loop.lines().filter((l) => want.includes(l))).toEqual(want);
  });

  it('holds a bounded buffer for a reader that never reads: RSS stays flat, then it sees `lost N`', async () => {
    const limit = 1000;
    const d = await startDaemon({ args: ['--events-buffer', String(limit)] });
    const fh = await open(eventsOf(d), 'r'); // this process: opened, never read until the end
    try {
      expect((await stats(d)).events_readers).toBe('1');
      await forkStorm(3000); // warm up: the ring wraps, every buffer is touched
      const rss0 = await rssKiB(d.pid);
      let forked = 3000;
      for (let round = 0; round < 3; round++) {
        await forkStorm(4000);
        forked += 4000;
      }
      const rss1 = await rssKiB(d.pid);
      // 12 000 more forks, all held for this reader if it were unbounded (~1 MiB as
      // JS strings): the daemon's RSS does not follow them. The margin is the
      // heap's own noise.
      expect(rss1 - rss0).toBeLessThan(4 * 1024);

      const buf = Buffer.alloc(128 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      const lines = buf.toString('latin1', 0, bytesRead).split('\n').slice(0, -1);
      const lost = /^lost (\d+)$/.exec(lines[0]!);
      expect(lost, `first line: ${lines[0]}`).not.toBeNull();
      expect(Number(lost![1])).toBeGreaterThanOrEqual(forked - limit);
      expect(lines.length - 1).toBeGreaterThan(0);
      expect(lines.length - 1).toBeLessThanOrEqual(limit);
      for (const l of lines.slice(1)) expect(l).toMatch(/^\d+ \d+$/);
      const s = await stats(d);
      expect(num(s, 'events_lost')).toBeGreaterThanOrEqual(Number(lost![1]));
    } finally {
      await fh.close();
    }
    await waitUntil('closing released the reader', async () => (await stats(d)).events_readers === '0');
  }, 120_000);

  it('ends a blocked `cat events` within a second of SIGINT, and of SIGKILL', async () => {
    // Here a fork anywhere on the host may answer cat's read first; on a quiet
    // host the daemon answers it EINTR. events-interrupt.test.ts makes the
    // host quiet and checks that path alone.
    const d = await startDaemon();
    for (const sig of ['SIGINT', 'SIGKILL'] as const) {
      const cat = await startReader('cat', [eventsOf(d)], eventsOf(d));
      await waitUntil('cat waits in our read', () => blockedInFuse(cat.pid));
      const sent = Date.now();
      cat.proc.kill(sig);
      const exit = await Promise.race([cat.exited, sleep(5000).then(() => null)]);
      expect(exit, `cat still running 5 s after ${sig}`).not.toBeNull();
      expect(exit!.signal).toBe(sig);
      expect(exit!.at - sent).toBeLessThan(1000);
    }
    // The daemon serves on.
    expect(d.exitInfo()).toBeNull();
    const r = await startReader('cat', [eventsOf(d)], eventsOf(d));
    const child = await forkTrue();
    await waitUntil('a new reader is served', () => r.lines().includes(`${process.pid} ${child}`));
  });

  it('gives a waiting reader end of file when the daemon stops, and exits 0', async () => {
    const d = await startDaemon();
    const cat = await startReader('cat', [eventsOf(d)], eventsOf(d));
    expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    const exit = await Promise.race([cat.exited, sleep(5000).then(() => null)]);
    expect(exit).not.toBeNull();
    expect([exit!.code, exit!.signal]).toEqual([0, null]);
  });

  it('refuses a bad --events-buffer as a usage error, mounting nothing', async () => {
    const mnt = await makeMountDir();
    for (const bad of ['0', '-5', '12abc', '1000001', '']) {
      const res = await runCli(['mount', mnt, '--events-buffer', bad]);
      expect({ bad, code: res.code }).toEqual({ bad, code: 2 });
      expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(res.stderr).toMatch(/--events-buffer/);
    }
    expect(await mountsAt(mnt)).toEqual([]);
  });

  it('streams to a reader that is not root', async () => {
    const d = await startDaemon();
    const res = runAsNobody('head -n 2 "$1"', [eventsOf(d)]);
    let done = false;
    void res.then(() => (done = true));
    for (let i = 0; i < 20 && !done; i++) {
      await sleep(100);
      await forkTrue();
    }
    const r = await res;
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').filter((l) => l !== '')).toHaveLength(2);
  });
});
