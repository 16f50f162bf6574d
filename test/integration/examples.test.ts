// The consumer examples under examples/, each run as a user would run it against a
// real mount served by the built daemon, with real forks: the C and Python ones must
// print the right parent and child, exactly once per fork; the bash trap must keep
// its script alive and run; the events loop must print the right parent and child.
// The host is shared and busy, so every check looks for the test's own children.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, chmod, mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, ensureBuilt, startDaemon, type Daemon } from '../helpers/daemon.js';
import { asUserWithCaps, NOBODY } from '../helpers/confine.js';
import { forkTrue, readText, sleep, writeCtl } from '../helpers/fsio.js';
import { REPO_ROOT } from '../helpers/native.js';
import { hasTool } from '../helpers/common.js';

const execFileAsync = promisify(execFile);
const EXAMPLES = path.join(REPO_ROOT, 'examples');

interface Example {
  proc: ChildProcess;
  out(): string;
  err(): string;
  exited(): boolean;
  /** Resolves once stdout/stderr satisfy pred; rejects after timeoutMs or at exit. */
  waitFor(pred: () => boolean, what: string, timeoutMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();

function runExample(file: string, args: string[]): Example {
  const proc = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let out = '';
  let err = '';
  let done = false;
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  // 'exit', not 'close': a child of the example that holds its stdout open must not
  // hide that the example itself died.
  proc.on('exit', () => (done = true));
  proc.on('error', (e) => {
    err += String(e);
    done = true;
  });
  return {
    proc,
    out: () => out,
    err: () => err,
    exited: () => done,
    async waitFor(pred, what, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      while (!pred()) {
        if (done) throw new Error(`${file} exited (${proc.exitCode ?? proc.signalCode}) before ${what}; stderr: ${err}`);
        if (Date.now() > until) throw new Error(`${file}: no ${what} within ${timeoutMs} ms; stderr: ${err}; stdout tail: ${out.slice(-500)}`);
        await sleep(25);
      }
    },
  };
}

/** Kills every example still running, after the daemons: a reader blocked in a FUSE read ends only then. */
async function cleanup(): Promise<void> {
  const procs = [...running];
  running.clear();
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await cleanupAll();
  await Promise.all(procs.map((p) => (p.exitCode !== null || p.signalCode !== null
    ? undefined
    : new Promise<void>((r) => {
      const t = setTimeout(r, 5000);
      p.once('close', () => {
        clearTimeout(t);
        r();
      });
    }))));
}

const havePython = await hasTool('python3');

let binDir: string;
let onForkC: string;

beforeAll(async () => {
  binDir = await mkdtemp(path.join(os.tmpdir(), 'relayfork-examples-'));
  await chmod(binDir, 0o755); // user nobody runs the C example from here too
  onForkC = path.join(binDir, 'on-fork');
  await Promise.all([
    ensureBuilt(),
    execFileAsync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', onForkC, path.join(EXAMPLES, 'on-fork.c')]),
  ]);
}, 120_000);
afterEach(cleanup);
afterAll(async () => {
  await cleanup();
  await rm(binDir, { recursive: true, force: true });
});

const registeredPid = (ex: Example): number => Number(/registered (\d+)/.exec(ex.err())![1]);

/** Forks three children; waits until `ex` printed a line for each; returns the lines for each child. */
async function forkAndCollect(ex: Example, lineFor: (child: number) => RegExp): Promise<Map<number, string[]>> {
  const children = [await forkTrue(), await forkTrue(), await forkTrue()];
  const linesFor = (c: number) => ex.out().split('\n').filter((l) => lineFor(c).test(l));
  await ex.waitFor(() => children.every((c) => linesFor(c).length > 0), `lines for children ${children.join(', ')}`);
  await sleep(300); // room for a duplicate to show
  return new Map(children.map((c) => [c, linesFor(c)]));
}

async function expectRegistered(d: Daemon, pid: number): Promise<void> {
  expect((await readText(path.join(d.dir, 'processes'))).trim().split(' ')).toContain(String(pid));
}

describe('examples/ against a real mount', () => {
  it('on-fork.c (SA_SIGINFO) registers itself and prints parent and child once per fork', async () => {
    const d = await startDaemon();
    const ex = runExample(onForkC, [d.dir]);
    await ex.waitFor(() => /registered \d+/.test(ex.err()), 'registration');
    expect(registeredPid(ex)).toBe(ex.proc.pid);
    await expectRegistered(d, ex.proc.pid!);

    const seen = await forkAndCollect(ex, (c) => new RegExp(`^parent \\d+ child ${c}$`));
    for (const [child, lines] of seen) expect({ child, lines }).toEqual({ child, lines: [`parent ${process.pid} child ${child}`] });
  });

  it('on-fork.c run by an unprivileged user tells how to register it, and receives once root has', async () => {
    const d = await startDaemon();
    const [file, ...args] = [...asUserWithCaps(NOBODY, []), onForkC, d.dir];
    const ex = runExample(file!, args);
    await ex.waitFor(() => /cannot register/.test(ex.err()), 'the refusal');
    expect(ex.err()).toContain(`as root run: echo ${ex.proc.pid} > ${d.dir}/processes`);

    expect(await writeCtl(path.join(d.dir, 'processes'), `${ex.proc.pid}\n`)).toBeNull();
    const seen = await forkAndCollect(ex, (c) => new RegExp(`^parent \\d+ child ${c}$`));
    for (const [child, lines] of seen) expect({ child, lines }).toEqual({ child, lines: [`parent ${process.pid} child ${child}`] });
  });

  it.skipIf(!havePython)('on_fork.py (pthread_sigmask + signalfd through ctypes) prints parent and child once per fork', async () => {
    const d = await startDaemon();
    const ex = runExample('python3', [path.join(EXAMPLES, 'on_fork.py'), d.dir]);
    await ex.waitFor(() => /registered \d+/.test(ex.err()), 'registration', 20_000);
    expect(registeredPid(ex)).toBe(ex.proc.pid);
    await expectRegistered(d, ex.proc.pid!);

    const seen = await forkAndCollect(ex, (c) => new RegExp(`^parent \\d+ child ${c}$`));
    for (const [child, lines] of seen) expect({ child, lines }).toEqual({ child, lines: [`parent ${process.pid} child ${child}`] });
  });

  it('on-fork.sh (trap ... RTMIN) registers itself, survives the signals and runs its trap', async () => {
    const d = await startDaemon();
    const ex = runExample('bash', [path.join(EXAMPLES, 'on-fork.sh'), d.dir]);
    await ex.waitFor(() => /registered \d+/.test(ex.err()), 'registration');
    expect(registeredPid(ex)).toBe(ex.proc.pid);
    await expectRegistered(d, ex.proc.pid!);
    expect(ex.err()).toContain('for signal 34');

    const before = ex.out().split('\n').filter(Boolean).length;
    for (let i = 0; i < 5; i++) await forkTrue();
    // A trap cannot tell whose fork it was (or count: bash folds signals that arrive
    // together), so: it ran after our forks, it counted 1, 2, 3..., and the
    // script is alive (without the trap the first signal would have killed it).
    await ex.waitFor(() => ex.out().split('\n').filter(Boolean).length > before, 'a trap run after the forks');
    await sleep(300);
    const lines = ex.out().split('\n').filter(Boolean);
    // Each run counted once; a trap that starts again before it ends may print out of order.
    const counts = lines.map((l) => Number(/^fork (\d+)$/.exec(l)?.[1] ?? NaN)).sort((a, b) => a - b);
    expect(counts).toEqual(counts.map((_, i) => i + 1));
    expect(ex.exited()).toBe(false);
    await expectRegistered(d, ex.proc.pid!);

    // A fork storm: bash 5.2 waiting in `wait` dies of SIGSEGV under this; in `read` it lives.
    for (let i = 0; i < 5000; i++) process.kill(ex.proc.pid!, 34);
    await sleep(1000);
    expect({ exited: ex.exited(), stderr: ex.err() }).toEqual({ exited: false, stderr: expect.not.stringContaining('fault') });
  });

  it('events.sh (while read parent child < events) prints parent and child for each fork', async (ctx) => {
    const d = await startDaemon();
    try {
      await access(path.join(d.dir, 'events'));
    } catch {
      ctx.skip(); // the events file comes with the "stats and events" work; nothing to follow yet
      return;
    }
    const ex = runExample('bash', [path.join(EXAMPLES, 'events.sh'), d.dir]);
    await ex.waitFor(() => /following/.test(ex.err()), 'the start');
    await sleep(300); // the loop opens events right after saying so; a stream starts at its open

    const seen = await forkAndCollect(ex, (c) => new RegExp(`^parent \\d+ child ${c} `));
    for (const [child, lines] of seen) {
      expect(lines).toHaveLength(1);
      // The name is read from /proc when the line arrives: the child's own
      // (true), gone, or still its parent's if it has not exec'd yet (node).
      expect(lines[0]).toMatch(new RegExp(`^parent ${process.pid} child ${child} (true|gone|node\\b.*)$`));
    }
  });
});
