// The core daemon through a real mount: the built daemon on a fresh temporary mount
// point, real write(2)s and reads, and a real C receiver that reads siginfo through a
// signalfd. Every test starts its own daemon; afterEach kills and unmounts whatever is
// left, so a failing test leaves no mount and no process behind.
import { execFile } from 'node:child_process';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanupAll, ensureBuilt, makeMountDir, mountsAt, runCli, startDaemon, type Daemon } from '../helpers/daemon.js';
import { forkTrue, readText, runAsNobody, sleep, writeCtl } from '../helpers/fsio.js';
import { compileHelper } from '../helpers/native.js';
import { startReceiver, type Receiver, type Sig } from '../helpers/receiver.js';
import { SI_ASYNCIO, processesOf, signalOf, exists } from '../helpers/common.js';

const PF_KTHREAD = 0x00200000;

beforeAll(async () => {
  await Promise.all([compileHelper('receiver'), ensureBuilt()]);
}, 120_000);
afterEach(cleanupAll);
afterAll(cleanupAll);


async function register(d: Daemon, text: string): Promise<void> {
  expect(await writeCtl(processesOf(d), text)).toBeNull();
}

/** The signals `r` received whose si_value is `child`. */
const forChild = (r: Receiver, child: number): Sig[] => r.signals.filter((s) => s.value === child);

/** Waits until `r` has a signal for each of `children`, then a little longer for duplicates. */
async function settle(r: Receiver, children: number[], timeoutMs = 5000): Promise<void> {
  await r.waitFor((sigs) => children.every((c) => sigs.some((s) => s.value === c)), timeoutMs);
  await sleep(300);
}

/** A pid that existed a moment ago and has been reaped. */
async function deadPid(): Promise<number> {
  const pid = await forkTrue();
  expect(await exists(`/proc/${pid}`)).toBe(false);
  return pid;
}

/** Some kernel thread's pid (PF_KTHREAD in /proc/PID/stat), preferring kthreadd (2). */
async function kernelThread(): Promise<number | null> {
  const isKthread = async (pid: number) => {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields[0] is field 3 (state); flags is field 9.
      return (Number(fields[6]) & PF_KTHREAD) !== 0;
    } catch {
      return false;
    }
  };
  if (await isKthread(2)) return 2;
  for (const name of await readdir('/proc')) {
    if (/^\d+$/.test(name) && (await isKthread(Number(name)))) return Number(name);
  }
  return null;
}

describe('relayfork core, real daemon on a real FUSE mount', () => {
  it('serves relayfork/processes and relayfork/signal with the contract modes, owners and mount options', async () => {
    const d = await startDaemon();

    const [mount] = await mountsAt(d.mnt);
    expect(mount).toBeDefined();
    expect(mount!.fstype).toMatch(/^fuse/);
    expect(mount!.options.split(',')).toEqual(expect.arrayContaining(['default_permissions', 'allow_other']));

    const dirStat = await stat(d.dir);
    expect(dirStat.isDirectory()).toBe(true);
    expect(dirStat.mode & 0o7777).toBe(0o555);
    expect([dirStat.uid, dirStat.gid]).toEqual([0, 0]);
    for (const f of [processesOf(d), signalOf(d)]) {
      const st = await stat(f);
      expect(st.isFile()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o644);
      expect([st.uid, st.gid]).toEqual([0, 0]);
    }
    expect(await readdir(d.dir)).toEqual(expect.arrayContaining(['processes', 'signal']));

    expect(await readText(processesOf(d))).toBe('\n');
    expect(await readText(signalOf(d))).toBe('34\n');
  });

  it('relays every child the test forks as exactly one SI_ASYNCIO signal: si_pid = the test, si_value = the child', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    expect(await readText(processesOf(d))).toBe(`${r.pid}\n`);

    const children: number[] = [];
    for (let i = 0; i < 3; i++) children.push(await forkTrue()); // one after another
    children.push(...(await Promise.all(Array.from({ length: 5 }, () => forkTrue())))); // at once
    expect(new Set(children).size).toBe(8);

    await settle(r, children);
    for (const child of children) {
      expect(forChild(r, child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);
    }
  });

  it('relays each fork to every registrant, registered together in one write', async () => {
    const d = await startDaemon();
    const a = await startReceiver(34);
    const b = await startReceiver(34);
    await register(d, `${a.pid} ${b.pid}\n`);
    expect(await readText(processesOf(d))).toBe(`${a.pid} ${b.pid}\n`);

    const child = await forkTrue();
    await settle(a, [child]);
    await settle(b, [child], 1000);
    const expected = [{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }];
    expect(forChild(a, child)).toEqual(expected);
    expect(forChild(b, child)).toEqual(expected);
  });

  it('stops relaying to a registrant once its -PID write has returned', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    const before = await forkTrue();
    await settle(r, [before]);
    expect(forChild(r, before)).toHaveLength(1);

    await register(d, `-${r.pid}\n`);
    expect(await readText(processesOf(d))).toBe('\n');
    const after = await forkTrue();
    await sleep(500);
    expect(forChild(r, after)).toEqual([]);
  });

  it('lists registrants in registration order; registering twice and unregistering the unregistered change nothing', async () => {
    const d = await startDaemon();
    const [a, b, c] = await Promise.all([startReceiver(34), startReceiver(34), startReceiver(34)]);
    const p = processesOf(d);

    await register(d, `${a!.pid}\n`);
    await register(d, `${c!.pid}\n`);
    await register(d, `${b!.pid}\n`);
    expect(await readText(p)).toBe(`${a!.pid} ${c!.pid} ${b!.pid}\n`);

    await register(d, `${a!.pid}\n`); // already registered: no move, no duplicate
    expect(await readText(p)).toBe(`${a!.pid} ${c!.pid} ${b!.pid}\n`);

    await register(d, `-${c!.pid}\n`);
    expect(await readText(p)).toBe(`${a!.pid} ${b!.pid}\n`);
    await register(d, `-${c!.pid}\n`); // not registered: succeeds, changes nothing
    expect(await readText(p)).toBe(`${a!.pid} ${b!.pid}\n`);

    // Several tokens, any white space, applied in order: c registered, a unregistered.
    await register(d, `\t${c!.pid}  -${a!.pid}\n\n`);
    expect(await readText(p)).toBe(`${b!.pid} ${c!.pid}\n`);

    // Without O_TRUNC (open r+) a write works the same.
    expect(await writeCtl(p, `${a!.pid}`, 'r+')).toBeNull();
    expect(await readText(p)).toBe(`${b!.pid} ${c!.pid} ${a!.pid}\n`);

    // A read at any offset serves the same snapshot: one byte at a time.
    const fh = await open(p, 'r');
    try {
      let text = '';
      const one = Buffer.alloc(1);
      for (let pos = 0; pos < 200; pos++) {
        const { bytesRead } = await fh.read(one, 0, 1, pos);
        if (bytesRead === 0) break;
        text += one.toString('latin1');
      }
      expect(text).toBe(`${b!.pid} ${c!.pid} ${a!.pid}\n`);
    } finally {
      await fh.close();
    }
  });

  it('refuses malformed writes with EINVAL and leaves the list unchanged', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    const other = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    const p = processesOf(d);
    const pidMax = Number((await readFile('/proc/sys/kernel/pid_max', 'utf8')).trim());
    expect(pidMax).toBeGreaterThan(0);

    // A zero-byte write(2) never reaches a FUSE daemon; "empty" is a line with no token.
    const bad = [
      '\n',
      '   \n',
      'abc\n',
      '0\n',
      '+5\n',
      '12abc\n',
      `${pidMax + 1}\n`,
      '99999999999999999999\n',
      `${other.pid} 12abc\n`, // all or nothing: the good token must not take effect
      `${other.pid} -${r.pid} abc\n`,
      `-${r.pid} 0\n`,
    ];
    for (const input of bad) {
      expect({ input, err: await writeCtl(p, input) }).toEqual({ input, err: 'EINVAL' });
      expect({ input, list: await readText(p) }).toEqual({ input, list: `${r.pid}\n` });
    }
  });

  it('accepts a write of exactly 4096 bytes and refuses 4097 bytes with EINVAL', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    const p = processesOf(d);

    const tooBig = `${r.pid}`.padEnd(4096, ' ') + '\n';
    expect(Buffer.byteLength(tooBig)).toBe(4097);
    expect(await writeCtl(p, tooBig)).toBe('EINVAL');
    expect(await readText(p)).toBe('\n');

    const onePage = `${r.pid}`.padEnd(4095, ' ') + '\n';
    expect(Buffer.byteLength(onePage)).toBe(4096);
    expect(await writeCtl(p, onePage)).toBeNull();
    expect(await readText(p)).toBe(`${r.pid}\n`);
  });

  it('refuses a PID that does not exist with ESRCH, all or nothing', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    const other = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    const p = processesOf(d);
    const dead = await deadPid();

    expect(await writeCtl(p, `${dead}\n`)).toBe('ESRCH');
    expect(await readText(p)).toBe(`${r.pid}\n`);
    expect(await writeCtl(p, `${other.pid} ${dead}\n`)).toBe('ESRCH');
    expect(await readText(p)).toBe(`${r.pid}\n`);
  });

  it('refuses PID 1, a kernel thread and the daemon itself with EPERM, all or nothing', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    const other = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    const p = processesOf(d);

    const kthread = await kernelThread();
    const refused = ['1', `${d.pid}`, ...(kthread === null ? [] : [`${kthread}`])];
    expect(kthread, 'no kernel thread visible in this pid namespace').not.toBeNull();
    for (const pid of refused) {
      expect({ pid, err: await writeCtl(p, `${pid}\n`) }).toEqual({ pid, err: 'EPERM' });
      expect({ pid, list: await readText(p) }).toEqual({ pid, list: `${r.pid}\n` });
    }
    expect(await writeCtl(p, `${other.pid} 1\n`)).toBe('EPERM');
    expect(await readText(p)).toBe(`${r.pid}\n`);
    // The daemon is still alive and serving.
    expect(d.exitInfo()).toBeNull();
    expect(await readText(signalOf(d))).toBe('34\n');
  });

  it('lets anyone read but refuses a non-root write with Permission denied', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    const other = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    const p = processesOf(d);
    const s = signalOf(d);

    const catProcesses = await runAsNobody('cat "$1"', [p]);
    expect(catProcesses).toEqual({ code: 0, signal: null, stdout: `${r.pid}\n`, stderr: '' });
    const catSignal = await runAsNobody('cat "$1"', [s]);
    expect(catSignal).toEqual({ code: 0, signal: null, stdout: '34\n', stderr: '' });

    for (const [file, text] of [
      [p, `${other.pid}`],
      [p, `-${r.pid}`],
      [s, '40'],
    ] as const) {
      const res = await runAsNobody('echo "$2" > "$1"', [file, text]);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/Permission denied/);
    }
    expect(await readText(p)).toBe(`${r.pid}\n`);
    expect(await readText(s)).toBe('34\n');
  });

  it('never lists a registrant that has exited, and the relay drops it by itself with no fork', async () => {
    const d = await startDaemon();
    const gone = await startReceiver(34);
    const stays = await startReceiver(34);
    await register(d, `${gone.pid} ${stays.pid}\n`);
    expect(await readText(processesOf(d))).toBe(`${gone.pid} ${stays.pid}\n`);

    // Closing its stdin makes it exit; nothing below forks. Reaped, its pidfd
    // is readable: the very next read of processes leaves it out.
    expect(await gone.stop()).toEqual({ code: 0, signal: null });
    expect(await readText(processesOf(d))).toBe(`${stays.pid}\n`);
    expect(await readText(path.join(d.dir, 'stats'))).toMatch(/^registrants 1$/m);

    // Nobody reads processes this time: the relay notices the exit itself.
    const alsoGone = await startReceiver(34);
    await register(d, `${alsoGone.pid}\n`);
    expect(await alsoGone.stop()).toEqual({ code: 0, signal: null });
    // (its pidfd polled readable; or, if another process on the host forked
    // first, the send was refused with ESRCH)
    const line = await d.waitForLog((l) => l.msg === 'registrant gone' && l.registrant === alsoGone.pid, 3000);
    expect(['exit', 'esrch']).toContain(line.why);
    expect(line.module).toBe('relay');
    expect(await readText(processesOf(d))).toBe(`${stays.pid}\n`);
  });

  it('exits 1 with an error line when the mount is taken away from outside', async () => {
    const d = await startDaemon();
    await promisify(execFile)('umount', ['-l', d.mnt]);
    await d.waitForLog((l) => l.msg === 'the filesystem was unmounted from outside; exiting', 3000);
    expect(await d.exited).toEqual({ code: 1, signal: null });
    expect(await mountsAt(d.mnt)).toEqual([]);
  });

  it('reads and writes signal as numbers and kill -l names; refuses others with EINVAL', async () => {
    const d = await startDaemon();
    const s = signalOf(d);
    const good: Array<[string, number]> = [
      ['40\n', 40],
      ['34\n', 34],
      ['64\n', 64],
      ['SIGRTMIN\n', 34],
      ['RTMAX\n', 64],
      ['SIGRTMIN+3\n', 37],
      ['RTMIN+3\n', 37],
      ['SIGRTMAX-2\n', 62],
      ['RTMAX-2\n', 62],
      ['SIGRTMAX\n', 64],
      ['RTMIN\n', 34],
      ['45', 45],
    ];
    for (const [input, n] of good) {
      expect({ input, err: await writeCtl(s, input) }).toEqual({ input, err: null });
      expect({ input, value: await readText(s) }).toEqual({ input, value: `${n}\n` });
    }

    await writeCtl(s, '40\n');
    const bad = ['32\n', '33\n', '65\n', '0\n', 'RTMIN+40\n', 'SIGRTMAX+1\n', 'foo\n', '\n', 'abc40\n', '40abc\n'];
    for (const input of bad) {
      expect({ input, err: await writeCtl(s, input) }).toEqual({ input, err: 'EINVAL' });
      expect({ input, value: await readText(s) }).toEqual({ input, value: '40\n' });
    }
  });

  it('applies a new signal from the next fork on', async () => {
    const d = await startDaemon();
    const r = await startReceiver([34, 40]);
    await register(d, `${r.pid}\n`);
    const s = signalOf(d);

    const first = await forkTrue();
    await settle(r, [first]);
    expect(forChild(r, first)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: first }]);

    expect(await writeCtl(s, '40\n')).toBeNull();
    expect(await readText(s)).toBe('40\n');
    const second = await forkTrue();
    await settle(r, [second]);
    expect(forChild(r, second)).toEqual([{ signo: 40, code: SI_ASYNCIO, pid: process.pid, value: second }]);

    expect(await writeCtl(s, 'SIGRTMIN\n')).toBeNull();
    const third = await forkTrue();
    await settle(r, [third]);
    expect(forChild(r, third)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: third }]);
  });

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} unmounts, logs "unmounted" and exits 0`, async () => {
      const d = await startDaemon();
      expect(await mountsAt(d.mnt)).toHaveLength(1);
      expect(await d.stop(sig)).toEqual({ code: 0, signal: null });
      expect(await mountsAt(d.mnt)).toEqual([]);
      expect(d.logs.some((l) => l.msg === 'unmounted')).toBe(true);
      // Every stdout line is a pino JSON object.
      for (const line of d.stdout().split('\n').filter((l) => l !== '')) {
        const parsed = JSON.parse(line) as { level?: unknown; msg?: unknown };
        expect(typeof parsed.level).toBe('number');
      }
      expect(d.stderr()).toBe('');
    });
  }

  it('leaves a stale mount when SIGKILLed; the next start on that dir clears it and serves', async () => {
    const first = await startDaemon();
    const mnt = first.mnt;
    expect(await first.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    expect((await mountsAt(mnt)).length).toBeGreaterThanOrEqual(1);
    await expect(stat(mnt)).rejects.toMatchObject({ code: 'ENOTCONN' });

    const second = await startDaemon({ mountDir: mnt });
    expect(await mountsAt(mnt)).toHaveLength(1); // cleared, not stacked
    expect(await readText(processesOf(second))).toBe('\n');
    const r = await startReceiver(34);
    await register(second, `${r.pid}\n`);
    const child = await forkTrue();
    await settle(r, [child]);
    expect(forChild(r, child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);

    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await mountsAt(mnt)).toEqual([]);
  });

  it('starts with --signal given as a name and relays with it', async () => {
    const d = await startDaemon({ args: ['--signal', 'SIGRTMIN+6'] });
    expect(await readText(signalOf(d))).toBe('40\n');
    const r = await startReceiver([34, 40]);
    await register(d, `${r.pid}\n`);
    const child = await forkTrue();
    await settle(r, [child]);
    expect(forChild(r, child)).toEqual([{ signo: 40, code: SI_ASYNCIO, pid: process.pid, value: child }]);
  });

  it('exits 2 with one line on stderr for a usage error, mounting nothing', async () => {
    const mnt = await makeMountDir();
    for (const args of [
      ['mount', mnt, '--no-such-option'],
      ['no-such-command'],
      ['mount', mnt, '--signal', '33'],
      ['mount', mnt, '--source', 'carrier-pigeon'],
    ]) {
      const res = await runCli(args);
      expect({ args, code: res.code, timedOut: res.timedOut }).toEqual({ args, code: 2, timedOut: false });
      const lines = res.stderr.trimEnd().split('\n');
      expect({ args, lines: lines.length }).toEqual({ args, lines: 1 });
      expect(lines[0]!.trim()).not.toBe('');
      expect(await mountsAt(mnt)).toEqual([]);
    }
  });

  it('exits 1 with one line on stderr when not root, mounting nothing', async () => {
    const mnt = await makeMountDir();
    const res = await runAsNobody('exec "$1" "$2" mount "$3"', [process.execPath, CLI, mnt], 10_000);
    expect({ code: res.code, signal: res.signal }).toEqual({ code: 1, signal: null });
    const lines = res.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/\broot\b|CAP_SYS_ADMIN/);
    expect(await mountsAt(mnt)).toEqual([]);
  });
});

describe('a stop signal while the daemon is still starting', () => {
  afterEach(cleanupAll);

  it('is kept until the mount exists, then unmounts and exits 0: no mount is left behind', async () => {
    await ensureBuilt();
    const mnt = await makeMountDir();
    const { spawn } = await import('node:child_process');
    const proc = spawn(process.execPath, [CLI, 'mount', mnt, '--log-level', 'debug'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.setEncoding('utf8');
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    // 'fork source ready' comes just before the mount: signal in that window.
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no 'fork source ready' line: ${out}`)), 10_000);
      proc.stdout.on('data', (c: string) => {
        out += c;
        if (out.includes('"fork source ready"')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    proc.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(10_000).then(() => 'timeout' as const)]);
    if (code === 'timeout') proc.kill('SIGKILL');
    expect(code).toBe(0);
    expect(out).toContain('"unmounted"');
    expect(await mountsAt(mnt)).toEqual([]);
  });
});
