// A fork storm: the compiled test/helpers/forkstorm.c, whose worker processes
// vfork children that exit at once. Every child's parent (si_pid) is one of
// `workers`, so a receiver's signals for the storm are easy to pick out.
import { spawn, type ChildProcess } from 'node:child_process';
import { compileHelper } from './native.js';

export interface StormOptions {
  /** Worker processes (default 1). */
  procs?: number;
  /** Forks per worker; or */
  forks?: number;
  /** run for this many seconds (default: until stop()). */
  seconds?: number;
  /** Forks per second, all workers together (default: as fast as they can). */
  rate?: number;
}

export interface Storm {
  proc: ChildProcess;
  /** The workers' PIDs: the si_pid of every storm child's signal. */
  workers: number[];
  /** Resolves when the storm is over, with the forks made. */
  done: Promise<{ forks: number; ms: number }>;
  /** Ends the storm early (SIGTERM); `done` still resolves. */
  stop(): void;
}

const storms = new Set<Storm>();

export async function startStorm(opts: StormOptions = {}): Promise<Storm> {
  const bin = await compileHelper('forkstorm');
  const args = ['-p', String(opts.procs ?? 1)];
  if (opts.forks !== undefined) args.push('-n', String(opts.forks));
  if (opts.seconds !== undefined) args.push('-t', String(opts.seconds));
  if (opts.rate !== undefined) args.push('-r', String(opts.rate));
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const workers: number[] = [];
  let out = '';
  let partial = '';
  let err = '';
  let onReady: (() => void) | null = null;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => {
    out += c;
    partial += c;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      const m = /^worker (\d+)$/.exec(line);
      if (m) workers.push(Number(m[1]));
      if (line === 'ready') onReady?.();
    }
  });
  const done = new Promise<{ forks: number; ms: number }>((resolve, reject) => {
    proc.on('close', (code, signal) => {
      onReady?.();
      const m = /^done (\d+) (\d+)$/m.exec(out);
      if (code === 0 && m) resolve({ forks: Number(m[1]), ms: Number(m[2]) });
      else reject(new Error(`forkstorm ended (${code ?? signal}) without "done": ${err}${out}`));
    });
  });
  done.catch(() => undefined);
  const storm: Storm = {
    proc,
    workers,
    done,
    stop: () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    },
  };
  storms.add(storm);
  await ready;
  return storm;
}

/** Ends every storm still running and waits for it. */
export async function cleanupStorms(): Promise<void> {
  const all = [...storms];
  storms.clear();
  await Promise.all(
    all.map(async (s) => {
      s.stop();
      await Promise.race([s.done.catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
      if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
    }),
  );
}
