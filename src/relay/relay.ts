// Main-thread side of the relay: starts the worker that owns the fork source
// and the fan-out, tells it about registry changes, reads its counters.
import { Worker } from 'node:worker_threads';
import { FatalError } from '../errors.js';
import { logger, writeLogLine } from '../log.js';
import type { EventsShared } from '../events/ring.js';
import type { RegistryListener } from '../registry.js';
import { wakeReceiver } from '../sources/netlink.js';
import type { SourceRequest } from '../sources/select.js';
import { Control, Counter, createSharedState, type FromWorker, type SharedState, type ToWorker, type WorkerConfig } from './shared.js';

export interface RelayOptions {
  source: SourceRequest;
  pollIntervalMs: number;
  signal: number;
  threads: boolean;
  logLevel: string;
  /** Lines an `events` reader may fall behind (events/ring.ts). */
  eventsBuffer: number;
}

export interface RelayCounters {
  forksSeen: number;
  forksLost: number;
  signalsSent: number;
  signalsDropped: number;
  registrantsPruned: number;
}

const log = () => logger('relay');

export class Relay implements RegistryListener {
  /** Called when the worker sees a registrant's process end. */
  onExited: (id: number, pid: number) => void = () => {};
  /** Called if the worker dies: the daemon cannot relay any more. */
  onFailed: (err: Error) => void = () => {};
  /** Called when the host's mount table has changed (the worker watches it). */
  onMountsChanged: () => void = () => {};
  private stopping = false;

  private constructor(
    private readonly worker: Worker,
    private readonly state: SharedState,
    readonly source: string,
    readonly sourceDetail: Record<string, unknown>,
    private readonly wakePort: number | null,
  ) {}

  /** Starts the worker and resolves once the source is subscribed. */
  static start(opts: RelayOptions): Promise<Relay> {
    const log = logger('relay');
    const state = createSharedState(opts.signal, opts.eventsBuffer);
    const config: WorkerConfig = {
      source: opts.source, pollIntervalMs: opts.pollIntervalMs, threads: opts.threads, logLevel: opts.logLevel, state,
    };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: config });
    return new Promise((resolve, reject) => {
      let relay: Relay | null = null;
      worker.on('message', (m: FromWorker) => {
        switch (m.t) {
          case 'ready':
            relay = new Relay(worker, state, m.source, m.detail, m.wakePort);
            resolve(relay);
            break;
          case 'unavailable':
            reject(new FatalError(m.source === 'auto' ? `no fork source can run here: ${m.reason}` : `cannot use the ${m.source} fork source: ${m.reason}`));
            break;
          case 'exited':
            relay?.onExited(m.id, m.pid);
            break;
          case 'mounts':
            relay?.onMountsChanged();
            break;
          case 'log':
            writeLogLine(m.line);
            break;
          case 'failed': {
            const err = new Error(m.message);
            if (m.stack) err.stack = m.stack;
            if (relay) relay.onFailed(err);
            else reject(new FatalError(`the relay could not start: ${m.message}`, 1, { cause: err }));
            break;
          }
        }
      });
      worker.on('error', (err) => {
        if (relay) relay.onFailed(err);
        else reject(new FatalError(`the relay could not start: ${err.message}`, 1, { cause: err }));
      });
      worker.on('exit', (code) => {
        if (relay && !relay.stopping) relay.onFailed(new Error(`relay worker exited (code ${code})`));
        else if (!relay) reject(new FatalError(`the relay worker exited before it was ready (code ${code})`));
        log.debug({ code }, 'relay worker exited');
      });
    });
  }

  added(id: number, pid: number, pidfd: number): void {
    this.send({ t: 'add', id, pid, pidfd });
  }

  removed(id: number): void {
    this.send({ t: 'remove', id });
  }

  /** The fork ring the worker appends to while `events` is open. */
  get events(): EventsShared {
    return this.state.events;
  }

  get signal(): number {
    return Atomics.load(this.state.control, Control.signal);
  }

  /** Applies from the next fork the worker reads. */
  set signal(signo: number) {
    Atomics.store(this.state.control, Control.signal, signo);
    // The worker reads the signal when the generation moves (it checks that per fork).
    Atomics.add(this.state.control, Control.registryGeneration, 1);
  }

  counters(): RelayCounters {
    const c = this.state.counters;
    return {
      forksSeen: c[Counter.forksSeen]!,
      forksLost: c[Counter.forksLost]!,
      signalsSent: c[Counter.signalsSent]!,
      signalsDropped: c[Counter.signalsDropped]!,
      registrantsPruned: c[Counter.registrantsPruned]!,
    };
  }

  /** Asks the worker to finish; resolves when it has, or after timeoutMs. */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    Atomics.store(this.state.control, Control.stop, 1);
    // The netlink loop may be waiting in recvfrom for up to a second: end the wait.
    if (this.wakePort !== null && !wakeReceiver(this.wakePort)) log().debug('could not wake the relay worker; it stops within a second');
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    const timer = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
    await Promise.race([exited, timer]);
  }

  private send(msg: ToWorker): void {
    // Post, then bump the generation: the worker checks the generation for
    // every fork and drains the port when it moved, so the change is in effect
    // for any fork that starts after this returns.
    this.worker.postMessage(msg);
    Atomics.add(this.state.control, Control.registryGeneration, 1);
  }
}
