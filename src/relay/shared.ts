import type { SourceRequest } from '../sources/select.js';

// Memory shared by the main thread and the relay worker. The worker alone
// writes the counters (plain stores, exact at any read); the main thread alone
// writes the control slots (Atomics). The events ring has its own rules
// (events/ring.ts).
import { createEventsShared, type EventsShared } from '../events/ring.js';

export const Counter = {
  forksSeen: 0,
  forksLost: 1,
  signalsSent: 2,
  signalsDropped: 3,
  registrantsPruned: 4,
  lossEvents: 5,
} as const;
const COUNTERS = 6;

export const Control = {
  /**
   * Bumped after every registry message and signal change: the worker drains
   * its port and re-reads the signal when it moves.
   */
  registryGeneration: 0,
  /** The signal to send (the worker takes it when registryGeneration moves). */
  signal: 1,
  /** Non-zero: the worker finishes its loop and exits. */
  stop: 2,
} as const;
const CONTROLS = 4;

export interface SharedState {
  counters: Float64Array;
  control: Int32Array;
  /** The fork ring behind relayfork/events. */
  events: EventsShared;
}

export function createSharedState(signal: number, eventsBuffer: number): SharedState {
  const state = {
    counters: new Float64Array(new SharedArrayBuffer(COUNTERS * 8)),
    control: new Int32Array(new SharedArrayBuffer(CONTROLS * 4)),
    events: createEventsShared(eventsBuffer),
  };
  Atomics.store(state.control, Control.signal, signal);
  return state;
}

/** Messages from the main thread to the worker, over a MessagePort. */
export type ToWorker =
  | { t: 'add'; id: number; pid: number; pidfd: number }
  | { t: 'remove'; id: number };

/** Messages from the worker to the main thread. */
export type FromWorker =
  /** wakePort: the netlink port that ends the worker's wait (wakeReceiver), null for the poll source. */
  | { t: 'ready'; source: string; detail: Record<string, unknown>; wakePort: number | null }
  /** The mount table changed (/proc/self/mountinfo polled POLLPRI): the main thread looks at its mount. */
  | { t: 'mounts' }
  | { t: 'unavailable'; source: string; reason: string }
  | { t: 'exited'; id: number; pid: number; why: 'exit' | 'esrch' }
  | { t: 'failed'; message: string; stack?: string }
  /** A log line (pino JSON, with its newline) for the main thread to write. */
  | { t: 'log'; line: string };

export interface WorkerConfig {
  source: SourceRequest;
  /** For the poll source (chosen or fallen back to). */
  pollIntervalMs: number;
  threads: boolean;
  logLevel: string;
  state: SharedState;
}
