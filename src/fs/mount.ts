// The FUSE adapter: turns fuse-native's callbacks into lookups in the node
// table and calls to the file behaviours. This is the one place that replies
// to the kernel, and the one place that turns errors into -errno.
import { open, readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import type { Logger } from 'pino';
import { RelayError, type ErrnoName } from '../errors.js';
import { MNT_DETACH, umount2 } from '../kernel/syscalls.js';
import { logger } from '../log.js';
import { loadFuse, type FuseOps, type Stat } from './fuse-native.js';
import { isStream, type FileStream, type Node } from './files.js';

const ERRNO: Record<ErrnoName | 'EIO', number> = {
  EPERM: 1, ENOENT: 2, ESRCH: 3, EINTR: 4, EIO: 5, EBADF: 9, EACCES: 13, ENOTDIR: 20, EISDIR: 21, EINVAL: 22,
};

/**
 * The errno adapter: a RelayError's code becomes -errno; anything else is a
 * bug of ours, logged, and the caller sees EIO.
 */
export function toErrno(err: unknown, log: Logger, op: string, path: string): number {
  if (err instanceof RelayError) {
    log.debug({ op, path, code: err.code, reason: err.message }, 'refused');
    return -ERRNO[err.code];
  }
  log.error({ err, op, path }, 'unexpected failure in a filesystem operation');
  return -ERRNO.EIO;
}

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_RDWR = 2;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

interface Handle {
  path: string;
  /** The content rendered at open; reads at any offset serve this snapshot. */
  snapshot: Buffer | null;
  /** A stream file's own reader for this open. */
  stream: FileStream | null;
}

/**
 * The signal libfuse sends to the daemon when a caller of a pending request
 * is interrupted (mount option `intr`). SIGURG: its default action is to be
 * ignored, so no moment before the handler is installed can hurt, and
 * nothing else in the daemon uses it.
 */
const INTERRUPT_SIGNAL = 'SIGURG';

/** FUSE options fuse-native does not offer: added to the -o list it builds. */
const EXTRA_OPTIONS = [
  'direct_io', // no page cache: every read reaches read(), every write(2) arrives whole
  'big_writes', // up to max_write in one request, so a 4097-byte write is seen as one and refused
  'max_write=131072',
  // A caller that gets a signal while its request waits (a read of `events`)
  // is reported: libfuse sends us INTERRUPT_SIGNAL, the daemon's onInterrupt
  // finds whose read it was. fuse-native passes nothing of it to JavaScript.
  'intr',
  `intr_signal=${osConstants.signals[INTERRUPT_SIGNAL]}`,
  'fsname=relayfork',
  'subtype=relayfork', // /proc/self/mountinfo shows fuse.relayfork: how a stale mount is recognised
];

export interface MountedFs {
  readonly mountpoint: string;
  /** Detaches the mount (umount2 MNT_DETACH): no fusermount, no shell. */
  unmount(): void;
}

/**
 * libfuse opens /dev/fuse before it mounts; when that fails it prints a line of
 * its own and fuse-native reports only "fuse failed". Try it first and say why.
 */
export async function checkFuseDevice(device = '/dev/fuse'): Promise<void> {
  try {
    await (await open(device, 'r+')).close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO') {
      throw new Error(`${device} is missing (${code}): load the fuse module (modprobe fuse)`, { cause: err });
    }
    if (code === 'EACCES' || code === 'EPERM') {
      const uid = process.getuid?.() ?? -1;
      throw new Error(`cannot open ${device} (${code}): the daemon's user (uid ${uid}) needs read and write access ` +
        'to it; it is mode 0666 on most systems (check ls -l /dev/fuse, and DeviceAllow= in a systemd unit)', { cause: err });
    }
    throw new Error(`cannot open ${device} (${code})`, { cause: err });
  }
}

export interface MountOptions {
  /** A caller of some pending request was sent a signal (called on the main thread). */
  onInterrupt?: () => void;
}

export async function mountFs(mountpoint: string, tree: Map<string, Node>, opts: MountOptions = {}): Promise<MountedFs> {
  const log = logger('fs');
  await checkFuseDevice();
  const Fuse = loadFuse();
  const started = new Date();
  const handles = new Map<number, Handle>();
  let nextFh = 1; // fuse-native ignores a handle of 0

  const stat = (node: Node): Stat => ({
    mode: (node.kind === 'dir' ? S_IFDIR : S_IFREG) | node.mode,
    uid: 0,
    gid: 0,
    size: node.kind === 'dir' ? 0 : 4096, // as sysfs reports attributes; direct_io ignores it
    nlink: node.kind === 'dir' ? 2 : 1,
    mtime: started,
    atime: started,
    ctime: started,
  });

  const allocFh = (): number => {
    while (handles.has(nextFh) || nextFh === 0) nextFh = (nextFh + 1) >>> 0 || 1;
    const fh = nextFh;
    nextFh = (nextFh + 1) >>> 0 || 1;
    return fh;
  };

  const refuse = (code: ErrnoName, message: string): never => {
    throw new RelayError(code, message);
  };

  const lookup = (path: string): Node => tree.get(path) ?? refuse('ENOENT', 'no such file');

  /** Runs a handler; any throw becomes -errno through the one adapter. */
  const guard = (op: string, path: string, reply: (code: number) => void, fn: () => number): void => {
    let code: number;
    try {
      code = fn();
    } catch (err) {
      code = toErrno(err, log, op, path);
    }
    reply(code);
  };

  const denied = (op: string) => (...args: unknown[]): void => {
    const cb = args[args.length - 1] as (code: number) => void;
    const path = typeof args[0] === 'string' ? args[0] : '?';
    log.debug({ op, path }, 'refused: the tree is fixed');
    cb(tree.has(path) ? -ERRNO.EPERM : -ERRNO.EACCES);
  };

  /**
   * A read of a stream file: answered whenever the stream replies, exactly
   * once (a second reply is a bug of ours, logged and dropped: the kernel's
   * request is gone by then).
   */
  const readStream = (stream: FileStream, path: string, buf: Buffer, len: number, pos: number, cb: (code: number) => void): void => {
    let answered = false;
    const reply = (err: unknown, data?: Buffer): void => {
      if (answered) {
        log.error({ path, err }, 'a stream replied twice to one read');
        return;
      }
      answered = true;
      // The buffer is fuse-native's and is valid until cb: copy now.
      guard('read', path, cb, () => {
        if (err !== null && err !== undefined) throw err;
        return data ? data.copy(buf, 0, 0, Math.min(len, data.length)) : 0;
      });
    };
    try {
      stream.read(pos, len, reply);
    } catch (err) {
      reply(err);
    }
  };

  const ops: FuseOps = {
    getattr(path, cb) {
      const node = tree.get(path);
      if (!node) return cb(-ERRNO.ENOENT);
      cb(0, stat(node));
    },
    fgetattr(path, _fd, cb) {
      const node = tree.get(path);
      if (!node) return cb(-ERRNO.ENOENT);
      cb(0, stat(node));
    },
    readdir(path, cb) {
      const node = tree.get(path);
      if (!node) return cb(-ERRNO.ENOENT);
      if (node.kind !== 'dir') return cb(-ERRNO.ENOTDIR);
      const names = ['.', '..', ...node.entries];
      const prefix = path === '/' ? '/' : `${path}/`;
      cb(0, names, names.map((n) => stat(n === '.' || n === '..' ? node : lookup(prefix + n))));
    },
    open(path, flags, cb) {
      let fh = 0;
      guard('open', path, (code) => (code < 0 ? cb(code) : cb(0, fh)), () => {
        const node = lookup(path);
        if (node.kind !== 'file') refuse('EISDIR', 'is a directory');
        const acc = flags & O_ACCMODE;
        const writing = acc === O_WRONLY || acc === O_RDWR;
        const f = node as Extract<Node, { kind: 'file' }>;
        const b = f.behaviour;
        // Root passes the kernel's mode check on any file: a read-only file
        // must refuse writers itself.
        if (writing && (isStream(b) || !b.write || (f.mode & 0o222) === 0)) refuse('EACCES', 'read-only file');
        const stream = isStream(b) ? b.open() : null;
        const snapshot = isStream(b) || acc === O_WRONLY ? null : Buffer.from(b.read());
        fh = allocFh();
        handles.set(fh, { path, snapshot, stream });
        return 0;
      });
    },
    release(path, fd, cb) {
      const h = handles.get(fd);
      handles.delete(fd);
      guard('release', path, cb, () => {
        h?.stream?.release();
        return 0;
      });
    },
    read(path, fd, buf, len, pos, cb) {
      const stream = handles.get(fd)?.stream;
      if (stream) {
        readStream(stream, path, buf, len, pos, cb);
        return;
      }
      guard('read', path, cb, () => {
        const h = handles.get(fd) ?? refuse('EBADF', 'unknown handle');
        if (!h.snapshot) refuse('EBADF', 'not open for reading');
        const snap = h.snapshot!;
        if (pos >= snap.length) return 0;
        return snap.copy(buf, 0, pos, Math.min(snap.length, pos + len));
      });
    },
    write(path, fd, buf, len, _pos, cb) {
      guard('write', path, cb, () => {
        if (!handles.has(fd)) refuse('EBADF', 'unknown handle');
        const node = lookup(path);
        const b = node.kind === 'file' ? node.behaviour : null;
        if (b === null || isStream(b) || !b.write) refuse('EACCES', 'read-only file');
        if (len > 4096) refuse('EINVAL', 'a write holds at most 4096 bytes');
        // The buffer is fuse-native's and is gone after the callback: decode now.
        const text = buf.toString('utf8', 0, len);
        (b as { write(text: string): void }).write(text);
        log.info({ path, text: text.length > 200 ? `${text.slice(0, 200)}…` : text.trimEnd() }, 'written');
        return len;
      });
    },
    // The shell's `>` opens with O_TRUNC: truncating a control file is a no-op.
    truncate(path, _size, cb) {
      guard('truncate', path, cb, () => {
        const node = lookup(path);
        if (node.kind !== 'file') refuse('EISDIR', 'is a directory');
        return 0;
      });
    },
    ftruncate(path, _fd, _size, cb) {
      guard('ftruncate', path, cb, () => (lookup(path).kind === 'file' ? 0 : refuse('EISDIR', 'is a directory')));
    },
    create: denied('create'),
    mknod: denied('mknod'),
    mkdir: denied('mkdir'),
    unlink: denied('unlink'),
    rmdir: denied('rmdir'),
    rename: denied('rename'),
    link: denied('link'),
    symlink: denied('symlink'),
    chmod: denied('chmod'),
    chown: denied('chown'),
    utimens: denied('utimens'),
    setxattr: denied('setxattr'),
  };

  class RelayforkFuse extends Fuse {
    override _fuseOptions(): string {
      const base = super._fuseOptions();
      return base ? `${base},${EXTRA_OPTIONS.join(',')}` : `-o${EXTRA_OPTIONS.join(',')}`;
    }
  }

  const fuse = new RelayforkFuse(mountpoint, ops, {
    allowOther: true, // anyone may read...
    defaultPermissions: true, // ...and the kernel refuses non-root writes by mode
    // Every operation but a read answers on the spot from memory; a handler
    // that never answered would be a bug, and its caller gets ETIMEDOUT after
    // 5 s rather than fuse-native's 15 s. A read of a stream file waits for
    // the next fork, as long as it takes, so reads have no timeout: snapshot
    // reads answer synchronously, and a waiting stream read is answered by a
    // line, by EINTR when its caller is signalled (opts.onInterrupt), by end
    // of file when the daemon stops, or by the kernel (ENOTCONN) if the
    // daemon dies.
    timeout: { default: 5000, read: false },
  });
  // Before mounting: libfuse installs its own no-op handler only where it
  // finds the default one.
  const onInterrupt = (): void => opts.onInterrupt?.();
  process.on(INTERRUPT_SIGNAL, onInterrupt);
  try {
    await new Promise<void>((resolve, reject) => {
      fuse.mount((err) => (err ? reject(err) : resolve()));
    });
  } catch (err) {
    process.off(INTERRUPT_SIGNAL, onInterrupt);
    throw err;
  }
  log.debug({ mountpoint, options: EXTRA_OPTIONS }, 'fuse mounted');

  let unmounted = false;
  return {
    mountpoint,
    unmount() {
      if (unmounted) return;
      unmounted = true;
      process.off(INTERRUPT_SIGNAL, onInterrupt);
      const e = umount2(mountpoint, MNT_DETACH);
      if (e !== 0) log.warn({ mountpoint, errno: e }, 'umount2 failed');
    },
  };
}

// /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
export function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export interface MountEntry {
  mountpoint: string;
  fstype: string;
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    const mp = fields[4];
    const fstype = sep >= 0 ? fields[sep + 1] : undefined;
    if (mp === undefined || fstype === undefined) continue;
    out.push({ mountpoint: unescapeMountPath(mp), fstype });
  }
  return out;
}

export async function mountsAt(mountpoint: string): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return parseMountinfo(text).filter((m) => m.mountpoint === mountpoint);
}
