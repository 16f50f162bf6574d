// Wires the filesystem, the registry and the relay; start and stop.
import { mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { StatsSnapshot } from './control/stats.js';
import { FatalError } from './errors.js';
import { EventsHub } from './events/hub.js';
import { buildTree, coreFiles, eventsFile, statsFile } from './fs/files.js';
import { mountFs, mountsAt, type MountedFs } from './fs/mount.js';
import { MNT_DETACH, umount2 } from './kernel/syscalls.js';
import { logger } from './log.js';
import { Registry } from './registry.js';
import { Relay } from './relay/relay.js';
import type { SourceRequest } from './sources/select.js';

export interface DaemonOptions {
  mountDir: string;
  signal: number;
  source: SourceRequest;
  /** How often the poll source lists processes, when it runs. */
  pollIntervalMs: number;
  threads: boolean;
  logLevel: string;
  /** Lines an `events` reader may fall behind before it loses the oldest. */
  eventsBuffer: number;
}

const CAP_KILL = 5;
const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;
const FUSE_TYPE = 'fuse.relayfork';

async function effectiveCaps(): Promise<bigint> {
  const status = await readFile('/proc/self/status', 'utf8');
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}
const has = (caps: bigint, cap: number): boolean => (caps & (1n << BigInt(cap))) !== 0n;

/** The mount point as /proc/self/mountinfo spells it, without touching a stale mount. */
async function canonicalMountpoint(dir: string): Promise<string> {
  const abs = resolve(dir);
  if (abs === '/') throw new FatalError('refusing to mount over /', 2);
  let parent: string;
  try {
    parent = await realpath(dirname(abs));
  } catch {
    await mkdir(dirname(abs), { recursive: true });
    parent = await realpath(dirname(abs));
  }
  return `${parent === '/' ? '' : parent}/${basename(abs)}`;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref())]);
}

/**
 * A daemon killed with SIGKILL leaves its mount behind ("Transport endpoint is
 * not connected"). Clear such mounts; refuse a mount point that is live.
 */
async function clearStaleMounts(mountpoint: string): Promise<void> {
  const log = logger('daemon');
  for (let i = 0; i < 16; i++) {
    const here = await mountsAt(mountpoint);
    const top = here[here.length - 1];
    if (!top) return;
    if (!top.fstype.startsWith('fuse')) {
      throw new FatalError(`${mountpoint} is already a mount point (${top.fstype}); choose an empty directory`);
    }
    const probe = await withTimeout(stat(mountpoint).then(() => 'live' as const, (e: NodeJS.ErrnoException) => e.code ?? 'error'), 2000);
    if (probe === 'live') {
      throw new FatalError(`${mountpoint} is already served by a running ${top.fstype === FUSE_TYPE ? 'relayfork' : top.fstype}; stop it first`);
    }
    if (probe === 'timeout') {
      throw new FatalError(`${mountpoint} is a ${top.fstype} mount that does not answer (its daemon stopped?); stop that daemon or run umount -l on it`);
    }
    if (probe !== 'ENOTCONN') {
      throw new FatalError(`${mountpoint} is a ${top.fstype} mount that cannot be used (${probe})`);
    }
    const e = umount2(mountpoint, MNT_DETACH);
    if (e !== 0) throw new FatalError(`could not clear the stale mount at ${mountpoint} (errno ${e})`);
    log.info({ mountpoint, fstype: top.fstype }, 'cleared a stale mount left by a daemon that died');
  }
  throw new FatalError(`${mountpoint} has too many stacked mounts to clear`);
}

export interface Daemon {
  readonly mountpoint: string;
  /** Resolves with the exit status once the daemon has stopped. */
  readonly done: Promise<number>;
  stop(code?: number): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const log = logger('daemon');
  const caps = await effectiveCaps();
  if (!has(caps, CAP_SYS_ADMIN)) {
    throw new FatalError('mounting a FUSE filesystem needs root (CAP_SYS_ADMIN); run it as root');
  }
  // Without CAP_NET_ADMIN the proc connector is out of reach: `auto` finds
  // that out for itself (the subscription fails) and polls instead.
  if (!has(caps, CAP_NET_ADMIN) && opts.source === 'netlink') {
    throw new FatalError('--source netlink needs root: the proc connector takes CAP_NET_ADMIN (run it as root, or use --source poll)');
  }
  if (!has(caps, CAP_KILL)) log.warn('without CAP_KILL only processes of this user can be signalled');

  const mountpoint = await canonicalMountpoint(opts.mountDir);
  await clearStaleMounts(mountpoint);
  await mkdir(mountpoint, { recursive: true });

  const started = performance.now();
  const relay = await Relay.start({
    source: opts.source,
    pollIntervalMs: opts.pollIntervalMs,
    signal: opts.signal,
    threads: opts.threads,
    logLevel: opts.logLevel,
    eventsBuffer: opts.eventsBuffer,
  });
  log.info({ source: relay.source, requested: opts.source, ...relay.sourceDetail }, 'fork source ready');
  if (relay.source === 'poll') {
    log.info({ intervalMs: opts.pollIntervalMs }, 'polling the process table: a child that lives less than an interval may be missed; misses are counted and logged');
    if (opts.threads) log.warn('--threads has no effect with the poll source: ps lists processes, not threads');
  }

  const registry = new Registry(relay);
  relay.onExited = (id) => registry.exited(id);
  registry.onPruned = (pid) => logger('registry').info({ registrant: pid, why: 'exit' }, 'registrant gone');

  const events = new EventsHub(relay.events, { mountpoint, path: '/relayfork/events' });
  const stats = (): StatsSnapshot => {
    registry.pruneExited();
    const c = relay.counters();
    const e = events.stats();
    return {
      source: relay.source,
      signal: relay.signal,
      registrants: registry.size,
      forksSeen: c.forksSeen,
      forksLost: c.forksLost,
      signalsSent: c.signalsSent,
      signalsDropped: c.signalsDropped,
      // Counted by the registry, which removes each registrant once however
      // its end was noticed (the worker's exit watch, ESRCH, or a write).
      registrantsPruned: registry.counters.pruned,
      uptimeS: Math.floor((performance.now() - started) / 1000),
      eventsReaders: e.readers,
      eventsLost: e.lost,
    };
  };

  let fs: MountedFs;
  try {
    const tree = buildTree({
      ...coreFiles({ registry, signal: { get: () => relay.signal, set: (n) => (relay.signal = n) } }),
      stats: { mode: 0o444, behaviour: statsFile(stats) },
      events: { mode: 0o444, behaviour: eventsFile(() => events.open()) },
    });
    fs = await mountFs(mountpoint, tree, { onInterrupt: () => events.interrupted() });
  } catch (err) {
    await relay.stop();
    const msg = err instanceof Error ? err.message : String(err);
    throw new FatalError(`could not mount ${mountpoint}: ${msg}`, 1, { cause: err });
  }
  log.info({ mountpoint, source: relay.source, signal: relay.signal, threads: opts.threads }, 'mounted');

  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  let stopping = false;

  const stop = async (code = 0, unmount = true): Promise<void> => {
    if (stopping) return;
    stopping = true;
    events.stop(); // waiting `events` readers get end of file
    if (unmount) fs.unmount();
    await relay.stop();
    registry.clear();
    // registrantsPruned as stats gives it: the registry's count (the worker's
    // own can count an exit twice when a read of processes pruned it first).
    log.info({ mountpoint, ...relay.counters(), registrantsPruned: registry.counters.pruned }, 'unmounted');
    resolveDone(code);
  };

  relay.onFailed = (err) => {
    log.error({ err }, 'the relay failed; stopping');
    void stop(1);
  };

  // An administrator may unmount the directory under us: then exit rather than
  // run on, serving nobody. The relay worker says when the mount table changes.
  relay.onMountsChanged = () => {
    if (stopping) return;
    mountsAt(mountpoint).then(
      (here) => {
        if (stopping || here.some((m) => m.fstype === FUSE_TYPE)) return;
        log.error({ mountpoint }, 'the filesystem was unmounted from outside; exiting');
        void stop(1, false);
      },
      (err: unknown) => log.warn({ err }, 'could not read /proc/self/mountinfo'),
    );
  };

  return { mountpoint, done, stop: (code) => stop(code) };
}
