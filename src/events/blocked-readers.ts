// Who is blocked reading our `events` file, and has a signal waiting: found in
// procfs, asynchronously, never through our own mount.
//
// Why: a process whose read(2) has reached a FUSE daemon cannot act on any
// signal, SIGKILL included, until the daemon answers, and fuse-native passes
// neither the kernel's interrupt nor the caller's pid to JavaScript. libfuse
// does tell us *that* a request was interrupted (mount.ts: `intr`), so then we
// look here for the blocked readers, see which of them have a signal pending,
// and answer their reads with EINTR.
import { readdir, readFile, readlink } from 'node:fs/promises';
import { arch } from 'node:process';
import { unescapeMountPath } from '../fs/mount.js';

type ReadKind = 'read' | 'readv' | 'pread' | 'preadv' | 'preadv2';

/** The read-family system calls, by number, for the architectures Node runs on here. */
const READ_CALLS: Record<string, Record<number, ReadKind>> = {
  x64: { 0: 'read', 17: 'pread', 19: 'readv', 295: 'preadv', 327: 'preadv2' },
  arm64: { 63: 'read', 65: 'readv', 67: 'pread', 69: 'preadv', 286: 'preadv2' },
};

/** `/proc/PID/task/TID/syscall`: "NR ARG0 .. ARG5 SP PC", or "running", or "-1 SP PC". */
export function parseSyscall(text: string): { nr: number; args: bigint[] } | null {
  const f = text.trim().split(' ');
  const nr = Number(f[0]);
  if (!Number.isInteger(nr) || nr < 0 || f.length < 7) return null;
  try {
    return { nr, args: f.slice(1, 7).map((a) => BigInt(a)) };
  } catch {
    return null;
  }
}

export interface ReadCall {
  fd: number;
  /** The byte count asked for, or null where it is not an argument (readv). */
  count: number | null;
  /** The file offset of a positional read, or null for the file position. */
  offset: number | null;
}

const NO_OFFSET = 0xffffffffn; // preadv2's -1 offset, as its two 32-bit halves arrive

/** What a thread blocked in a read-family system call is reading. */
export function readCall(call: { nr: number; args: bigint[] }, machine: string = arch): ReadCall | null {
  const kind = READ_CALLS[machine]?.[call.nr];
  if (!kind) return null;
  const a = call.args;
  const fd = Number(a[0]! & 0xffffffffn);
  const count = kind === 'read' || kind === 'pread' ? Number(a[2]!) : null;
  let offset: number | null = null;
  if (kind === 'pread') offset = Number(a[3]!);
  if (kind === 'preadv' || kind === 'preadv2') {
    const lo = a[3]! & 0xffffffffn;
    const hi = a[4]! & 0xffffffffn;
    offset = kind === 'preadv2' && lo === NO_OFFSET && hi === NO_OFFSET ? null : Number((hi << 32n) | lo);
  }
  return { fd, count, offset };
}

export interface SignalState {
  /** SigPnd | ShdPnd */
  pending: bigint;
  blocked: bigint;
  ignored: bigint;
  caught: bigint;
}

export function parseSignalState(status: string): SignalState | null {
  const field = (name: string): bigint | null => {
    const m = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status);
    return m ? BigInt(`0x${m[1]}`) : null;
  };
  const [pnd, shd, blk, ign, cgt] = ['SigPnd', 'ShdPnd', 'SigBlk', 'SigIgn', 'SigCgt'].map(field);
  if (pnd == null || shd == null || blk == null || ign == null || cgt == null) return null;
  return { pending: pnd | shd, blocked: blk, ignored: ign, caught: cgt };
}

const bit = (signo: number): bigint => 1n << BigInt(signo - 1);
const SIGKILL = bit(9);
const STOPS = bit(19) | bit(20) | bit(21) | bit(22); // SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU

/**
 * Whether the thread is waiting on a signal that our answer should let
 * through: a fatal one (the kernel turns a default-action kill into a pending
 * SIGKILL on every thread), or one it handles. A stop signal with its default
 * action is not: EINTR cannot be restarted after SIGCONT, so `cat` would fail
 * where it should merely pause; it stops at its next line instead.
 */
export function interruptsRead(s: SignalState): boolean {
  if ((s.pending & SIGKILL) !== 0n) return true;
  const deliverable = s.pending & ~s.blocked & ~s.ignored;
  const defaultStops = deliverable & STOPS & ~s.caught;
  return (deliverable & ~defaultStops) !== 0n;
}

/** `/proc/PID/fdinfo/FD`: the file position and the mount the file was opened through. */
export function parseFdinfo(text: string): { pos: number; mntId: number } | null {
  const pos = /^pos:\s*(\d+)$/m.exec(text);
  const mnt = /^mnt_id:\s*(\d+)$/m.exec(text);
  return pos && mnt ? { pos: Number(pos[1]), mntId: Number(mnt[1]) } : null;
}

export interface MountRow {
  id: number;
  /** major:minor of the filesystem */
  dev: string;
  /** The directory of the filesystem that is mounted here. */
  root: string;
  mountpoint: string;
  fstype: string;
}

export function parseMountRows(text: string): MountRow[] {
  const rows: MountRow[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f.length < 5 || sep < 0 || f[sep + 1] === undefined) continue;
    rows.push({
      id: Number(f[0]),
      dev: f[2]!,
      root: unescapeMountPath(f[3]!),
      mountpoint: unescapeMountPath(f[4]!),
      fstype: f[sep + 1]!,
    });
  }
  return rows;
}

/** The path inside the filesystem of a /proc/PID/fd link made through mount `row`. */
export function pathInFs(link: string, row: MountRow): string | null {
  let rest: string;
  if (link === row.mountpoint) rest = '';
  else if (row.mountpoint === '/' && link.startsWith('/')) rest = link;
  else if (link.startsWith(`${row.mountpoint}/`)) rest = link.slice(row.mountpoint.length);
  else return null;
  if (row.root === '/') return rest === '' ? '/' : rest;
  return row.root + rest;
}

/** A thread blocked in a read of our file, as procfs shows it. */
export interface BlockedReader {
  pid: number;
  tid: number;
  fd: number;
  /** The offset the read is at (what our read request carries as `pos`). */
  pos: number;
  count: number | null;
  interrupted: boolean;
}

/** A wait inside a FUSE request, as /proc/…/wchan names it. */
const FUSE_WAIT = /request_wait_answer|fuse/;

const readText = (path: string): Promise<string | null> => readFile(path, 'latin1').catch(() => null);

export interface Target {
  /** The mount point we serve, as /proc/self/mountinfo spells it. */
  mountpoint: string;
  /** The file, inside our filesystem: "/relayfork/events". */
  path: string;
}

/**
 * Sweeps /proc for threads blocked in a read of `target`. Every call reads
 * each thread's wchan (a cheap check that never waits for a running task),
 * and more only for threads waiting inside FUSE.
 */
export class BlockedReaderFinder {
  private dev: string | null = null;

  constructor(
    private readonly target: Target,
    private readonly selfPid: number = process.pid,
  ) {}

  async find(): Promise<BlockedReader[]> {
    const dev = await this.ourDev();
    if (dev === null) return [];
    const names = await readdir('/proc');
    const found: BlockedReader[] = [];
    await Promise.all(
      names.map(async (name) => {
        if (!/^\d+$/.test(name)) return;
        const pid = Number(name);
        if (pid === this.selfPid) return;
        let tids: string[];
        try {
          tids = await readdir(`/proc/${pid}/task`);
        } catch {
          return; // gone
        }
        let mounts: MountRow[] | null = null;
        for (const t of tids) {
          const dir = `/proc/${pid}/task/${t}`;
          if (!(await this.waitsInFuse(dir))) continue;
          const sc = await readText(`${dir}/syscall`);
          const call = sc === null ? null : parseSyscall(sc);
          const rc = call === null ? null : readCall(call);
          if (rc === null) continue;
          const link = await readlink(`${dir}/fd/${rc.fd}`).catch(() => null);
          if (link === null || !link.endsWith(this.target.path.slice(this.target.path.lastIndexOf('/')))) continue;
          const info = await readText(`${dir}/fdinfo/${rc.fd}`);
          const fdinfo = info === null ? null : parseFdinfo(info);
          if (fdinfo === null) continue;
          mounts ??= parseMountRows((await readText(`/proc/${pid}/mountinfo`)) ?? '');
          const row = mounts.find((m) => m.id === fdinfo.mntId);
          if (!row || row.dev !== dev || pathInFs(link, row) !== this.target.path) continue;
          const status = await readText(`${dir}/status`);
          const sig = status === null ? null : parseSignalState(status);
          if (sig === null) continue;
          found.push({
            pid,
            tid: Number(t),
            fd: rc.fd,
            pos: rc.offset ?? fdinfo.pos,
            count: rc.count,
            interrupted: interruptsRead(sig),
          });
        }
      }),
    );
    return found;
  }

  private async waitsInFuse(dir: string): Promise<boolean> {
    const wchan = await readText(`${dir}/wchan`);
    if (wchan === null) return false;
    if (FUSE_WAIT.test(wchan)) return true;
    if (wchan !== '0' && wchan !== '') return false;
    // No symbol: a running task, or a kernel that hides wchan. Only a
    // sleeping task can be blocked in a read.
    const stat = await readText(`${dir}/stat`);
    const state = stat === null ? '' : stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'S' || state === 'D';
  }

  private async ourDev(): Promise<string | null> {
    if (this.dev !== null) return this.dev;
    const rows = parseMountRows((await readText('/proc/self/mountinfo')) ?? '');
    const ours = rows.filter((r) => r.mountpoint === this.target.mountpoint && r.fstype.startsWith('fuse'));
    this.dev = ours[ours.length - 1]?.dev ?? null;
    return this.dev;
  }
}
