// The node table: every path the filesystem serves, with its mode and the
// behaviour behind it. A behaviour is a plain object, one of two kinds:
//  - a snapshot file: read() renders the whole content when the file is
//    opened, write(text) applies one write(2); both throw RelayError;
//  - a stream file: open() gives each open its own stream, whose read answers
//    through a callback, now or later, and whose release() frees it.
import { readFileSync } from 'node:fs';
import { parseProcessesWrite, parseSignal, renderProcesses, renderSignal } from '../control/grammar.js';
import { renderStats, type StatsSnapshot } from '../control/stats.js';
import type { Registry } from '../registry.js';

export interface SnapshotFile {
  read(): string;
  write?(text: string): void;
}

export interface FileStream {
  /**
   * One read(2) of up to `len` bytes at offset `pos`. Calls `reply` exactly
   * once, with the bytes (empty: end of file) or an error for the errno
   * adapter (a RelayError); it may wait as long as it must.
   */
  read(pos: number, len: number, reply: (err: unknown, data?: Buffer) => void): void;
  /** The last descriptor of this open is closed. */
  release(): void;
}

export interface StreamFile {
  open(): FileStream;
}

export type FileBehaviour = SnapshotFile | StreamFile;

export const isStream = (b: FileBehaviour): b is StreamFile => 'open' in b;

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
    read: () => {
      registry.pruneExited(); // never list a registrant that has exited
      return renderProcesses(registry.pids());
    },
    write: (text) => registry.apply(parseProcessesWrite(text, pidMax())),
  };
}

export function signalFile(signal: Controls['signal']): FileBehaviour {
  return {
    read: () => renderSignal(signal.get()),
    write: (text) => signal.set(parseSignal(text)),
  };
}

/** relayfork/stats: rendered at open, like every snapshot file. */
export function statsFile(snapshot: () => StatsSnapshot): FileBehaviour {
  return { read: () => renderStats(snapshot()) };
}

/** relayfork/events: each open is a live stream of forks. */
export function eventsFile(open: () => FileStream): FileBehaviour {
  return { open };
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
