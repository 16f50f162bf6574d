// Loading fuse-native. Its prebuilt addon links libfuse.so.2, which a fresh
// machine lacks; npm's fuse-shared-library ships one. Loading that copy first
// (by absolute path) satisfies the addon's NEEDED entry by soname, so neither a
// compiler nor a system package is needed.
import { createRequire } from 'node:module';
import koffi from 'koffi';

const require = createRequire(import.meta.url);

export type Cb<T = never> = [T] extends [never] ? (code: number) => void : (code: number, value?: T) => void;

export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtime: Date;
  atime: Date;
  ctime: Date;
}

export interface FuseOps {
  init?(cb: Cb): void;
  getattr(path: string, cb: Cb<Stat>): void;
  fgetattr?(path: string, fd: number, cb: Cb<Stat>): void;
  readdir(path: string, cb: (code: number, names?: string[], stats?: Stat[]) => void): void;
  open(path: string, flags: number, cb: Cb<number>): void;
  opendir?(path: string, flags: number, cb: Cb<number>): void;
  release(path: string, fd: number, cb: Cb): void;
  read(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb): void;
  write(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb): void;
  truncate(path: string, size: number, cb: Cb): void;
  ftruncate(path: string, fd: number, size: number, cb: Cb): void;
  [op: string]: unknown;
}

export interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  _fuseOptions(): string;
}

export interface FuseClass {
  new (mnt: string, ops: FuseOps, opts: Record<string, unknown>): FuseInstance;
  prototype: FuseInstance;
  [errno: string]: unknown;
}

let loaded: FuseClass | null = null;

export function loadFuse(): FuseClass {
  if (loaded) return loaded;
  const shared = require('fuse-shared-library') as { lib: string };
  koffi.load(shared.lib);
  loaded = require('fuse-native') as FuseClass;
  return loaded;
}
