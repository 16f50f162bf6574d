import { describe, expect, it } from 'vitest';
import { createEventsShared, EventsReader, EventsWriter } from '../../src/events/ring.js';
import { EventStream } from '../../src/events/stream.js';

/** A real ring with its writer, and streams opened on it. */
function setup(limit = 1000) {
  const shared = createEventsShared(limit);
  const writer = new EventsWriter(shared);
  const reader = new EventsReader(shared);
  reader.setReaders(1);
  const scratch = new Int32Array(2 * 4097);
  let lost = 0;
  const open = () => new EventStream(reader, scratch, (n) => (lost += n));
  return { writer, open, lost: () => lost };
}

const text = (b: Buffer | null) => (b === null ? null : b.toString('latin1'));

describe('an events stream', () => {
  it('starts at its open: forks before it are not in it', () => {
    const { writer, open } = setup();
    writer.record(1, 2);
    const s = open();
    expect(s.read(0, 4096)).toBeNull();
    expect(s.ready(0)).toBe(false);
    writer.record(3, 4);
    expect(s.ready(0)).toBe(true);
    expect(text(s.read(0, 4096))).toBe('3 4\n');
    expect(s.read(4, 4096)).toBeNull();
  });

  it('returns as many whole lines as fit, and the rest next time', () => {
    const { writer, open } = setup();
    const s = open();
    writer.record(100, 101); // "100 101\n" = 8 bytes
    writer.record(100, 102);
    writer.record(100, 103);
    expect(text(s.read(0, 20))).toBe('100 101\n100 102\n');
    expect(text(s.read(16, 20))).toBe('100 103\n');
    expect(s.read(24, 20)).toBeNull();
  });

  it('serves reads smaller than a line byte by byte, losing nothing', () => {
    const { writer, open } = setup();
    const s = open();
    writer.record(4242, 4343);
    writer.record(7, 8);
    let got = '';
    let pos = 0;
    for (;;) {
      const b = s.read(pos, 3);
      if (b === null) break;
      expect(b.length).toBeGreaterThan(0);
      expect(b.length).toBeLessThanOrEqual(3);
      got += text(b);
      pos += b.length;
    }
    expect(got).toBe('4242 4343\n7 8\n');
  });

  it('serves again what a reader seeks back to inside its last read (bash read, head -n)', () => {
    const { writer, open } = setup();
    const s = open();
    for (let i = 1; i <= 4; i++) writer.record(10, 10 + i); // "10 11\n" … 6 bytes each
    expect(text(s.read(0, 128))).toBe('10 11\n10 12\n10 13\n10 14\n');
    // bash used the first line and seeks back to its end.
    expect(text(s.read(6, 128))).toBe('10 12\n10 13\n10 14\n');
    expect(text(s.read(12, 5))).toBe('10 13');
    expect(text(s.read(24, 128))).toBeNull();
    writer.record(10, 15);
    expect(text(s.read(24, 128))).toBe('10 15\n');
  });

  it('goes on from any other offset without repeating itself', () => {
    const { writer, open } = setup();
    const s = open();
    writer.record(1, 1);
    writer.record(2, 2);
    expect(text(s.read(0, 4))).toBe('1 1\n');
    // A seek far ahead, then back to 0: the stream just continues.
    expect(text(s.read(1000, 64))).toBe('2 2\n');
    writer.record(3, 3);
    expect(text(s.read(0, 64))).toBe('3 3\n');
    expect(s.read(4, 64)).toBeNull();
  });

  it('drops the oldest lines of a reader that falls behind and tells it with `lost N`', () => {
    const { writer, open, lost } = setup(4);
    const s = open();
    for (let i = 0; i < 10; i++) writer.record(1, i);
    expect(text(s.read(0, 4096))).toBe('lost 6\n1 6\n1 7\n1 8\n1 9\n');
    expect(lost()).toBe(6);
    expect(s.read(27, 4096)).toBeNull();
    // Lost again later: counted from where it was.
    for (let i = 10; i < 20; i++) writer.record(1, i);
    expect(text(s.read(27, 4096))).toBe('lost 6\n1 16\n1 17\n1 18\n1 19\n');
    expect(lost()).toBe(12);
  });

  it('never fills a request of a page or more exactly, so a larger read(2) is not held for the next fork', () => {
    const { writer, open } = setup(5000);
    const s = open();
    for (let i = 0; i < 500; i++) writer.record(1000, 1000); // "1000 1000\n" = 10 bytes
    const a = s.read(0, 4100)!;
    expect(a.length).toBe(4090);
    expect(text(s.read(4090, 4100))).toBe('1000 1000\n'); // the line held back
    // Below a page, an exact fill is the last request of its read(2): fine.
    const b = s.read(4100, 40)!;
    expect(text(b)).toBe('1000 1000\n'.repeat(4));
  });

  it('keeps streams apart: each open gets every line from its own start', () => {
    const { writer, open } = setup();
    const a = open();
    writer.record(1, 1);
    const b = open();
    writer.record(2, 2);
    expect(text(a.read(0, 64))).toBe('1 1\n2 2\n');
    expect(text(b.read(0, 64))).toBe('2 2\n');
  });
});
