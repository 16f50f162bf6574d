import { describe, expect, it } from 'vitest';
import { parseProcessesWrite, parseSignal, renderProcesses, renderSignal } from '../../src/control/grammar.js';
import { errnoOf } from '../helpers/common.js';

const PID_MAX = 32768;

describe('processes write grammar', () => {
  it('reads one PID, with or without a newline', () => {
    expect(parseProcessesWrite('123\n', PID_MAX)).toEqual([{ op: 'register', pid: 123 }]);
    expect(parseProcessesWrite('123', PID_MAX)).toEqual([{ op: 'register', pid: 123 }]);
  });

  it('reads several tokens separated by any white space, in order', () => {
    expect(parseProcessesWrite(' 123\t456 \n-789\r\n', PID_MAX)).toEqual([
      { op: 'register', pid: 123 },
      { op: 'register', pid: 456 },
      { op: 'unregister', pid: 789 },
    ]);
  });

  it('reads leading zeros as decimal, so 01 is PID 1 (refused later, not misread)', () => {
    expect(parseProcessesWrite('01', PID_MAX)).toEqual([{ op: 'register', pid: 1 }]);
    expect(parseProcessesWrite('-0010', PID_MAX)).toEqual([{ op: 'unregister', pid: 10 }]);
  });

  it.each([
    ['', 'empty'],
    ['\n', 'only white space'],
    ['abc', 'not a number'],
    ['0', 'zero'],
    ['-0', 'minus zero'],
    ['+5', 'a plus sign'],
    ['12abc', 'trailing garbage (2005 read it as 12)'],
    ['--5', 'two signs'],
    ['- 5', 'a lone sign'],
    ['1.5', 'a fraction'],
    ['0x10', 'hex'],
    ['1\0', 'a NUL byte'],
    ['32769', 'above pid_max'],
    ['99999999999999999999999', 'far above pid_max'],
    ['123 12abc', 'one bad token among good ones'],
  ])('refuses %j (%s) with EINVAL', (text) => {
    expect(errnoOf(() => parseProcessesWrite(text, PID_MAX))).toBe('EINVAL');
  });

  it('accepts pid_max itself and refuses one more', () => {
    expect(parseProcessesWrite('32768', PID_MAX)).toEqual([{ op: 'register', pid: 32768 }]);
    expect(errnoOf(() => parseProcessesWrite('32769', PID_MAX))).toBe('EINVAL');
  });

  it('refuses a write of more than one page', () => {
    const page = ('1 '.repeat(2048)).slice(0, 4096);
    expect(parseProcessesWrite(page, PID_MAX)).toHaveLength(2048);
    expect(errnoOf(() => parseProcessesWrite(page + ' ', PID_MAX))).toBe('EINVAL');
  });

  it('renders PIDs separated by one space, ending in a newline; empty is a newline', () => {
    expect(renderProcesses([5, 3, 9])).toBe('5 3 9\n');
    expect(renderProcesses([])).toBe('\n');
  });
});

describe('signal grammar', () => {
  it.each([
    ['34', 34],
    ['64\n', 64],
    ['034', 34],
    ['SIGRTMIN', 34],
    ['RTMIN', 34],
    ['rtmin', 34],
    ['SIGRTMIN+3', 37],
    ['RTMIN+15', 49],
    ['SIGRTMAX', 64],
    ['RTMAX-2', 62],
    ['SIGRTMAX-14', 50],
    [' SIGRTMIN+1 \n', 35],
    ['000000040', 40],
    ['RTMIN+0000003', 37],
    ['\t\v\f\r40\r\n', 40],
  ])('reads %j as %d', (text, signo) => {
    expect(parseSignal(text)).toBe(signo);
  });

  it.each(['', '32', '33', '65', '0', '9', 'SIGUSR1', 'RTMIN+40', 'RTMIN-1', 'RTMAX+1', 'RTMAX-31', 'foo', '34 35', '+34', '-34', 'SIGRTMIN+', '34abc',
    '40\u00a0', '\u00a040', '\ufeff40', '40\u2028', '40\0', '\u0085 40', '00000000000000000000065', 'RTMIN+00000000000000000001x'])(
    'refuses %j with EINVAL',
    (text) => {
      expect(errnoOf(() => parseSignal(text))).toBe('EINVAL');
    },
  );

  it('renders the number and a newline', () => {
    expect(renderSignal(34)).toBe('34\n');
  });
});
