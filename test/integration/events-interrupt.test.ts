// A signal to a reader blocked in a read of `events`, on a quiet host. The host
// these tests share is never quiet (any fork anywhere unblocks `cat events`),
// so this mounts the real filesystem adapter and events hub in this process
// over a real ring that no fork source feeds: nothing but the daemon's answer
// to the interrupt can end a blocked read here. The test appends lines itself
// where it needs them. Everything on the mount is done by child processes
// (cat) and procfs; this process never touches its own mount.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir, readlink } from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EventsHub } from '../../src/events/hub.js';
import { createEventsShared, EventsWriter } from '../../src/events/ring.js';
import { buildTree, eventsFile } from '../../src/fs/files.js';
import { mountFs, type MountedFs } from '../../src/fs/mount.js';
import { configureLogging } from '../../src/log.js';
import { cleanupAll, makeMountDir } from '../helpers/daemon.js';
import { sleep } from '../helpers/fsio.js';

let fs: MountedFs | null = null;
let hub: EventsHub;
let writer: EventsWriter;
let events: string;
const cats = new Set<ChildProcess>();

beforeAll(() => {
  configureLogging('silent');
});

beforeEach(async () => {
  const mnt = await makeMountDir();
  const shared = createEventsShared(100);
  writer = new EventsWriter(shared);
  hub = new EventsHub(shared, { mountpoint: mnt, path: '/relayfork/events' });
  const tree = buildTree({ events: { mode: 0o444, behaviour: eventsFile(() => hub.open()) } });
  fs = await mountFs(mnt, tree, { onInterrupt: () => hub.interrupted() });
  events = path.join(mnt, 'relayfork', 'events');
});

afterEach(async () => {
  for (const c of cats) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  hub.stop(); // answers what still waits, so SIGKILL can act
  await sleep(100);
  cats.clear();
  fs?.unmount();
  fs = null;
  await cleanupAll();
});
afterAll(cleanupAll);

interface Cat {
  proc: ChildProcess;
  pid: number;
  out(): string;
  exited: Promise<{ signal: NodeJS.Signals | null; code: number | null; at: number }>;
}

/** `cat events`, once it waits in our read. */
async function blockedCat(): Promise<Cat> {
  const proc = spawn('cat', [events], { stdio: ['ignore', 'pipe', 'pipe'] });
  cats.add(proc);
  let out = '';
  proc.stdout!.setEncoding('latin1').on('data', (c: string) => (out += c));
  const exited = new Promise<{ signal: NodeJS.Signals | null; code: number | null; at: number }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  const pid = proc.pid!;
  await until(`cat ${pid} waits in a read of events`, async () => (await waitsInOurRead(pid)));
  return { proc, pid, out: () => out, exited };
}

async function waitsInOurRead(pid: number): Promise<boolean> {
  const wchan = await readFile(`/proc/${pid}/wchan`, 'latin1').catch(() => '');
  if (!/request_wait_answer|fuse/.test(wchan)) return false;
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === events) return true;
  }
  return false;
}

async function until(what: string, pred: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | 'pending'> =>
  Promise.race([p, sleep(ms).then(() => 'pending' as const)]);

describe('a signal to a reader blocked in `events` (quiet host)', () => {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGKILL'] as const) {
    it(`${sig} ends a blocked cat within a second`, async () => {
      const cat = await blockedCat();
      await sleep(300); // blocked for a while: nothing else will answer it
      expect(await waitsInOurRead(cat.pid)).toBe(true);
      const sent = Date.now();
      cat.proc.kill(sig);
      const exit = await within(cat.exited, 3000);
      expect(exit, `cat still blocked 3 s after ${sig}`).not.toBe('pending');
      if (exit === 'pending') return;
      expect(exit.signal).toBe(sig);
      expect(exit.at - sent).toBeLessThan(1000);
      expect(cat.out()).toBe('');
    });
  }

  it('ends only the signalled one of two blocked readers; the other reads on', async () => {
    const a = await blockedCat();
    writer.record(1, 2);
    await until('a read a line', () => a.out() === '1 2\n');
    const b = await blockedCat(); // opened later: b waits at offset 0, a at 4
    await until('a waits again', () => waitsInOurRead(a.pid));
    a.proc.kill('SIGINT');
    const exit = await within(a.exited, 3000);
    expect(exit).not.toBe('pending');
    expect(await waitsInOurRead(b.pid)).toBe(true);
    writer.record(3, 4);
    await until('b reads on', () => b.out() === '3 4\n');
  });

  it('leaves two readers that look alike waiting rather than end the wrong one; the next line ends the signalled one', async () => {
    const a = await blockedCat();
    const b = await blockedCat(); // both wait at offset 0 for 128 KiB
    a.proc.kill('SIGINT');
    expect(await within(a.exited, 1500)).toBe('pending');
    expect(await waitsInOurRead(b.pid)).toBe(true);
    writer.record(5, 6);
    const exit = await within(a.exited, 3000);
    expect(exit).not.toBe('pending');
    if (exit !== 'pending') expect(exit.signal).toBe('SIGINT');
    await until('b reads on', () => b.out() === '5 6\n');
    expect(b.proc.exitCode).toBeNull();
  });

  it('lets Ctrl-Z (SIGTSTP) stop a blocked cat at its next line, not end it', async () => {
    const cat = await blockedCat();
    cat.proc.kill('SIGTSTP');
    await sleep(1500); // libfuse reports the interrupt; the daemon must not answer EINTR
    expect(cat.proc.exitCode).toBeNull();
    writer.record(7, 8);
    await until('cat stopped after its line', async () => (await state(cat.pid)) === 'T');
    cat.proc.kill('SIGCONT');
    await until('cat printed the line and waits again', async () => cat.out() === '7 8\n' && (await waitsInOurRead(cat.pid)));
    writer.record(9, 10);
    await until('cat reads on', () => cat.out() === '7 8\n9 10\n');
  });
});

async function state(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'latin1').catch(() => '');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}
