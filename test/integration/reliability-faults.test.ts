// Faults around the real daemon: a registrant's PID handed to a new process at
// once (through /proc/sys/kernel/ns_last_pid), SIGKILL and restart, and mount
// points whose names a shell would take for commands.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, realpath, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, ensureBuilt, mountsAt, readMounts, startDaemon, type Daemon } from '../helpers/daemon.js';
import { forkTrue, readText, sleep, writeCtl } from '../helpers/fsio.js';
import { compileHelper } from '../helpers/native.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { processesOf, exists } from '../helpers/common.js';

beforeAll(async () => {
  await Promise.all([compileHelper('receiver'), compileHelper('at-pid'), ensureBuilt()]);
}, 120_000);
afterEach(cleanupAll);
afterAll(cleanupAll);


async function register(d: Daemon, text: string): Promise<void> {
  expect(await writeCtl(processesOf(d), text)).toBeNull();
}

async function stateOf(pid: number): Promise<string | null> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[0]!;
  } catch {
    return null;
  }
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

const got = (r: Receiver, child: number) => r.signals.filter((s) => s.value === child);

describe('PID reuse', () => {
  it('a new process given a dead registrant’s PID at once receives nothing meant for the old one', async () => {
    const d = await startDaemon();
    const healthy = await startReceiver(34);
    await register(d, `${healthy.pid}\n`);
    const atPid = await compileHelper('at-pid');

    // Other forks on the host may take the PID first: then at-pid gives up and we retry.
    for (let attempt = 1; ; attempt++) {
      const old = await startReceiver(34);
      await register(d, `${old.pid}\n`);
      const first = await forkTrue();
      await old.waitFor((s) => s.some((x) => x.value === first));

      // Stopped, the daemon cannot notice the exit before the PID is reused; the
      // forks made meanwhile wait in its socket.
      process.kill(d.pid, 'SIGSTOP');
      let next: Receiver | null = null;
      const forks: number[] = [];
      try {
        await until('the daemon to stop', async () => (await stateOf(d.pid)) === 'T', 5000);
        for (let i = 0; i < 3; i++) forks.push(await forkTrue()); // meant for the old process
        old.proc.kill('SIGKILL');
        await until('the old registrant to be reaped', () => old.exitInfo() !== null, 5000);
        try {
          next = await startReceiver(34, { prefix: [atPid, `${old.pid}`] });
        } catch (err) {
          if (attempt < 10) continue; // missed the PID
          throw err;
        }
        expect(next.pid).toBe(old.pid);
        for (let i = 0; i < 3; i++) forks.push(await forkTrue()); // after the reuse
      } finally {
        process.kill(d.pid, 'SIGCONT');
      }

      await healthy.waitFor((s) => forks.every((c) => s.some((x) => x.value === c)), 10_000);
      await sleep(500);
      expect(next.signals).toEqual([]);
      await until('the old registrant to leave the list', async () => (await readText(processesOf(d))) === `${healthy.pid}\n`, 2000);

      // The new process is a process like any other: registered in its own right, it receives.
      await register(d, `${next.pid}\n`);
      const child = await forkTrue();
      await next.waitFor((s) => s.some((x) => x.value === child));
      await sleep(200);
      expect(got(next, child)).toEqual([{ signo: 34, code: -4, pid: process.pid, value: child }]);
      return;
    }
  }, 90_000);
});

describe('crash and restart', () => {
  it('after SIGKILL the next start mounts over the stale mount and starts empty: registrations are not persisted', async () => {
    const r = await startReceiver(34);
    let d = await startDaemon();
    const mnt = d.mnt;
    for (let round = 0; round < 3; round++) {
      await register(d, `${r.pid}\n`);
      const before = await forkTrue();
      await r.waitFor((s) => s.some((x) => x.value === before));

      expect(await d.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
      expect((await mountsAt(mnt)).length).toBeGreaterThanOrEqual(1);
      await expect(stat(mnt)).rejects.toMatchObject({ code: 'ENOTCONN' });

      d = await startDaemon({ mountDir: mnt });
      expect(await mountsAt(mnt)).toHaveLength(1); // cleared, not stacked
      expect(await readText(processesOf(d))).toBe('\n');
      expect(await readText(path.join(d.dir, 'signal'))).toBe('34\n');
      const unregistered = await forkTrue();
      await sleep(500);
      expect(got(r, unregistered)).toEqual([]);
      expect(r.exitInfo()).toBeNull();
    }
    expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await mountsAt(mnt)).toEqual([]);
  }, 60_000);
});

describe('hostile mount paths', () => {
  const roots: string[] = [];
  afterAll(async () => {
    await cleanupAll();
    const mounts = await readMounts();
    for (const root of roots) {
      if (!mounts.some((m) => m.target.startsWith(root))) await rm(root, { recursive: true, force: true });
    }
  });

  const marker = `/tmp/relayfork-pwned-${randomBytes(6).toString('hex')}`;
  const names: Array<[string, string]> = [
    ['spaces', 'a b  c '],
    ['quotes', `it's "quoted"`],
    ['semicolons', `x; touch ${marker}-semi; y`],
    ['command substitution', `$(touch ${marker}-dollar)`],
    ['backticks', `\`touch ${marker}-tick\``],
    ['a newline', `line\nbreak`],
    ['commas and an option', 'a,allow_root,-o nosuid'],
    ['all of them', `$(touch ${marker}-all) \`touch ${marker}-all2\`; 'q' "d" \\ \t,x\ny`],
  ];

  for (const [what, name] of names) {
    it(`mounts, serves, survives SIGKILL and unmounts at a path with ${what}, running nothing`, async () => {
      const root = await realpath(await mkdtemp(path.join(os.tmpdir(), 'relayfork-hostile-')));
      roots.push(root);
      const mnt = path.join(root, name, 'mnt');
      await mkdir(mnt, { recursive: true });

      let d = await startDaemon({ mountDir: mnt });
      const [entry] = await mountsAt(mnt);
      expect(entry).toMatchObject({ target: mnt, source: 'relayfork', fstype: 'fuse.relayfork' });
      expect(entry!.options.split(',')).not.toContain('allow_root');
      expect(entry!.options.split(',')).toEqual(expect.arrayContaining(['default_permissions', 'allow_other']));

      const r = await startReceiver(34);
      await register(d, `${r.pid}\n`);
      const child = await forkTrue();
      await r.waitFor((s) => s.some((x) => x.value === child));

      // A stale mount at the same path is recognised (mountinfo escapes it) and cleared.
      await d.stop('SIGKILL');
      d = await startDaemon({ mountDir: mnt });
      expect(await mountsAt(mnt)).toHaveLength(1);
      expect(await readText(processesOf(d))).toBe('\n');

      expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(await mountsAt(mnt)).toEqual([]);
      expect(d.stderr()).toBe('');
      for (const suffix of ['-semi', '-dollar', '-tick', '-all', '-all2']) expect(await exists(marker + suffix)).toBe(false);
    }, 30_000);
  }
});
