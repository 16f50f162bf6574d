// One open `events` handle: a cursor into the fork ring and the bytes of its
// last read, so the file behaves as a file to the tools that read it.
//
// The handle's content is a byte stream made up as it is read: a read at the
// offset where the last one ended takes new lines from the ring; a read at an
// offset inside the last read's bytes serves those bytes again (bash's `read`
// and `head -n` read ahead, then lseek back to the end of the line they used);
// a read anywhere else starts afresh at that offset. So what a handle holds is
// at most one read's worth of text, whatever the reader does.
import type { Taken } from './ring.js';

/** The ring, as a stream sees it. */
export interface PairSource {
  readonly limit: number;
  head(): number;
  take(from: number, max: number, into: Int32Array): Taken;
}

/** The shortest line: "1 2\n". */
const MIN_LINE = 4;
/** Reads of at least a page may be the first chunk of a larger read(2): see serve(). */
const CHUNK_MIN = 4096;
const NL = 0x0a;
const EMPTY = Buffer.alloc(0);

export class EventStream {
  /** Ring position of the next pair to format. */
  private cursor: number;
  /** Pairs dropped since the last `lost N` line. */
  private lostPending = 0;
  /** The bytes of the last read and what it left unread, at file offset segStart. */
  private seg: Buffer = EMPTY;
  private segStart = 0;
  /** When this stream last answered a read (the hub's batching clock). */
  lastReplyAt = 0;

  constructor(
    private readonly source: PairSource,
    private readonly scratch: Int32Array,
    private readonly onLost: (n: number) => void = () => {},
  ) {
    this.cursor = source.head();
  }

  /** True when a read at `pos` is served from bytes this handle already holds. */
  holds(pos: number): boolean {
    return pos >= this.segStart && pos < this.segStart + this.seg.length;
  }

  /** Lines waiting for this reader (a pending `lost N` counts as a full ring). */
  backlog(): number {
    this.noteLoss();
    const waiting = this.source.head() - this.cursor;
    return this.lostPending > 0 ? Math.max(waiting, this.source.limit) : waiting;
  }

  /** True when a read at `pos` would return something now. */
  ready(pos: number): boolean {
    return this.holds(pos) || this.backlog() > 0;
  }

  /**
   * Serves a read of up to `len` bytes at `pos`: whole lines where at least one
   * fits, else the start of the first. Returns null when there is nothing yet
   * (the caller waits and asks again).
   */
  read(pos: number, len: number): Buffer | null {
    if (len <= 0) return EMPTY;
    const segEnd = this.segStart + this.seg.length;
    if (pos >= this.segStart && pos < segEnd) return this.serve(pos, len);
    if (pos !== segEnd) {
      // A seek outside what this handle holds: the stream goes on from there.
      this.seg = EMPTY;
      this.segStart = pos;
    }
    const fresh = this.produce(len);
    if (fresh === null) return null;
    this.seg = fresh;
    this.segStart = pos;
    return this.serve(pos, len);
  }

  /** Drops what the handle holds (on close). */
  release(): void {
    this.seg = EMPTY;
  }

  private noteLoss(): void {
    const oldest = this.source.head() - this.source.limit;
    if (this.cursor < oldest) {
      const n = oldest - this.cursor;
      this.lostPending += n;
      this.onLost(n);
      this.cursor = oldest;
    }
  }

  /** Formats new lines from the ring: at most `len` bytes, or one line if none fits. */
  private produce(len: number): Buffer | null {
    this.noteLoss();
    const max = Math.floor(len / MIN_LINE) + 1;
    const taken = this.source.take(this.cursor, max, this.scratch);
    if (taken.first > this.cursor) {
      // Overwritten while we copied: lost as well.
      const n = taken.first - this.cursor;
      this.lostPending += n;
      this.onLost(n);
      this.cursor = taken.first;
    }
    if (taken.count === 0 && this.lostPending === 0) return null;
    let text = this.lostPending > 0 ? `lost ${this.lostPending}\n` : '';
    this.lostPending = 0;
    let used = 0;
    const s = this.scratch;
    for (; used < taken.count; used++) {
      const line = `${s[2 * used]! >>> 0} ${s[2 * used + 1]! >>> 0}\n`;
      if (text.length > 0 && text.length + line.length > len) break;
      text += line;
    }
    this.cursor += used;
    return Buffer.from(text, 'latin1');
  }

  /**
   * Up to `len` bytes of seg from `pos`, cut at a line end when a line end
   * falls inside. A reply that fills a request of a page or more exactly is
   * cut back by a line: for a read(2) larger than one FUSE request the kernel
   * sends the next request only when the previous one came back full, and
   * that one would wait for the next fork while the reader has data in hand.
   */
  private serve(pos: number, len: number): Buffer {
    const off = pos - this.segStart;
    const seg = this.seg;
    let end = Math.min(seg.length, off + len);
    if (end - off === len && (end < seg.length || len >= CHUNK_MIN)) {
      // The reply fills the request: end it at the last line end inside it
      // (before its last byte, for a request of a page or more).
      const from = len >= CHUNK_MIN ? end - 2 : end - 1;
      const nl = from >= off ? seg.lastIndexOf(NL, from) : -1; // (a negative offset counts from the end)
      if (nl >= off) end = nl + 1;
    }
    return seg.subarray(off, end);
  }
}
