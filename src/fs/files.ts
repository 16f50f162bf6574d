// The node table: every path the filesystem serves, with its mode and the
// behaviour behind it. A behaviour is a plain object: read() renders the whole
// content, write(text) applies one write(2); both throw RelayError.
import { readFileSync } from 'node:fs';
import { parseProcessesWrite, parseSignal, renderProcesses, renderSignal } from '../control/grammar.js';
import type { Registry } from '../registry.js';

export interface FileBehaviour {
  read(): string;
  write?(text: string): void;
}

export type Node =
  | { kind: 'dir'; mode: number; entries: readonly string[] }
  | { kind: 'file'; mode: number; behaviour: FileBehaviour };

export interface Controls {
  registry: Registry;
  signal: { get(): number; set(signo: number): void };
}

/** The kernel's current pid_max; it can change at run time, so it is read per write. */
export function pidMax(): number {
  // procfs, not our own mount.
  const n = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1').trim());
  return Number.isFinite(n) && n > 0 ? n : 4194304;
}

export function processesFile(registry: Registry): FileBehaviour {
  return {
    read: () => renderProcesses(registry.pids()),
    write: (text) => registry.apply(parseProcessesWrite(text, pidMax())),
  };
}

export function signalFile(signal: Controls['signal']): FileBehaviour {
  return {
    read: () => renderSignal(signal.get()),
    write: (text) => signal.set(parseSignal(text)),
  };
}

/** Builds the table; more files are more rows, handed in by the daemon. */
export function buildTree(files: Record<string, { mode: number; behaviour: FileBehaviour }>): Map<string, Node> {
  const tree = new Map<string, Node>();
  tree.set('/', { kind: 'dir', mode: 0o755, entries: ['relayfork'] });
  tree.set('/relayfork', { kind: 'dir', mode: 0o555, entries: Object.keys(files) });
  for (const [name, f] of Object.entries(files)) {
    tree.set(`/relayfork/${name}`, { kind: 'file', mode: f.mode, behaviour: f.behaviour });
  }
  return tree;
}

export function coreFiles(c: Controls): Record<string, { mode: number; behaviour: FileBehaviour }> {
  return {
    processes: { mode: 0o644, behaviour: processesFile(c.registry) },
    signal: { mode: 0o644, behaviour: signalFile(c.signal) },
  };
}
