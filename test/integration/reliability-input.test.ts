// Bad input through the real mount. fast-check writes random byte strings (and
// structured ones built from real, dead and forbidden PIDs and signal names) to
// `processes` and `signal` with single write(2)s at random offsets; a model of
// the contract, written here at the byte level, says what each write must do:
// succeed and change the state exactly as the grammar says, or fail with the
// contract's errno and change nothing. After every write the test reads both
// files back; the daemon must still be running at the end.
//
// Runs are bounded to a few seconds; RELAYFORK_FC_RUNS=N runs N cases per
// property instead (each case is up to 10 writes), RELAYFORK_FC_SEED=S replays.
import { open, readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, ensureBuilt, startDaemon, type Daemon } from '../helpers/daemon.js';
import { forkTrue, readText, writeCtl } from '../helpers/fsio.js';
import { compileHelper } from '../helpers/native.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const RUNS = Number(process.env.RELAYFORK_FC_RUNS ?? 300);
const SEED = process.env.RELAYFORK_FC_SEED === undefined ? undefined : Number(process.env.RELAYFORK_FC_SEED);
const ALL_RT = Array.from({ length: 31 }, (_, i) => 34 + i); // receivers survive any signal setting

beforeAll(async () => {
  await Promise.all([compileHelper('receiver'), ensureBuilt()]);
}, 120_000);
afterAll(cleanupAll);

/**
 * One write(2) of `data` at `position` (null: the file offset, 0 after open),
 * the file opened without O_TRUNC. Returns null, or the error code.
 */
async function writeAt(file: string, data: Buffer, position: number | null): Promise<string | null> {
  const fh = await open(file, 'r+');
  try {
    const { bytesWritten } = await fh.write(data, 0, data.length, position);
    return bytesWritten === data.length ? null : `SHORT_WRITE ${bytesWritten}/${data.length}`;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------
// The model: the contract's grammar over bytes, as a shell user sees it.

const WS = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]); // isspace(3)

function tokensOf(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = -1;
  for (let i = 0; i <= bytes.length; i++) {
    const ws = i === bytes.length || WS.has(bytes[i]!);
    if (ws && start >= 0) {
      out.push(bytes.subarray(start, i));
      start = -1;
    } else if (!ws && start < 0) {
      start = i;
    }
  }
  return out;
}

/** Digits only (ASCII): their value, leading zeros ignored; Infinity past 15 significant digits. */
function valueOf(digits: string): number {
  const significant = digits.replace(/^0+/, '');
  return significant.length > 15 ? Infinity : Number(significant || '0');
}

interface PidWorld {
  pidMax: number;
  live: Set<number>;
  /** PIDs a registration must refuse, and how. */
  refused: Map<number, 'EPERM' | 'ESRCH'>;
}

type Outcome = { errno: string | null; list: number[] };

function modelProcesses(bytes: Buffer, list: number[], w: PidWorld): Outcome {
  const unchanged = (errno: string | null): Outcome => ({ errno, list });
  if (bytes.length === 0) return unchanged(null); // a zero-byte write never reaches a FUSE daemon
  if (bytes.length > 4096) return unchanged('EINVAL');
  const tokens = tokensOf(bytes);
  if (tokens.length === 0) return unchanged('EINVAL');
  const commands: Array<{ add: boolean; pid: number }> = [];
  for (const t of tokens) {
    const m = /^(-?)([0-9]+)$/.exec(t.toString('latin1'));
    if (!m) return unchanged('EINVAL');
    const pid = valueOf(m[2]!);
    if (pid === 0 || pid > w.pidMax) return unchanged('EINVAL');
    commands.push({ add: m[1] === '', pid });
  }
  const next = [...list];
  for (const { add, pid } of commands) {
    const at = next.indexOf(pid);
    if (!add) {
      if (at >= 0) next.splice(at, 1);
      continue;
    }
    if (at >= 0) continue;
    const refusal = w.refused.get(pid);
    if (refusal) return unchanged(refusal);
    if (!w.live.has(pid)) throw new Error(`generated a PID outside the test's world: ${pid}`);
    next.push(pid);
  }
  return { errno: null, list: next };
}

const SIGNAL_NAME = /^(?:SIG)?RT(MIN|MAX)(?:([+-])([0-9]+))?$/i;

function modelSignal(bytes: Buffer, signo: number): { errno: string | null; signo: number } {
  const unchanged = (errno: string | null) => ({ errno, signo });
  if (bytes.length === 0) return unchanged(null);
  if (bytes.length > 4096) return unchanged('EINVAL');
  const tokens = tokensOf(bytes);
  if (tokens.length !== 1) return unchanged('EINVAL');
  const token = tokens[0]!.toString('latin1');
  let n: number;
  if (/^[0-9]+$/.test(token)) {
    n = valueOf(token);
  } else {
    const m = SIGNAL_NAME.exec(token);
    if (!m) return unchanged('EINVAL');
    const min = m[1]!.toUpperCase() === 'MIN';
    const k = m[3] === undefined ? 0 : valueOf(m[3]);
    if ((min && m[2] === '-') || (!min && m[2] === '+')) return unchanged('EINVAL');
    n = min ? 34 + k : 64 - k;
  }
  return n >= 34 && n <= 64 ? { errno: null, signo: n } : unchanged('EINVAL');
}

const parseList = (text: string): number[] => text.trim().split(' ').filter(Boolean).map(Number);

// ---------------------------------------------------------------------------
// Generators

const SPACES = [' ', '\t', '\n', '\v', '\f', '\r'];
const sep = fc.array(fc.constantFrom(...SPACES), { minLength: 1, maxLength: 3 }).map((a) => a.join(''));
const zeros = fc.nat({ max: 3 }).map((n) => '0'.repeat(n));
const position = fc.oneof(
  { weight: 4, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 3, 7, 4095, 4096, 4097, 65_537, 2 ** 31 + 5, 2 ** 40) },
);

/** Random bytes, kept only if no token in them could name a PID outside `w`. */
function safeBytes(w: PidWorld, maxLength: number) {
  return fc.uint8Array({ maxLength }).map((a) => Buffer.from(a)).filter((b) =>
    tokensOf(b).every((t) => {
      const m = /^-?([0-9]+)$/.exec(t.toString('latin1'));
      if (!m || t[0] === 0x2d) return true; // not a PID, or an unregistration (harmless)
      const pid = valueOf(m[1]!);
      return pid === 0 || pid > w.pidMax || w.live.has(pid) || w.refused.has(pid);
    }),
  );
}

/** Bytes to write to `processes`. */
function processesWrite(w: PidWorld) {
  const pids = [...w.live, ...w.refused.keys()];
  const pidToken = fc
    .tuple(fc.constantFrom('', '', '-'), zeros, fc.constantFrom(...pids))
    .map(([sign, z, pid]) => `${sign}${z}${pid}`);
  const badToken = fc.constantFrom(
    '0', '-0', '000', '+5', '--5', '-', '12abc', 'abc', '0x10', '1e3', '1.0', `${w.pidMax + 1}`, `-${w.pidMax + 1}`,
    '99999999999999999999', '\u0661\u0662', '\uff15', '5\u00a0', '\u00a0', 'é', '\u2028',
  );
  const token = fc.oneof({ weight: 6, arbitrary: pidToken }, { weight: 1, arbitrary: badToken });
  const text = fc
    .tuple(fc.constantFrom('', ' ', '\n'), fc.array(fc.tuple(token, sep), { minLength: 1, maxLength: 6 }))
    .map(([lead, parts]) => lead + parts.map(([t, s]) => t + s).join(''));
  const structured = text.map((t) => Buffer.from(t, 'utf8'));
  const withNul = fc
    .tuple(structured, fc.nat(), fc.constantFrom('\0', '\0\0', '\0\n'))
    .map(([b, at, nul]) => {
      const i = at % (b.length + 1);
      return Buffer.concat([b.subarray(0, i), Buffer.from(nul, 'latin1'), b.subarray(i)]);
    });
  const padded = fc
    .tuple(structured, fc.constantFrom(4095, 4096, 4097, 5000), fc.constantFrom(' ', '\n', '0'))
    .map(([b, size, pad]) =>
      pad === '0'
        ? Buffer.concat([Buffer.from('0'.repeat(Math.max(0, size - b.length))), b]).subarray(-size) // leading zeros
        : Buffer.concat([b, Buffer.alloc(Math.max(0, size - b.length), pad)]).subarray(0, size),
    );
  return fc.oneof(
    { weight: 6, arbitrary: structured },
    { weight: 2, arbitrary: safeBytes(w, 40) },
    { weight: 1, arbitrary: withNul },
    { weight: 1, arbitrary: padded },
    { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  );
}

/** Bytes to write to `signal`. */
function signalWrite(w: PidWorld) {
  const number = fc.tuple(zeros, fc.nat({ max: 99 })).map(([z, n]) => `${z}${n}`);
  const name = fc
    .tuple(
      fc.constantFrom('', 'SIG', 'sig', 'Sig'),
      fc.constantFrom('RT', 'rt', 'Rt'),
      fc.constantFrom('MIN', 'MAX', 'min', 'Max'),
      fc.option(fc.tuple(fc.constantFrom('+', '-'), zeros, fc.nat({ max: 40 })), { nil: undefined }),
    )
    .map(([sig, rt, which, off]) => `${sig}${rt}${which}${off ? `${off[0]}${off[1]}${off[2]}` : ''}`);
  const bad = fc.constantFrom('SIGUSR1', 'RTMIN++1', 'RTMIN+', 'SIGRT', '+40', '-40', '40abc', '3 4', '\u00a040', '40\u00a0', '\ufeff40');
  const token = fc.oneof({ weight: 3, arbitrary: number }, { weight: 3, arbitrary: name }, { weight: 1, arbitrary: bad });
  const structured = fc
    .tuple(fc.constantFrom('', ' ', '\t'), fc.array(token, { minLength: 1, maxLength: 2 }), fc.constantFrom('', '\n', ' \n', '\r\n'))
    .map(([lead, toks, trail]) => Buffer.from(lead + toks.join(' ') + trail, 'utf8'));
  const withNul = fc.tuple(structured, fc.nat()).map(([b, at]) => {
    const i = at % (b.length + 1);
    return Buffer.concat([b.subarray(0, i), Buffer.from([0]), b.subarray(i)]);
  });
  const padded = fc
    .tuple(structured, fc.constantFrom(4096, 4097))
    .map(([b, size]) => Buffer.concat([b, Buffer.alloc(Math.max(0, size - b.length), ' ')]).subarray(0, size));
  return fc.oneof(
    { weight: 6, arbitrary: structured },
    { weight: 2, arbitrary: safeBytes(w, 24) },
    { weight: 1, arbitrary: withNul },
    { weight: 1, arbitrary: padded },
    { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  );
}

const show = (b: Buffer): string => (b.length > 80 ? `${JSON.stringify(b.subarray(0, 80).toString('latin1'))}… (${b.length} bytes)` : JSON.stringify(b.toString('latin1')));

// ---------------------------------------------------------------------------

describe('bad input through the real mount (fast-check)', () => {
  let d: Daemon;
  let receivers: Receiver[];
  let world: PidWorld;

  beforeAll(async () => {
    d = await startDaemon();
    receivers = await Promise.all(Array.from({ length: 4 }, () => startReceiver(ALL_RT)));
    // ESRCH: a thread of this process is not a process, and, unlike a dead PID
    // (pid_max may be 32768 and other storms on the host recycle PIDs within
    // seconds), it cannot turn into someone else's process mid-test.
    const thread = (await readdir('/proc/self/task')).map(Number).find((t) => t !== process.pid);
    if (thread === undefined) throw new Error('this process has no other thread');
    const pidMax = Number((await readFile('/proc/sys/kernel/pid_max', 'utf8')).trim());
    world = {
      pidMax,
      live: new Set(receivers.map((r) => r.pid)),
      refused: new Map<number, 'EPERM' | 'ESRCH'>([
        [1, 'EPERM'],
        [2, 'EPERM'], // kthreadd
        [d.pid, 'EPERM'],
        [thread, 'ESRCH'],
      ]),
    };
  }, 60_000);
  afterAll(cleanupAll);

  it('every write to processes does what the grammar says, or fails with its errno and changes nothing', async () => {
    const file = path.join(d.dir, 'processes');
    let writes = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(processesWrite(world), position), { minLength: 1, maxLength: 10 }), async (steps) => {
        let list = parseList(await readText(file));
        for (const [bytes, pos] of steps) {
          const want = modelProcesses(bytes, list, world);
          const err = await writeAt(file, bytes, pos);
          const got = parseList(await readText(file));
          writes++;
          expect({ write: show(bytes), pos, err, list: got }).toEqual({ write: show(bytes), pos, err: want.errno, list: want.list });
          list = got;
        }
      }),
      { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
    );
    expect(writes).toBeGreaterThan(RUNS);
    expect(d.exitInfo()).toBeNull();
    // Still relaying to whoever the last case left registered.
    const registered = parseList(await readText(file));
    const child = await forkTrue();
    for (const r of receivers.filter((x) => registered.includes(x.pid))) {
      await r.waitFor((s) => s.some((x) => x.value === child));
    }
  }, 120_000);

  it('every write to signal does what the grammar says, or fails with EINVAL and changes nothing', async () => {
    const file = path.join(d.dir, 'signal');
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(signalWrite(world), position), { minLength: 1, maxLength: 10 }), async (steps) => {
        let signo = Number((await readText(file)).trim());
        for (const [bytes, pos] of steps) {
          const want = modelSignal(bytes, signo);
          const err = await writeAt(file, bytes, pos);
          const got = await readText(file);
          expect({ write: show(bytes), pos, err, signal: got }).toEqual({ write: show(bytes), pos, err: want.errno, signal: `${want.signo}\n` });
          signo = want.signo;
        }
      }),
      { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
    );
    expect(d.exitInfo()).toBeNull();
  }, 120_000);

  it('handles the edges by name: empty writes, odd offsets, 4096 and 4097 bytes, NUL bytes', async () => {
    const p = path.join(d.dir, 'processes');
    const s = path.join(d.dir, 'signal');
    const [a, b] = [receivers[0]!.pid, receivers[1]!.pid];
    expect(await writeCtl(p, `-${a} -${b} ${[...world.live].map((x) => `-${x}`).join(' ')}\n`)).toBeNull();
    expect(await readText(p)).toBe('\n');

    // A zero-byte write succeeds without reaching the daemon, at any offset.
    for (const pos of [null, 0, 1, 4097]) expect(await writeAt(p, Buffer.alloc(0), pos)).toBeNull();
    expect(await readText(p)).toBe('\n');
    // The offset of a write does not matter: each write(2) is one command, as in sysfs.
    expect(await writeAt(p, Buffer.from(`${a}\n`), 1)).toBeNull();
    expect(await writeAt(p, Buffer.from(`${b}`), 4095)).toBeNull();
    expect(await writeAt(p, Buffer.from(`-${a}`), 2 ** 31 + 5)).toBeNull();
    expect(await readText(p)).toBe(`${b}\n`);
    // 4096 bytes is one page and works; 4097 is refused whole, also at an offset.
    const page = (t: string, n: number) => Buffer.from(t.padEnd(n, ' '));
    expect(await writeAt(p, page(`${a}`, 4096), 0)).toBeNull();
    expect(await writeAt(p, page(`-${a}`, 4097), 0)).toBe('EINVAL');
    expect(await writeAt(p, page(`-${a}`, 4097), 4096)).toBe('EINVAL');
    expect(await readText(p)).toBe(`${b} ${a}\n`);
    // NUL is not white space: a token holding one is not a PID.
    for (const bad of [`${a}\0`, `\0${a}`, `-${b}\0\n`, '\0', `${a}\0${b}`]) {
      expect({ bad, err: await writeAt(p, Buffer.from(bad, 'latin1'), null) }).toEqual({ bad, err: 'EINVAL' });
    }
    expect(await readText(p)).toBe(`${b} ${a}\n`);

    expect(await writeAt(s, page('40', 4096), 3)).toBeNull();
    expect(await readText(s)).toBe('40\n');
    expect(await writeAt(s, page('41', 4097), 0)).toBe('EINVAL');
    expect(await writeAt(s, Buffer.from('41\0'), 0)).toBe('EINVAL');
    expect(await writeAt(s, Buffer.alloc(0), 0)).toBeNull();
    expect(await readText(s)).toBe('40\n');
    expect(d.exitInfo()).toBeNull();
  });
});

describe('dangerous targets', () => {
  afterEach(cleanupAll);

  it('refuses PID 1, a kernel thread and the daemon itself with EPERM however the PID is written', async () => {
    const d = await startDaemon();
    const r = await startReceiver(34);
    const p = path.join(d.dir, 'processes');
    expect(await writeCtl(p, `${r.pid}\n`)).toBeNull();

    const spellings = (pid: number) => [
      `${pid}`, `${pid}\n`, `0${pid}`, `0${pid}\n`, ` ${pid} `, ` ${pid} \n`, `\t${pid}\r\n`, `${pid}\n\n`,
      `\v\f${pid}`, `${'0'.repeat(20)}${pid}`, `0000${pid}\n`,
    ];
    for (const pid of [1, 2, d.pid]) {
      for (const text of spellings(pid)) {
        expect({ text, err: await writeCtl(p, text) }).toEqual({ text, err: 'EPERM' });
      }
      // Beside a good registration, in either order: nothing changes.
      for (const text of [`${r.pid} ${pid}`, `0${pid} ${r.pid}\n`, `-${r.pid} 0${pid}`]) {
        expect({ text, err: await writeCtl(p, text) }).toEqual({ text, err: 'EPERM' });
      }
    }
    // A thread of the daemon is not a process at all.
    const tids = (await readdir(`/proc/${d.pid}/task`)).map(Number).filter((t) => t !== d.pid);
    expect(tids.length).toBeGreaterThan(0);
    for (const tid of tids.slice(0, 3)) {
      expect({ tid, err: await writeCtl(p, `${tid}\n`) }).toEqual({ tid, err: 'ESRCH' });
    }
    expect(await readText(p)).toBe(`${r.pid}\n`);
    expect(d.exitInfo()).toBeNull();
    // And it still relays.
    const child = await forkTrue();
    await r.waitFor((s) => s.some((x) => x.value === child));
  });
});
