// Where the daemon's log lines go: a file descriptor (stdout), written
// asynchronously so that logging never holds up a FUSE reply or the relay.
// A reader that stops reading costs at most `maxQueued` bytes: later lines
// are dropped, counted, and reported once writing resumes. A reader that goes
// away (EPIPE, or any other write error) ends logging. drain() waits, for a
// bounded time, for what is queued to go out, so that a stop is never held up
// by stdout. (pino's own destination retries a failed write for ever when it
// flushes at exit, so a daemon whose log reader died could not exit.)
import { write } from 'node:fs';
import { hostname } from 'node:os';

const RETRY_MS = 20;

export class LogSink {
  private queue: Buffer[] = [];
  private queued = 0;
  private writing = false;
  private dropped = 0;
  private droppedTotal = 0;
  private broken = false;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly fd: number,
    private readonly maxQueued = 8 << 20,
  ) {}

  /** Queues one line (with its newline); never blocks, never throws. */
  write(line: string): void {
    if (this.broken) return;
    const buf = Buffer.from(line);
    if (this.queued + buf.length > this.maxQueued) {
      this.dropped++;
      this.droppedTotal++;
      return;
    }
    this.queue.push(buf);
    this.queued += buf.length;
    if (!this.writing) this.next();
  }

  /** Resolves once everything queued is written (or logging has ended), or after timeoutMs. */
  drain(timeoutMs: number): Promise<void> {
    if (this.idle()) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, timeoutMs);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.waiters.push(done);
    });
  }

  /** Lines dropped so far because the reader fell too far behind (each run reported when it catches up). */
  get droppedLines(): number {
    return this.droppedTotal;
  }

  private idle(): boolean {
    return this.broken || (!this.writing && this.queue.length === 0);
  }

  private next(): void {
    if (this.broken) return this.settle();
    if (this.queue.length === 0 && this.dropped > 0) this.report();
    if (this.queue.length === 0) {
      this.writing = false;
      return this.settle();
    }
    this.writing = true;
    const chunk = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
    this.queue = [];
    this.queued = 0;
    this.send(chunk);
  }

  private send(chunk: Buffer): void {
    write(this.fd, chunk, 0, chunk.length, null, (err, n) => {
      if (err) {
        if (err.code === 'EAGAIN' || err.code === 'EINTR') {
          setTimeout(() => this.send(chunk), RETRY_MS);
          return;
        }
        this.broken = true; // EPIPE, EBADF...: nobody will read these lines
        this.queue = [];
        this.queued = 0;
        this.writing = false;
        return this.settle();
      }
      if (n < chunk.length) {
        this.queue.unshift(chunk.subarray(n));
        this.queued += chunk.length - n;
      }
      this.next();
    });
  }

  /** Writes one line in pino's format saying how many lines were dropped. */
  private report(): void {
    const line = JSON.stringify({
      level: 40,
      time: Date.now(),
      pid: process.pid,
      hostname: hostname(),
      name: 'relayfork',
      module: 'log',
      dropped: this.dropped,
      msg: 'log lines dropped: stdout was not being read',
    });
    this.dropped = 0;
    const buf = Buffer.from(`${line}\n`);
    this.queue.push(buf);
    this.queued += buf.length;
  }

  private settle(): void {
    if (!this.idle()) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
