// Real file I/O on the FUSE mount from the test process, always asynchronous (a hung
// daemon then fails the test by its timeout instead of freezing the worker), and
// commands run as user nobody through setpriv.
import { execFile, spawn } from 'node:child_process';
import { open } from 'node:fs/promises';

function errCode(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : String(err);
}

/**
 * One open + one write(2) of the whole buffer + close, as `echo ... > file` does.
 * Returns null on success, else the error code ('EINVAL', 'ESRCH', ...). A short write
 * counts as a failure: 'SHORT_WRITE n/len'. `flag` 'w' opens with O_TRUNC like a
 * shell's `>`; 'r+' opens without it.
 */
export async function writeCtl(file: string, data: string | Buffer, flag: 'w' | 'r+' = 'w'): Promise<string | null> {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  let fh;
  try {
    fh = await open(file, flag);
  } catch (err) {
    return errCode(err);
  }
  try {
    const { bytesWritten } = await fh.write(buf, 0, buf.length);
    if (bytesWritten !== buf.length) return `SHORT_WRITE ${bytesWritten}/${buf.length}`;
    return null;
  } catch (err) {
    return errCode(err);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Reads the file to end of file in 4 KiB read(2) calls, as `cat` does. */
export async function readText(file: string): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const chunks: Buffer[] = [];
    for (let i = 0; i < 1024; i++) {
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) return Buffer.concat(chunks).toString('utf8');
      chunks.push(buf.subarray(0, bytesRead));
    }
    throw new Error(`${file}: no end of file after 4 MiB`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `sh -c SCRIPT sh ARGS...` as user nobody (uid/gid 65534, no supplementary
 * groups). Paths go in as positional parameters ("$1", ...), never into the script text.
 */
export function runAsNobody(script: string, args: string[] = [], timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-c', script, 'sh', ...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: unknown; signal?: NodeJS.Signals | null }) | null;
        resolve({
          code: e === null ? 0 : typeof e.code === 'number' ? e.code : null,
          signal: e?.signal ?? null,
          stdout,
          stderr,
        });
      },
    );
  });
}

/** Spawns `/bin/true` from this process and resolves with its pid once it has exited. */
export function forkTrue(): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/true', [], { stdio: 'ignore' });
    const pid = child.pid;
    child.on('error', reject);
    child.on('exit', (code) => {
      if (pid === undefined) reject(new Error('spawn /bin/true gave no pid'));
      else if (code !== 0) reject(new Error(`/bin/true exited ${code}`));
      else resolve(pid);
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
