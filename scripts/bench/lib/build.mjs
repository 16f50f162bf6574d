// Builds the benchmark's C pieces with `cc` (scripts/bench/c/NAME.c → scripts/bench/bin/NAME,
// git-ignored) when missing or older than their source, and finds forkstat, installing
// the Debian package when it is missing and we are root.
import { execFile } from 'node:child_process';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const BENCH_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(BENCH_DIR, '..', '..');
const C_DIR = path.join(BENCH_DIR, 'c');
export const BIN_DIR = path.join(BENCH_DIR, 'bin');

const mtime = (f) => stat(f).then((s) => s.mtimeMs, () => null);

async function compile(name) {
  const src = path.join(C_DIR, `${name}.c`);
  const bin = path.join(BIN_DIR, name);
  const [s, b] = await Promise.all([mtime(src), mtime(bin)]);
  if (s === null) throw new Error(`missing ${src}`);
  if (b !== null && b >= s) return bin;
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    await run('cc', ['-O2', '-Wall', '-Wextra', '-o', tmp, src]);
    await rename(tmp, bin);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new Error(`cc failed for ${src}: ${err.stderr || err.message}`);
  }
  return bin;
}

/** { storm, receiver, reference, fsops }: paths of the compiled helpers. */
export async function buildHelpers() {
  await mkdir(BIN_DIR, { recursive: true });
  const names = ['storm', 'receiver', 'reference', 'fsops'];
  const paths = await Promise.all(names.map(compile));
  return Object.fromEntries(names.map((n, i) => [n, paths[i]]));
}

async function which(cmd) {
  try {
    const { stdout } = await run('sh', ['-c', `command -v ${cmd}`]);
    return stdout.trim() || null;
  } catch {
    return null;
  }
}

/**
 * The path of forkstat, or null with the reason. Installs it with apt-get
 * (after an `apt-get update` if the first try fails) only when it is missing,
 * we are root and apt-get exists.
 */
export async function findForkstat(log) {
  const found = await which('forkstat');
  if (found) return { path: found };
  if (process.getuid?.() !== 0) return { path: null, why: 'forkstat is not installed and we are not root' };
  if (!(await which('apt-get'))) return { path: null, why: 'forkstat is not installed and there is no apt-get' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => run('apt-get', ['install', '-y', '-q', 'forkstat'], { env, timeout: 180_000 });
  log('forkstat is missing: apt-get install -y forkstat');
  try {
    await install();
  } catch {
    try {
      await run('apt-get', ['update', '-q'], { env, timeout: 180_000 });
      await install();
    } catch (err) {
      return { path: null, why: `apt-get install forkstat failed: ${String(err.stderr || err.message).trim().split('\n').pop()}` };
    }
  }
  const now = await which('forkstat');
  return now ? { path: now } : { path: null, why: 'forkstat is still missing after apt-get install' };
}
