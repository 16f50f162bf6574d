// The forwarders under test, behind one shape:
//   start({ registrants: pid[], nodeArgs?: string[] }) → { name, pid, extra(), stop() → summary }
// relayfork is the built daemon on a fresh temporary mount; reference is the C
// forwarder; forkstat (-e fork) and none (no forwarder) are the baselines.
import { mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseKv } from './analyze.mjs';
import { REPO_ROOT } from './build.mjs';
import { mounts, runCmd, sleep, spawnLines, stopChild } from './procs.mjs';

export const SIGNO = 34;
const CLI = path.join(REPO_ROOT, 'bin', 'relayfork.js');

/** Writes text into a file on the mount from a child shell (never from this process). */
export async function writeFromShell(file, text) {
  const r = await runCmd('sh', ['-c', 'printf "%s\\n" "$1" > "$2"', 'sh', text, file], 10_000);
  if (r.code !== 0) throw new Error(`writing "${text.slice(0, 60)}" to ${file} failed: ${r.stderr.trim() || r.signal}`);
}

export async function readFromShell(file) {
  const r = await runCmd('cat', [file], 10_000);
  if (r.code !== 0) throw new Error(`cat ${file} failed: ${r.stderr.trim() || r.signal}`);
  return r.stdout;
}

async function waitMounted(mnt, daemon, ms = 20_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (daemon.exitInfo()) throw new Error(`relayfork exited before mounting: ${daemon.stderr().trim()}`);
    if ((await mounts()).some((m) => m.mountpoint === mnt && m.fstype.startsWith('fuse'))) return;
    await sleep(50);
  }
  throw new Error(`relayfork did not mount ${mnt} within ${ms} ms`);
}

export const relayfork = {
  name: 'relayfork',
  async start({ registrants = [], nodeArgs = [], cwd } = {}) {
    const mnt = await mkdtemp(path.join(tmpdir(), 'relayfork-bench-'));
    const daemon = spawnLines(process.execPath, [...nodeArgs, CLI, 'mount', mnt, '--log-level', 'warn'], {
      cwd: cwd ?? REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const cleanup = async () => {
      await stopChild(daemon, 'SIGTERM', 10_000);
      if ((await mounts()).some((m) => m.mountpoint === mnt)) await runCmd('umount', ['-l', mnt], 10_000);
      await rmdir(mnt).catch(() => rm(mnt, { recursive: true, force: true }).catch(() => {}));
    };
    try {
      await waitMounted(mnt, daemon);
      const processes = path.join(mnt, 'relayfork', 'processes');
      if (registrants.length > 0) {
        await writeFromShell(processes, registrants.join(' '));
        const listed = (await readFromShell(processes)).trim().split(/\s+/).filter(Boolean).map(Number);
        if (listed.length !== registrants.length) throw new Error(`processes lists ${listed.length} PIDs, expected ${registrants.length}`);
      }
      return {
        name: 'relayfork',
        pid: daemon.pid,
        mnt,
        processes,
        /** warn/error log lines so far, parsed */
        logs: () => daemon.lines.flatMap((l) => {
          try {
            return [JSON.parse(l)];
          } catch {
            return [];
          }
        }),
        async stop() {
          await cleanup();
          const logs = this.logs();
          const lostLines = logs.filter((l) => l.msg === 'forks lost');
          return {
            exit: daemon.exitInfo(),
            lossEvents: lostLines.length,
            lostTotal: lostLines.reduce((m, l) => Math.max(m, Number(l.lostTotal ?? 0)), 0),
            dropWarnings: logs.filter((l) => /dropping/.test(String(l.msg))).length,
            warnings: logs.filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg),
            stderr: daemon.stderr(),
          };
        },
      };
    } catch (err) {
      await cleanup();
      throw err;
    }
  },
};

export function reference(bin) {
  return {
    name: 'reference',
    async start({ registrants = [] } = {}) {
      const p = spawnLines(bin, ['-s', String(SIGNO), ...registrants.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
      await p.waitLine((l) => l.startsWith('ready'), 10_000);
      return {
        name: 'reference',
        pid: p.pid,
        async stop() {
          await stopChild(p, 'SIGTERM', 5000);
          const s = parseKv(p.lines.find((l) => l.startsWith('forks=')) ?? '');
          return { exit: p.exitInfo(), lossEvents: s.enobufs ?? NaN, lostTotal: s.enobufs ?? NaN, dropped: s.dropped, forks: s.forks };
        },
      };
    },
  };
}

export function forkstat(bin) {
  return {
    name: 'forkstat',
    async start() {
      // Its event lines go to /dev/null: what is measured is forkstat's own work.
      const p = spawnLines(bin, ['-e', 'fork'], { stdio: ['ignore', 'ignore', 'pipe'] });
      await sleep(700);
      if (p.exitInfo()) throw new Error(`forkstat exited at start: ${p.stderr().trim()}`);
      return {
        name: 'forkstat',
        pid: p.pid,
        async stop() {
          await stopChild(p, 'SIGINT', 5000);
          return { exit: p.exitInfo() };
        },
      };
    },
  };
}

export const none = {
  name: 'none',
  async start() {
    return { name: 'none', pid: null, async stop() { return {}; } };
  },
};

/** The minimal Node forwarder (node-min.mjs): what Node itself costs on this path. */
export const nodeMin = {
  name: 'node-min',
  async start({ registrants = [] } = {}) {
    const p = spawnLines(process.execPath, [path.join(REPO_ROOT, 'scripts', 'bench', 'node-min.mjs'), '-s', String(SIGNO), ...registrants.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
    await p.waitLine((l) => l.startsWith('ready'), 10_000);
    return {
      name: 'node-min',
      pid: p.pid,
      async stop() {
        await stopChild(p, 'SIGTERM', 5000);
        return { exit: p.exitInfo() };
      },
    };
  },
};
