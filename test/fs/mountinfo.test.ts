import { describe, expect, it } from 'vitest';
import { parseMountinfo, unescapeMountPath } from '../../src/fs/mount.js';
import { toErrno } from '../../src/fs/mount.js';
import { RelayError } from '../../src/errors.js';
import { pino } from 'pino';

describe('mountinfo', () => {
  it('unescapes the octal escapes the kernel writes for space, tab, newline and backslash', () => {
    expect(unescapeMountPath('/tmp/a\\040b\\011c\\012d\\134e')).toBe('/tmp/a b\tc\nd\\e');
  });

  it('reads the mount point and the filesystem type after the separator', () => {
    const text = [
      '36 35 98:0 / /mnt/one rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
      '90 24 0:50 / /tmp/x\\040y rw,nosuid,nodev,relatime shared:5 - fuse.relayfork relayfork rw,user_id=0,group_id=0,default_permissions,allow_other',
      '',
    ].join('\n');
    expect(parseMountinfo(text)).toEqual([
      { mountpoint: '/mnt/one', fstype: 'ext3' },
      { mountpoint: '/tmp/x y', fstype: 'fuse.relayfork' },
    ]);
  });
});

describe('errno adapter', () => {
  const log = pino({ level: 'silent' });
  it('maps a typed error by its code, negated', () => {
    expect(toErrno(new RelayError('EINVAL', 'x'), log, 'write', '/p')).toBe(-22);
    expect(toErrno(new RelayError('ESRCH', 'x'), log, 'write', '/p')).toBe(-3);
    expect(toErrno(new RelayError('EPERM', 'x'), log, 'write', '/p')).toBe(-1);
  });
  it('maps anything unexpected to EIO, whatever errno it carries', () => {
    const sys = Object.assign(new Error('boom'), { errno: -2, code: 'ENOENT' });
    expect(toErrno(sys, log, 'read', '/p')).toBe(-5);
    expect(toErrno('not even an error', log, 'read', '/p')).toBe(-5);
  });
});
