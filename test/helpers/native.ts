// Compiles the small C helpers the integration tests run (test/helpers/<name>.c →
// test/helpers/bin/<name>, git-ignored), only when the binary is missing or older
// than its source. Async, so it can run from beforeAll.
import { execFile } from 'node:child_process';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const HELPERS_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HELPERS_DIR, '..', '..');
export const BIN_DIR = path.join(HELPERS_DIR, 'bin');

async function mtimeOf(file: string): Promise<number | null> {
  try {
    return (await stat(file)).mtimeMs;
  } catch {
    return null;
  }
}

const building = new Map<string, Promise<string>>();

/** Path of the compiled helper `name`, compiling test/helpers/<name>.c if needed. */
export function compileHelper(name: string): Promise<string> {
  let pending = building.get(name);
  if (pending === undefined) {
    pending = build(name);
    building.set(name, pending);
    // A failed build may be retried by a later call.
    pending.catch(() => building.delete(name));
  }
  return pending;
}

async function build(name: string): Promise<string> {
  const source = path.join(HELPERS_DIR, `${name}.c`);
  const binary = path.join(BIN_DIR, name);
  const srcTime = await mtimeOf(source);
  if (srcTime === null) throw new Error(`no C source for helper ${name}: ${source}`);
  const binTime = await mtimeOf(binary);
  if (binTime !== null && binTime >= srcTime) return binary;

  await mkdir(BIN_DIR, { recursive: true });
  // Compile beside the target and rename, so a concurrent run never sees half a binary.
  const tmp = `${binary}.tmp-${process.pid}`;
  try {
    await execFileAsync('cc', ['-O2', '-Wall', '-o', tmp, source], { cwd: REPO_ROOT });
    await rename(tmp, binary);
  } catch (err) {
    await rm(tmp, { force: true });
    const e = err as { stderr?: string; message?: string };
    throw new Error(`cc failed for ${source}: ${e.stderr || e.message}`);
  }
  return binary;
}
