// Starts the built relayfork daemon as a real process on a fresh temporary mount point,
// and cleans up after it: every daemon started here is SIGKILLed if still running, every
// mount point used is lazily unmounted if still mounted, every temporary dir is removed.
// Call cleanupAll() (or cleanupDaemons()) from afterEach so a failing test leaves nothing.
//
// Nothing here touches the FUSE mount synchronously: a hung daemon must fail a test by
// its timeout, never freeze the test process.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readdir, realpath, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './native.js';
import { cleanupReceivers } from './receiver.js';

const execFileAsync = promisify(execFile);

export const CLI = path.join(REPO_ROOT, 'bin', 'relayfork.js');
export const DIST_CLI = path.join(REPO_ROOT, 'dist', 'cli.js');

export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Daemon {
  /** The mount point. */
  mnt: string;
  /** `${mnt}/relayfork` */
  dir: string;
  pid: number;
  proc: ChildProcess;
  /** Every stdout line that parsed as a JSON object, in order. */
  logs: LogLine[];
  /** All of stdout so far, raw. */
  stdout(): string;
  /** All of stderr so far. */
  stderr(): string;
  /** Exit status once the process has exited, else null. */
  exitInfo(): ExitInfo | null;
  /** Resolves when the process has exited (and its output has been read). */
  exited: Promise<ExitInfo>;
  /** Resolves with the first log line (past or future) matching pred. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends `signal` and waits for the exit; SIGKILLs and throws if it takes over 10 s. */
  stop(signal?: NodeJS.Signals): Promise<ExitInfo>;
}

export interface StartOptions {
  /** Extra arguments after `mount DIR --log-level debug`. */
  args?: string[];
  /** Mount here instead of on a fresh temporary mount point (e.g. over a stale mount). */
  mountDir?: string;
  /** How long to wait for the `mounted` log line; default 10 s. */
  timeoutMs?: number;
  /**
   * A command that runs the daemon, e.g. `unshare ... --` (then `pid` is that
   * command's PID). It must pass signals on or die with the daemon.
   */
  prefix?: string[];
  /** The daemon's environment (default: the test's). */
  env?: NodeJS.ProcessEnv;
  /** The relayfork script to run (default: this repository's bin/relayfork.js). */
  cli?: string;
}

const daemons = new Set<Daemon>();
const mountPoints = new Set<string>();
const tempDirs = new Set<string>();

// ---------------------------------------------------------------------------------
// build

let built: Promise<void> | null = null;

async function newestMtime(dir: string): Promise<number> {
  let newest = 0;
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (const e of entries) {
    if (!e.isFile() || !e.name.endsWith('.ts')) continue;
    // Node 20: `parentPath` (20.12+) or `path` holds the entry's directory.
    const parent = (e as unknown as { parentPath?: string; path?: string }).parentPath ??
      (e as unknown as { path?: string }).path ?? dir;
    newest = Math.max(newest, (await stat(path.join(parent, e.name))).mtimeMs);
  }
  return newest;
}

/**
 * Makes sure dist/ holds a build of src/ no older than the sources: runs the project's
 * own `tsc -p tsconfig.json` when dist/cli.js is missing or older than any src file.
 */
export function ensureBuilt(): Promise<void> {
  built ??= (async () => {
    let distTime: number | null = null;
    try {
      distTime = (await stat(DIST_CLI)).mtimeMs;
    } catch {
      distTime = null;
    }
    const srcTime = await newestMtime(path.join(REPO_ROOT, 'src'));
    if (distTime !== null && distTime >= srcTime) return;
    const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    try {
      await execFileAsync(process.execPath, [tsc, '-p', 'tsconfig.json'], {
        cwd: REPO_ROOT,
        maxBuffer: 16 * 1024 * 1024,
      });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message?: string };
      throw new Error(`building the daemon failed:\n${e.stdout ?? ''}${e.stderr ?? ''}${e.message ?? ''}`);
    }
  })();
  built.catch(() => {
    built = null;
  });
  return built;
}

// ---------------------------------------------------------------------------------
// mount table

function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
  options: string;
}

/** Entries of /proc/self/mounts (read asynchronously; it is not on the FUSE mount). */
export async function readMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 4) continue;
    out.push({
      source: unescapeMountField(f[0]!),
      target: unescapeMountField(f[1]!),
      fstype: f[2]!,
      options: f[3]!,
    });
  }
  return out;
}

/** The mount entries whose mount point is exactly `mnt` (several if stacked). */
export async function mountsAt(mnt: string): Promise<MountEntry[]> {
  return (await readMounts()).filter((m) => m.target === mnt);
}

async function lazyUnmount(mnt: string): Promise<void> {
  // A mount may be stacked over a stale one: peel them all, a bounded number of times.
  for (let i = 0; i < 8; i++) {
    if ((await mountsAt(mnt)).length === 0) return;
    try {
      await execFileAsync('umount', ['-l', mnt], { timeout: 5000 });
    } catch {
      // ignore: checked again above
    }
  }
}

// ---------------------------------------------------------------------------------
// temporary mount points

/**
 * A fresh temporary directory (mode 0755, so user nobody can traverse it) with an empty
 * `mnt` inside; both are cleaned up by cleanupDaemons().
 */
export async function makeMountDir(): Promise<string> {
  const tmp = await realpath(await mkdtemp(path.join(os.tmpdir(), 'relayfork-it-')));
  tempDirs.add(tmp);
  await chmod(tmp, 0o755);
  const mnt = path.join(tmp, 'mnt');
  await mkdir(mnt);
  await chmod(mnt, 0o755);
  mountPoints.add(mnt);
  return mnt;
}

// ---------------------------------------------------------------------------------
// the daemon

function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(what())), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

function describeOutput(d: { stdout(): string; stderr(): string }): string {
  const tail = (s: string) => (s.length > 4000 ? `…${s.slice(-4000)}` : s);
  return `--- stderr ---\n${tail(d.stderr())}\n--- stdout ---\n${tail(d.stdout())}`;
}

/** Spawns `node bin/relayfork.js mount MNT --log-level debug ...args` and waits for `mounted`. */
export async function startDaemon(opts: StartOptions = {}): Promise<Daemon> {
  await ensureBuilt();
  let mnt: string;
  if (opts.mountDir !== undefined) {
    mnt = opts.mountDir;
    mountPoints.add(mnt);
  } else {
    mnt = await makeMountDir();
  }

  const argv = [process.execPath, opts.cli ?? CLI, 'mount', mnt, '--log-level', 'debug', ...(opts.args ?? [])];
  const [cmd, ...cmdArgs] = [...(opts.prefix ?? []), ...argv];
  const proc = spawn(cmd!, cmdArgs, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });

  const logs: LogLine[] = [];
  let out = '';
  let err = '';
  let partial = '';
  let exit: ExitInfo | null = null;
  let closed = false;
  const waiters = new Set<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void; reject: (e: Error) => void }>();

  proc.stdout!.setEncoding('utf8');
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (chunk: string) => {
    err += chunk;
  });
  const takeLine = (line: string) => {
    if (line.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      return; // kept in stdout() only
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return;
    const entry = parsed as LogLine;
    logs.push(entry);
    for (const w of [...waiters]) {
      let hit = false;
      try {
        hit = w.pred(entry);
      } catch {
        hit = false;
      }
      if (hit) {
        waiters.delete(w);
        w.resolve(entry);
      }
    }
  };
  proc.stdout!.on('data', (chunk: string) => {
    out += chunk;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      takeLine(line);
    }
  });

  let spawnError: Error | null = null;
  const exited = new Promise<ExitInfo>((resolve) => {
    proc.on('error', (e) => {
      spawnError = e;
      if (proc.pid === undefined) {
        exit = { code: null, signal: null };
        closed = true;
        resolve(exit);
      }
    });
    proc.on('exit', (code, signal) => {
      exit = { code, signal };
    });
    proc.on('close', (code, signal) => {
      exit ??= { code, signal };
      if (partial !== '') {
        takeLine(partial);
        partial = '';
      }
      closed = true;
      for (const w of [...waiters]) {
        waiters.delete(w);
        w.reject(new Error(`daemon exited (${JSON.stringify(exit)}) without a matching log line\n${describeOutput(daemon)}`));
      }
      resolve(exit);
    });
  });

  const daemon: Daemon = {
    mnt,
    dir: path.join(mnt, 'relayfork'),
    pid: proc.pid ?? -1,
    proc,
    logs,
    stdout: () => out,
    stderr: () => err,
    exitInfo: () => exit,
    exited,
    waitForLog(pred, timeoutMs = 5000) {
      const past = logs.find((l) => {
        try {
          return pred(l);
        } catch {
          return false;
        }
      });
      if (past !== undefined) return Promise.resolve(past);
      if (closed) {
        return Promise.reject(new Error(`daemon has exited (${JSON.stringify(exit)}); no matching log line\n${describeOutput(daemon)}`));
      }
      return new Promise<LogLine>((resolve, reject) => {
        const w = {
          pred,
          resolve: (l: LogLine) => {
            clearTimeout(t);
            resolve(l);
          },
          reject: (e: Error) => {
            clearTimeout(t);
            reject(e);
          },
        };
        const t = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`no matching daemon log line within ${timeoutMs} ms\n${describeOutput(daemon)}`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (closed) return exit!;
      proc.kill(signal);
      try {
        return await withTimeout(exited, 10_000, () => `daemon did not exit within 10 s of ${signal}\n${describeOutput(daemon)}`);
      } catch (e) {
        proc.kill('SIGKILL');
        await withTimeout(exited, 5000, () => 'daemon did not exit after SIGKILL').catch(() => undefined);
        throw e;
      }
    },
  };
  daemons.add(daemon);

  if (spawnError !== null || proc.pid === undefined) {
    await exited;
    throw new Error(`could not spawn the daemon: ${String(spawnError)}`);
  }

  const timeoutMs = opts.timeoutMs ?? 10_000;
  try {
    await daemon.waitForLog((l) => l.msg === 'mounted', timeoutMs);
  } catch (e) {
    // Leave nothing running behind a failed start.
    if (!closed) {
      proc.kill('SIGKILL');
      await withTimeout(exited, 5000, () => 'daemon did not exit after SIGKILL').catch(() => undefined);
    }
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`daemon did not report "mounted": ${msg}`);
  }
  return daemon;
}

/** Runs the CLI to completion (e.g. a usage error), SIGKILLing it after timeoutMs. */
export async function runCli(
  args: string[],
  timeoutMs = 10_000,
  opts: Pick<StartOptions, 'prefix' | 'env'> = {},
): Promise<ExitInfo & { stdout: string; stderr: string; timedOut: boolean }> {
  await ensureBuilt();
  const [cmd, ...cmdArgs] = [...(opts.prefix ?? []), process.execPath, CLI, ...args];
  const proc = spawn(cmd!, cmdArgs, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  let timedOut = false;
  const t = setTimeout(() => {
    timedOut = true;
    proc.kill('SIGKILL');
  }, timeoutMs);
  const info = await new Promise<ExitInfo>((resolve) => {
    proc.on('error', () => resolve({ code: null, signal: null }));
    proc.on('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(t);
  return { ...info, stdout, stderr, timedOut };
}

// ---------------------------------------------------------------------------------
// cleanup

/**
 * SIGKILLs every daemon still running, lazily unmounts every mount point used that is
 * still mounted (`umount -l`, argument array, errors ignored), removes the temp dirs.
 */
export async function cleanupDaemons(): Promise<void> {
  const running = [...daemons];
  daemons.clear();
  await Promise.all(
    running.map(async (d) => {
      if (d.exitInfo() === null) {
        try {
          d.proc.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
      await withTimeout(d.exited, 5000, () => 'daemon did not exit').catch(() => undefined);
    }),
  );

  const mnts = [...mountPoints];
  mountPoints.clear();
  for (const mnt of mnts) await lazyUnmount(mnt);

  const dirs = [...tempDirs];
  tempDirs.clear();
  const mounts = await readMounts().catch(() => [] as MountEntry[]);
  for (const dir of dirs) {
    // Never recurse into something still mounted.
    if (mounts.some((m) => m.target === dir || m.target.startsWith(`${dir}/`))) continue;
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** cleanupDaemons() and every receiver still running. */
export async function cleanupAll(): Promise<void> {
  await cleanupReceivers();
  await cleanupDaemons();
}
