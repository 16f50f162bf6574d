#!/usr/bin/env node
// Measures what relayfork/events costs (run as root after `npm run build`):
//
//   1. the fork path: EventsWriter.record per fork with no reader (one
//      Atomics.load), with a reader, and with a reader waiting to be woken;
//   2. the wake-up: worker append → main thread awake (Atomics.waitAsync),
//      against the mean delay a polling timer of the same idle cost would add;
//   3. the daemon's CPU without and with `cat events` open;
//   4. end to end on a real daemon: a fork to its line in `cat events`;
//   5. one /proc sweep for blocked readers (done only when libfuse reports an
//      interrupted read).
//
//   node scripts/events-bench.mjs [--forks N]
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dist = (p) => new URL(`../dist/${p}`, import.meta.url).href;
const { createEventsShared, EventsReader, EventsWriter, Slot } = await import(dist('events/ring.js'));
const { BlockedReaderFinder } = await import(dist('events/blocked-readers.js'));

const forksArg = process.argv.indexOf('--forks');
const FORKS = forksArg > 0 ? Number(process.argv[forksArg + 1]) : 200;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const fmt = (n, unit) => `${n < 10 ? n.toFixed(2) : n.toFixed(0)} ${unit}`;

// --- 1. fork path -----------------------------------------------------------
function perRecord(readers, wake) {
  const shared = createEventsShared(10_000);
  const w = new EventsWriter(shared);
  Atomics.store(shared.slots, Slot.readers, readers);
  const N = 5_000_000;
  for (let i = 0; i < 100_000; i++) w.record(i, i); // warm up the JIT
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    if (wake) Atomics.store(shared.slots, Slot.wake, 1);
    w.record(i, i + 1);
  }
  return Number(process.hrtime.bigint() - t0) / N;
}
console.log('1. fork path, EventsWriter.record per fork');
console.log(`   no reader:              ${fmt(perRecord(0, false), 'ns')}`);
console.log(`   a reader:               ${fmt(perRecord(1, false), 'ns')}`);
console.log(`   a reader waiting (+notify, no waiter): ${fmt(perRecord(1, true), 'ns')}`);

// --- 2. wake-up latency -----------------------------------------------------
{
  const shared = createEventsShared(10_000);
  const reader = new EventsReader(shared);
  reader.setReaders(1);
  const stamp = new Float64Array(new SharedArrayBuffer(8));
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads');
     const { performance } = require('node:perf_hooks');
     import(workerData.ring).then(({ EventsWriter }) => {
       const w = new EventsWriter(workerData.shared);
       const stamp = new Float64Array(workerData.stamp);
       let n = 0;
       const tick = () => { stamp[0] = performance.timeOrigin + performance.now(); w.record(n, n); if (++n < 300) setTimeout(tick, 3); };
       tick();
     });`,
    { eval: true, workerData: { shared, stamp: stamp.buffer, ring: dist('events/ring.js') } },
  );
  const lat = [];
  let seen = reader.head();
  const { performance } = await import('node:perf_hooks');
  while (lat.length < 250) {
    const wake = reader.waitBeyond(seen);
    if (wake) await wake;
    seen = reader.head();
    lat.push((performance.timeOrigin + performance.now() - stamp[0]) * 1000);
  }
  await worker.terminate();
  console.log('2. wake-up, worker append → main thread (Atomics.waitAsync)');
  console.log(`   p50 ${fmt(pct(lat, 50), 'µs')}, p99 ${fmt(pct(lat, 99), 'µs')}; idle cost: none (no timer)`);
  console.log('   a polling timer instead: mean delay = half its period (10 ms timer: 5 ms), 100 wake-ups/s while a read waits');
}

// --- 3 and 4: a real daemon --------------------------------------------------
const tmp = await mkdtemp(path.join(tmpdir(), 'relayfork-events-bench-'));
const mnt = path.join(tmp, 'mnt');
const daemon = spawn(process.execPath, [path.join(ROOT, 'bin', 'relayfork.js'), 'mount', mnt, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
const cleanup = async () => {
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  await rm(tmp, { recursive: true, force: true });
};
try {
  const events = path.join(mnt, 'relayfork', 'events');
  for (let i = 0; ; i++) {
    const m = await readFile('/proc/self/mounts', 'utf8');
    if (m.includes(` ${mnt} fuse.relayfork `)) break;
    if (i > 200) throw new Error('daemon did not mount');
    await sleep(50);
  }
  const cpu = async () => {
    const f = (await readFile(`/proc/${daemon.pid}/stat`, 'latin1')).split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime, clock ticks
  };
  const forksSeen = async () => Number(/^forks_seen (\d+)$/m.exec(await readFile(path.join(mnt, 'relayfork', 'stats'), 'latin1'))[1]);
  const load = async (what) => {
    const [c0, f0, t0] = [await cpu(), await forksSeen(), performance.now()];
    await sleep(5000);
    const [c1, f1, secs] = [await cpu(), await forksSeen(), (performance.now() - t0) / 1000];
    const cpuS = (c1 - c0) / 100;
    console.log(`   ${what}: ${((cpuS / secs) * 100).toFixed(1)} % CPU while the host forked ${((f1 - f0) / secs).toFixed(0)}/s: ${fmt((cpuS * 1e6) / Math.max(1, f1 - f0), 'µs')} per fork`);
  };
  console.log("3. daemon CPU (relaying the host's own forks; no registrant)");
  await load('no reader        ');

  const cat = spawn('cat', [events], { stdio: ['ignore', 'pipe', 'inherit'] });
  const arrived = new Map();
  let partial = '';
  cat.stdout.setEncoding('latin1').on('data', (c) => {
    const now = performance.now();
    partial += c;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const l of lines) arrived.set(l, now);
  });
  await sleep(300);
  await load('`cat events` open');
  const lat = [];
  for (let i = 0; i < FORKS; i++) {
    const t0 = performance.now();
    const child = spawn('/bin/true');
    const line = `${process.pid} ${child.pid}`;
    await new Promise((r) => child.once('exit', r));
    for (let k = 0; k < 200 && !arrived.has(line); k++) await sleep(1);
    if (arrived.has(line)) lat.push((arrived.get(line) - t0) * 1000);
    arrived.clear();
  }
  console.log(`4. end to end, spawn → its line in \`cat events\` (${lat.length}/${FORKS} seen; includes Node's spawn)`);
  console.log(`   p50 ${fmt(pct(lat, 50) / 1000, 'ms')}, p99 ${fmt(pct(lat, 99) / 1000, 'ms')}`);
  const finder = new BlockedReaderFinder({ mountpoint: mnt, path: '/relayfork/events' });
  const sweeps = [];
  let found = [];
  for (let i = 0; i < 5; i++) {
    const u0 = process.cpuUsage();
    const w0 = performance.now();
    found = await finder.find();
    const u = process.cpuUsage(u0);
    sweeps.push([performance.now() - w0, (u.user + u.system) / 1000]);
  }
  console.log(`5. one /proc sweep (only on an interrupt): wall p50 ${fmt(pct(sweeps.map((s) => s[0]), 50), 'ms')}, CPU p50 ${fmt(pct(sweeps.map((s) => s[1]), 50), 'ms')}; found ${found.length} blocked reader(s)`);
  cat.kill('SIGINT');
} finally {
  await cleanup();
}
