#!/usr/bin/env node
// Soak: runs the built daemon on a temporary mount for a set time under a steady
// fork storm with bursts, while registrants come and go (some of them stuck for a
// while, never reading), and reports the daemon's RSS over time, forks made and
// seen, signals sent, received, dropped and forks lost. RSS must not grow: the
// run fails if it rises by more than --max-growth-mb between the first and the
// last third of the run (after a warm-up). Every eighth registrant leaves its
// signals unread for STUCK_S seconds (the daemon should hold it, then let it go).
//
//   node scripts/soak.mjs [--seconds 600] [--rate 3000] [--registrants 4] [--churn-ms 1000]
//                         [--burst-every 60] [--burst-forks 20000] [--sample-s N]
//                         [--max-growth-mb 32] [--json]
//
// RELAYFORK_SOAK_SECONDS sets the default duration (CI runs a short soak). Needs
// root, /dev/fuse, the proc connector and cc; builds dist/ and the C helpers
// (test/helpers/*.c) when they are missing or stale. Exit status 0 when RSS held.
import { execFile, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HELPERS = path.join(ROOT, 'test', 'helpers');
const BIN = path.join(HELPERS, 'bin');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** How long a stuck registrant leaves its signals unread: past the daemon's 2 s bound. */
const STUCK_S = 4;
const HELD = 'registrant is not taking its signals; not queueing to it until it drains';
const DRAINED = 'registrant has drained its signals; queueing to it again';

function options() {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      rate: { type: 'string', default: '3000' },
      registrants: { type: 'string', default: '4' },
      'churn-ms': { type: 'string', default: '1000' },
      'burst-every': { type: 'string', default: '60' },
      'burst-forks': { type: 'string', default: '20000' },
      'sample-s': { type: 'string' },
      'max-growth-mb': { type: 'string', default: '32' },
      json: { type: 'boolean', default: false },
    },
  });
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number`);
    return n;
  };
  const seconds = num('seconds', values.seconds ?? process.env.RELAYFORK_SOAK_SECONDS ?? 600);
  return {
    seconds,
    rate: num('rate', values.rate),
    registrants: Math.max(1, num('registrants', values.registrants)),
    churnMs: Math.max(50, num('churn-ms', values['churn-ms'])),
    burstEvery: num('burst-every', values['burst-every']),
    burstForks: num('burst-forks', values['burst-forks']),
    sampleS: values['sample-s'] !== undefined ? num('sample-s', values['sample-s']) : Math.min(30, Math.max(1, seconds / 30)),
    maxGrowthMb: num('max-growth-mb', values['max-growth-mb']),
    json: values.json,
  };
}

// ---------------------------------------------------------------------------
// Building

async function mtime(file) {
  try {
    return (await stat(file)).mtimeMs;
  } catch {
    return null;
  }
}

async function newestSource(dir) {
  let newest = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts')) continue;
    newest = Math.max(newest, (await mtime(path.join(e.parentPath ?? e.path, e.name))) ?? 0);
  }
  return newest;
}

async function buildDaemon() {
  const dist = await mtime(path.join(ROOT, 'dist', 'cli.js'));
  if (dist !== null && dist >= (await newestSource(path.join(ROOT, 'src')))) return;
  await execFileAsync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: ROOT });
}

async function buildHelper(name) {
  const src = path.join(HELPERS, `${name}.c`);
  const out = path.join(BIN, name);
  const [s, b] = [await mtime(src), await mtime(out)];
  if (b !== null && s !== null && b >= s) return out;
  await mkdir(BIN, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  await execFileAsync('cc', ['-O2', '-Wall', '-o', tmp, src]);
  await rename(tmp, out);
  return out;
}

// ---------------------------------------------------------------------------
// Processes

const children = new Set();

function track(proc) {
  children.add(proc);
  proc.on('close', () => children.delete(proc));
  return proc;
}

function startDaemon(mnt) {
  const proc = track(spawn(process.execPath, [path.join(ROOT, 'bin', 'relayfork.js'), 'mount', mnt, '--log-level', 'info'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  const d = {
    proc,
    pid: proc.pid,
    mounted: null,
    lost: 0,
    lossLines: 0,
    held: 0,
    drained: 0,
    gone: 0,
    errors: [],
    unmounted: null,
    stderr: '',
    exit: null,
  };
  let partial = '';
  proc.stderr.setEncoding('utf8').on('data', (c) => (d.stderr += c));
  proc.stdout.setEncoding('utf8').on('data', (c) => {
    partial += c;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const line of lines) {
      let l;
      try {
        l = JSON.parse(line);
      } catch {
        continue;
      }
      if (l.msg === 'mounted') d.mounted?.();
      else if (l.msg === 'forks lost') {
        d.lost += l.lost;
        d.lossLines++;
      } else if (l.msg === HELD) d.held++;
      else if (l.msg === DRAINED) d.drained++;
      else if (l.msg === 'registrant gone') d.gone++;
      else if (l.msg === 'unmounted') d.unmounted = l;
      if (l.level >= 50) d.errors.push(l);
    }
  });
  d.exited = new Promise((resolve) => proc.on('close', (code, signal) => resolve((d.exit = { code, signal }))));
  d.ready = new Promise((resolve, reject) => {
    d.mounted = resolve;
    d.exited.then((e) => reject(new Error(`the daemon exited before mounting (${JSON.stringify(e)}): ${d.stderr}`)));
    setTimeout(() => reject(new Error('the daemon did not mount within 15 s')), 15_000).unref();
  });
  return d;
}

/** A receiver: counts the signals it reads (one line each). */
function startReceiver(bin, stuck) {
  const proc = track(spawn(bin, [...(stuck ? ['--stuck'] : []), '34'], { stdio: ['pipe', 'pipe', 'ignore'] }));
  proc.stdin.on('error', () => undefined);
  const r = { proc, pid: null, received: 0, stuck, unstuck: false, born: Date.now() };
  let partial = '';
  r.ready = new Promise((resolve, reject) => {
    proc.stdout.setEncoding('utf8').on('data', (c) => {
      if (r.pid === null) {
        partial += c;
        const m = /^ready (\d+)\n/.exec(partial);
        if (!m) return;
        r.pid = Number(m[1]);
        c = partial.slice(m[0].length);
        resolve(r);
      }
      for (let i = c.indexOf('\n'); i >= 0; i = c.indexOf('\n', i + 1)) r.received++;
    });
    proc.on('close', () => reject(new Error('receiver exited before ready')));
  });
  return r;
}

function startStorm(bin, args) {
  const proc = track(spawn(bin, [...args, '-v'], { stdio: ['ignore', 'pipe', 'ignore'] }));
  const s = { proc, forks: 0 };
  proc.stdout.setEncoding('utf8').on('data', (c) => {
    for (const m of c.matchAll(/^(?:forks|done) (\d+)/gm)) s.forks = Number(m[1]);
  });
  s.done = new Promise((resolve) => proc.on('close', resolve));
  return s;
}

async function rssKb(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

async function readStats(dir) {
  try {
    const text = await readFile(path.join(dir, 'stats'), 'utf8');
    return Object.fromEntries(text.trim().split('\n').map((l) => l.split(/\s+/, 2)).map(([k, v]) => [k, Number(v)]));
  } catch {
    return null; // a daemon without the stats file
  }
}

async function mounted(mnt) {
  const text = await readFile('/proc/self/mounts', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[1] === mnt);
}

// ---------------------------------------------------------------------------

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
}

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function main() {
  const opt = options();
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (it mounts FUSE and watches every fork)');
  await access('/dev/fuse', constants.R_OK | constants.W_OK);
  const [storm, receiver] = await Promise.all([buildHelper('forkstorm'), buildHelper('receiver'), buildDaemon()]);

  const tmp = await realpath(await mkdtemp(path.join(os.tmpdir(), 'relayfork-soak-')));
  await chmod(tmp, 0o755);
  const mnt = path.join(tmp, 'mnt');
  await mkdir(mnt);
  const dir = path.join(mnt, 'relayfork');
  const processes = path.join(dir, 'processes');
  const log = (s) => {
    if (!opt.json) process.stderr.write(`${s}\n`);
  };

  const d = startDaemon(mnt);
  const pool = [];
  const storms = [];
  const samples = [];
  let cycled = 0;
  let stuckMade = 0;
  let receivedByGone = 0;
  let stopping = false;
  const cleanup = async () => {
    stopping = true;
    for (const s of storms) s.proc.kill('SIGTERM');
    if (d.exit === null) {
      d.proc.kill('SIGTERM');
      await Promise.race([d.exited, sleep(10_000)]);
      if (d.exit === null) d.proc.kill('SIGKILL');
    }
    for (const c of children) c.kill('SIGKILL');
    if (await mounted(mnt)) await execFileAsync('umount', ['-l', mnt]).catch(() => undefined);
    if (!(await mounted(mnt))) await rm(tmp, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

  try {
    await d.ready;
    const t0 = Date.now();
    const elapsed = () => (Date.now() - t0) / 1000;
    log(`soak: ${opt.seconds} s, ${opt.rate} forks/s, bursts of ${opt.burstForks} every ${opt.burstEvery} s, ${opt.registrants} registrants churned every ${opt.churnMs} ms; daemon ${d.pid} on ${mnt}`);

    const addRegistrant = async () => {
      const stuck = (cycled + 1) % 8 === 0; // every eighth newcomer never reads, for a while
      const r = startReceiver(receiver, stuck);
      await r.ready;
      await writeFile(processes, `${r.pid}\n`);
      if (stuck) stuckMade++;
      pool.push(r);
    };
    const dropRegistrant = async () => {
      // The oldest goes, unless it is still stuck (it stays until it has read).
      const i = pool.findIndex((x) => !x.stuck || x.unstuck);
      if (i < 0) return;
      const [r] = pool.splice(i, 1);
      cycled++;
      // Half leave by unregistering, half by exiting (the daemon's exit watch).
      if (cycled % 2 === 0) await writeFile(processes, `-${r.pid}\n`);
      r.proc.stdin.end();
      await new Promise((res) => (r.proc.exitCode !== null ? res() : r.proc.on('close', res)));
      receivedByGone += r.received;
    };
    for (let i = 0; i < opt.registrants; i++) await addRegistrant();

    const steady = startStorm(storm, ['-p', '1', '-r', String(opt.rate), '-t', String(Math.ceil(opt.seconds))]);
    storms.push(steady);
    const bursts = [];

    const sample = async () => {
      const stats = await readStats(dir);
      const s = {
        t: Math.round(elapsed()),
        rssMb: +((await rssKb(d.pid)) / 1024).toFixed(1),
        forksMade: steady.forks + bursts.reduce((a, b) => a + b.forks, 0),
        received: receivedByGone + pool.reduce((a, r) => a + r.received, 0),
        lost: d.lost,
        held: d.held,
        ...(stats ? { stats } : {}),
      };
      samples.push(s);
      log(`  t=${String(s.t).padStart(4)} s  rss ${String(s.rssMb).padStart(6)} MB  forks made ${s.forksMade}  signals received ${s.received}  forks lost ${s.lost}  holds ${s.held}`);
    };

    let nextSample = 0;
    let nextChurn = opt.churnMs;
    let nextBurst = opt.burstEvery > 0 ? opt.burstEvery * 1000 : Infinity;
    while (!stopping && elapsed() < opt.seconds) {
      if (d.exit !== null) throw new Error(`the daemon exited during the soak: ${JSON.stringify(d.exit)} ${d.stderr}`);
      const ms = Date.now() - t0;
      if (ms >= nextSample) {
        await sample();
        nextSample += opt.sampleS * 1000;
      }
      if (ms >= nextChurn) {
        await dropRegistrant();
        await addRegistrant();
        // A stuck registrant reads again after STUCK_S (long enough to be held).
        for (const r of pool) {
          if (r.stuck && !r.unstuck && Date.now() - r.born > STUCK_S * 1000) {
            r.proc.stdin.write('read\n');
            r.unstuck = true;
          }
        }
        nextChurn += opt.churnMs;
      }
      if (ms >= nextBurst) {
        const b = startStorm(storm, ['-p', '2', '-n', String(Math.ceil(opt.burstForks / 2))]);
        bursts.push(b);
        storms.push(b);
        nextBurst += opt.burstEvery * 1000;
      }
      await sleep(50);
    }
    await sample();
    steady.proc.kill('SIGTERM');
    await Promise.all(storms.map((s) => s.done));
    const forksMade = steady.forks + bursts.reduce((a, b) => a + b.forks, 0);
    const received = receivedByGone + pool.reduce((a, r) => a + r.received, 0);

    const t1 = Date.now();
    d.proc.kill('SIGTERM');
    const exit = await Promise.race([d.exited, sleep(10_000).then(() => null)]);
    const stopMs = Date.now() - t1;
    for (const r of pool) r.proc.stdin.end();

    // RSS: after a warm-up (a fifth of the run, at least one sample), compare the
    // first third with the last third of the samples.
    const warm = samples.slice(Math.max(1, Math.floor(samples.length / 5)));
    const third = Math.max(1, Math.floor(warm.length / 3));
    const early = median(warm.slice(0, third).map((s) => s.rssMb));
    const late = median(warm.slice(-third).map((s) => s.rssMb));
    const growthMb = +(late - early).toFixed(1);
    const c = d.unmounted ?? {};
    const report = {
      seconds: +elapsed().toFixed(1),
      forksMade,
      forksSeen: c.forksSeen ?? null,
      forksLost: c.forksLost ?? d.lost,
      signalsSent: c.signalsSent ?? null,
      signalsDropped: c.signalsDropped ?? null,
      signalsReceived: received,
      registrantsCycled: cycled,
      stuckRegistrants: stuckMade,
      holds: d.held,
      drains: d.drained,
      lossLines: d.lossLines,
      rssMb: { first: samples[0]?.rssMb, early, late, max: Math.max(...samples.map((s) => s.rssMb)), last: samples.at(-1)?.rssMb },
      rssSlopeMbPerMin: +(slope(warm.map((s) => [s.t / 60, s.rssMb])) || 0).toFixed(2),
      growthMb,
      maxGrowthMb: opt.maxGrowthMb,
      exit,
      stopMs,
      errors: d.errors.length,
      samples: samples.map(({ stats, ...s }) => s),
    };
    const ok = exit !== null && exit.code === 0 && growthMb <= opt.maxGrowthMb && d.errors.length === 0 && forksMade > 0 && received > 0;
    report.ok = ok;
    if (opt.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      log('');
      log(`forks made ${forksMade}, seen ${report.forksSeen}, lost ${report.forksLost} (${report.lossLines} loss lines)`);
      log(`signals sent ${report.signalsSent}, received ${received}, dropped ${report.signalsDropped}`);
      log(`registrants cycled ${cycled} (${stuckMade} stuck for a while; ${d.held} holds, ${d.drained} drains)`);
      log(`RSS MB: first ${report.rssMb.first}, early ${early}, late ${late}, max ${report.rssMb.max}; growth ${growthMb} (limit ${opt.maxGrowthMb}), slope ${report.rssSlopeMbPerMin} MB/min`);
      log(`stopped in ${stopMs} ms with ${JSON.stringify(exit)}; ${d.errors.length} error lines`);
      log(ok ? 'soak: ok' : 'soak: FAILED');
    }
    return ok ? 0 : 1;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
