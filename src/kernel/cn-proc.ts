// The kernel's proc connector: byte layouts and a pure decoder.
// Each struct is written above its layout as include/uapi/linux/{netlink,connector,cn_proc}.h
// declare it; all fields are host-endian (little-endian on the machines we run on).

export const CN_IDX_PROC = 1;
export const CN_VAL_PROC = 1;
export const PROC_CN_MCAST_LISTEN = 1;
export const PROC_CN_MCAST_IGNORE = 2;

export const PROC_EVENT_NONE = 0x0;
export const PROC_EVENT_FORK = 0x1;
export const PROC_EVENT_EXIT = 0x80000000;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

// struct nlmsghdr {
//   __u32 nlmsg_len;    // 0  length including this header
//   __u16 nlmsg_type;   // 4
//   __u16 nlmsg_flags;  // 6
//   __u32 nlmsg_seq;    // 8
//   __u32 nlmsg_pid;    // 12 sender port: 0 for the kernel
// };                    // 16
export const NLMSG_HDRLEN = 16;
export const nlmsgAlign = (len: number): number => (len + 3) & ~3;

// struct cn_msg {
//   struct cb_id { __u32 idx; __u32 val; } id;  // 0, 4
//   __u32 seq;                                   // 8
//   __u32 ack;                                   // 12
//   __u16 len;                                   // 16 length of data[]
//   __u16 flags;                                 // 18
//   __u8  data[];                                // 20
// };
export const CN_MSG_HDRLEN = 20;

// struct proc_event {
//   enum proc_cn_event what;   // 0
//   __u32 cpu;                 // 4
//   __u64 timestamp_ns;        // 8 (aligned(8))
//   union {                    // 16
//     struct { __u32 err; } ack;
//     struct fork_proc_event {
//       __kernel_pid_t parent_pid;   // 16
//       __kernel_pid_t parent_tgid;  // 20
//       __kernel_pid_t child_pid;    // 24
//       __kernel_pid_t child_tgid;   // 28
//     } fork;
//     struct exit_proc_event {
//       __kernel_pid_t process_pid;  // 16
//       __kernel_pid_t process_tgid; // 20
//       __u32 exit_code, exit_signal;// 24, 28
//       __kernel_pid_t parent_pid;   // 32
//       __kernel_pid_t parent_tgid;  // 36
//     } exit;
//     ...
//   } event_data;
// };
export const PROC_EVENT_HDRLEN = 16;
const FORK_DATA_LEN = 16;
const ACK_DATA_LEN = 4;
const EXIT_DATA_LEN = 24;

// struct proc_input {            (kernel >= 6.6; before, a bare __u32 op)
//   enum proc_cn_mcast_op mcast_op;  // 0
//   enum proc_cn_event event_type;   // 4 mask of events to deliver
// };

export type ProcEvent =
  | { kind: 'fork'; parentPid: number; parentTgid: number; childPid: number; childTgid: number }
  | { kind: 'ack'; err: number; seq: number; ack: number }
  | { kind: 'exit'; pid: number; tgid: number; exitCode: number }
  | { kind: 'other'; what: number }
  | { kind: 'overrun' }
  | { kind: 'error'; errno: number }
  | { kind: 'foreign'; idx: number; val: number }
  | { kind: 'truncated'; offset: number; reason: string };

/**
 * Decodes every netlink message in buf[0, length). Never throws: a message too
 * short for what it claims ends the walk with a `truncated` entry.
 */
export function decodeMessages(buf: Buffer, length: number = buf.length): ProcEvent[] {
  const events: ProcEvent[] = [];
  const end = Math.min(length, buf.length);
  let off = 0;
  while (off < end) {
    if (end - off < NLMSG_HDRLEN) {
      events.push({ kind: 'truncated', offset: off, reason: 'short netlink header' });
      break;
    }
    const len = buf.readUInt32LE(off);
    const type = buf.readUInt16LE(off + 4);
    if (len < NLMSG_HDRLEN || off + len > end) {
      events.push({ kind: 'truncated', offset: off, reason: `netlink length ${len} does not fit` });
      break;
    }
    const here = off;
    off += nlmsgAlign(len); // step first: nothing below may skip it
    const body = here + NLMSG_HDRLEN;
    const bodyLen = len - NLMSG_HDRLEN;
    if (type === NLMSG_NOOP) continue;
    if (type === NLMSG_OVERRUN) {
      events.push({ kind: 'overrun' });
      continue;
    }
    if (type === NLMSG_ERROR) {
      // struct nlmsgerr { int error; struct nlmsghdr msg; }: error is negative or 0.
      if (bodyLen < 4) {
        events.push({ kind: 'truncated', offset: here, reason: 'short nlmsgerr' });
        break;
      }
      events.push({ kind: 'error', errno: -buf.readInt32LE(body) });
      continue;
    }
    const decoded = decodeConnector(buf, body, bodyLen, here);
    events.push(decoded);
    if (decoded.kind === 'truncated') break;
  }
  return events;
}

function decodeConnector(buf: Buffer, at: number, avail: number, msgOffset: number): ProcEvent {
  if (avail < CN_MSG_HDRLEN) return { kind: 'truncated', offset: msgOffset, reason: 'short cn_msg' };
  const idx = buf.readUInt32LE(at);
  const val = buf.readUInt32LE(at + 4);
  if (idx !== CN_IDX_PROC || val !== CN_VAL_PROC) return { kind: 'foreign', idx, val };
  const seq = buf.readUInt32LE(at + 8);
  const ack = buf.readUInt32LE(at + 12);
  const dataLen = buf.readUInt16LE(at + 16);
  const ev = at + CN_MSG_HDRLEN;
  if (dataLen > avail - CN_MSG_HDRLEN || dataLen < PROC_EVENT_HDRLEN) {
    return { kind: 'truncated', offset: msgOffset, reason: `cn_msg data length ${dataLen}` };
  }
  const what = buf.readUInt32LE(ev);
  const data = ev + PROC_EVENT_HDRLEN;
  const have = dataLen - PROC_EVENT_HDRLEN;
  switch (what) {
    case PROC_EVENT_FORK:
      if (have < FORK_DATA_LEN) return { kind: 'truncated', offset: msgOffset, reason: 'short fork event' };
      return {
        kind: 'fork',
        parentPid: buf.readInt32LE(data),
        parentTgid: buf.readInt32LE(data + 4),
        childPid: buf.readInt32LE(data + 8),
        childTgid: buf.readInt32LE(data + 12),
      };
    case PROC_EVENT_NONE:
      if (have < ACK_DATA_LEN) return { kind: 'truncated', offset: msgOffset, reason: 'short ack' };
      return { kind: 'ack', err: buf.readUInt32LE(data), seq, ack };
    case PROC_EVENT_EXIT:
      if (have < EXIT_DATA_LEN) return { kind: 'truncated', offset: msgOffset, reason: 'short exit event' };
      return { kind: 'exit', pid: buf.readInt32LE(data), tgid: buf.readInt32LE(data + 4), exitCode: buf.readUInt32LE(data + 8) };
    default:
      return { kind: 'other', what };
  }
}

/**
 * The subscription request: nlmsghdr + cn_msg + either the 8-byte proc_input
 * (op and event mask; kernel >= 6.6 filters per socket) or the plain 4-byte op.
 */
export function encodeSubscribe(op: number, opts: { eventMask?: number; seq?: number; portId?: number } = {}): Buffer {
  const withFilter = opts.eventMask !== undefined;
  const dataLen = withFilter ? 8 : 4;
  const total = NLMSG_HDRLEN + CN_MSG_HDRLEN + dataLen;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(total, 0);
  b.writeUInt16LE(NLMSG_DONE, 4);
  b.writeUInt16LE(0, 6);
  b.writeUInt32LE(opts.seq ?? 0, 8);
  b.writeUInt32LE(opts.portId ?? 0, 12);
  const cn = NLMSG_HDRLEN;
  b.writeUInt32LE(CN_IDX_PROC, cn);
  b.writeUInt32LE(CN_VAL_PROC, cn + 4);
  b.writeUInt32LE(opts.seq ?? 0, cn + 8);
  b.writeUInt32LE(0, cn + 12);
  b.writeUInt16LE(dataLen, cn + 16);
  b.writeUInt16LE(0, cn + 18);
  b.writeUInt32LE(op, cn + CN_MSG_HDRLEN);
  if (withFilter) b.writeUInt32LE(opts.eventMask! >>> 0, cn + CN_MSG_HDRLEN + 4);
  return b;
}

// struct sockaddr_nl { __kernel_sa_family_t nl_family; unsigned short nl_pad; __u32 nl_pid; __u32 nl_groups; };
export const SOCKADDR_NL_LEN = 12;
export function encodeSockaddrNl(groups: number, portId = 0): Buffer {
  const b = Buffer.alloc(SOCKADDR_NL_LEN);
  b.writeUInt16LE(16 /* AF_NETLINK */, 0);
  b.writeUInt32LE(portId, 4);
  b.writeUInt32LE(groups, 8);
  return b;
}

/**
 * The hot path's shortcut, allocation-free: the kernel sends each event in a
 * datagram of its own, so most reads hold exactly one fork message. When the
 * first n bytes of `words` are that, writes [parentTgid, childPid, childTgid]
 * into `out` and returns true; for anything else returns false, and the
 * caller decodes with decodeMessages (which gives the same fields for this
 * case: see its tests).
 *
 * `words` is an Int32Array over the receive buffer (4-aligned, as netlink
 * aligns every message): one typed-array load per field, where Buffer's
 * readUInt32LE validates its offset through a wrapper that allocates.
 * Offsets below are byte offsets / 4 into the layouts above.
 */
export function readLoneFork(words: Int32Array, n: number, out: Int32Array): boolean {
  if (n < LONE_FORK_LEN || words[0] !== n) return false; // nlmsg_len: one message, long enough
  if ((words[1]! & 0xffff) !== NLMSG_DONE) return false; // nlmsg_type
  if (words[4] !== CN_IDX_PROC || words[5] !== CN_VAL_PROC) return false; // cn_msg.id
  const dataLen = words[8]! & 0xffff; // cn_msg.len
  if (dataLen < PROC_EVENT_HDRLEN + FORK_DATA_LEN || dataLen > n - NLMSG_HDRLEN - CN_MSG_HDRLEN) return false;
  if (words[9] !== PROC_EVENT_FORK) return false; // proc_event.what
  out[0] = words[14]!; // fork.parent_tgid
  out[1] = words[15]!; // fork.child_pid
  out[2] = words[16]!; // fork.child_tgid
  return true;
}
const LONE_FORK_LEN = NLMSG_HDRLEN + CN_MSG_HDRLEN + PROC_EVENT_HDRLEN + FORK_DATA_LEN;
