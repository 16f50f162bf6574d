// Both fork sources through the real daemon: the same relaying behaviour with
// --source netlink and --source poll (children that live a few poll intervals,
// which is what the poll source promises to see), then what is particular to
// the poll (a burst of instant children is counted as missed, never relayed
// wrongly), then how `auto` chooses: the proc connector here (root, initial
// namespaces), the poll without CAP_NET_ADMIN and inside a new user + PID +
// mount namespace, where the kernel ignores a proc connector subscription.
// FUSE mounts inside such a namespace on this kernel, so that case runs the
// whole daemon there, end to end, rather than a seam in the source selection.
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, ensureBuilt, makeMountDir, runCli, startDaemon, type Daemon, type LogLine } from '../helpers/daemon.js';
import { readText, sleep, writeCtl } from '../helpers/fsio.js';
import { compileHelper } from '../helpers/native.js';
import { startReceiver, type Receiver, type Sig } from '../helpers/receiver.js';
import { SI_ASYNCIO, processesOf, signalOf } from '../helpers/common.js';

const POLL_MS = 100;

beforeAll(async () => {
  await Promise.all([compileHelper('receiver'), ensureBuilt()]);
}, 120_000);
afterEach(cleanupAll);
afterAll(cleanupAll);

const forChild = (r: Receiver, child: number): Sig[] => r.signals.filter((s) => s.value === child);
const sourceReady = (d: Daemon) => d.waitForLog((l) => l.msg === 'fork source ready');

async function register(d: Daemon, text: string): Promise<void> {
  expect(await writeCtl(processesOf(d), text)).toBeNull();
}

/** Runs `file args` from this process to its end; resolves with the child's pid. */
function runChild(file: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: 'ignore' });
    const pid = child.pid;
    child.on('error', reject);
    child.on('exit', (code) => {
      if (pid === undefined) reject(new Error(`spawn ${file} gave no pid`));
      else if (code !== 0) reject(new Error(`${file} exited ${code}`));
      else resolve(pid);
    });
  });
}

/** Waits until `r` has a signal for each of `children`, then a little longer for duplicates. */
async function settle(r: Receiver, children: number[], timeoutMs = 5000): Promise<void> {
  await r.waitFor((sigs) => children.every((c) => sigs.some((s) => s.value === c)), timeoutMs);
  await sleep(300);
}

const SOURCES = [
  // The proc connector sees every fork, even of a child that exits at once.
  { source: 'netlink', args: ['--source', 'netlink'], forkChild: () => runChild('/bin/true', []) },
  // The poll sees a child that lives through a listing: 4 intervals is enough
  // margin on a loaded machine.
  {
    source: 'poll',
    args: ['--source', 'poll', '--poll-interval', String(POLL_MS)],
    forkChild: () => runChild('/bin/sleep', [String((4 * POLL_MS) / 1000)]),
  },
] as const;

for (const { source, args, forkChild } of SOURCES) {
  describe(`the same relaying with --source ${source}`, () => {
    it('reports the source it runs', async () => {
      const d = await startDaemon({ args: [...args] });
      expect(await sourceReady(d)).toMatchObject({ source, requested: source, reason: `requested with --source ${source}` });
    });

    it('relays each child as exactly one SI_ASYNCIO signal: si_pid = the parent, si_value = the child', async () => {
      const d = await startDaemon({ args: [...args] });
      const r = await startReceiver(34);
      await register(d, `${r.pid}\n`);

      const children: number[] = [];
      for (let i = 0; i < 3; i++) children.push(await forkChild());
      children.push(...(await Promise.all(Array.from({ length: 5 }, () => forkChild()))));
      expect(new Set(children).size).toBe(8);

      await settle(r, children);
      for (const child of children) {
        expect(forChild(r, child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);
      }
      // The daemon's own doings (the poll's ps) are nobody's business.
      expect(r.signals.filter((s) => s.pid === d.pid)).toEqual([]);
    });

    it('relays each fork to every registrant', async () => {
      const d = await startDaemon({ args: [...args] });
      const a = await startReceiver(34);
      const b = await startReceiver(34);
      await register(d, `${a.pid} ${b.pid}\n`);
      const child = await forkChild();
      await settle(a, [child]);
      await settle(b, [child], 1000);
      const expected = [{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }];
      expect(forChild(a, child)).toEqual(expected);
      expect(forChild(b, child)).toEqual(expected);
    });

    it('stops relaying once -PID has returned, and applies a new signal from the next fork', async () => {
      const d = await startDaemon({ args: [...args] });
      const r = await startReceiver([34, 40]);
      const other = await startReceiver([34, 40]);
      await register(d, `${r.pid} ${other.pid}\n`);
      const first = await forkChild();
      await settle(r, [first]);
      expect(forChild(r, first)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: first }]);

      expect(await writeCtl(signalOf(d), '40\n')).toBeNull();
      const second = await forkChild();
      await settle(r, [second]);
      expect(forChild(r, second)).toEqual([{ signo: 40, code: SI_ASYNCIO, pid: process.pid, value: second }]);

      await register(d, `-${r.pid}\n`);
      const third = await forkChild();
      await settle(other, [third]); // relayed, but not to r
      expect(forChild(r, third)).toEqual([]);
    });

    it('never lists a registrant that has exited', async () => {
      const d = await startDaemon({ args: [...args] });
      const gone = await startReceiver(34);
      const stays = await startReceiver(34);
      await register(d, `${gone.pid} ${stays.pid}\n`);
      expect(await gone.stop()).toEqual({ code: 0, signal: null });
      expect(await readText(processesOf(d))).toBe(`${stays.pid}\n`);
    });
  });
}

describe('the poll source is lossy, and says by how much', () => {
  it('takes its first listing as the baseline: processes already running are not forks', async () => {
    const before = spawn('/bin/sleep', ['5'], { stdio: 'ignore' });
    try {
      const d = await startDaemon({ args: ['--source', 'poll', '--poll-interval', String(POLL_MS)] });
      const r = await startReceiver(34);
      await register(d, `${r.pid}\n`);
      const child = await runChild('/bin/sleep', [String((4 * POLL_MS) / 1000)]);
      await settle(r, [child]);
      expect(forChild(r, child)).toHaveLength(1);
      expect(forChild(r, before.pid!)).toEqual([]);
    } finally {
      before.kill('SIGKILL');
    }
  });

  it('counts a burst of instant children as missed and relays none of them with a wrong parent', async () => {
    const d = await startDaemon({ args: ['--source', 'poll', '--poll-interval', String(POLL_MS)] });
    const r = await startReceiver(34);
    await register(d, `${r.pid}\n`);

    // 300 children of one shell, one after another, each gone in a millisecond
    // or two: most fall between two listings.
    const N = 300;
    const out = await new Promise<string>((resolve, reject) => {
      execFile('sh', ['-c', `echo $$; i=0; while [ $i -lt ${N} ]; do /bin/true & echo $!; wait; i=$((i+1)); done`], (err, stdout) =>
        err ? reject(err) : resolve(stdout));
    });
    const burstEnd = Date.now();
    const [shell, ...burst] = out.trim().split('\n').map(Number);
    expect(burst).toHaveLength(N);
    const burstSet = new Set(burst);
    // Take the receiver's signals once the listings after the burst are done:
    // later, on a busy host, another process may be given one of these PIDs
    // again and be relayed, rightly, with its own parent.
    await new Promise((res) => setTimeout(res, 4 * POLL_MS));
    const seen = r.signals.slice();

    // The loss line comes at most every 10 s; wait for one that was written
    // after the listing that followed the burst.
    const line: LogLine = await d.waitForLog(
      (l) => l.msg === 'forks missed by the poll source' && (l.time as number) >= burstEnd + 3 * POLL_MS,
      25_000,
    );
    const relayed = seen.filter((s) => burstSet.has(s.value));
    // Whatever was caught is relayed once, with the shell as parent.
    for (const s of relayed) expect(s).toEqual({ signo: 34, code: SI_ASYNCIO, pid: shell, value: s.value });
    expect(new Set(relayed.map((s) => s.value)).size).toBe(relayed.length);
    // The rest is counted. The counter is host-wide (other processes and every
    // thread count too), so the figure can only be larger; a few forks relayed
    // just before they reached the counter read may lower it by a handful.
    expect(line.lostTotal as number).toBeGreaterThanOrEqual(N - relayed.length - 10);
    expect(line).toMatchObject({ level: 30, lost: expect.any(Number), windowS: expect.any(Number) });
  }, 45_000);
});

// ---------------------------------------------------------------------------------
// choosing a source

/** The PID of the only child of `pid` (the daemon under `unshare --fork`), once it exists. */
async function onlyChild(pid: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const kids = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim();
    if (kids !== '') return Number(kids.split(' ')[0]);
    await sleep(50);
  }
  throw new Error(`${pid} has no child`);
}

// A new user namespace (root mapped to root), PID namespace and mount
// namespace with its own /proc: a container as the kernel sees it. The proc
// connector refuses it (the group needs CAP_NET_ADMIN over the initial network
// namespace, and a LISTEN from outside the initial namespaces is ignored).
// --kill-child: a killed unshare takes the daemon, and so the namespace and
// its mount, with it.
const UNSHARE = ['unshare', '--user', '--map-root-user', '--pid', '--fork', '--kill-child', '--mount', '--mount-proc', '--'];
// The daemon keeps the user/root mapping, so a file op must come from inside
// the namespace: the kernel refuses allow_other access from the parent one.
const nsenter = (pid: number) => ['nsenter', '--target', String(pid), '--user', '--mount', '--pid', '--'];

function runIn(prefix: string[], script: string, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const [cmd, ...rest] = [...prefix, 'sh', '-c', script, 'sh', ...args];
    execFile(cmd!, rest, { timeout: 10_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('--source auto', () => {
  it('picks the proc connector here (root, initial namespaces), and says why', async () => {
    const d = await startDaemon();
    expect(await sourceReady(d)).toMatchObject({
      level: 30, source: 'netlink', requested: 'auto', reason: 'the proc connector acknowledged the subscription',
    });
    expect(await d.waitForLog((l) => l.msg === 'mounted')).toMatchObject({ source: 'netlink' });
  });

  it('falls back to the poll without CAP_NET_ADMIN, where --source netlink is a one-line error', async () => {
    const noNetAdmin = ['setpriv', '--bounding-set', '-net_admin', '--'];
    const d = await startDaemon({ prefix: noNetAdmin, args: ['--poll-interval', String(POLL_MS)] });
    expect(await sourceReady(d)).toMatchObject({
      level: 30, source: 'poll', requested: 'auto', reason: expect.stringMatching(/proc connector is unavailable: .*CAP_NET_ADMIN/),
    });
    const r = await startReceiver(34);
    await register(d, `${r.pid}\n`);
    const child = await runChild('/bin/sleep', [String((4 * POLL_MS) / 1000)]);
    await settle(r, [child]);
    expect(forChild(r, child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);

    const mnt = await makeMountDir();
    const res = await runCli(['mount', mnt, '--source', 'netlink'], 10_000, { prefix: noNetAdmin });
    expect({ code: res.code, timedOut: res.timedOut }).toEqual({ code: 1, timedOut: false });
    expect(res.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^relayfork: .*CAP_NET_ADMIN/)]);
  });

  it('falls back to the poll in a new user + PID + mount namespace, and relays forks there', async () => {
    const d = await startDaemon({ prefix: UNSHARE, args: ['--poll-interval', String(POLL_MS)] });
    expect(await sourceReady(d)).toMatchObject({
      level: 30, source: 'poll', requested: 'auto', reason: expect.stringMatching(/^the proc connector is unavailable: /),
    });
    const daemonPid = await onlyChild(d.pid);
    const inside = nsenter(daemonPid);

    const r = await startReceiver(34, { prefix: inside });
    const reg = await runIn(inside, 'echo "$1" > "$2"', [String(r.pid), processesOf(d)]);
    expect(reg).toMatchObject({ code: 0, stderr: '' });
    expect((await runIn(inside, 'cat "$1"', [processesOf(d)])).stdout).toBe(`${r.pid}\n`);

    // A shell in the namespace forks a child that lives four intervals.
    const forked = await runIn(inside, `sleep ${(4 * POLL_MS) / 1000} & echo "$$ $!"; wait`);
    const [parent, child] = forked.stdout.trim().split(' ').map(Number);
    await settle(r, [child!]);
    expect(forChild(r, child!)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: parent, value: child }]);

    process.kill(daemonPid, 'SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(d.logs.some((l) => l.msg === 'unmounted')).toBe(true);
  });

  it('--source netlink in such a namespace: one line on stderr, exit 1', async () => {
    const mnt = await makeMountDir();
    const res = await runCli(['mount', mnt, '--source', 'netlink'], 10_000, { prefix: UNSHARE });
    expect({ code: res.code, timedOut: res.timedOut }).toEqual({ code: 1, timedOut: false });
    expect(res.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^relayfork: cannot use the netlink fork source: /)]);
  });
});

describe('source options on the command line', () => {
  it('refuses a bad --source or --poll-interval with one line and exit 2', async () => {
    const mnt = await makeMountDir();
    for (const args of [
      ['--source', 'kprobe'],
      ['--poll-interval', '5'],
      ['--poll-interval', '1.5'],
      ['--poll-interval', 'abc'],
      ['--poll-interval', '3600001'],
      ['--source', 'netlink', '--poll-interval', '100'],
    ]) {
      const res = await runCli(['mount', mnt, ...args]);
      expect({ args, code: res.code, timedOut: res.timedOut }).toEqual({ args, code: 2, timedOut: false });
      expect({ args, lines: res.stderr.trimEnd().split('\n').length }).toEqual({ args, lines: 1 });
    }
  });
});
