// The write grammar of the control files, pure: text in, typed commands out,
// RelayError('EINVAL') for anything else. No I/O, no process checks.
import { invalid } from '../errors.js';

export type ProcessCommand = { op: 'register' | 'unregister'; pid: number };

/** sysfs hands a store() at most one page; so do we. */
export const MAX_WRITE = 4096;
export const SIGRT_FIRST = 34; // glibc's SIGRTMIN: 32 and 33 belong to its threads
export const SIGRT_LAST = 64;
export const DEFAULT_SIGNAL = SIGRT_FIRST;

const TOKEN = /^(-?)([0-9]+)$/;
// Whitespace as isspace(3) sees it: space, \t, \n, \v, \f, \r.
const SPACE = /[ \t\n\v\f\r]+/;

/**
 * "123 -456\n" → [{register 123}, {unregister 456}]. Every token is checked
 * before any is returned, so a caller that applies the result is all-or-nothing.
 */
export function parseProcessesWrite(text: string, pidMax: number): ProcessCommand[] {
  if (Buffer.byteLength(text) > MAX_WRITE) throw invalid(`a write holds at most ${MAX_WRITE} bytes`);
  const tokens = text.split(SPACE).filter((t) => t.length > 0);
  if (tokens.length === 0) throw invalid('nothing to do: write a PID or -PID');
  return tokens.map((token) => {
    const m = TOKEN.exec(token);
    if (!m) throw invalid(`not a PID: ${JSON.stringify(token)}`);
    const digits = m[2]!;
    // pid_max is at most 2^22: more than 8 significant digits is out of range
    // without the risk of Number() rounding a huge string.
    const significant = digits.replace(/^0+/, '');
    const pid = significant.length > 8 ? Infinity : Number(digits);
    if (pid === 0) throw invalid('PID 0 is not a process');
    if (pid > pidMax) throw invalid(`PID ${significant.length > 12 ? significant.slice(0, 12) + '…' : significant} is above pid_max (${pidMax})`);
    return { op: m[1] === '-' ? 'unregister' : 'register', pid };
  });
}

export function renderProcesses(pids: Iterable<number>): string {
  return [...pids].join(' ') + '\n';
}

const NAME = /^(?:SIG)?RT(MIN|MAX)(?:([+-])([0-9]+))?$/i;

/**
 * A real-time signal as a number (34–64) or as `kill -l` names it:
 * SIGRTMIN, RTMIN+3, SIGRTMAX-2 (SIG optional, any case).
 */
export function parseSignal(text: string): number {
  if (Buffer.byteLength(text) > MAX_WRITE) throw invalid(`a write holds at most ${MAX_WRITE} bytes`);
  // The same white space as processes (isspace(3)), not String.trim()'s
  // Unicode set: "40\u00a0" is not a signal.
  const tokens = text.split(SPACE).filter((t) => t.length > 0);
  if (tokens.length === 0) throw invalid('nothing to do: write a signal number or name');
  if (tokens.length > 1) throw invalid('write one signal');
  const token = tokens[0]!;
  let signo: number;
  if (/^[0-9]+$/.test(token)) {
    signo = decimal(token);
  } else {
    const m = NAME.exec(token);
    if (!m) throw invalid(`not a real-time signal: ${JSON.stringify(token)}`);
    const base = m[1]!.toUpperCase() === 'MIN' ? SIGRT_FIRST : SIGRT_LAST;
    const sign = m[2];
    const n = m[3] === undefined ? 0 : decimal(m[3]);
    if (base === SIGRT_FIRST && sign === '-') throw invalid('SIGRTMIN can only be counted up (RTMIN+n)');
    if (base === SIGRT_LAST && sign === '+') throw invalid('SIGRTMAX can only be counted down (RTMAX-n)');
    signo = base === SIGRT_FIRST ? base + n : base - n;
  }
  if (!(signo >= SIGRT_FIRST && signo <= SIGRT_LAST)) {
    throw invalid(`signal must be ${SIGRT_FIRST}–${SIGRT_LAST} (SIGRTMIN..SIGRTMAX); 32 and 33 are glibc's own`);
  }
  return signo;
}

/** A string of digits as a number, leading zeros and all; Infinity when too long to matter. */
function decimal(digits: string): number {
  const significant = digits.replace(/^0+/, '');
  return significant.length > 4 ? Infinity : Number(significant || '0');
}

export function renderSignal(signo: number): string {
  return `${signo}\n`;
}
