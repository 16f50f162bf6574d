// The fork ring behind relayfork/events: a fixed SharedArrayBuffer of
// (parent, child) pairs that the relay worker appends to, and the main thread
// reads from for every open `events` handle. Memory is fixed at start: a reader
// that stops reading falls behind and loses the oldest lines, it never grows
// anything.
//
// Who writes what:
//   slots[HEAD]    the worker: how many pairs were ever appended, modulo 2^32
//                  (Atomics.store after the pair is written: it publishes it)
//   slots[READERS] the main thread: open `events` handles. While it is 0 the
//                  worker's whole cost per fork is one Atomics.load.
//   slots[WAKE]    the main thread sets it to 1 before it waits (Atomics.waitAsync);
//                  the worker clears it and notifies after its next append.

export const Slot = { head: 0, readers: 1, wake: 2 } as const;
const SLOTS = 4;

/** Lines a reader may fall behind before it loses the oldest: the default of --events-buffer. */
export const DEFAULT_EVENTS_BUFFER = 10_000;
export const MAX_EVENTS_BUFFER = 1_000_000;

export interface EventsShared {
  slots: Int32Array;
  /** 2 × capacity int32: pair i lives at [2i, 2i+1]. */
  pairs: Int32Array;
  /** A power of two, so that the 32-bit head wraps onto the same slot. */
  capacity: number;
  /** How far a reader may fall behind, in lines: at most capacity - 1. */
  limit: number;
}

/**
 * The ring for a reader bound of `lines`. Capacity is the next power of two
 * above it: appending pair h destroys pair h - capacity, so a reader at most
 * capacity - 1 behind never reads a pair while it is being overwritten.
 */
export function createEventsShared(lines: number): EventsShared {
  if (!Number.isInteger(lines) || lines < 1 || lines > MAX_EVENTS_BUFFER) {
    throw new RangeError(`events buffer must be 1..${MAX_EVENTS_BUFFER} lines`);
  }
  let capacity = 2;
  while (capacity - 1 < lines) capacity *= 2;
  return {
    slots: new Int32Array(new SharedArrayBuffer(SLOTS * 4)),
    pairs: new Int32Array(new SharedArrayBuffer(capacity * 8)),
    capacity,
    limit: lines,
  };
}

/** The worker's side: one append per relayed fork, only while someone reads. */
export class EventsWriter {
  private readonly slots: Int32Array;
  private readonly pairs: Int32Array;
  private readonly mask: number;
  private head: number;

  constructor(shared: EventsShared) {
    this.slots = shared.slots;
    this.pairs = shared.pairs;
    this.mask = shared.capacity - 1;
    this.head = Atomics.load(shared.slots, Slot.head);
  }

  /** Allocation-free: a few typed-array stores and, when a reader waits, one notify. */
  record(parent: number, child: number): void {
    const slots = this.slots;
    if (Atomics.load(slots, Slot.readers) === 0) return;
    const i = (this.head & this.mask) << 1;
    this.pairs[i] = parent;
    this.pairs[i + 1] = child;
    this.head = (this.head + 1) | 0;
    Atomics.store(slots, Slot.head, this.head); // publishes the pair
    if (Atomics.load(slots, Slot.wake) !== 0) {
      Atomics.store(slots, Slot.wake, 0);
      Atomics.notify(slots, Slot.wake);
    }
  }
}

/** What one copy out of the ring gave: pairs [first, first + count) are in `into`. */
export interface Taken {
  first: number;
  count: number;
}

/**
 * The main thread's side. Positions are "extended": counted from the ring's
 * creation in a double, so they never wrap (the worker's 32-bit head is
 * widened here; it must be looked at at least once every 2^31 forks, which
 * every read and the hub's timer do).
 */
export class EventsReader {
  readonly limit: number;
  private readonly slots: Int32Array;
  private readonly pairs: Int32Array;
  private readonly mask: number;
  private last32: number;
  private ext: number;

  constructor(shared: EventsShared) {
    this.slots = shared.slots;
    this.pairs = shared.pairs;
    this.mask = shared.capacity - 1;
    this.limit = shared.limit;
    this.last32 = Atomics.load(shared.slots, Slot.head);
    this.ext = this.last32 >>> 0;
  }

  /** How many pairs were ever appended. */
  head(): number {
    const h = Atomics.load(this.slots, Slot.head);
    this.ext += (h - this.last32) >>> 0;
    this.last32 = h;
    return this.ext;
  }

  /**
   * Copies up to `max` pairs starting at position `from` into `into` (2 ints
   * a pair). Pairs older than the reader's limit are skipped: `first - from`
   * of them were lost. Pairs the worker may have overwritten during the copy
   * are checked for afterwards and dropped as well.
   */
  take(from: number, max: number, into: Int32Array): Taken {
    const head = this.head();
    let first = Math.max(from, head - this.limit);
    const count = Math.min(max, head - first, into.length >> 1);
    if (count <= 0) return { first, count: 0 };
    const mask = this.mask;
    const pairs = this.pairs;
    for (let k = 0; k < count; k++) {
      const i = ((first + k) & mask) << 1; // & is exact: positions stay below 2^53, mask below 2^31
      into[2 * k] = pairs[i]!;
      into[2 * k + 1] = pairs[i + 1]!;
    }
    // A pair p is safe while head <= p + capacity - 1 (appending p + capacity
    // overwrites it). Anything older than that now may be torn: drop it.
    const safeFrom = this.head() - this.mask;
    if (first >= safeFrom) return { first, count };
    const torn = Math.min(count, safeFrom - first);
    into.copyWithin(0, 2 * torn, 2 * count);
    first += torn;
    return { first, count: count - torn };
  }

  /** Marks whether anyone reads: the worker appends only while this is non-zero. */
  setReaders(n: number): void {
    Atomics.store(this.slots, Slot.readers, n);
  }

  /**
   * Arms the wake-up for the next append and returns a promise for it, or
   * null when pairs arrived since `seen` (nothing to wait for).
   */
  waitBeyond(seen: number): Promise<unknown> | null {
    Atomics.store(this.slots, Slot.wake, 1);
    if (this.head() !== seen) {
      Atomics.store(this.slots, Slot.wake, 0);
      return null;
    }
    const r = Atomics.waitAsync(this.slots, Slot.wake, 1);
    return r.async ? r.value : null;
  }

  /** Resolves any pending waitBeyond (used when stopping). */
  wakeAll(): void {
    Atomics.store(this.slots, Slot.wake, 0);
    Atomics.notify(this.slots, Slot.wake);
  }
}
