import { describe, expect, it } from 'vitest';
import {
  decodeMessages,
  encodeSockaddrNl,
  encodeSubscribe,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  PROC_CN_MCAST_LISTEN,
  PROC_EVENT_EXIT,
  PROC_EVENT_FORK,
  PROC_EVENT_NONE,
  readLoneFork,
} from '../../src/kernel/cn-proc.js';

// Hand-built messages, laid out as the kernel sends them (see the struct
// comments in src/kernel/cn-proc.ts).
function nlmsg(type: number, body: Buffer, pad = true): Buffer {
  const len = 16 + body.length;
  const h = Buffer.alloc(16);
  h.writeUInt32LE(len, 0);
  h.writeUInt16LE(type, 4);
  const padded = pad ? Buffer.alloc((len + 3) & ~3) : Buffer.alloc(len);
  Buffer.concat([h, body]).copy(padded);
  return padded;
}

function cnMsg(data: Buffer, { idx = 1, val = 1, seq = 0, ack = 0 } = {}): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32LE(idx, 0);
  h.writeUInt32LE(val, 4);
  h.writeUInt32LE(seq, 8);
  h.writeUInt32LE(ack, 12);
  h.writeUInt16LE(data.length, 16);
  return Buffer.concat([h, data]);
}

function procEvent(what: number, fields: number[]): Buffer {
  const b = Buffer.alloc(16 + 24); // the union is 24 bytes at least
  b.writeUInt32LE(what >>> 0, 0);
  b.writeUInt32LE(1, 4); // cpu
  b.writeBigUInt64LE(123456789n, 8);
  fields.forEach((f, i) => b.writeInt32LE(f, 16 + 4 * i));
  return b;
}

const fork = (parentPid: number, parentTgid: number, childPid: number, childTgid: number): Buffer =>
  nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_FORK, [parentPid, parentTgid, childPid, childTgid])));

describe('proc connector decoder', () => {
  it('decodes a fork event', () => {
    expect(decodeMessages(fork(100, 100, 200, 200))).toEqual([
      { kind: 'fork', parentPid: 100, parentTgid: 100, childPid: 200, childTgid: 200 },
    ]);
  });

  it('decodes a new thread as a fork whose child pid differs from its tgid', () => {
    expect(decodeMessages(fork(7, 7, 301, 300))).toEqual([
      { kind: 'fork', parentPid: 7, parentTgid: 7, childPid: 301, childTgid: 300 },
    ]);
  });

  it('decodes an ack with its error, seq and ack fields', () => {
    const ack = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_NONE, [1]), { seq: 9, ack: 43 }));
    expect(decodeMessages(ack)).toEqual([{ kind: 'ack', err: 1, seq: 9, ack: 43 }]);
  });

  it('decodes an exit event', () => {
    const exit = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_EXIT, [55, 55, 256, 17, 1, 1])));
    expect(decodeMessages(exit)).toEqual([{ kind: 'exit', pid: 55, tgid: 55, exitCode: 256 }]);
  });

  it('skips no-op messages and reports other events, overruns and errors', () => {
    const err = Buffer.alloc(4);
    err.writeInt32LE(-105, 0);
    const buf = Buffer.concat([
      nlmsg(NLMSG_NOOP, Buffer.alloc(0)),
      nlmsg(NLMSG_DONE, cnMsg(procEvent(0x2 /* exec */, [5, 5]))),
      nlmsg(NLMSG_OVERRUN, Buffer.alloc(0)),
      nlmsg(NLMSG_ERROR, err),
    ]);
    expect(decodeMessages(buf)).toEqual([{ kind: 'other', what: 2 }, { kind: 'overrun' }, { kind: 'error', errno: 105 }]);
  });

  it('decodes several messages in one buffer, each at its aligned offset', () => {
    // A 3-byte tail makes the first message's length unaligned: the walk must
    // step to the next 4-byte boundary, not to the raw length.
    const odd = nlmsg(NLMSG_DONE, Buffer.concat([cnMsg(procEvent(PROC_EVENT_FORK, [1, 1, 2, 2])), Buffer.from([9, 9, 9])]));
    expect(odd.readUInt32LE(0) % 4).not.toBe(0);
    const buf = Buffer.concat([odd, fork(3, 3, 4, 4), fork(5, 5, 6, 6)]);
    expect(decodeMessages(buf).map((e) => (e.kind === 'fork' ? e.childPid : e.kind))).toEqual([2, 4, 6]);
  });

  it('ignores messages of other connector users', () => {
    const other = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_FORK, [1, 1, 2, 2]), { idx: 7, val: 1 }));
    expect(decodeMessages(Buffer.concat([other, fork(8, 8, 9, 9)]))).toEqual([
      { kind: 'foreign', idx: 7, val: 1 },
      { kind: 'fork', parentPid: 8, parentTgid: 8, childPid: 9, childTgid: 9 },
    ]);
  });

  it('rejects a buffer shorter than a netlink header', () => {
    expect(decodeMessages(Buffer.alloc(10))).toEqual([{ kind: 'truncated', offset: 0, reason: 'short netlink header' }]);
  });

  it('rejects a message whose length runs past the buffer, keeping what came before', () => {
    const whole = fork(1, 1, 2, 2);
    const buf = Buffer.concat([whole, fork(3, 3, 4, 4).subarray(0, 40)]);
    const events = decodeMessages(buf);
    expect(events[0]).toMatchObject({ kind: 'fork', childPid: 2 });
    expect(events[1]).toMatchObject({ kind: 'truncated', offset: whole.length });
    expect(events).toHaveLength(2);
  });

  it('rejects a length field smaller than the header instead of looping forever', () => {
    const b = Buffer.alloc(32);
    b.writeUInt32LE(0, 0);
    expect(decodeMessages(b)).toEqual([{ kind: 'truncated', offset: 0, reason: 'netlink length 0 does not fit' }]);
  });

  it('rejects a fork event whose data is cut short', () => {
    const short = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_FORK, [1, 1, 2, 2]).subarray(0, 24)));
    expect(decodeMessages(short)).toEqual([{ kind: 'truncated', offset: 0, reason: 'short fork event' }]);
  });

  it('rejects a cn_msg whose data length claims more than the message holds', () => {
    const m = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_FORK, [1, 1, 2, 2])));
    m.writeUInt16LE(500, 16 + 16);
    expect(decodeMessages(m)).toEqual([{ kind: 'truncated', offset: 0, reason: 'cn_msg data length 500' }]);
  });

  it('decodes only the given length of a larger receive buffer', () => {
    const buf = Buffer.alloc(4096);
    const one = fork(1, 1, 2, 2);
    one.copy(buf);
    expect(decodeMessages(buf, one.length)).toHaveLength(1);
  });
});

describe('proc connector requests', () => {
  it('encodes the plain 4-byte LISTEN', () => {
    const b = encodeSubscribe(PROC_CN_MCAST_LISTEN);
    expect(b.length).toBe(40);
    expect(b.readUInt32LE(0)).toBe(40);
    expect(b.readUInt16LE(4)).toBe(NLMSG_DONE);
    expect([b.readUInt32LE(16), b.readUInt32LE(20)]).toEqual([1, 1]); // CN_IDX_PROC, CN_VAL_PROC
    expect(b.readUInt16LE(32)).toBe(4);
    expect(b.readUInt32LE(36)).toBe(PROC_CN_MCAST_LISTEN);
  });

  it('encodes the 8-byte proc_input with an event mask', () => {
    const b = encodeSubscribe(PROC_CN_MCAST_LISTEN, { eventMask: PROC_EVENT_FORK });
    expect(b.length).toBe(44);
    expect(b.readUInt16LE(32)).toBe(8);
    expect([b.readUInt32LE(36), b.readUInt32LE(40)]).toEqual([PROC_CN_MCAST_LISTEN, PROC_EVENT_FORK]);
  });

  it('encodes sockaddr_nl for the proc group', () => {
    expect([...encodeSockaddrNl(1)]).toEqual([16, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
  });
});

describe('the lone-fork shortcut', () => {
  const out = new Int32Array(3);
  /** The bytes in a 4-aligned buffer of their own, as the receive buffer is. */
  const words = (b: Buffer): Int32Array => {
    const ab = new ArrayBuffer((b.length + 3) & ~3);
    new Uint8Array(ab).set(b);
    return new Int32Array(ab);
  };

  it('reads a datagram of one fork message as the decoder does', () => {
    for (const [pp, pt, cp, ct] of [[100, 100, 200, 200], [7, 7, 301, 300], [1, 1, 2147483647, 2147483647]]) {
      const b = fork(pp!, pt!, cp!, ct!);
      expect(readLoneFork(words(b), b.length, out)).toBe(true);
      const [ev] = decodeMessages(b);
      expect(ev).toEqual({ kind: 'fork', parentPid: pp, parentTgid: out[0], childPid: out[1], childTgid: out[2] });
    }
  });

  it('declines everything else, so the decoder handles it', () => {
    const two = Buffer.concat([fork(1, 1, 2, 2), fork(3, 3, 4, 4)]);
    const ack = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_NONE, [0])));
    const foreign = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_FORK, [1, 1, 2, 2]), { idx: 7 }));
    const exit = nlmsg(NLMSG_DONE, cnMsg(procEvent(PROC_EVENT_EXIT, [5, 5, 0, 17, 1, 1])));
    const short = fork(1, 1, 2, 2).subarray(0, 60);
    const lying = fork(1, 1, 2, 2);
    lying.writeUInt16LE(500, 16 + 16); // cn_msg.len claims more than there is
    const notDone = nlmsg(NLMSG_ERROR, cnMsg(procEvent(PROC_EVENT_FORK, [1, 1, 2, 2]))); // not NLMSG_DONE
    for (const b of [two, ack, foreign, exit, short, lying, notDone, Buffer.alloc(0)]) {
      expect(readLoneFork(words(b), b.length, out)).toBe(false);
    }
  });
});
