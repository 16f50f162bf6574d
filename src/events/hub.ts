// The main thread's side of relayfork/events: every open handle's stream, the
// reads waiting for a fork, the wake-up when the worker appends one, and the
// answer to a waiting reader that was sent a signal.
//
// Waking: a read that finds nothing is parked; the hub arms the ring's wake
// slot and awaits Atomics.waitAsync on it. The worker, after its next append,
// sees the slot set, clears it and notifies: one notify per wake-up, none per
// fork, no timer while nothing happens.
//
// Batching: after a quiet spell a line goes out at once; while lines keep
// coming, a reader gets a reply at most every BATCH_MS (sooner once BATCH_PAIRS
// lines are waiting for it). Otherwise a storm costs one FUSE round trip per
// fork per reader (measured: scripts/events-bench.mjs).
//
// Interrupts: libfuse (mount option `intr`) signals the daemon when the kernel
// reports that a caller of a pending request got a signal, again every second
// until the request is answered. The hub then looks in /proc for the readers
// of `events` blocked in our reads (blocked-readers.ts) and answers the reads
// of those with a signal pending with EINTR; the reader's signal then acts.
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { RelayError } from '../errors.js';
import { logger } from '../log.js';
import { BlockedReaderFinder, type BlockedReader, type Target } from './blocked-readers.js';
import { EventsReader, type EventsShared } from './ring.js';
import { EventStream } from './stream.js';

/** Answers one read: an error (through the errno adapter) or the bytes. */
export type ReadReply = (err: unknown, data?: Buffer) => void;

/** One open `events` handle, as the filesystem uses it. */
export interface EventsHandle {
  read(pos: number, len: number, reply: ReadReply): void;
  release(): void;
}

interface PendingRead {
  stream: EventStream;
  pos: number;
  len: number;
  reply: ReadReply;
}

/**
 * The most pairs one read can use: libfuse 2 leaves the kernel's max_pages at
 * 32, so a read request is at most 128 KiB, over the shortest line (4 bytes).
 * A larger request just gets fewer lines.
 */
const SCRATCH_PAIRS = (128 * 1024) / 4 + 1;
/** Keeps the worker's 32-bit head widened while handles are open (it needs a look every 2^31 forks). */
const HEAD_TICK_MS = 60_000;
const EOF = Buffer.alloc(0);
/** The least time between two replies to one reader while lines keep coming. */
const BATCH_MS = 10;
/** Lines waiting for a reader that make it worth answering before BATCH_MS. */
const BATCH_PAIRS = 512;

type When = 'now' | 'later' | 'no-data';

export class EventsHub {
  private readonly log: Logger = logger('events');
  private readonly reader: EventsReader;
  private readonly scratch = new Int32Array(2 * SCRATCH_PAIRS);
  private readonly streams = new Set<EventStream>();
  private readonly pending = new Set<PendingRead>();
  private readonly finder: BlockedReaderFinder;
  private waiting = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private lostTotal = 0;
  private sweep: Promise<void> | null = null;
  private sweepAgain = false;
  private headTick: NodeJS.Timeout | null = null;

  constructor(shared: EventsShared, target: Target) {
    this.reader = new EventsReader(shared);
    this.finder = new BlockedReaderFinder(target);
  }

  /** Open handles now, and lines dropped for slow readers since start. */
  stats(): { readers: number; lost: number } {
    return { readers: this.streams.size, lost: this.lostTotal };
  }

  open(): EventsHandle {
    // Readers first, then the start position: a fork the worker reads after
    // this open returns is in the stream.
    this.reader.setReaders(this.streams.size + 1);
    const stream = new EventStream(this.reader, this.scratch, (n) => (this.lostTotal += n));
    this.streams.add(stream);
    this.headTick ??= setInterval(() => this.reader.head(), HEAD_TICK_MS).unref();
    this.log.debug({ readers: this.streams.size }, 'events opened');
    return {
      read: (pos, len, reply) => this.read(stream, pos, len, reply),
      release: () => this.release(stream),
    };
  }

  /** The filesystem was told a request was interrupted: find out whose. */
  interrupted(): void {
    if (this.pending.size === 0 || this.stopped) return;
    if (this.sweep) {
      this.sweepAgain = true;
      return;
    }
    this.sweep = this.answerInterrupted()
      .catch((err: unknown) => this.log.warn({ err }, 'could not look for interrupted readers'))
      .finally(() => {
        this.sweep = null;
        if (this.sweepAgain) {
          this.sweepAgain = false;
          this.interrupted();
        }
      });
  }

  /** Answers every waiting read with end of file; later reads get it at once. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const p of this.pending) p.reply(null, EOF);
    this.pending.clear();
    this.reader.wakeAll();
    if (this.headTick) clearInterval(this.headTick);
    if (this.timer) clearTimeout(this.timer);
  }

  private read(stream: EventStream, pos: number, len: number, reply: ReadReply): void {
    if (this.stopped) return reply(null, EOF);
    const p = { stream, pos, len, reply };
    if (this.when(p, performance.now()) === 'now' && this.answer(p)) return;
    this.pending.add(p);
    this.schedule();
  }

  /** Whether a read can be answered now, a little later (batching), or needs a fork first. */
  private when(p: PendingRead, now: number): When {
    if (p.stream.holds(p.pos)) return 'now'; // bytes it already has: a seek back, a short read
    const backlog = p.stream.backlog();
    if (backlog === 0) return 'no-data';
    return backlog >= BATCH_PAIRS || now - p.stream.lastReplyAt >= BATCH_MS ? 'now' : 'later';
  }

  /** Replies if the stream has something; false when it has nothing after all. */
  private answer(p: PendingRead): boolean {
    let data: Buffer | null;
    try {
      data = p.stream.read(p.pos, p.len);
    } catch (err) {
      p.reply(err);
      return true;
    }
    if (data === null) return false;
    p.stream.lastReplyAt = performance.now();
    p.reply(null, data);
    return true;
  }

  private release(stream: EventStream): void {
    if (!this.streams.delete(stream)) return;
    for (const p of this.pending) {
      if (p.stream !== stream) continue;
      this.pending.delete(p);
      p.reply(null, EOF);
    }
    stream.release();
    this.reader.setReaders(this.streams.size);
    if (this.streams.size === 0 && this.headTick) {
      clearInterval(this.headTick);
      this.headTick = null;
    }
    this.log.debug({ readers: this.streams.size }, 'events released');
  }

  /**
   * Answers what is due, then sets the timer for what is due later and, for
   * reads with nothing to read, waits for the worker's next append.
   */
  private schedule(): void {
    while (!this.stopped && this.pending.size > 0) {
      const seen = this.reader.head();
      const now = performance.now();
      let later = Infinity;
      let noData = false;
      for (const p of [...this.pending]) {
        const w = this.when(p, now);
        if (w === 'now') {
          this.pending.delete(p);
          if (this.answer(p)) continue;
          this.pending.add(p);
        }
        if (w === 'later') later = Math.min(later, p.stream.lastReplyAt + BATCH_MS);
        else noData = true;
      }
      if (later < this.timerAt) {
        if (this.timer) clearTimeout(this.timer);
        this.timerAt = later;
        this.timer = setTimeout(() => {
          this.timer = null;
          this.timerAt = Infinity;
          this.schedule();
        }, Math.max(0, later - now));
      }
      if (!noData || this.waiting) return;
      const wake = this.reader.waitBeyond(seen);
      if (wake === null) continue; // appended meanwhile
      this.waiting = true;
      void wake.then(() => {
        this.waiting = false;
        this.schedule();
      });
      return;
    }
  }

  private async answerInterrupted(): Promise<void> {
    const readers = await this.finder.find();
    const plan = matchInterrupted([...this.pending], readers);
    for (const { read, reader } of plan.answer) {
      if (!this.pending.delete(read)) continue; // answered meanwhile
      this.log.debug({ reader: reader.pid, thread: reader.tid, fd: reader.fd, pos: read.pos }, 'events read interrupted by a signal: answered EINTR');
      read.reply(new RelayError('EINTR', 'the reader was sent a signal'));
    }
    if (plan.ambiguous > 0) {
      this.log.debug({ reads: plan.ambiguous }, 'a signalled reader cannot be told from a waiting one yet; waiting for the next line');
    }
  }
}

/**
 * The kernel's largest read request, less the page a misaligned buffer
 * costs: libfuse 2 leaves max_pages at 32, so a read(2) of more than 128 KiB
 * reaches us as requests of (nearly) 128 KiB.
 */
const SPLIT_MIN = 31 * 4096;

/** Whether a reader blocked in a read of `count` bytes can be the caller of a request for `len`. */
function sameSize(count: number | null, len: number): boolean {
  return count === null || count === len || (count > len && len > SPLIT_MIN);
}

/**
 * Pairs pending reads with blocked readers by file offset and size. A group
 * of reads that look alike is answered only when at least as many signalled
 * readers, and no unsignalled one, match them: EINTR to a reader that was not
 * signalled would end a `cat` that should go on.
 */
export function matchInterrupted<R extends { pos: number; len: number }>(
  reads: R[],
  readers: BlockedReader[],
): { answer: Array<{ read: R; reader: BlockedReader }>; ambiguous: number } {
  const groups = new Map<string, R[]>();
  for (const r of reads) {
    const key = `${r.pos}:${r.len}`;
    const g = groups.get(key);
    if (g) g.push(r);
    else groups.set(key, [r]);
  }
  const answer: Array<{ read: R; reader: BlockedReader }> = [];
  let ambiguous = 0;
  for (const g of groups.values()) {
    const { pos, len } = g[0]!;
    const match = readers.filter((b) => b.pos === pos && sameSize(b.count, len));
    const signalled = match.filter((b) => b.interrupted);
    if (signalled.length === 0) continue;
    if (signalled.length >= g.length && signalled.length === match.length) {
      g.forEach((read, i) => answer.push({ read, reader: signalled[i]! }));
    } else {
      ambiguous += g.length;
    }
  }
  return { answer, ambiguous };
}
