import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AF_UNIX, bind, close, MSG_DONTWAIT, recvFrom, SOCK_CLOEXEC, SOCK_DGRAM, socket } from '../src/kernel/syscalls.js';
import { encodeSockaddrUn, sdNotify } from '../src/sd-notify.js';

describe('sd_notify', () => {
  it('encodes a path with its NUL, and an @abstract name with a leading NUL', () => {
    const p = encodeSockaddrUn('/run/systemd/notify');
    expect(p.readUInt16LE(0)).toBe(AF_UNIX);
    expect(p.subarray(2).toString('latin1')).toBe('/run/systemd/notify\0');
    const a = encodeSockaddrUn('@sd-notify-1');
    expect(a.subarray(2).toString('latin1')).toBe('\0sd-notify-1');
    expect(() => encodeSockaddrUn(`/${'x'.repeat(120)}`)).toThrow(/too long/);
  });

  it('does nothing without a unix NOTIFY_SOCKET', () => {
    expect(sdNotify('READY=1', {})).toBe(false);
    expect(sdNotify('READY=1', { NOTIFY_SOCKET: '' })).toBe(false);
    expect(sdNotify('READY=1', { NOTIFY_SOCKET: 'vsock:2:1234' })).toBe(false);
  });

  for (const kind of ['path', 'abstract'] as const) {
    it(`sends one datagram to a ${kind} socket`, async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'relayfork-sdn-'));
      const name = kind === 'path' ? path.join(dir, 'notify') : `@relayfork-test-${process.pid}-${Date.now()}`;
      const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      try {
        bind(fd, encodeSockaddrUn(name));
        expect(sdNotify('READY=1\nSTATUS=serving /x', { NOTIFY_SOCKET: name })).toBe(true);
        const buf = Buffer.alloc(256);
        const n = recvFrom(fd, buf, MSG_DONTWAIT, Buffer.alloc(112), new Uint32Array(1));
        expect(buf.toString('utf8', 0, Math.max(n, 0))).toBe('READY=1\nSTATUS=serving /x');
      } finally {
        close(fd);
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it('throws when nobody listens (the CLI logs it and goes on)', () => {
    expect(() => sdNotify('READY=1', { NOTIFY_SOCKET: `/nonexistent-${process.pid}/notify` })).toThrow(/sendto/);
  });
});
