import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { close, pidfdExited } from '../src/kernel/syscalls.js';
import { isKernelThread, Registry, type RegistryListener } from '../src/registry.js';
import { errnoOf as codeOf } from './helpers/common.js';

// The registry against real processes and real pidfds; the listener (the
// relay worker's side) is a recorder.
class Recorder implements RegistryListener {
  events: string[] = [];
  fds = new Map<number, number>();
  added(id: number, pid: number, pidfd: number): void {
    this.events.push(`add ${pid}`);
    this.fds.set(id, pidfd);
  }
  removed(id: number): void {
    this.events.push(`remove ${id}`);
    const fd = this.fds.get(id);
    if (fd !== undefined) close(fd);
    this.fds.delete(id);
  }
}

const children: ChildProcess[] = [];
function sleeper(): number {
  const c = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(c);
  return c.pid!;
}
async function deadPid(): Promise<number> {
  const c = spawn('true', [], { stdio: 'ignore' });
  await new Promise((r) => c.on('exit', r));
  return c.pid!;
}
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

describe('registry', () => {
  it('registers in order, ignores repeats, unregisters, and hands the listener a live pidfd', () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const [a, b] = [sleeper(), sleeper()];
    reg.apply([{ op: 'register', pid: b }, { op: 'register', pid: a }, { op: 'register', pid: b }]);
    expect(reg.pids()).toEqual([b, a]);
    expect(rec.events).toEqual([`add ${b}`, `add ${a}`]);
    for (const fd of rec.fds.values()) expect(pidfdExited(fd)).toBe(false);
    reg.apply([{ op: 'unregister', pid: b }, { op: 'unregister', pid: 99999 }]);
    expect(reg.pids()).toEqual([a]);
    expect(rec.events).toHaveLength(3);
    reg.clear();
  });

  it('is all or nothing: one dead PID in a write registers none', async () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const a = sleeper();
    const dead = await deadPid();
    expect(codeOf(() => reg.apply([{ op: 'register', pid: a }, { op: 'register', pid: dead }]))).toBe('ESRCH');
    expect(reg.pids()).toEqual([]);
    expect(rec.events).toEqual([]);
  });

  it('is all or nothing for unregistrations too', () => {
    const reg = new Registry(new Recorder());
    const a = sleeper();
    reg.apply([{ op: 'register', pid: a }]);
    expect(codeOf(() => reg.apply([{ op: 'unregister', pid: a }, { op: 'register', pid: 1 }]))).toBe('EPERM');
    expect(reg.pids()).toEqual([a]);
    reg.clear();
  });

  it('refuses PID 1, a kernel thread and the daemon itself with EPERM', () => {
    const reg = new Registry(new Recorder(), 4242);
    expect(codeOf(() => reg.apply([{ op: 'register', pid: 1 }]))).toBe('EPERM');
    expect(codeOf(() => reg.apply([{ op: 'register', pid: 2 }]))).toBe('EPERM'); // kthreadd
    expect(codeOf(() => reg.apply([{ op: 'register', pid: 4242 }]))).toBe('EPERM');
    expect(reg.pids()).toEqual([]);
  });

  it('refuses a thread id that is not a process with ESRCH', async () => {
    // A node worker's thread: /proc/self/task lists thread ids other than our pid.
    const { readdir } = await import('node:fs/promises');
    const tids = (await readdir('/proc/self/task')).map(Number).filter((t) => t !== process.pid);
    expect(tids.length).toBeGreaterThan(0);
    const reg = new Registry(new Recorder());
    expect(codeOf(() => reg.apply([{ op: 'register', pid: tids[0]! }]))).toBe('ESRCH');
  });

  it('register then unregister in one write leaves nothing registered and no fd open', () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const a = sleeper();
    reg.apply([{ op: 'register', pid: a }, { op: 'unregister', pid: a }]);
    expect(reg.pids()).toEqual([]);
    expect(rec.fds.size).toBe(0);
  });

  it('applies the tokens of one write in order: -PID PID re-registers at the end, PID -PID PID registers', () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const [a, b] = [sleeper(), sleeper()];
    reg.apply([{ op: 'register', pid: a }, { op: 'register', pid: b }]);
    reg.apply([{ op: 'unregister', pid: a }, { op: 'register', pid: a }]);
    expect(reg.pids()).toEqual([b, a]);
    reg.apply([{ op: 'unregister', pid: b }, { op: 'register', pid: b }, { op: 'unregister', pid: b }]);
    expect(reg.pids()).toEqual([a]);
    reg.apply([{ op: 'register', pid: b }, { op: 'unregister', pid: b }, { op: 'register', pid: b }]);
    expect(reg.pids()).toEqual([a, b]);
    // Every registrant the listener holds is a live pidfd, one per registered PID.
    expect(rec.fds.size).toBe(2);
    for (const fd of rec.fds.values()) expect(pidfdExited(fd)).toBe(false);
    reg.clear();
    expect(rec.fds.size).toBe(0);
  });

  it('prunes a registrant whose exit the fan-out reports, once', () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const a = sleeper();
    reg.apply([{ op: 'register', pid: a }]);
    const [id] = [...rec.fds.keys()];
    reg.exited(id!);
    reg.exited(id!);
    expect(reg.pids()).toEqual([]);
    expect(reg.counters.pruned).toBe(1);
  });

  it('pruneExited removes exactly the registrants that have exited, once, and says which', async () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const pruned: number[] = [];
    reg.onPruned = (pid) => pruned.push(pid);
    const stays = sleeper();
    const c = spawn('sleep', ['30'], { stdio: 'ignore' });
    reg.apply([{ op: 'register', pid: c.pid! }, { op: 'register', pid: stays }]);
    expect(reg.pruneExited()).toEqual([]);
    c.kill('SIGKILL');
    await new Promise((r) => c.on('exit', r));
    expect(reg.pruneExited()).toEqual([c.pid!]);
    expect(reg.pruneExited()).toEqual([]);
    expect(reg.pids()).toEqual([stays]);
    expect(pruned).toEqual([c.pid!]);
    expect(reg.counters.pruned).toBe(1);
    expect(rec.events).toEqual([`add ${c.pid!}`, `add ${stays}`, 'remove 1']);
    reg.clear();
  });

  it('re-registering a PID whose process died replaces the stale entry', async () => {
    const rec = new Recorder();
    const reg = new Registry(rec);
    const c = spawn('sleep', ['30'], { stdio: 'ignore' });
    reg.apply([{ op: 'register', pid: c.pid! }]);
    c.kill('SIGKILL');
    await new Promise((r) => c.on('exit', r));
    // The PID is gone now: registering it again is ESRCH, and the stale entry is pruned.
    expect(codeOf(() => reg.apply([{ op: 'register', pid: c.pid! }]))).toBe('ESRCH');
    expect(reg.pids()).toEqual([]);
  });

  it('recognises kernel threads by PF_KTHREAD', () => {
    expect(isKernelThread(2)).toBe(true);
    expect(isKernelThread(process.pid)).toBe(false);
  });
});
