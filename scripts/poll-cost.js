#!/usr/bin/env node
// What the poll fork source costs: the built daemon's CPU in `--source poll`
// mode at the default interval, with the machine's usual processes and with
// ~2,000 extra idle ones (its own CPU, and its reaped children's, which would
// be `ps` runs if it ran any). Then, in this process and over the same process
// table, the cost of one listing with the daemon's /proc reader and with
// ps-list (which runs `ps` twice), split into ps-list's Node side and `ps`.
//
//   npm run build && node scripts/poll-cost.js [--extra N] [--window S] [--windows K] [--interval MS]
//
// Needs root (the daemon mounts FUSE). Prints its method and medians. Cleans up
// the daemon, its mount and the extra processes, even on Ctrl-C.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import psList from 'ps-list';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'bin', 'relayfork.js');

const { values } = parseArgs({
  options: {
    extra: { type: 'string', default: '2000' },
    window: { type: 'string', default: '10' },
    windows: { type: 'string', default: '5' },
    interval: { type: 'string' },
    warmup: { type: 'string', default: '3' },
  },
});
const EXTRA = Number(values.extra);
const WINDOW_S = Number(values.window);
const WINDOWS = Number(values.windows);
const WARMUP_S = Number(values.warmup);
const HZ = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x, d = 2) => x.toFixed(d);

/** utime, stime, cutime, cstime of a process, in clock ticks. */
async function cpuTicks(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): utime is field 14 → f[11].
  return { self: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
}

async function processCount() {
  return (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).length;
}

let daemon = null;
let extraGroup = null;
let tmp = null;

async function cleanup() {
  if (extraGroup !== null) {
    try {
      process.kill(-extraGroup, 'SIGKILL');
    } catch {
      // gone
    }
    extraGroup = null;
  }
  if (daemon !== null && daemon.exitCode === null && daemon.signalCode === null) {
    const gone = new Promise((r) => daemon.once('exit', r));
    daemon.kill('SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
  }
  if (tmp !== null) {
    const mnt = path.join(tmp, 'mnt');
    const mounts = await readFile('/proc/self/mounts', 'utf8');
    if (mounts.split('\n').some((l) => l.split(' ')[1] === mnt)) {
      try {
        execFileSync('umount', ['-l', mnt]);
      } catch {
        // reported below by the leftover check
      }
    }
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    tmp = null;
  }
}

process.on('SIGINT', () => {
  void cleanup().then(() => process.exit(130));
});

async function startDaemon() {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'relayfork-cost-'));
  const mnt = path.join(tmp, 'mnt');
  const args = [CLI, 'mount', mnt, '--source', 'poll', '--log-level', 'info'];
  if (values.interval !== undefined) args.push('--poll-interval', values.interval);
  daemon = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let interval = null;
  let err = '';
  daemon.stderr.setEncoding('utf8').on('data', (c) => (err += c));
  await new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`daemon did not mount within 15 s: ${err}`)), 15_000);
    daemon.stdout.setEncoding('utf8').on('data', (c) => {
      buf += c;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let l;
        try {
          l = JSON.parse(line);
        } catch {
          continue;
        }
        if (l.msg === 'fork source ready') interval = l.intervalMs;
        if (l.msg === 'mounted') {
          clearTimeout(t);
          resolve();
        }
      }
    });
    daemon.once('exit', (code) => reject(new Error(`daemon exited ${code}: ${err}`)));
  });
  return interval;
}

/** K windows of W seconds: the daemon's CPU as % of one core, self and children. */
async function measure(pid) {
  const rows = [];
  for (let i = 0; i < WINDOWS; i++) {
    const a = await cpuTicks(pid);
    const t0 = process.hrtime.bigint();
    await sleep(WINDOW_S * 1000);
    const b = await cpuTicks(pid);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const pct = (ticks) => (100 * ticks) / HZ / secs;
    rows.push({ self: pct(b.self - a.self), children: pct(b.children - a.children), total: pct(b.self - a.self + b.children - a.children) });
  }
  return {
    total: median(rows.map((r) => r.total)),
    self: median(rows.map((r) => r.self)),
    children: median(rows.map((r) => r.children)),
    rows,
  };
}

/**
 * CPU ms per listing, in this process: `self` (this Node process) and
 * `children` (the reaped children: ps-list's `ps` runs). Median of `rounds`
 * rounds of `iterations` listings each.
 */
async function listingCost(list, iterations, rounds = 5) {
  await list();
  const selfs = [];
  const kids = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = await cpuTicks(process.pid);
    const u0 = process.cpuUsage();
    for (let i = 0; i < iterations; i++) await list();
    const u = process.cpuUsage(u0);
    const t1 = await cpuTicks(process.pid);
    selfs.push((u.user + u.system) / 1000 / iterations);
    kids.push(((t1.children - t0.children) * 1000) / HZ / iterations);
  }
  return { self: median(selfs), children: median(kids), total: median(selfs) + median(kids) };
}

async function startExtra(n) {
  const before = await processCount();
  const sh = spawn('sh', ['-c', `i=0; while [ $i -lt ${n} ]; do sleep 86400 & i=$((i+1)); done; wait`], {
    stdio: 'ignore',
    detached: true, // its own process group: killed as one
  });
  extraGroup = sh.pid;
  for (let i = 0; i < 600; i++) {
    if ((await processCount()) >= before + n) return;
    await sleep(100);
  }
  throw new Error(`could not start ${n} extra processes`);
}

async function scenario(label, pid, interval, readProcessTable) {
  await sleep(WARMUP_S * 1000);
  const procs = await processCount();
  const m = await measure(pid);
  const perListing = (pct) => (pct / 100) * interval;
  const reader = await listingCost(async () => readProcessTable(), 20);
  const ps = await listingCost(() => psList({ all: true }), 4);
  return { label, procs, ...m, perListingMs: perListing(m.total), reader, ps, interval };
}

async function main() {
  if (!existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('build first: npm run build');
  if (process.getuid?.() !== 0) throw new Error('run as root: the daemon mounts FUSE');
  const { readProcessTable } = await import(path.join(ROOT, 'dist', 'sources', 'proc-table.js'));
  const interval = await startDaemon();
  const pid = daemon.pid;
  console.log('relayfork poll-source cost');
  console.log(`method: the built daemon, --source poll at ${values.interval === undefined ? 'the default' : 'an'} interval of ${interval} ms, nothing registered;`);
  console.log(`  after ${WARMUP_S} s of warm-up, ${WINDOWS} windows of ${WINDOW_S} s; in each, the change in /proc/<daemon>/stat`);
  console.log('  utime+stime (the daemon itself) and cutime+cstime (its reaped children: it should have none)');
  console.log(`  as % of one core (CLK_TCK ${HZ}); medians of the windows. ${os.cpus().length} CPUs, ${os.release()}, Node ${process.version}.`);
  console.log('  Then, in this script over the same process table, CPU ms per listing (median of 5 rounds): the daemon\'s');
  console.log('  /proc reader (dist/sources/proc-table.js), and ps-list (its Node side + the two `ps` it runs, as reaped-child CPU).');
  console.log('');

  const results = [];
  results.push(await scenario('normal', pid, interval, readProcessTable));
  await startExtra(EXTRA);
  results.push(await scenario(`+${EXTRA} idle`, pid, interval, readProcessTable));
  await cleanup();

  const head = [
    'processes', 'daemon % of a core', 'daemon children %', 'daemon ms/listing',
    '/proc reader ms/listing', 'ps-list ms/listing', 'of which ps', `ps-list at ${interval} ms, % of a core`,
  ];
  console.log(head.join(' | '));
  for (const r of results) {
    console.log([
      `${r.procs} (${r.label})`,
      fmt(r.total),
      fmt(r.children),
      fmt(r.perListingMs, 1),
      fmt(r.reader.total, 1),
      fmt(r.ps.total, 1),
      `${fmt(r.ps.children, 1)} (${fmt((100 * r.ps.children) / r.ps.total, 0)}%)`,
      fmt((100 * r.ps.total) / r.interval, 1),
    ].join(' | '));
  }
  console.log('');
  for (const r of results) {
    console.log(`windows (${r.label}), daemon % of a core: ${r.rows.map((x) => fmt(x.total)).join(' ')}`);
  }
}

main().then(
  () => cleanup(),
  async (err) => {
    console.error(`poll-cost: ${err instanceof Error ? err.message : String(err)}`);
    await cleanup();
    process.exit(1);
  },
);
