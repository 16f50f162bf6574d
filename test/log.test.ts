import { describe, expect, it } from 'vitest';
import { defaultLogFormat, prettyMessage } from '../src/log.js';

describe('log format', () => {
  it('is pretty on a terminal and JSON otherwise, unless asked', () => {
    expect(defaultLogFormat(true)).toBe('pretty');
    expect(defaultLogFormat(false)).toBe('json');
  });

  it('prints module: message', () => {
    expect(prettyMessage({ module: 'daemon', msg: 'mounted', mountpoint: '/x' }, 'msg')).toBe('daemon: mounted');
    expect(prettyMessage({ msg: 'stopping' }, 'msg')).toBe('stopping');
  });

  it('puts an expected error on the same line, and a bug\'s stack below', () => {
    const fatal = { type: 'FatalError', message: 'refusing to mount over /', stack: 'FatalError: refusing...\n    at x' };
    expect(prettyMessage({ msg: 'could not start', err: fatal }, 'msg')).toBe('could not start (refusing to mount over /)');
    const refused = { type: 'RelayError', message: 'no process 5', stack: 'RelayError: no process 5\n    at y' };
    expect(prettyMessage({ module: 'fs', msg: 'refused', err: refused }, 'msg')).toBe('fs: refused (no process 5)');
    const bug = { type: 'TypeError', message: 'oops', stack: 'TypeError: oops\n    at z (file.js:1:1)' };
    expect(prettyMessage({ module: 'fs', msg: 'unexpected failure', err: bug }, 'msg'))
      .toBe('fs: unexpected failure\n    TypeError: oops\n        at z (file.js:1:1)');
  });
});
