// The few system calls Node lacks, bound with koffi to glibc (2.36+ has the
// pidfd wrappers). Every prototype is fixed-arity: koffi's variadic calls cost
// more, and these run on the fork path. Load this module in each thread that
// calls it (a worker gets its own koffi instance).
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

/** errno names used by callers; numbers are Linux x86-64/generic values. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EINVAL: 22,
  ENOBUFS: 105,
  EPROTONOSUPPORT: 93,
} as const;

export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_CONNECTOR = 11;
export const SOL_SOCKET = 1;
export const SO_RCVBUF = 8;
export const SO_RCVBUFFORCE = 33;
export const SO_RCVTIMEO = 20; // SO_RCVTIMEO_OLD: a struct timeval of two longs on 64-bit
/** getsockopt: u32 sk_meminfo[SK_MEMINFO_VARS] (Linux 4.12+). */
export const SO_MEMINFO = 55;
/** Index of the socket's drop counter (sk_drops) in SO_MEMINFO. */
export const SK_MEMINFO_DROPS = 8;
export const MSG_DONTWAIT = 0x40;
export const POLLIN = 0x1;
export const POLLPRI = 0x2;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const MNT_DETACH = 2;
export const F_DUPFD_CLOEXEC = 1030;
export const SI_ASYNCIO = -4;

const fns = {
  pidfd_open: libc.func('int pidfd_open(int pid, unsigned int flags)'),
  pidfd_send_signal: libc.func('int pidfd_send_signal(int pidfd, int sig, void *info, unsigned int flags)'),
  close: libc.func('int close(int fd)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  getsockname: libc.func('int getsockname(int fd, void *addr, uint32_t *len)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *val, uint32_t *len)'),
  send: libc.func('long send(int fd, const void *buf, unsigned long len, int flags)'),
  sendto: libc.func('long sendto(int fd, const void *buf, unsigned long len, int flags, const void *addr, uint32_t addrlen)'),
  recvfrom: libc.func('long recvfrom(int fd, void *buf, unsigned long len, int flags, void *addr, uint32_t *addrlen)'),
};

/** A failed system call: `errno` is positive, `syscall` names the call. */
export class SyscallError extends Error {
  readonly errno: number;
  readonly syscall: string;

  constructor(syscall: string, errno: number) {
    super(`${syscall} failed: errno ${errno}`);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.errno = errno;
  }
}

export function errno(): number {
  return koffi.errno();
}

function check(name: string, ret: number): number {
  if (ret < 0) throw new SyscallError(name, koffi.errno());
  return ret;
}

/** pidfd_open(2): an fd that names one process for its whole life. */
export function pidfdOpen(pid: number): number {
  return check('pidfd_open', fns.pidfd_open(pid, 0) as number);
}

/**
 * pidfd_send_signal(2) with a prepared 128-byte siginfo. Returns 0 or the
 * positive errno: the fan-out decides what each errno means, without a throw.
 */
export function pidfdSendSignal(pidfd: number, sig: number, info: Buffer): number {
  if ((fns.pidfd_send_signal(pidfd, sig, info, 0) as number) === 0) return 0;
  return koffi.errno();
}

/**
 * pidfd_send_signal(2) with signal 0: sends nothing, checks that the process
 * may be signalled. 0, or the errno: EPERM when it belongs to another user and
 * this process lacks CAP_KILL, ESRCH once it has been reaped.
 */
export function pidfdCanSignal(pidfd: number): number {
  return (fns.pidfd_send_signal(pidfd, 0, null, 0) as number) === 0 ? 0 : koffi.errno();
}

export function close(fd: number): void {
  fns.close(fd);
}

export function dupCloexec(fd: number): number {
  return check('fcntl', fns.fcntl(fd, F_DUPFD_CLOEXEC, 0) as number);
}

/** poll(2) over a buffer of struct pollfd { int fd; short events; short revents; }. */
export function poll(fds: Buffer, count: number, timeoutMs: number): number {
  const ret = fns.poll(fds, count, timeoutMs) as number;
  if (ret < 0) {
    const e = koffi.errno();
    if (e === Errno.EINTR) return 0;
    throw new SyscallError('poll', e);
  }
  return ret;
}

/** True when the process behind a pidfd has exited (the pidfd is readable). */
export function pidfdExited(pidfd: number): boolean {
  const p = Buffer.alloc(8);
  p.writeInt32LE(pidfd, 0);
  p.writeInt16LE(POLLIN, 4);
  return poll(p, 1, 0) > 0;
}

/** For each pidfd, whether its process has exited: one poll(2) over all of them. */
export function pidfdsExited(pidfds: readonly number[]): boolean[] {
  if (pidfds.length === 0) return [];
  const p = Buffer.alloc(8 * pidfds.length);
  pidfds.forEach((fd, i) => {
    p.writeInt32LE(fd, 8 * i);
    p.writeInt16LE(POLLIN, 8 * i + 4);
  });
  if (poll(p, pidfds.length, 0) === 0) return pidfds.map(() => false);
  return pidfds.map((_, i) => (p.readInt16LE(8 * i + 6) & (POLLIN | POLLHUP | POLLERR)) !== 0);
}

export function umount2(target: string, flags: number): number {
  return (fns.umount2(target, flags) as number) === 0 ? 0 : koffi.errno();
}

export function socket(domain: number, type: number, protocol: number): number {
  return check('socket', fns.socket(domain, type, protocol) as number);
}

export function bind(fd: number, addr: Buffer): void {
  check('bind', fns.bind(fd, addr, addr.length) as number);
}

/** setsockopt(2) of a struct timeval { long tv_sec; long tv_usec; } (64-bit). */
export function setsockoptTimeval(fd: number, level: number, name: number, ms: number): void {
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
  check('setsockopt', fns.setsockopt(fd, level, name, tv, 16) as number);
}

/** getsockname(2) into `addr` (its length is the room given); returns the length the kernel wrote. */
export function getsockname(fd: number, addr: Buffer): number {
  const len = new Uint32Array([addr.length]);
  check('getsockname', fns.getsockname(fd, addr, len) as number);
  return len[0]!;
}

export function setsockoptInt(fd: number, level: number, name: number, value: number): number {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  return (fns.setsockopt(fd, level, name, v, 4) as number) === 0 ? 0 : koffi.errno();
}

export function getsockoptInt(fd: number, level: number, name: number): number {
  const v = Buffer.alloc(4);
  const len = new Uint32Array([4]);
  check('getsockopt', fns.getsockopt(fd, level, name, v, len) as number);
  return v.readInt32LE(0);
}

/**
 * getsockopt(2) into a caller-owned buffer; `len` (one element) is set to the
 * buffer's size and returns the length the kernel wrote. Returns 0 or the errno.
 */
export function getsockoptInto(fd: number, level: number, name: number, buf: Buffer, len: Uint32Array): number {
  len[0] = buf.length;
  return (fns.getsockopt(fd, level, name, buf, len) as number) === 0 ? 0 : koffi.errno();
}

export function send(fd: number, buf: Buffer): void {
  check('send', fns.send(fd, buf, buf.length, 0) as number);
}

/** sendto(2) of one datagram to `addr` (a sockaddr of its exact length). */
export function sendTo(fd: number, buf: Buffer, addr: Buffer): void {
  check('sendto', fns.sendto(fd, buf, buf.length, 0, addr, addr.length) as number);
}

/**
 * recvfrom(2) into `buf`, the sender's address into `addr` (addrLen in/out).
 * Returns the byte count, or the negated errno (no throw on the hot path).
 */
export function recvFrom(fd: number, buf: Buffer, flags: number, addr: Buffer, addrLen: Uint32Array): number {
  addrLen[0] = addr.length;
  const n = fns.recvfrom(fd, buf, buf.length, flags, addr, addrLen) as number;
  return n >= 0 ? n : -koffi.errno();
}
