// Who receives the relay's signals. Lives on the main thread, where FUSE writes
// arrive; every registrant is held by a pidfd so that a recycled PID can never
// inherit a registration. The fan-out (the relay's worker) gets its own dup of
// each pidfd and is told of every change before the write that made it returns.
import { readFileSync } from 'node:fs';
import { RelayError } from './errors.js';
import type { ProcessCommand } from './control/grammar.js';
import { close, dupCloexec, Errno, pidfdCanSignal, pidfdExited, pidfdOpen, pidfdsExited, SyscallError } from './kernel/syscalls.js';

export interface Registrant {
  readonly id: number;
  readonly pid: number;
  readonly pidfd: number;
}

/** What the registry tells the fan-out. `add` hands over ownership of `pidfd`. */
export interface RegistryListener {
  added(id: number, pid: number, pidfd: number): void;
  removed(id: number): void;
}

const PF_KTHREAD = 0x00200000;

/** Kernel threads cannot take signals from us and must never be registered. */
export function isKernelThread(pid: number): boolean {
  let stat: string;
  try {
    // procfs, not our own mount: a synchronous read here cannot deadlock FUSE.
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return false; // gone already: the pidfd will report its exit
  }
  // comm may hold spaces and parentheses: fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const flags = Number(fields[6]);
  return Number.isFinite(flags) && (flags & PF_KTHREAD) !== 0;
}

export type RegistryCounters = { pruned: number };

export class Registry {
  private readonly byPid = new Map<number, Registrant>();
  private nextId = 1;
  readonly counters: RegistryCounters = { pruned: 0 };
  /** Called for each registrant pruneExited removes (the relay's own exit watch logs its own). */
  onPruned: (pid: number) => void = () => {};

  constructor(
    private readonly listener: RegistryListener,
    private readonly selfPid: number = process.pid,
  ) {}

  /** Registered PIDs in registration order. */
  pids(): number[] {
    return [...this.byPid.keys()];
  }

  get size(): number {
    return this.byPid.size;
  }

  /**
   * Applies a parsed write all or nothing, token by token in order (so
   * `-PID PID` re-registers PID at the end of the list): every registration is
   * checked, and its pidfd opened, before any takes effect; on error nothing
   * changes.
   */
  apply(commands: readonly ProcessCommand[]): void {
    // A registrant named here that died, its exit not reported yet, goes now
    // (whatever the outcome: it is gone either way).
    for (const { pid } of commands) {
      const r = this.byPid.get(pid);
      if (r && pidfdExited(r.pidfd)) this.exited(r.id);
    }
    // Then the write is played on a copy of the membership, opening a pidfd
    // for each PID it would add: that is where every check happens.
    const member = new Set(this.byPid.keys());
    const opened = new Map<number, number>(); // pid → pidfd, for PIDs this write adds
    try {
      for (const { op, pid } of commands) {
        if (op === 'unregister') {
          member.delete(pid);
        } else if (!member.has(pid)) {
          if (!opened.has(pid)) opened.set(pid, this.open(pid));
          member.add(pid);
        }
      }
    } catch (err) {
      for (const fd of opened.values()) close(fd);
      throw err;
    }
    try {
      for (const { op, pid } of commands) {
        if (op === 'unregister') {
          this.remove(pid);
          continue;
        }
        if (this.byPid.has(pid)) continue; // registered: no change
        const fd = opened.get(pid);
        if (fd !== undefined) this.add(pid, dupCloexec(fd));
      }
    } finally {
      for (const fd of opened.values()) close(fd);
    }
  }

  /**
   * Removes every registrant whose process has exited (its pidfd is readable)
   * and returns their PIDs. `processes` and `stats` run it before they are
   * read, so neither ever shows a registrant that has exited, however soon
   * the relay notices it itself.
   */
  pruneExited(): number[] {
    const all = [...this.byPid.values()];
    const exited = pidfdsExited(all.map((r) => r.pidfd));
    const gone: number[] = [];
    all.forEach((r, i) => {
      if (!exited[i]) return;
      this.exited(r.id);
      gone.push(r.pid);
      this.onPruned(r.pid);
    });
    return gone;
  }

  /** The fan-out saw this registrant's process end (pidfd readable, or ESRCH). */
  exited(id: number): void {
    for (const r of this.byPid.values()) {
      if (r.id !== id) continue;
      this.byPid.delete(r.pid);
      close(r.pidfd);
      this.counters.pruned++;
      this.listener.removed(id);
      return;
    }
  }

  /** Closes every pidfd; the registry is empty afterwards. */
  clear(): void {
    for (const r of this.byPid.values()) {
      close(r.pidfd);
      this.listener.removed(r.id);
    }
    this.byPid.clear();
  }

  private open(pid: number): number {
    if (pid === 1) throw new RelayError('EPERM', 'PID 1 (init) takes real-time signals as commands');
    if (pid === this.selfPid) throw new RelayError('EPERM', 'the daemon cannot register itself');
    let fd: number;
    try {
      fd = pidfdOpen(pid);
    } catch (err) {
      // A thread id that is not a thread-group leader is not a process: the
      // kernel says EINVAL (before 6.9) or ENOENT (since).
      if (err instanceof SyscallError && (err.errno === Errno.ESRCH || err.errno === Errno.EINVAL || err.errno === Errno.ENOENT)) {
        throw new RelayError('ESRCH', `no process ${pid}`);
      }
      throw err;
    }
    if (isKernelThread(pid)) {
      close(fd);
      throw new RelayError('EPERM', `PID ${pid} is a kernel thread`);
    }
    // Without CAP_KILL (a daemon run as an unprivileged user with a reduced
    // capability set) another user's process would never get a signal: refuse
    // it here, where the writer sees EPERM, rather than drop every signal later.
    const e = pidfdCanSignal(fd);
    if (e !== 0) {
      close(fd);
      if (e === Errno.EPERM) throw new RelayError('EPERM', `the daemon may not signal PID ${pid} (another user's process, and no CAP_KILL)`);
      if (e === Errno.ESRCH) throw new RelayError('ESRCH', `no process ${pid}`);
      throw new SyscallError('pidfd_send_signal', e);
    }
    return fd;
  }

  /** Takes ownership of `pidfd`. */
  private add(pid: number, pidfd: number): void {
    const id = this.nextId++;
    this.byPid.set(pid, { id, pid, pidfd });
    this.listener.added(id, pid, dupCloexec(pidfd));
  }

  private remove(pid: number): void {
    const r = this.byPid.get(pid);
    if (!r) return;
    this.byPid.delete(pid);
    close(r.pidfd);
    this.listener.removed(r.id);
  }
}
