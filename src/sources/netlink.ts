// The kernel's proc connector as a fork source. Set-up (connect, subscribe)
// is kept apart from the receive loop (drain), as forkstat does.
import { release as osRelease } from 'node:os';
import {
  decodeMessages,
  readLoneFork,
  NLMSG_HDRLEN,
  NLMSG_NOOP,
  encodeSockaddrNl,
  encodeSubscribe,
  CN_IDX_PROC,
  PROC_CN_MCAST_IGNORE,
  PROC_CN_MCAST_LISTEN,
  PROC_EVENT_FORK,
  SOCKADDR_NL_LEN,
} from '../kernel/cn-proc.js';
import {
  AF_NETLINK, bind, close, Errno, getsockname, getsockoptInto, MSG_DONTWAIT, NETLINK_CONNECTOR, poll, POLLIN, recvFrom, send,
  setsockoptInt, setsockoptTimeval, SO_RCVTIMEO, SK_MEMINFO_DROPS, socket, SOCK_CLOEXEC, SOCK_DGRAM, SO_MEMINFO, SO_RCVBUF, SO_RCVBUFFORCE, SOL_SOCKET,
  sendTo, SyscallError,
} from '../kernel/syscalls.js';
import type { ForkSink, ForkSource } from './source.js';

/**
 * The kernel doubles it and charges each queued message ~830 bytes: room for
 * ~20k fork messages, about a second of a fork storm on a small machine (the
 * default buffer holds ~500, 20 ms of it).
 */
export const RCVBUF_BYTES = 8 * 1024 * 1024;
const ACK_TIMEOUT_MS = 1000;
/**
 * Messages read per drain() call at most: the relay's loop gets control back
 * (to notice a stop request, exited registrants, its periodic checks) even
 * while a storm keeps the socket readable.
 */
export const DRAIN_BATCH = 256;
/**
 * How long one blocking receive waits: how soon a quiet loop comes round to
 * its checks (exited registrants, mount changes). Each round wakes the thread,
 * which costs a Node thread ~100 µs, so a quiet daemon should wake rarely;
 * a stop request does not wait for it (wakeReceiver), and `processes` never
 * lists an exited registrant whatever the loop's pace (the registry checks
 * their pidfds when it is read).
 */
export const RECV_TIMEOUT_MS = 1000;
const OVERRUN_WHY = 'netlink receive buffer overrun (ENOBUFS)';

export class NetlinkUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NetlinkUnavailable';
  }
}

export interface NetlinkOptions {
  threads: boolean;
  /** Called for messages the relay does not act on (acks, errors), for logging. */
  onNotice?: (what: string, detail: Record<string, unknown>) => void;
}

export type Subscription = { filter: 'fork-only' | 'none'; rcvbuf: 'forced' | 'default' };

export class NetlinkSource implements ForkSource {
  readonly name = 'netlink' as const;
  readonly intervalMs = 0;
  // The receive buffer and the sender's address, each with a typed-array view
  // that the hot path reads instead of Buffer's validating read methods.
  private readonly buf = Buffer.from(new ArrayBuffer(64 * 1024));
  private readonly words = new Int32Array(this.buf.buffer, 0, this.buf.length >> 2);
  private readonly addr = Buffer.from(new ArrayBuffer(SOCKADDR_NL_LEN));
  private readonly addrWords = new Uint32Array(this.addr.buffer, 0, SOCKADDR_NL_LEN >> 2);
  private readonly addrLen = new Uint32Array(1);
  private readonly meminfo = Buffer.alloc(64);
  private readonly meminfoLen = new Uint32Array(1);
  /** The socket's drop counter when last read (null: the kernel cannot tell, before 4.12). */
  private drops: number | null;
  /** An ENOBUFS was read and the queue has not been seen empty since: losses to report. */
  private overrun = false;
  private closed = false;
  /** readLoneFork's output: parent tgid, child pid, child tgid. */
  private readonly fork = new Int32Array(3);

  private constructor(readonly fd: number, readonly subscription: Subscription, private readonly opts: NetlinkOptions) {
    this.drops = this.readDrops();
  }

  /**
   * Opens the socket, joins the proc group and subscribes. Throws
   * NetlinkUnavailable when the kernel refuses or never acknowledges (inside
   * most containers a LISTEN is silently ignored).
   */
  static connect(opts: NetlinkOptions): NetlinkSource {
    let fd: number;
    try {
      fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    } catch (err) {
      throw new NetlinkUnavailable('the kernel has no proc connector (NETLINK_CONNECTOR)', { cause: err });
    }
    try {
      bind(fd, encodeSockaddrNl(CN_IDX_PROC));
      const rcvbuf = setsockoptInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES) === 0 ? 'forced' : 'default';
      if (rcvbuf === 'default') setsockoptInt(fd, SOL_SOCKET, SO_RCVBUF, RCVBUF_BYTES);
      // LISTEN with the plain 4-byte op first: its ack tells us the kernel took it.
      // (Inside most containers the request is ignored without an ack.)
      const err = subscribe(fd);
      if (err === null) throw new NetlinkUnavailable('the proc connector did not acknowledge the subscription (a container or a user namespace?)');
      if (err !== 0) {
        throw new NetlinkUnavailable(err === Errno.EPERM
          ? 'subscribing to the proc connector needs CAP_NET_ADMIN'
          : `the proc connector refused the subscription (errno ${err})`);
      }
      // Then narrow it to forks (kernel >= 6.6: an 8-byte proc_input with an
      // event mask, applied per socket). The kernel sends this request's ack
      // through the same filter, which drops it, so none is awaited; an older
      // kernel ignores the request and we skip other events ourselves.
      const filter: Subscription['filter'] = kernelFilters() ? 'fork-only' : 'none';
      if (filter === 'fork-only') send(fd, encodeSubscribe(PROC_CN_MCAST_LISTEN, { eventMask: PROC_EVENT_FORK }));
      setsockoptTimeval(fd, SOL_SOCKET, SO_RCVTIMEO, RECV_TIMEOUT_MS);
      return new NetlinkSource(fd, { filter, rcvbuf }, opts);
    } catch (err) {
      close(fd);
      if (err instanceof NetlinkUnavailable) throw err;
      if (err instanceof SyscallError && err.errno === Errno.EPERM) {
        throw new NetlinkUnavailable('joining the proc connector group needs CAP_NET_ADMIN', { cause: err });
      }
      throw err;
    }
  }

  /** Reads up to DRAIN_BATCH messages without waiting; returns early once the socket is empty. */
  drain(sink: ForkSink): void {
    this.read(sink, MSG_DONTWAIT, 0);
  }

  /**
   * The receive loop: waits in recvfrom(2) itself (the socket's SO_RCVTIMEO
   * bounds each wait) and relays what comes, until budgetMs have passed,
   * DRAIN_BATCH messages were read, or the socket stayed quiet for a whole
   * receive timeout. One system call per message, as a C forwarder makes:
   * no poll(2) before it and no EAGAIN read after it.
   */
  receive(sink: ForkSink, budgetMs: number): void {
    this.read(sink, 0, Date.now() + budgetMs);
  }

  private read(sink: ForkSink, flags: number, until: number): void {
    const { buf, words, addr, addrLen, addrWords, fork } = this;
    const threads = this.opts.threads;
    for (let i = 0; i < DRAIN_BATCH; i++) {
      const n = recvFrom(this.fd, buf, flags, addr, addrLen);
      if (n < 0) {
        const e = -n;
        if (e === Errno.EAGAIN) {
          this.reportDrops(sink, true);
          return;
        }
        if (e === Errno.EINTR) continue;
        if (e === Errno.ENOBUFS) {
          // The socket buffer overflowed and the kernel dropped messages. It
          // raises ENOBUFS once per overrun and counts every dropped message in
          // the socket's drop counter; the count is taken when the queue has
          // been drained (or at the end of each batch while it has not).
          if (this.drops === null) sink.lost(1, OVERRUN_WHY);
          else this.overrun = true;
          continue;
        }
        throw new SyscallError('recvfrom', e);
      }
      // Only the kernel (port 0) speaks for the connector. A datagram from
      // another port is wakeReceiver's: return, so the loop sees why.
      if (addrWords[1] !== 0) break; // sockaddr_nl.nl_pid
      if (readLoneFork(words, n, fork)) {
        if (fork[1] === fork[2] || threads) sink.fork(fork[0]!, fork[1]!, fork[2]!);
      } else {
        this.decode(sink, n);
      }
      // After the signals went out: the clock is off the fork's path.
      if (until !== 0 && Date.now() >= until) break;
    }
    this.reportDrops(sink, false);
  }

  /** Anything but a lone fork message: the full decoder. */
  private decode(sink: ForkSink, n: number): void {
    for (const ev of decodeMessages(this.buf, n)) {
      switch (ev.kind) {
        case 'fork':
          if (ev.childPid !== ev.childTgid && !this.opts.threads) break;
          sink.fork(ev.parentTgid, ev.childPid, ev.childTgid);
          break;
        case 'overrun':
          sink.lost(1, 'netlink overrun message');
          break;
        case 'truncated':
        case 'error':
          this.opts.onNotice?.(ev.kind, ev);
          break;
        default:
          break; // acks (ours and other listeners'), events we did not ask for
      }
    }
  }

  /**
   * After an ENOBUFS, reports the messages the kernel dropped since the last
   * report. The kernel drops only between raising ENOBUFS and the queue's next
   * emptying, so an overrun is over once the queue has been seen empty.
   */
  private reportDrops(sink: ForkSink, empty: boolean): void {
    if (!this.overrun) return;
    const now = this.readDrops();
    if (now !== null && this.drops !== null) {
      const lost = (now - this.drops) >>> 0; // a u32 counter that may wrap
      this.drops = now;
      if (lost > 0) sink.lost(lost, OVERRUN_WHY);
    }
    if (empty) this.overrun = false;
  }

  /** The socket's sk_drops (SO_MEMINFO), or null where the kernel lacks it. */
  private readDrops(): number | null {
    if (getsockoptInto(this.fd, SOL_SOCKET, SO_MEMINFO, this.meminfo, this.meminfoLen) !== 0) return null;
    if (this.meminfoLen[0]! < 4 * (SK_MEMINFO_DROPS + 1)) return null;
    return this.meminfo.readUInt32LE(4 * SK_MEMINFO_DROPS);
  }

  /** The socket's netlink port id, where wakeReceiver sends. */
  portId(): number {
    const a = Buffer.alloc(SOCKADDR_NL_LEN);
    getsockname(this.fd, a);
    return a.readUInt32LE(4);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      send(this.fd, encodeSubscribe(PROC_CN_MCAST_IGNORE));
    } catch {
      // closing the socket unsubscribes as well
    }
    close(this.fd);
  }
}

/**
 * Ends a NetlinkSource's wait in recvfrom(2) from another thread: sends an
 * empty netlink message (NLMSG_NOOP) to its port from a socket of our own.
 * Sending to a port takes CAP_NET_ADMIN, which the source needed anyway.
 * Returns false if it could not be sent (the loop then comes round within
 * RECV_TIMEOUT_MS).
 */
export function wakeReceiver(portId: number): boolean {
  let fd: number;
  try {
    fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  } catch {
    return false;
  }
  try {
    const noop = Buffer.alloc(NLMSG_HDRLEN);
    noop.writeUInt32LE(NLMSG_HDRLEN, 0); // nlmsg_len
    noop.writeUInt16LE(NLMSG_NOOP, 4); // nlmsg_type
    sendTo(fd, noop, encodeSockaddrNl(0, portId));
    return true;
  } catch {
    return false;
  } finally {
    close(fd);
  }
}

/** Per-socket event filters came with Linux 6.6. */
export function kernelFilters(release: string = osRelease()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 6 || (major === 6 && minor >= 6);
}

/**
 * Sends a plain LISTEN and waits for its ack. Returns the ack's error (0 for
 * success) or null when no ack came in time. Acks go to the whole multicast
 * group and the kernel renumbers their seq: ours is the one whose ack field is
 * the value we sent plus one.
 */
function subscribe(fd: number): number | null {
  const tag = (Math.random() * 0x7fffffff) >>> 0;
  const msg = encodeSubscribe(PROC_CN_MCAST_LISTEN);
  msg.writeUInt32LE(tag, NLMSG_HDRLEN + 12); // cn_msg.ack
  send(fd, msg);
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  const buf = Buffer.alloc(8192);
  const addr = Buffer.alloc(SOCKADDR_NL_LEN);
  const addrLen = new Uint32Array(1);
  const deadline = Date.now() + ACK_TIMEOUT_MS;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return null;
    if (poll(pfd, 1, left) === 0) continue;
    const n = recvFrom(fd, buf, MSG_DONTWAIT, addr, addrLen);
    if (n < 0) {
      if (-n === Errno.EAGAIN || -n === Errno.EINTR || -n === Errno.ENOBUFS) continue;
      throw new SyscallError('recvfrom', -n);
    }
    if (addr.readUInt32LE(4) !== 0) continue;
    for (const ev of decodeMessages(buf, n)) {
      if (ev.kind === 'ack' && ev.ack === ((tag + 1) >>> 0)) return ev.err;
    }
  }
}
