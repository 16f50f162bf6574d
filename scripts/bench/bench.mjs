#!/usr/bin/env node
// npm run bench [-- --quick] [-- --help]
//
// Measures the built relayfork daemon side by side with a ~60-line C forwarder (the
// "native limit") on the same machine in the same run: every figure is taken for
// both in alternation (A B A B ...), reported as medians and as the ratio
// relayfork / reference. See BENCHMARKS.md for the latest table.
import { chown, mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { cpus, release, tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { matchLatencies, median, parseKv, parseReceiverLog, parseStormLog, quantile, topFunctions } from './lib/analyze.mjs';
import { BENCH_DIR, buildHelpers, findForkstat } from './lib/build.mjs';
import { CLK_TCK, connectorQueue, cpuNs, cpuTicks, hostForks, memory, runCmd, sleep, spawnLines, stopChild, threadTicks, waitDrained, waitQuiet } from './lib/procs.mjs';
import { forkstat, nodeMin, none, reference, relayfork, SIGNO } from './lib/systems.mjs';

// ---------------------------------------------------------------------------------
// options

const GROUPS = ['max', 'max10', 'latency', 'fanout', 'sigstop', 'rss', 'registry', 'profile'];
const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    pairs: { type: 'string' },
    secs: { type: 'string' },
    'rss-secs': { type: 'string' },
    'rss-storms': { type: 'string' },
    'fanout': { type: 'string' },
    'fanout-rate': { type: 'string' },
    rates: { type: 'string' },
    'long-stop': { type: 'string' },
    'paced-workers': { type: 'string' },
    only: { type: 'string' },
    skip: { type: 'string' },
    'no-forkstat': { type: 'boolean', default: false },
    'node-min': { type: 'boolean', default: false },
    settle: { type: 'string' },
    keep: { type: 'boolean', default: false },
    json: { type: 'string' },
    md: { type: 'string' },
    'receiver-uid': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`usage: npm run bench -- [options]
  --quick              a smoke run: 1 pair, 1 s storms, 5 s RSS storms (~2-3 min)
  --pairs N            A/B pairs per figure (default 3)
  --secs S             storm length per run, seconds (default 4)
  --rss-secs S         length of each RSS storm (default 60)
  --rss-storms N       RSS storms in a row, to see growth (default 2)
  --fanout N           registrants in the fan-out figure (default 100)
  --fanout-rate R      forks/s in the fan-out figure (default 10000)
  --rates A,B          paced rates for latency (default 1000,5000)
  --paced-workers N    storm workers for paced runs (default 4)
  --long-stop S        also SIGSTOP the forwarder S s, to overflow its buffer (default 3; 0: skip)
  --only G,G / --skip G,G   groups: ${GROUPS.join(', ')}
  --settle S           seconds a forwarder idles after its warm-up before a CPU or latency
                       figure is taken (default 10; --quick 2): past start-up (V8's memory reducer
                       runs a full GC ~8 s after a fresh Node process's last one)
  --node-min           also run scripts/bench/node-min.mjs, a minimal Node forwarder, in the
                       max and latency groups: what Node itself costs on this path
  --no-forkstat        skip forkstat (never installs it)
  --keep               keep every run's logs under scripts/bench/out/
  --json FILE          also write every run's raw figures to FILE
  --receiver-uid N     run receivers as this uid/gid (default 61905; 0: as root)
  --md FILE            also write the method, the table and the profile to FILE (markdown)`);
  process.exit(0);
}

const num = (v, d) => (v === undefined ? d : Number(v));
const quick = opt.quick;
const cfg = {
  pairs: num(opt.pairs, quick ? 1 : 3),
  secs: num(opt.secs, quick ? 1 : 4),
  rssSecs: num(opt['rss-secs'], quick ? 5 : 60),
  rssStorms: num(opt['rss-storms'], 2),
  fanout: num(opt.fanout, 100),
  fanoutRate: num(opt['fanout-rate'], 10_000),
  rates: (opt.rates ?? '1000,5000').split(',').map(Number),
  maxWorkers: 2,
  pacedWorkers: num(opt['paced-workers'], 4),
  stopAtS: 1.0,
  stopForS: 0.5,
  longStopS: num(opt['long-stop'], 3),
  settleS: num(opt.settle, quick ? 2 : 10),
};
const only = opt.only ? new Set(opt.only.split(',')) : new Set(GROUPS);
for (const g of (opt.skip ?? '').split(',').filter(Boolean)) only.delete(g);
for (const g of only) if (!GROUPS.includes(g)) die(`unknown group ${g} (groups: ${GROUPS.join(', ')})`);

function die(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}
const say = (s) => process.stderr.write(`${s}\n`);

// ---------------------------------------------------------------------------------
// cleanup: every receiver and forwarder started here is stopped on any exit

const live = new Set();
const liveDirs = new Set(); // temporary run directories, removed on an interrupt too
let interrupted = false;
async function stopAll() {
  await Promise.all([...live].map((s) => s().catch(() => {})));
  live.clear();
  if (!opt.keep) await Promise.all([...liveDirs].map((d) => rm(d, { recursive: true, force: true })));
  liveDirs.clear();
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    say(`\nbench: ${sig}: stopping everything it started`);
    stopAll().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------
// one run: receivers, a forwarder, a storm, the figures

let bins;
let outDir;
/**
 * Receivers run as their own user: queued signals count against the receiving
 * user's RLIMIT_SIGPENDING, and on a shared machine another root process with a
 * full queue (a registrant that never reads) makes every send to root fail with EAGAIN.
 */
let receiverIds = {};
let runNo = 0;

async function startReceivers(n, dir) {
  const rs = [];
  for (let i = 0; i < n; i++) {
    const log = dir ? path.join(dir, `r${i}.log`) : null;
    const r = spawnLines(bins.receiver, [String(SIGNO), ...(log ? [log] : [])], receiverIds);
    r.log = log;
    rs.push(r);
  }
  const stop = () => Promise.all(rs.map((r) => stopChild(r, 'SIGTERM', 20_000)));
  live.add(stop);
  await Promise.all(rs.map(async (r) => (r.rpid = Number((await r.waitLine((l) => l.startsWith('ready'))).split(' ')[1]))));
  return { rs, pids: rs.map((r) => r.rpid), stop: async () => (await stop(), live.delete(stop)) };
}

function storm({ workers, rate = 0, secs, log = null }) {
  const args = ['-w', String(workers), '-d', String(secs)];
  if (rate > 0) args.push('-r', String(rate));
  if (log) args.push('-l', log);
  const s = spawnLines(bins.storm, args);
  // Its workers stop by themselves at the deadline; the storm itself is stopped on an interrupt.
  const stop = () => stopChild(s, 'SIGKILL');
  live.add(stop);
  s.exited.then(() => live.delete(stop));
  return s;
}

const WARMUP_S = 0.5;
const QUIET_RATE = 300; // forks/s from the rest of the host
const QUIET_WAIT_MS = 5_000; // per run
let quietBudgetMs = process.argv.includes('--quick') ? 20_000 : 90_000; // in all: a host that stays busy is measured busy
const DRAIN_MAX_MS = 30_000;
const ticks = (t) => (t ? t.utime + t.stime : NaN);

/**
 * One run of one system. cfg: { registrants, logged, workers, rate, secs, sigstop,
 * nodeArgs, latencyOf: 'first'|'firstLast' }. Returns the run's figures.
 */
async function oneRun(sys, c) {
  runNo++;
  // Other engineers' tests fork on this host too, and every forwarder relays every
  // fork: start on a quiet host when there is one (the rate seen is recorded).
  const t0 = Date.now();
  const budget = Math.min(QUIET_WAIT_MS, quietBudgetMs);
  const foreignBefore = await waitQuiet(QUIET_RATE, budget, (rate) => say(`  (waiting up to ${budget / 1000} s for a quieter host: ${rate} forks/s from others)`));
  quietBudgetMs = Math.max(0, quietBudgetMs - (Date.now() - t0 - 500));
  const dir = await mkdtemp(path.join(outDir ?? tmpdir(), `run${String(runNo).padStart(3, '0')}-${sys.name}-`));
  liveDirs.add(dir);
  if (receiverIds.uid !== undefined) await chown(dir, receiverIds.uid, receiverIds.gid); // receivers write their logs here
  const rec = await startReceivers(c.registrants, c.logged ? dir : null);
  let fwd;
  try {
    fwd = await sys.start({ registrants: rec.pids, nodeArgs: c.nodeArgs });
    const stopFwd = () => fwd.stop();
    live.add(stopFwd);
    fwd.untrack = () => live.delete(stopFwd);
    // Warm up (JIT, first reads, page faults) with a short storm, for every system
    // alike, then let it settle: the figures are the steady state of a long-running forwarder.
    if (c.warmup !== false) await storm({ workers: 1, secs: WARMUP_S }).exited;
    // A steady state: CPU and latency figures wait out a fresh process's start-up.
    await sleep(c.settle ? cfg.settleS * 1000 : 300);
    const mem0 = fwd.pid ? await memory(fwd.pid) : null;
    const c0 = fwd.pid ? await cpuTicks(fwd.pid) : null;
    const n0 = fwd.pid ? await cpuNs(fwd.pid) : null;
    const h0 = await hostForks();
    const q0 = fwd.pid ? await connectorQueue(fwd.pid) : null;
    const th0 = fwd.pid ? await threadTicks(fwd.pid) : [];
    const detach = c.attach && fwd.pid ? await c.attach(fwd) : null;
    const stormLog = c.logged ? path.join(dir, 'storm.log') : null;
    const s = storm({ workers: c.workers, rate: c.rate, secs: c.secs, log: stormLog });
    if (c.sigstop && fwd.pid) {
      await sleep(20 + c.sigstop.at * 1000);
      process.kill(fwd.pid, 'SIGSTOP');
      await sleep(c.sigstop.for * 1000);
      process.kill(fwd.pid, 'SIGCONT');
    }
    const sx = await s.exited;
    if (sx.code !== 0) throw new Error(`storm failed (${sx.code ?? sx.signal}): ${s.stderr().trim()}`);
    const st = parseKv(s.lines.find((l) => l.startsWith('storm')) ?? '');
    let drain = { ms: c.fixedDrainMs ?? 0, drained: true };
    if (c.fixedDrainMs !== undefined) await sleep(c.fixedDrainMs);
    else if (fwd.pid) drain = await waitDrained(fwd.pid, DRAIN_MAX_MS);
    const attached = detach ? await detach() : undefined;
    const c1 = fwd.pid ? await cpuTicks(fwd.pid) : null;
    const n1 = fwd.pid ? await cpuNs(fwd.pid) : null;
    const h1 = await hostForks();
    const q1 = fwd.pid ? await connectorQueue(fwd.pid) : null;
    const th1 = fwd.pid ? await threadTicks(fwd.pid) : [];
    const mem1 = fwd.pid ? await memory(fwd.pid) : null;
    await sleep(100);
    await rec.stop();
    const fsum = await fwd.stop();
    const received = rec.rs.map((r) => Number(r.lines.find((l) => l.startsWith('received'))?.split(' ')[1] ?? NaN));

    const out = {
      system: sys.name,
      pid: fwd.pid,
      forks: st.forks,
      rate: st.rate,
      drainMs: drain.ms,
      drained: drain.drained,
      registrants: c.registrants,
      // Every fork event on the host in the window (the storm's and everyone else's,
      // threads too) is read by the forwarder: CPU is divided by all of them.
      hostForks: h1 - h0,
      stormShare: st.forks / (h1 - h0),
      foreignBefore,
      kernelDrops: q0 && q1 ? q1.drops - q0.drops : NaN,
      // Exact run time (schedstat) when the kernel keeps it; 10 ms ticks otherwise.
      cpuUs: n0 !== null && n1 !== null ? (n1 - n0) / 1e3 / (h1 - h0) : fwd.pid ? ((ticks(c1) - ticks(c0)) * 1e6) / CLK_TCK / (h1 - h0) : NaN,
      userUs: fwd.pid ? ((c1.utime - c0.utime) * 1e6) / CLK_TCK / (h1 - h0) : NaN,
      sysUs: fwd.pid ? ((c1.stime - c0.stime) * 1e6) / CLK_TCK / (h1 - h0) : NaN,
      cpuUsPerStormFork: n0 !== null && n1 !== null ? (n1 - n0) / 1e3 / st.forks : fwd.pid ? ((ticks(c1) - ticks(c0)) * 1e6) / CLK_TCK / st.forks : NaN,
      rssStartMb: mem0 ? mem0.rssKb / 1024 : NaN,
      rssEndMb: mem1 ? mem1.rssKb / 1024 : NaN,
      threads: threadDelta(fwd.pid, th0, th1),
      received,
      attached,
      fwd: fsum,
    };
    if (c.logged && c.registrants > 0) {
      const stormData = parseStormLog(await readFile(stormLog));
      let ours = 0;
      let worst = Infinity;
      const lat = {};
      for (let i = 0; i < rec.rs.length; i++) {
        const wantTimes = i === 0 || (c.latencyOf === 'firstLast' && i === rec.rs.length - 1);
        const r = parseReceiverLog(await readFile(rec.rs[i].log), stormData.parents, { times: wantTimes });
        ours += r.ours;
        worst = Math.min(worst, r.ours);
        if (wantTimes) {
          const l = matchLatencies(stormData, r);
          lat[i === 0 ? 'first' : 'last'] = { p50: quantile(l, 0.5) / 1e3, p99: quantile(l, 0.99) / 1e3, n: l.length };
        }
      }
      out.loggedForks = stormData.forks;
      out.delivery = (100 * ours) / (stormData.forks * c.registrants);
      out.worst = (100 * worst) / stormData.forks;
      out.missing = stormData.forks * c.registrants - ours;
      out.p50 = lat.first?.p50;
      out.p99 = lat.first?.p99;
      out.p50last = lat.last?.p50;
      out.p99last = lat.last?.p99;
    }
    return out;
  } finally {
    await rec.stop();
    if (fwd) {
      await fwd.stop().catch(() => {});
      fwd.untrack();
    }
    if (!opt.keep) await rm(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  }
}

function threadDelta(pid, a, b) {
  const before = new Map(a.map((t) => [t.tid, t]));
  return b
    .map((t) => {
      const p = before.get(t.tid);
      const comm = t.tid === pid ? `${t.comm} (main thread)` : t.comm;
      return { tid: t.tid, comm, ticks: t.utime + t.stime - (p ? p.utime + p.stime : 0) };
    })
    .filter((t) => t.ticks > 0)
    .sort((x, y) => y.ticks - x.ticks);
}

// ---------------------------------------------------------------------------------
// figures: results[key][system] = [values per run]

const results = {};
const raw = [];
function put(key, system, value) {
  ((results[key] ??= {})[system] ??= []).push(value);
}
const med = (key, system) => median(results[key]?.[system] ?? []);

const fmt = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '—');
function describe(r) {
  const parts = [`${r.forks} forks @ ${fmt(r.rate, 0)}/s`];
  if (r.registrants > 1) parts.push(`${r.registrants} registrants`);
  if (r.delivery !== undefined) parts.push(`delivered ${fmt(r.delivery, 2)}% (worst ${fmt(r.worst, 2)}%)`);
  if (r.p50 !== undefined) parts.push(`p50 ${fmt(r.p50, 0)} µs p99 ${fmt(r.p99, 0)} µs`);
  if (Number.isFinite(r.cpuUs)) parts.push(`cpu ${fmt(r.cpuUs, 2)} µs/fork (usr ${fmt(r.userUs, 2)} sys ${fmt(r.sysUs, 2)})`);
  if (Number.isFinite(r.cpuUs) && r.stormShare < 0.95) parts.push(`host forks ${r.hostForks} (storm ${fmt(100 * r.stormShare, 0)}%)`);
  if (r.kernelDrops > 0) parts.push(`kernel dropped ${r.kernelDrops} messages`);
  if (r.fwd?.lossEvents) parts.push(`loss events ${r.fwd.lossEvents}`);
  if (r.drained === false) parts.push('NOT DRAINED');
  if (r.fwd?.dropped || r.fwd?.dropWarnings) parts.push(`SIGNALS DROPPED (receiver queue full): ${r.fwd.dropped ?? `${r.fwd.dropWarnings} warning(s)`}`);
  if (r.drainMs > 1000 && r.drained !== false) parts.push(`drained in ${r.drainMs} ms`);
  return parts.join(', ');
}

/** Runs systems in alternation, pairs times: A B A B ... */
async function alternate(label, systems, c, record) {
  for (let p = 0; p < cfg.pairs; p++) {
    for (const sys of systems) {
      if (interrupted) throw new Error('interrupted');
      const cc = typeof c === 'function' ? c(sys) : c;
      const r = await oneRun(sys, cc);
      raw.push({ group: label, pair: p + 1, ...r });
      say(`  [${label} ${p + 1}/${cfg.pairs}] ${sys.name.padEnd(9)} ${describe(r)}`);
      record(sys.name, r);
    }
  }
}

// ---------------------------------------------------------------------------------
// the groups

async function groupMax(systems) {
  say(`max: ${cfg.maxWorkers} workers unpaced, ${cfg.secs} s, 1 registrant (forkstat and none: no registrant)`);
  await alternate('max', systems, (sys) => ({
    registrants: sys.name === 'forkstat' || sys.name === 'none' ? 0 : 1,
    logged: true, workers: cfg.maxWorkers, secs: cfg.secs, settle: sys.name !== 'none',
  }), (name, r) => {
    put('max.rate', name, r.rate);
    put('max.cpu', name, r.cpuUs);
    put('max.user', name, r.userUs);
    put('max.sys', name, r.sysUs);
    put('max.share', name, r.stormShare);
    put('rss.startRuns', name, r.rssStartMb);
    if (r.delivery !== undefined) {
      put('max.delivery', name, r.delivery);
      put('max.p50', name, r.p50);
      put('max.p99', name, r.p99);
    }
    if (name === 'relayfork') put('max.threads', name, r.threads);
  });
}

async function groupMax10(systems) {
  say(`max10: ${cfg.maxWorkers} workers unpaced, ${cfg.secs} s, 10 registrants`);
  await alternate('max10', systems, { registrants: 10, logged: true, workers: cfg.maxWorkers, secs: cfg.secs, latencyOf: 'firstLast', settle: true }, (name, r) => {
    put('max10.rate', name, r.rate);
    put('max10.delivery', name, r.delivery);
    put('max10.worst', name, r.worst);
    put('max10.cpu', name, r.cpuUs);
    put('max10.p50last', name, r.p50last);
    put('max10.p99last', name, r.p99last);
  });
}

async function groupLatency(systems) {
  for (const rate of cfg.rates) {
    say(`latency: paced to ${rate} forks/s over ${cfg.pacedWorkers} workers, ${cfg.secs} s, 1 registrant`);
    await alternate(`lat${rate}`, systems, { registrants: 1, logged: true, workers: cfg.pacedWorkers, rate, secs: cfg.secs, settle: true }, (name, r) => {
      put(`lat${rate}.rate`, name, r.rate);
      put(`lat${rate}.p50`, name, r.p50);
      put(`lat${rate}.p99`, name, r.p99);
      put(`lat${rate}.delivery`, name, r.delivery);
      put(`lat${rate}.cpu`, name, r.cpuUs);
    });
  }
}

async function groupFanout(systems) {
  const n = cfg.fanout;
  // Shorter storms: neither forwarder keeps up with 100 registrants, and the backlog
  // (drained after the storm) grows with the storm.
  const fanSecs = Math.min(cfg.secs, 2);
  for (const k of [1, n]) {
    say(`fanout: paced to ${cfg.fanoutRate} forks/s over ${cfg.pacedWorkers} workers, ${fanSecs} s, ${k} registrant(s)`);
    await alternate(`fan${k}`, systems, { registrants: k, logged: true, workers: cfg.pacedWorkers, rate: cfg.fanoutRate, secs: fanSecs, latencyOf: 'firstLast', settle: true }, (name, r) => {
      put(`fan${k}.rate`, name, r.rate);
      put(`fan${k}.delivery`, name, r.delivery);
      put(`fan${k}.worst`, name, r.worst);
      put(`fan${k}.cpu`, name, r.cpuUs);
      put(`fan${k}.p50last`, name, k > 1 ? r.p50last : r.p50);
      put(`fan${k}.drain`, name, r.drained ? r.drainMs : NaN);
    });
  }
}

async function groupSigstop(systems) {
  const stops = [['stop', cfg.stopForS]];
  if (cfg.longStopS > 0) stops.push(['longstop', cfg.longStopS]);
  for (const [key, forS] of stops) {
    const secs = Math.max(cfg.secs, cfg.stopAtS + forS + 1.5);
    say(`${key}: ${cfg.maxWorkers} workers unpaced, ${secs} s, 1 registrant; forwarder SIGSTOPped at ${cfg.stopAtS} s for ${forS} s`);
    await alternate(key, systems, {
      registrants: 1, logged: true, workers: cfg.maxWorkers, secs, sigstop: { at: cfg.stopAtS, for: forS },
    }, (name, r) => {
      put(`${key}.delivery`, name, r.delivery);
      put(`${key}.missing`, name, r.missing);
      put(`${key}.lossEvents`, name, r.fwd.lossEvents);
      put(`${key}.lostTotal`, name, r.fwd.lostTotal);
      put(`${key}.kernelDrops`, name, r.kernelDrops);
      put(`${key}.rate`, name, r.rate);
    });
  }
}

async function groupRss() {
  say(`rss: relayfork, 1 registrant, ${cfg.rssStorms} storms of ${cfg.rssSecs} s at max rate`);
  const rec = await startReceivers(1, null);
  const fwd = await relayfork.start({ registrants: rec.pids });
  live.add(() => fwd.stop());
  try {
    await sleep(1000);
    const m0 = await memory(fwd.pid);
    put('rss.start', 'relayfork', m0.rssKb / 1024);
    say(`  [rss] after start: RSS ${fmt(m0.rssKb / 1024)} MB`);
    let forks = 0;
    for (let k = 1; k <= cfg.rssStorms; k++) {
      const s = storm({ workers: cfg.maxWorkers, secs: cfg.rssSecs });
      await s.exited;
      const st = parseKv(s.lines.find((l) => l.startsWith('storm')) ?? '');
      forks += st.forks;
      await waitDrained(fwd.pid, DRAIN_MAX_MS);
      await sleep(1000);
      const m = await memory(fwd.pid);
      put(`rss.after${k}`, 'relayfork', m.rssKb / 1024);
      put('rss.hwm', 'relayfork', m.hwmKb / 1024);
      say(`  [rss] after storm ${k} (${st.forks} forks @ ${fmt(st.rate, 0)}/s): RSS ${fmt(m.rssKb / 1024)} MB, peak ${fmt(m.hwmKb / 1024)} MB`);
    }
    await rec.stop();
    const received = Number(rec.rs[0].lines.find((l) => l.startsWith('received'))?.split(' ')[1] ?? NaN);
    put('rss.forks', 'relayfork', forks);
    put('rss.received', 'relayfork', received);
    const sum = await fwd.stop();
    put('rss.lossEvents', 'relayfork', sum.lossEvents);
  } finally {
    await rec.stop();
    await fwd.stop().catch(() => {});
  }
}

async function groupRegistry() {
  const secs = quick ? 1 : 2;
  say(`registry: relayfork, \`echo PID > processes\` (alternating PID / -PID) and \`cat processes\`, ${secs} s each, from bin/fsops`);
  const rec = await startReceivers(1, null);
  const fwd = await relayfork.start({ registrants: [] });
  live.add(() => fwd.stop());
  try {
    for (let p = 0; p < cfg.pairs; p++) {
      for (const [op, args] of [['write', ['write', fwd.processes, String(rec.pids[0]), String(secs)]], ['read', ['read', fwd.processes, String(secs)]]]) {
        const r = await runCmd(bins.fsops, args, (secs + 30) * 1000);
        const kv = parseKv(r.stdout);
        if (r.code !== 0) say(`  fsops ${op} failed: ${r.stderr.trim()}`);
        put(`reg.${op}.ops`, 'relayfork', kv.ops_per_s);
        put(`reg.${op}.p50`, 'relayfork', kv.p50_us);
        put(`reg.${op}.p99`, 'relayfork', kv.p99_us);
        say(`  [registry ${p + 1}/${cfg.pairs}] ${op}: ${fmt(kv.ops_per_s, 0)} ops/s, p50 ${fmt(kv.p50_us)} µs, p99 ${fmt(kv.p99_us)} µs`);
      }
    }
  } finally {
    await rec.stop();
    await fwd.stop();
  }
}

let profileReport = null;

/** perf record on a process for the length of a run; returns a function that stops it and reports. */
async function perfAttach(perfBin, dir, name) {
  const data = path.join(dir, `perf-${name}.data`);
  return async (fwd) => {
    const rec = spawnLines(perfBin, ['record', '-F', String(PERF_HZ), '-p', String(fwd.pid), '-o', data, '-q']);
    const statFile = path.join(dir, `perf-stat-${name}.csv`);
    const stat = spawnLines(perfBin, ['stat', '-x', ',', '-o', statFile, '-e', STAT_EVENTS.join(','), '-p', String(fwd.pid)]);
    live.add(() => stopChild(rec, 'SIGINT', 5000));
    live.add(() => stopChild(stat, 'SIGINT', 5000));
    await sleep(300);
    return async () => {
      await Promise.all([stopChild(rec, 'SIGINT', 10_000), stopChild(stat, 'SIGINT', 10_000)]);
      // "count,unit,event,..." per line; '#' comments; "<not counted>" where unsupported
      const counts = {};
      for (const l of (await readFile(statFile, 'utf8').catch(() => '')).split('\n')) {
        const f = l.split(',');
        if (f.length < 3 || l.startsWith('#')) continue;
        const n = Number(f[0]);
        if (Number.isFinite(n)) counts[f[2].replace(/^syscalls:sys_enter_/, '').replace(/^raw_syscalls:sys_enter$/, 'all syscalls')] = n;
      }
      const report = async (sort, limit) => {
        const r = await runCmd(perfBin, ['report', '-i', data, '--no-children', '-n', '--sort', sort, '--stdio', '-g', 'none', '--percent-limit', '0'], 60_000);
        // rows: "  40.98%  1234  [kernel.kallsyms]  [k] finish_task_switch"
        const all = r.stdout.split('\n').map((l) => /^\s+([\d.]+)%\s+(\d+)\s+(.*)$/.exec(l)).filter(Boolean)
          .map((m) => ({ pct: Number(m[1]), samples: Number(m[2]), what: m[3].replace(/\s+/g, ' ').trim() }));
        const samples = all.reduce((a, x) => a + x.samples, 0);
        return { samples, rows: all.filter((x) => x.pct >= limit), all };
      };
      const byDso = await report('dso', 0.5);
      const bySym = await report('dso,sym', 0.7);
      return { samples: byDso.samples, byDso: byDso.rows, bySym: bySym.rows, bySymAll: bySym.all, counts };
    };
  };
}
const PERF_HZ = 1999;
const STAT_EVENTS = ['raw_syscalls:sys_enter', 'context-switches', 'cpu-migrations', 'page-faults',
  ...['recvfrom', 'recvmsg', 'poll', 'ppoll', 'epoll_wait', 'pidfd_send_signal', 'futex', 'read', 'write', 'mmap', 'munmap', 'madvise', 'mprotect']
    .map((s) => `syscalls:sys_enter_${s}`)];

async function groupProfile() {
  const profDir = await mkdtemp(path.join(outDir ?? tmpdir(), 'profile-'));
  liveDirs.add(profDir);
  const base = { registrants: 1, logged: true, workers: cfg.maxWorkers, secs: cfg.secs };
  profileReport = { perf: [], cpuprof: null };
  try {
    const perfBin = (await runCmd('sh', ['-c', 'command -v perf'], 5000)).stdout.trim();
    if (perfBin) {
      say(`profile: perf record -F ${PERF_HZ} on each forwarder, ${cfg.maxWorkers} workers unpaced, ${cfg.secs} s, 1 registrant`);
      for (const sys of [relayfork, reference(bins.reference)]) {
        const r = await oneRun(sys, {
          ...base,
          nodeArgs: ['--perf-basic-prof'],
          attach: await perfAttach(perfBin, profDir, sys.name),
        });
        if (sys.name === 'relayfork') await rm(`/tmp/perf-${r.pid}.map`, { force: true });
        say(`  [perf] ${sys.name.padEnd(9)} ${describe(r)}; ${r.attached?.samples} samples`);
        profileReport.perf.push({ system: sys.name, run: r });
      }
    } else {
      say('profile: perf not found; skipping the perf profile');
    }
    say(`profile: relayfork under node --cpu-prof, ${cfg.maxWorkers} workers unpaced, ${cfg.secs} s, 1 registrant`);
    const cpuDir = path.join(profDir, 'cpuprof');
    const r = await oneRun(relayfork, { ...base, fixedDrainMs: 1000, nodeArgs: ['--cpu-prof', '--cpu-prof-dir', cpuDir] });
    say(`  [cpu-prof] ${describe(r)}`);
    const profiles = [];
    for (const f of (await readdir(cpuDir)).filter((n) => n.endsWith('.cpuprofile'))) {
      const prof = JSON.parse(await readFile(path.join(cpuDir, f), 'utf8'));
      // Time blocked in poll(2) shows as poll's self time: leave it out with the idle entries.
      const skip = new Set(['(idle)', '(program)', 'poll']);
      const top = topFunctions(prof, 200).filter((t) => !skip.has(t.name));
      const busy = top.reduce((a, t) => a + t.samples, 0);
      profiles.push({ file: f, samples: prof.samples?.length ?? 0, busy, top: top.slice(0, 15).map((t) => ({ ...t, busyPct: (100 * t.samples) / busy })) });
    }
    profiles.sort((a, b) => b.busy - a.busy);
    profileReport.cpuprof = { run: r, profiles };
  } finally {
    if (!opt.keep) await rm(profDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------
// report

function ratio(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}

function table() {
  const rows = [];
  const row = (figure, key, d, note = '', unit = '') => {
    const a = med(key, 'relayfork');
    const b = med(key, 'reference');
    const n = Math.max(results[key]?.relayfork?.length ?? 0, results[key]?.reference?.length ?? 0);
    if (!results[key]) return;
    if (results[key]['node-min']) {
      const m = med(key, 'node-min');
      note = [note, `node-min ${fmt(m, d)}${unit} (${fmt(ratio(m, b), 2)}× the reference)`].filter(Boolean).join('; ');
    }
    rows.push([figure, `${fmt(a, d)}${unit}`, `${fmt(b, d)}${unit}`, fmt(ratio(a, b), 2), `${n}`, note]);
  };
  row('storm rate at max (2 workers unpaced), forks/s', 'max.rate', 0, `no forwarder: ${fmt(med('max.rate', 'none'), 0)}; forkstat: ${fmt(med('max.rate', 'forkstat'), 0)}`);
  row('delivery at max rate, 1 registrant, %', 'max.delivery', 2);
  row('delivery at max rate, 10 registrants, % (all)', 'max10.delivery', 2, `worst registrant: ${fmt(med('max10.worst', 'relayfork'), 2)} / ${fmt(med('max10.worst', 'reference'), 2)}`);
  for (const rate of cfg.rates) {
    row(`latency p50 at ${rate}/s, µs`, `lat${rate}.p50`, 0, `achieved ${fmt(med(`lat${rate}.rate`, 'relayfork'), 0)} / ${fmt(med(`lat${rate}.rate`, 'reference'), 0)} forks/s`);
    row(`latency p99 at ${rate}/s, µs`, `lat${rate}.p99`, 0);
  }
  row('latency p50 at max rate, µs', 'max.p50', 0);
  row('latency p99 at max rate, µs', 'max.p99', 0);
  row('latency p50 at max rate, 10 registrants, last registrant, µs', 'max10.p50last', 0);
  row('latency p99 at max rate, 10 registrants, last registrant, µs', 'max10.p99last', 0);
  row(`CPU per fork event at max rate, µs (user+sys) [storm's share of host forks: ${fmt(100 * med('max.share', 'relayfork'), 0)}% / ${fmt(100 * med('max.share', 'reference'), 0)}%]`, 'max.cpu', 2,
    results['max.cpu']?.forkstat ? `forkstat -e fork: ${fmt(med('max.cpu', 'forkstat'), 2)} µs → relayfork/forkstat ${fmt(ratio(med('max.cpu', 'relayfork'), med('max.cpu', 'forkstat')), 2)}, reference/forkstat ${fmt(ratio(med('max.cpu', 'reference'), med('max.cpu', 'forkstat')), 2)}` : 'forkstat: not measured');
  row('… of which user, µs', 'max.user', 2);
  row('… of which sys, µs', 'max.sys', 2);
  for (const rate of cfg.rates) row(`CPU per fork event at ${rate}/s, µs`, `lat${rate}.cpu`, 2);
  row('CPU per fork at max rate, 10 registrants, µs', 'max10.cpu', 2);
  const n = cfg.fanout;
  if (results[`fan${n}.delivery`]) {
    row(`${n} registrants at ${cfg.fanoutRate}/s: delivery, % (all)`, `fan${n}.delivery`, 2, `worst registrant: ${fmt(med(`fan${n}.worst`, 'relayfork'), 2)} / ${fmt(med(`fan${n}.worst`, 'reference'), 2)}; achieved ${fmt(med(`fan${n}.rate`, 'relayfork'), 0)} / ${fmt(med(`fan${n}.rate`, 'reference'), 0)} forks/s`);
    row(`${n} registrants: CPU per fork, µs`, `fan${n}.cpu`, 1, `1 registrant at the same rate: ${fmt(med('fan1.cpu', 'relayfork'), 2)} / ${fmt(med('fan1.cpu', 'reference'), 2)} µs`);
    for (const s of ['relayfork', 'reference']) put('fan.extra', s, (med(`fan${n}.cpu`, s) - med('fan1.cpu', s)) / (n - 1));
    row('cost per extra registrant, µs CPU per fork', 'fan.extra', 2, `(CPU per fork with ${n} − with 1) / ${n - 1}, from the medians`);
    row(`${n} registrants: p50 latency of the last registrant, µs`, `fan${n}.p50last`, 0, 'the fan-out backs up: the kernel queues forks in the 8 MiB buffer');
    row(`${n} registrants: time to drain after the storm, ms`, `fan${n}.drain`, 0, `a run not drained within ${DRAIN_MAX_MS / 1000} s is left out`);
  }
  for (const [key, forS, why] of [['stop', cfg.stopForS, ''], ['longstop', cfg.longStopS, ' (long enough to overflow the 8 MiB buffer: is the loss counted?)']]) {
    row(`forwarder SIGSTOPped ${forS} s in a max-rate storm${why}: delivery, %`, `${key}.delivery`, 2);
    row('… forks not delivered', `${key}.missing`, 0);
    row('… messages the kernel dropped on the forwarder\'s socket (/proc/net/netlink Drops)', `${key}.kernelDrops`, 0);
    row('… loss events logged (daemon `forks lost` lines / reference ENOBUFS)', `${key}.lossEvents`, 0, 'one per overrun');
    row('… forks counted as lost (daemon `lostTotal`, from the socket\'s drop counter / reference: ENOBUFS count)', `${key}.lostTotal`, 0, 'exact when it equals the kernel\'s drops above');
  }
  row('RSS after start, MB', 'rss.startRuns', 1);
  if (results['rss.start']) {
    const after = [];
    for (let k = 1; k <= cfg.rssStorms; k++) after.push(`${fmt(med(`rss.after${k}`, 'relayfork'))}`);
    const growth = med(`rss.after${cfg.rssStorms}`, 'relayfork') - med('rss.after1', 'relayfork');
    rows.push([`relayfork RSS: after start → after each ${cfg.rssSecs} s max-rate storm, MB`, `${fmt(med('rss.start', 'relayfork'))} → ${after.join(' → ')}`, '', '', '1', `growth from the first storm to the last: ${growth >= 0 ? '+' : ''}${fmt(growth)} MB; peak (VmHWM) ${fmt(Math.max(...(results['rss.hwm']?.relayfork ?? [NaN])))} MB; ${fmt(med('rss.forks', 'relayfork'), 0)} forks, ${fmt(med('rss.received', 'relayfork'), 0)} signals received (host-wide), ${fmt(med('rss.lossEvents', 'relayfork'), 0)} loss events`]);
  }
  if (results['reg.write.ops']) {
    rows.push(['`echo PID > processes` round trips (PID / -PID), ops/s', fmt(med('reg.write.ops', 'relayfork'), 0), '', '', `${results['reg.write.ops'].relayfork.length}`, `p50 ${fmt(med('reg.write.p50', 'relayfork'))} µs, p99 ${fmt(med('reg.write.p99', 'relayfork'))} µs`]);
    rows.push(['`cat processes` round trips, ops/s', fmt(med('reg.read.ops', 'relayfork'), 0), '', '', `${results['reg.read.ops'].relayfork.length}`, `p50 ${fmt(med('reg.read.p50', 'relayfork'))} µs, p99 ${fmt(med('reg.read.p99', 'relayfork'))} µs`]);
  }
  const head = ['figure', 'relayfork', 'reference', 'ratio', 'runs', 'notes'];
  return [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function profileText() {
  if (!profileReport) return '';
  const lines = [];
  for (const { system, run } of profileReport.perf) {
    const p = run.attached;
    if (!p) continue;
    const perFork = (pct) => fmt(((pct / 100) * p.samples * 1e6) / PERF_HZ / run.forks, 2);
    lines.push('', `perf, ${system}: ${p.samples} samples at ${PERF_HZ} Hz over a ${run.forks}-fork storm ` +
      `(${fmt((p.samples * 1e6) / PERF_HZ / run.forks, 2)} µs sampled per fork; /proc says ${fmt(run.cpuUs, 2)})`, '');
    const counts = Object.entries(p.counts ?? {}).filter(([, n]) => n > 0);
    if (counts.length) {
      lines.push(`perf stat, per fork: ${counts.map(([k, n]) => `${k} ${fmt(n / run.forks, 2)}`).join(', ')}`, '');
    }
    lines.push('| share | ≈ µs per fork | where (dso) |', '| --- | --- | --- |');
    for (const d of p.byDso) lines.push(`| ${fmt(d.pct)}% | ${perFork(d.pct)} | ${d.what} |`);
    lines.push('', '| share | ≈ µs per fork | symbol |', '| --- | --- | --- |');
    for (const d of p.bySym.slice(0, 14)) lines.push(`| ${fmt(d.pct)}% | ${perFork(d.pct)} | ${d.what.replace(/\|/g, '\\|')} |`);
    const user = p.bySymAll.filter((d) => !d.what.startsWith('[kernel'));
    if (user.length > 0 && system === 'relayfork') {
      lines.push('', 'User space only (the kernel rows above are where the VM\'s timer samples land, not where time is spent):', '',
        '| share | ≈ µs per fork | symbol |', '| --- | --- | --- |');
      for (const d of user.slice(0, 20)) lines.push(`| ${fmt(d.pct)}% | ${perFork(d.pct)} | ${d.what.replace(/\|/g, '\\|')} |`);
    }
  }
  const cp = profileReport.cpuprof;
  if (cp) {
    const th = cp.run.threads;
    const total = th.reduce((a, t) => a + t.ticks, 0);
    lines.push('', `node --cpu-prof, relayfork, ${cp.run.forks}-fork storm. CPU by thread: ` +
      th.slice(0, 4).map((t) => `${t.comm}[${t.tid}] ${fmt((100 * t.ticks) / total, 0)}%`).join(', '));
    for (const p of cp.profiles.slice(0, 1)) {
      lines.push('', `Busiest thread's profile (${p.file}), self time excluding idle and time blocked in poll(2):`, '',
        '| % of busy | function | where |', '| --- | --- | --- |');
      for (const t of p.top) {
        lines.push(`| ${fmt(t.busyPct)} | ${t.name} | ${t.url ? `${t.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${t.line}` : ''} |`);
      }
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------
// main

async function machine() {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const load = (await readFile('/proc/loadavg', 'utf8').catch(() => '')).split(' ').slice(0, 3).join(' ');
  return { nproc: cpus().length, kernel: release(), cpu: model, node: process.version, load };
}

async function main() {
  if (process.getuid?.() !== 0) die('needs root: the daemon mounts FUSE and the forwarders read the proc connector');
  if (opt.keep) {
    outDir = path.join(BENCH_DIR, 'out', new Date().toISOString().replace(/[:.]/g, '-'));
    await mkdir(outDir, { recursive: true });
  }
  bins = await buildHelpers();
  const uid = num(opt['receiver-uid'], 61905);
  if (uid > 0) {
    // The receiver binary must be reachable by that user; without arguments it exits 2.
    const probe = await runCmd(bins.receiver, [], 5000, { uid, gid: uid });
    if (probe.code === 2) receiverIds = { uid, gid: uid };
    else say(`bench: receivers cannot run as uid ${uid} (${probe.stderr.trim() || probe.code}); running them as root`);
  }
  const fs = opt['no-forkstat'] || !only.has('max') ? { path: null, why: 'skipped' } : await findForkstat(say);
  const m = await machine();
  const ref = reference(bins.reference);
  const pairSystems = [relayfork, ref];
  const nodePeer = opt['node-min'] ? [nodeMin] : [];
  const maxSystems = [relayfork, ref, ...nodePeer, ...(fs.path ? [forkstat(fs.path)] : []), none];

  const method = `relayfork benchmark — method
  Machine: ${m.nproc} CPUs, ${m.cpu}, Linux ${m.kernel}, Node ${m.node}, load average at start ${m.load}.
  A = relayfork (node bin/relayfork.js mount <tmp> --log-level warn; registrants written to processes),
  B = reference (scripts/bench/c/reference.c: proc connector, fork-only filter, 8 MiB buffer, pidfd_send_signal).
  Each figure is run for A and B in alternation (A B A B ..., ${cfg.pairs} pair(s)); the table shows medians and
  the ratio A/B. Every run starts a fresh forwarder and fresh receivers (C, signalfd, signal ${SIGNO},
  ${receiverIds.uid !== undefined ? `uid ${receiverIds.uid}, so their signal queue is not root's` : 'as root'}),
  warms the forwarder up with a ${WARMUP_S} s storm (JIT, first faults) and, for CPU and latency figures, lets it
  idle ${cfg.settleS} s (past a fresh Node process's start-up: V8's memory reducer runs a full GC ~8 s after its last
  one), then measures its steady state.${nodePeer.length ? `
  node-min = scripts/bench/node-min.mjs, the reference's loop in plain Node (koffi, main thread), in the max and
  latency groups: what Node itself costs on this path; its figures are in the notes.` : ''}
  Storm (C): N workers each fork(); child _exit(0); parent waitpid — unpaced ("max", ${cfg.maxWorkers} workers) or
  paced to a total rate (${cfg.pacedWorkers} workers), ${cfg.secs} s per run; it logs child_pid t_before_fork and the
  receivers log si_pid si_value t_at_read (CLOCK_MONOTONIC). Delivery counts only signals whose si_pid is a
  storm worker (the host's other forks are relayed too). Latency matches each read to the latest fork of
  that child PID before it. CPU = run time of the forwarder process (all threads, /proc/PID/task/*/schedstat,
  in ns; the user/sys split from /proc/PID/stat's ${CLK_TCK} Hz ticks) from just before the storm until it has drained its socket (≤ 16 KiB
  queued, Rmem in /proc/net/netlink), divided by every fork event on the host in that window (/proc/stat
  processes: the storm's and other users', which a forwarder reads too). Each run waits up to
  ${QUIET_WAIT_MS / 1000} s (${quick ? 20 : 90} s in all) for the rest of the host to fork under ${QUIET_RATE}/s before it starts. forkstat: ${fs.path ? `${fs.path} -e fork, output to /dev/null, same storm, no registrant` : `not measured (${fs.why})`}.
  The machine is shared and noisy: read medians and ratios, not single runs.`;
  console.log(method);
  console.log('');

  const t0 = Date.now();
  try {
    if (only.has('max')) await groupMax(maxSystems);
    if (only.has('max10')) await groupMax10(pairSystems);
    if (only.has('latency')) await groupLatency([...pairSystems, ...nodePeer]);
    if (only.has('fanout')) await groupFanout(pairSystems);
    if (only.has('sigstop')) await groupSigstop(pairSystems);
    if (only.has('rss')) await groupRss();
    if (only.has('registry')) await groupRegistry();
    if (only.has('profile')) await groupProfile();
  } finally {
    await stopAll();
  }
  const heading = `Results (${((Date.now() - t0) / 1000).toFixed(0)} s of runs; medians; ratio = relayfork / reference)`;
  const tbl = table();
  const prof = profileText();
  console.log(`\n${heading}\n\n${tbl}`);
  if (prof) console.log(`\nProfile\n${prof}`);
  if (opt.md) {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(opt.md, `\`\`\`\n${method}\n\`\`\`\n\n${heading}\n\n${tbl}\n${prof ? `\n### Profile\n${prof}\n` : ''}`);
  }
  if (opt.json) {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(opt.json, JSON.stringify({ machine: m, cfg, results, runs: raw, profile: profileReport }, null, 1));
  }
}

main().catch(async (err) => {
  await stopAll();
  console.error(`bench: ${err instanceof Error ? err.stack : err}`);
  process.exit(1);
});
