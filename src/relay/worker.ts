// The relay worker: the source's receive loop and the fan-out, side by side,
// so a fork costs no hop between threads. It never returns to its event loop
// while the netlink source runs; registry changes are taken from the port with
// receiveMessageOnPort, checked for every fork through a shared generation
// counter, so a write that returned before a fork started is always in effect.
import { openSync } from 'node:fs';
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { EventsWriter } from '../events/ring.js';
import { close, poll, POLLERR, POLLHUP, POLLIN, POLLPRI } from '../kernel/syscalls.js';
import { NetlinkSource } from '../sources/netlink.js';
import { PollSource } from '../sources/poll.js';
import { openSource, SourceUnavailable, type Chosen } from '../sources/select.js';
import type { ForkSink } from '../sources/source.js';
import { FanOut, type Target } from './fan-out.js';
import { LossLog } from './loss-log.js';
import { defaultDeps, PendingWatch } from './pending-watch.js';
import { Control, Counter, type FromWorker, type ToWorker, type WorkerConfig } from './shared.js';

const config = workerData as WorkerConfig;
const port = parentPort!;
const { counters, control } = config.state;
const post = (m: FromWorker): void => port.postMessage(m);
// Each line goes to the main thread, which writes it with its own. This thread
// does not return to its event loop while it relays, so pino's asynchronous
// destination would write the first line and queue every later one in memory
// for ever; a synchronous one would stall the relay whenever stdout is full.
const log = pino({ name: 'relayfork', level: config.logLevel }, { write: (line: string) => post({ t: 'log', line }) }).child({ module: 'relay' });
const events = new EventsWriter(config.state.events);

const IDLE_WAKE_MS = 250; // how soon a stop request is noticed on a quiet host (poll source)
/** How long the netlink loop relays before it looks at exits, stop requests and its checks. */
const RECEIVE_BUDGET_MS = 50;
/** Non-blocking receives made at start, so the receive loop's EAGAIN branch has type feedback. */
const PRIME_RECEIVES = 200;
/** The poll source loses forks by design: its losses are summed and logged at most this often. */
const POLL_LOSS_LOG_MS = 10_000;

const fanOut = new FanOut(config.state, {
  gone(t) {
    drop(t.id, 'esrch');
  },
  dropping(t, errno, count) {
    log.warn({ registrant: t.pid, errno, dropped: count, droppedTotal: t.dropped }, 'registrant is not taking signals; dropping');
  },
});

const pendingWatch = new PendingWatch(fanOut.targets, defaultDeps(log));
const lossLog = new LossLog(log);

let seenGeneration = -1;
let pollSetDirty = true;

function syncRegistry(): void {
  seenGeneration = Atomics.load(control, Control.registryGeneration);
  fanOut.syncSignal();
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const msg = m.message as ToWorker;
    if (msg.t === 'add') {
      pendingWatch.added(fanOut.add(msg.id, msg.pid, msg.pidfd));
    } else {
      const t = fanOut.remove(msg.id);
      if (t) close(t.pidfd);
      pendingWatch.removed();
    }
  }
  pollSetDirty = true;
}

function drop(id: number, why: 'exit' | 'esrch'): void {
  const t = fanOut.remove(id);
  if (!t) return;
  close(t.pidfd);
  pendingWatch.removed();
  counters[Counter.registrantsPruned]!++;
  pollSetDirty = true;
  log.info({ registrant: t.pid, why }, 'registrant gone');
  post({ t: 'exited', id: t.id, pid: t.pid, why });
}

// The poll source misses forks as a matter of course: its losses are summed
// and logged at info every POLL_LOSS_LOG_MS while non-zero. A netlink loss is
// an anomaly and is logged as it happens.
let lossesPeriodic = false;
let lossSinceLog = 0;
let lossWhy = '';
let lastLossLog = Date.now();

function logLosses(now: number): void {
  if (lossSinceLog === 0 || now - lastLossLog < POLL_LOSS_LOG_MS) return;
  log.info({
    lost: lossSinceLog,
    lostTotal: counters[Counter.forksLost],
    windowS: Math.round((now - lastLossLog) / 1000),
    why: lossWhy,
  }, 'forks missed by the poll source');
  lossSinceLog = 0;
  lastLossLog = now;
}

const traceForks = log.isLevelEnabled('trace');
const sink: ForkSink = {
  fork(parentTgid, childPid, childTgid) {
    if (Atomics.load(control, Control.registryGeneration) !== seenGeneration) syncRegistry();
    if (traceForks) log.trace({ parent: parentTgid, child: childPid, tgid: childTgid }, 'fork');
    fanOut.relay(parentTgid, childPid);
    events.record(parentTgid, childPid); // one Atomics.load while nobody reads `events`
  },
  lost(count, why) {
    // Not per fork: a source reports losses per overrun (or per batch while one lasts).
    counters[Counter.forksLost]! += count;
    if (lossesPeriodic) {
      // The poll's misses are routine: summed and logged every POLL_LOSS_LOG_MS.
      counters[Counter.lossEvents]!++;
      lossSinceLog += count;
      lossWhy = why;
    } else {
      lossLog.report(count, why, Date.now());
      counters[Counter.lossEvents] = lossLog.episodes;
    }
  },
};

async function run(): Promise<void> {
  let chosen: Chosen;
  try {
    chosen = await openSource(config.source, {
      threads: config.threads,
      pollIntervalMs: config.pollIntervalMs,
      onNotice: (what, detail) => log.warn({ what, detail }, 'unexpected proc connector message'),
      onSnapshotError: (err) => log.warn({ err }, 'listing processes failed; keeping the previous listing as the baseline'),
    });
  } catch (err) {
    if (err instanceof SourceUnavailable) {
      post({ t: 'unavailable', source: config.source, reason: err.message });
      return;
    }
    throw err;
  }
  const { source } = chosen;
  const detail: Record<string, unknown> = { reason: chosen.reason };
  if (source instanceof NetlinkSource) Object.assign(detail, source.subscription);
  if (source instanceof PollSource) {
    Object.assign(detail, { intervalMs: source.intervalMs, baselineProcesses: source.baselineSize });
    lossesPeriodic = true;
    lastLossLog = Date.now();
  }
  syncRegistry();
  const receiving = source instanceof NetlinkSource ? source : null;
  post({ t: 'ready', source: source.name, detail, wakePort: receiving ? receiving.portId() : null });

  // The mount table, for the main thread's unmount watch: /proc/self/mountinfo
  // polls POLLPRI (and POLLERR) once after each change to it. Watched here, in
  // the poll(2) this loop makes anyway, rather than read by a timer.
  const mountinfo = openSync('/proc/self/mountinfo', 'r');

  // struct pollfd { int fd; short events; short revents; }: slot 0 is a source
  // that is waited for in poll(2) (none: the netlink source waits in its own
  // recvfrom), slot 1 the mount table, slot i+2 is targets[i]'s pidfd.
  const FIRST_PIDFD = 2;
  let pfds = Buffer.alloc(8 * 16);
  let watched: Target[] = [];
  let nextTick = Date.now() + source.intervalMs; // the baseline was just taken
  // Relays anything already queued, ending each time in EAGAIN, a few times
  // over: V8 records type feedback only from a function's first few calls on,
  // and the optimizing compiler turns a branch without feedback into a deopt.
  // Unprimed, the first quiet second after the first burst threw the compiled
  // receive loop away, and a loop called a few times a second waited long to
  // be compiled again: at 1k forks/s it ran in baseline code, allocating.
  if (receiving) for (let i = 0; i < PRIME_RECEIVES; i++) receiving.drain(sink);
  try {
    while (Atomics.load(control, Control.stop) === 0) {
      if (receiving) {
        // Relay for up to RECEIVE_BUDGET_MS (or one receive timeout when quiet),
        // then come round: exits, stop requests, the periodic checks.
        receiving.receive(sink, RECEIVE_BUDGET_MS);
      }
      // Registrations made while it waited are watched from this poll on.
      if (Atomics.load(control, Control.registryGeneration) !== seenGeneration) syncRegistry();
      if (pollSetDirty) {
        watched = fanOut.targets.slice();
        if (pfds.length < 8 * (watched.length + FIRST_PIDFD)) pfds = Buffer.alloc(8 * (watched.length + 16));
        pfds.writeInt32LE(receiving ? -1 : (source.fd ?? -1), 0); // poll(2) skips a negative fd
        pfds.writeInt16LE(POLLIN, 4);
        pfds.writeInt32LE(mountinfo, 8);
        pfds.writeInt16LE(POLLPRI, 12);
        watched.forEach((t, i) => {
          pfds.writeInt32LE(t.pidfd, 8 * (i + FIRST_PIDFD));
          pfds.writeInt16LE(POLLIN, 8 * (i + FIRST_PIDFD) + 4);
        });
        pollSetDirty = false;
      }
      const timeout = receiving ? 0 : source.fd !== null ? IDLE_WAKE_MS : Math.max(0, Math.min(IDLE_WAKE_MS, nextTick - Date.now()));
      if (poll(pfds, watched.length + FIRST_PIDFD, timeout) > 0) {
        if ((pfds.readInt16LE(14) & (POLLPRI | POLLERR)) !== 0) post({ t: 'mounts' });
        for (let i = 0; i < watched.length; i++) {
          if ((pfds.readInt16LE(8 * (i + FIRST_PIDFD) + 6) & (POLLIN | POLLHUP | POLLERR)) !== 0) drop(watched[i]!.id, 'exit');
        }
      }
      const now = Date.now();
      lossLog.tick(now, counters[Counter.forksLost]!);
      pendingWatch.tick(now);
      if (receiving) continue;
      if (source.fd !== null) {
        if ((pfds.readInt16LE(6) & (POLLIN | POLLERR)) !== 0) source.drain(sink);
      } else if (Date.now() >= nextTick) {
        await source.drain(sink);
        nextTick += source.intervalMs;
        if (nextTick < Date.now()) nextTick = Date.now() + source.intervalMs;
        logLosses(Date.now());
      }
    }
  } finally {
    close(mountinfo);
    source.close();
    for (const t of fanOut.targets) close(t.pidfd);
  }
}

run().then(
  () => process.exit(0),
  (err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    post({ t: 'failed', message: e.message, ...(e.stack ? { stack: e.stack } : {}) });
    process.exit(1);
  },
);
