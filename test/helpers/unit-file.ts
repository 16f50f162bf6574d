// Reads scripts/relayfork.service the way systemd reads a unit file (the subset it
// uses): [Section] headers, Key=Value lines, `#`/`;` comments, backslash
// continuations, repeated keys accumulating. The capability test takes its
// capability set from here, so the unit and what is tested cannot drift apart.
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { REPO_ROOT } from './native.js';

export const UNIT_PATH = path.join(REPO_ROOT, 'scripts', 'relayfork.service');

export type Unit = Map<string, Map<string, string[]>>;

export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | null = null;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0 || section === null) throw new Error(`unit file line ${i + 1}: not Key=Value in a section: ${line}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const values = section.get(key) ?? [];
    values.push(value);
    section.set(key, values);
  }
  return unit;
}

export async function readUnit(file = UNIT_PATH): Promise<Unit> {
  return parseUnit(await readFile(file, 'utf8'));
}

/** The last value of Section/Key (systemd: a later assignment wins), or undefined. */
export function get(unit: Unit, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

/** Space-separated list values of Section/Key, all assignments joined. */
export function list(unit: Unit, section: string, key: string): string[] {
  return (unit.get(section)?.get(key) ?? []).flatMap((v) => v.split(/\s+/).filter(Boolean));
}

/** Environment=A=1 B="two words" → { A: '1', B: 'two words' }. */
export function environment(unit: Unit): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of unit.get('Service')?.get('Environment') ?? []) {
    for (const m of v.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("([^"]*)"|\S*)/g)) env[m[1]!] = m[3] ?? m[2]!;
  }
  return env;
}

/** CAP_SYS_ADMIN → sys_admin, the spelling setpriv takes. */
export const setprivCap = (cap: string): string => cap.replace(/^CAP_/, '').toLowerCase();
