// Small things every test file wants: the control files' paths, SI_ASYNCIO,
// and existence checks that never touch a FUSE mount synchronously.
import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { RelayError } from '../../src/errors.js';
import type { Daemon } from './daemon.js';

export const SI_ASYNCIO = -4;

export const processesOf = (d: Daemon): string => path.join(d.dir, 'processes');
export const signalOf = (d: Daemon): string => path.join(d.dir, 'signal');

export async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Whether a command is on PATH (a check run once, before tests that need it). */
export async function hasTool(name: string): Promise<boolean> {
  try {
    await promisify(execFile)('sh', ['-c', 'command -v "$1"', 'sh', name]);
    return true;
  } catch {
    return false;
  }
}

/** The RelayError code `fn` throws, or undefined if it returns; anything else is rethrown. */
export function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof RelayError) return err.code;
    throw err;
  }
  return undefined;
}
