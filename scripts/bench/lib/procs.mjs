// Child processes and /proc readings for the benchmark. Nothing here touches a
// FUSE mount from this process: files on the mount are written by child processes.
import { spawn } from 'node:child_process';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { parseProcStat } from './analyze.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64 and arm64

/**
 * Spawns a command with its stdout split into lines. waitLine(pred, ms) resolves
 * with the first line (past or future) matching pred, or rejects on exit/timeout.
 */
export function spawnLines(cmd, args, opts = {}) {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  const lines = [];
  const waiters = new Set();
  let stderr = '';
  let partial = '';
  let exitInfo = null;
  proc.stdout?.setEncoding('utf8');
  proc.stdout?.on('data', (chunk) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop();
    for (const l of parts) {
      lines.push(l);
      for (const w of waiters) if (w.pred(l)) w.done(l);
    }
  });
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (c) => {
    if (stderr.length < 65536) stderr += c;
  });
  const exited = new Promise((resolve) => {
    proc.on('error', (err) => {
      stderr += String(err);
      exitInfo ??= { code: null, signal: null, error: err };
      resolve(exitInfo);
    });
    proc.on('close', (code, signal) => {
      if (partial) lines.push(partial);
      exitInfo ??= { code, signal };
      for (const w of waiters) w.fail(new Error(`${cmd} exited (${code ?? signal}) before the expected line; stderr: ${stderr.trim()}`));
      resolve(exitInfo);
    });
  });
  function waitLine(pred, ms = 10_000) {
    const seen = lines.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    if (exitInfo) return Promise.reject(new Error(`${cmd} has exited; stderr: ${stderr.trim()}`));
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        done: (l) => (clearTimeout(timer), waiters.delete(w), resolve(l)),
        fail: (e) => (clearTimeout(timer), waiters.delete(w), reject(e)),
      };
      const timer = setTimeout(() => w.fail(new Error(`timed out waiting for a line from ${cmd} ${args.join(' ')}`)), ms);
      waiters.add(w);
    });
  }
  return { proc, pid: proc.pid, lines, exited, waitLine, stderr: () => stderr, exitInfo: () => exitInfo };
}

/** Signals and waits; SIGKILLs after ms. Resolves with the exit info. */
export async function stopChild(child, signal = 'SIGTERM', ms = 10_000) {
  if (child.exitInfo()) return child.exitInfo();
  try {
    child.proc.kill(signal);
    child.proc.kill('SIGCONT'); // a forwarder stopped by the benchmark must see it
  } catch {
    // already gone
  }
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), ms);
  const info = await child.exited;
  clearTimeout(timer);
  return info;
}

/** Runs a command to completion: { code, stdout, stderr }; kills it after ms. */
export function runCmd(cmd, args, ms = 60_000, opts = {}) {
  return new Promise((resolve) => {
    const c = spawnLines(cmd, args, opts);
    c.proc.stdin?.end();
    const timer = setTimeout(() => c.proc.kill('SIGKILL'), ms);
    c.exited.then((info) => {
      clearTimeout(timer);
      resolve({ code: info.code, signal: info.signal, stdout: c.lines.join('\n'), stderr: c.stderr() });
    });
  });
}

/** utime/stime in clock ticks of a whole process (all its threads, live and gone), or null. */
export async function cpuTicks(pid) {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return null;
  }
}

/**
 * CPU time of a process in nanoseconds: the sum over its threads of the
 * scheduler's run time (/proc/PID/task/TID/schedstat, first field), exact
 * where /proc/PID/stat counts 10 ms ticks. Threads that ended are not counted
 * (the forwarders' threads live as long as they do). null when unreadable.
 */
export async function cpuNs(pid) {
  let tids;
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let ns = 0;
  for (const tid of tids) {
    try {
      ns += Number((await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'latin1')).split(' ')[0]);
    } catch {
      // the thread ended
    }
  }
  return ns;
}

/** Per-thread { tid, comm, utime, stime } of a process. */
export async function threadTicks(pid) {
  const out = [];
  let tids = [];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const text = await readFile(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      out.push({ tid: Number(tid), comm, ...parseProcStat(text) });
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** VmRSS and VmHWM in kB, or null. */
export async function memory(pid) {
  try {
    const s = await readFile(`/proc/${pid}/status`, 'latin1');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** Mount points (decoded) and fs types from /proc/self/mountinfo. */
export async function mounts() {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const dec = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return text.split('\n').filter(Boolean).map((l) => {
    const [pre, post] = l.split(' - ');
    return { mountpoint: dec(pre.split(' ')[4]), fstype: post?.split(' ')[0] ?? '' };
  });
}

/**
 * Waits until a process has stopped burning CPU (what it had queued is done):
 * two successive 200 ms samples within one tick. Returns the ms waited.
 */
export async function waitIdle(pid, maxMs = 60_000) {
  const t0 = Date.now();
  let prev = await cpuTicks(pid);
  let calm = 0;
  while (prev && Date.now() - t0 < maxMs) {
    await sleep(200);
    const cur = await cpuTicks(pid);
    if (!cur) break;
    const d = cur.utime + cur.stime - prev.utime - prev.stime;
    calm = d <= 1 ? calm + 1 : 0;
    prev = cur;
    if (calm >= 2) break;
  }
  return Date.now() - t0;
}

/** Forks (processes and threads) the host has made since boot: `processes` in /proc/stat. */
export async function hostForks() {
  const text = await readFile('/proc/stat', 'latin1');
  return Number(/^processes (\d+)$/m.exec(text)?.[1] ?? NaN);
}

/**
 * The process's proc connector sockets as /proc/net/netlink shows them: bytes
 * queued (Rmem, summed) and messages the kernel dropped for want of room (Drops,
 * summed), or null when it has none.
 */
export async function connectorQueue(pid) {
  const inodes = new Set();
  let fds = [];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return null;
  }
  await Promise.all(fds.map(async (fd) => {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }));
  const text = await readFile('/proc/net/netlink', 'latin1');
  let found = false;
  let rmem = 0;
  let drops = 0;
  for (const line of text.split('\n').slice(1)) {
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[1] !== '11' || !inodes.has(f[9])) continue;
    found = true;
    rmem += Number(f[4]);
    drops += Number(f[8]);
  }
  return found ? { rmem, drops } : null;
}

/**
 * Waits until the forwarder has caught up with what the kernel queued for it: its
 * connector sockets hold at most `slackBytes` (a few messages: the rest of the host
 * keeps forking) twice in a row, 100 ms apart; then 200 ms for the fan-out of the
 * last ones. A process without a connector socket is waited for by CPU instead.
 * Returns { ms, drained }.
 */
export async function waitDrained(pid, maxMs = 30_000, slackBytes = 16 * 1024) {
  const t0 = Date.now();
  let calm = 0;
  for (;;) {
    const q = await connectorQueue(pid);
    if (!q) {
      await waitIdle(pid, maxMs);
      return { ms: Date.now() - t0, drained: true };
    }
    calm = q.rmem <= slackBytes ? calm + 1 : 0;
    if (calm >= 2) break;
    if (Date.now() - t0 > maxMs) return { ms: Date.now() - t0, drained: false };
    await sleep(100);
  }
  await sleep(200);
  return { ms: Date.now() - t0, drained: true };
}

/**
 * Waits (up to maxMs) for the rest of the host to fork less than maxRate a
 * second, sampled over 500 ms. Returns the last rate seen.
 */
export async function waitQuiet(maxRate, maxMs, onWait) {
  const t0 = Date.now();
  let told = false;
  for (;;) {
    const a = await hostForks();
    await sleep(500);
    const rate = ((await hostForks()) - a) * 2;
    if (rate <= maxRate || Date.now() - t0 >= maxMs) return rate;
    if (!told) onWait?.(rate);
    told = true;
  }
}
