import { describe, expect, it } from 'vitest';
import {
  interruptsRead,
  parseFdinfo,
  parseMountRows,
  parseSignalState,
  parseSyscall,
  pathInFs,
  readCall,
  type BlockedReader,
} from '../../src/events/blocked-readers.js';
import { matchInterrupted } from '../../src/events/hub.js';

// What `cat events` blocked in our read looked like, before and after SIGINT
// (taken from a real run: cat reads 128 KiB from fd 3).
const CAT_SYSCALL = '0 0x3 0x7f816f883000 0x20000 0x7f816f916b60 0xffffffff 0x0 0x7ffe550758a8 0x7f816f9ff2ad\n';
const status = (pnd: string, shd: string, blk = '0', ign = '0000000000000004', cgt = '0') =>
  `Name:\tcat\nState:\tD (disk sleep)\nSigQ:\t1/95000\nSigPnd:\t${pnd.padStart(16, '0')}\nShdPnd:\t${shd.padStart(16, '0')}\n` +
  `SigBlk:\t${blk.padStart(16, '0')}\nSigIgn:\t${ign}\nSigCgt:\t${cgt.padStart(16, '0')}\nCapInh:\t0000000000000000\n`;

describe('procfs parsing for blocked readers', () => {
  it('reads a blocked read(2) from /proc/…/syscall, and nothing from a running task or one outside a call', () => {
    const call = parseSyscall(CAT_SYSCALL);
    expect(call?.nr).toBe(0);
    expect(readCall(call!, 'x64')).toEqual({ fd: 3, count: 131072, offset: null });
    expect(parseSyscall('running\n')).toBeNull();
    expect(parseSyscall('-1 0x7ffe550758a8 0x7f816f9ff2ad\n')).toBeNull();
    // epoll_wait is no read
    expect(readCall(parseSyscall('232 0x4 0x7ffd 0x400 0xffffffff 0x0 0x0 0x7ffd 0x7f\n')!, 'x64')).toBeNull();
  });

  it('knows the positional reads and the arm64 numbers', () => {
    expect(readCall(parseSyscall('17 0x5 0x7f00 0x1000 0x2a 0x0 0x0 0x7ffd 0x7f')!, 'x64')).toEqual({ fd: 5, count: 4096, offset: 42 });
    expect(readCall(parseSyscall('19 0x5 0x7f00 0x2 0x0 0x0 0x0 0x7ffd 0x7f')!, 'x64')).toEqual({ fd: 5, count: null, offset: null });
    expect(readCall(parseSyscall('295 0x5 0x7f00 0x2 0x10 0x1 0x0 0x7ffd 0x7f')!, 'x64')).toEqual({ fd: 5, count: null, offset: 0x100000010 });
    // preadv2 with offset -1 reads at the file position
    expect(readCall(parseSyscall('327 0x5 0x7f00 0x2 0xffffffff 0xffffffff 0x0 0x7ffd 0x7f')!, 'x64')).toEqual({ fd: 5, count: null, offset: null });
    expect(readCall(parseSyscall('63 0x3 0x7f00 0x2000 0x0 0x0 0x0 0x7ffd 0x7f')!, 'arm64')).toEqual({ fd: 3, count: 8192, offset: null });
    expect(readCall(parseSyscall('63 0x3 0x7f00 0x2000 0x0 0x0 0x0 0x7ffd 0x7f')!, 'x64')).toBeNull();
  });

  it('sees a default SIGINT as interrupting (the kernel queued SIGKILL), and a blocked one as not', () => {
    expect(interruptsRead(parseSignalState(status('0', '0'))!)).toBe(false);
    expect(interruptsRead(parseSignalState(status('100', '2'))!)).toBe(true); // after SIGINT to cat
    expect(interruptsRead(parseSignalState(status('100', '0'))!)).toBe(true); // kill -9
    expect(interruptsRead(parseSignalState(status('0', '2', '2'))!)).toBe(false); // SIGINT blocked
    expect(interruptsRead(parseSignalState(status('0', '2', '0', '0000000000000006'))!)).toBe(false); // ignored
    expect(interruptsRead(parseSignalState(status('0', '2', '0', '0', '2'))!)).toBe(true); // handled: EINTR
    expect(interruptsRead(parseSignalState(status('0', '4', '0', '0'))!)).toBe(true); // SIGQUIT: dumps core
  });

  it('leaves a stop signal with its default action alone (EINTR would end a cat that should pause)', () => {
    const tstp = (1 << 19).toString(16);
    expect(interruptsRead(parseSignalState(status('0', tstp))!)).toBe(false);
    expect(interruptsRead(parseSignalState(status('0', tstp, '0', '0', tstp))!)).toBe(true); // handled
    expect(parseSignalState('Name:\tcat\n')).toBeNull();
  });

  it('reads the file position and mount from fdinfo', () => {
    expect(parseFdinfo('pos:\t101599\nflags:\t0100000\nmnt_id:\t47\nino:\t2\n')).toEqual({ pos: 101599, mntId: 47 });
    expect(parseFdinfo('flags:\t0100000\n')).toBeNull();
  });

  it('maps a /proc/…/fd link to the path inside the filesystem, through plain and bind mounts', () => {
    const rows = parseMountRows(
      [
        '47 29 0:52 / /tmp/relay\\040fork rw,nosuid,nodev,relatime shared:1 - fuse.relayfork relayfork rw,user_id=0,group_id=0',
        '48 29 0:52 /relayfork /srv/rf rw,relatime shared:1 - fuse.relayfork relayfork rw',
        '1 0 8:1 / / rw - ext4 /dev/sda1 rw',
      ].join('\n'),
    );
    expect(rows.map((r) => [r.id, r.dev, r.root, r.mountpoint, r.fstype])).toEqual([
      [47, '0:52', '/', '/tmp/relay fork', 'fuse.relayfork'],
      [48, '0:52', '/relayfork', '/srv/rf', 'fuse.relayfork'],
      [1, '8:1', '/', '/', 'ext4'],
    ]);
    expect(pathInFs('/tmp/relay fork/relayfork/events', rows[0]!)).toBe('/relayfork/events');
    expect(pathInFs('/srv/rf/events', rows[1]!)).toBe('/relayfork/events');
    expect(pathInFs('/tmp/relay forked/relayfork/events', rows[0]!)).toBeNull();
    expect(pathInFs('/home/x/events', rows[2]!)).toBe('/home/x/events');
  });
});

describe('pairing interrupted readers with waiting reads', () => {
  const reader = (pid: number, pos: number, interrupted: boolean, count: number | null = 131072): BlockedReader => ({
    pid, tid: pid, fd: 3, pos, count, interrupted,
  });
  const read = (pos: number, len = 131072) => ({ pos, len });

  it('answers the read of the one signalled reader', () => {
    const r = [read(0), read(240)];
    const m = matchInterrupted(r, [reader(1, 0, false), reader(2, 240, true)]);
    expect(m.answer.map((a) => [a.read, a.reader.pid])).toEqual([[r[1], 2]]);
    expect(m.ambiguous).toBe(0);
  });

  it('tells readers at the same offset apart by the size they asked for', () => {
    const r = [read(0, 131072), read(0, 8192)];
    const m = matchInterrupted(r, [reader(1, 0, false, 131072), reader(2, 0, true, 8192)]);
    expect(m.answer.map((a) => [a.read, a.reader.pid])).toEqual([[r[1], 2]]);
    // A read(2) larger than one request arrives in 128 KiB chunks.
    const big = matchInterrupted([read(0, 131072)], [reader(3, 0, true, 1 << 20)]);
    expect(big.answer).toHaveLength(1);
  });

  it('answers nothing where a signalled reader cannot be told from a waiting one', () => {
    const m = matchInterrupted([read(0), read(0)], [reader(1, 0, false), reader(2, 0, true)]);
    expect(m.answer).toEqual([]);
    expect(m.ambiguous).toBe(2);
    // Two reads, only one reader visible (the other in another pid namespace): wait too.
    expect(matchInterrupted([read(0), read(0)], [reader(2, 0, true)]).answer).toEqual([]);
    // Both signalled: both answered.
    expect(matchInterrupted([read(0), read(0)], [reader(1, 0, true), reader(2, 0, true)]).answer).toHaveLength(2);
  });

  it('answers nothing when no blocked reader has a signal, or none is ours', () => {
    expect(matchInterrupted([read(0)], [reader(1, 0, false)])).toEqual({ answer: [], ambiguous: 0 });
    expect(matchInterrupted([read(0)], [])).toEqual({ answer: [], ambiguous: 0 });
    expect(matchInterrupted([read(0)], [reader(1, 64, true)])).toEqual({ answer: [], ambiguous: 0 });
  });
});
