import { Worker } from 'node:worker_threads';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { createEventsShared, EventsReader, EventsWriter, Slot } from '../../src/events/ring.js';
import { ensureBuilt } from '../helpers/daemon.js';
import { REPO_ROOT } from '../helpers/native.js';

function ring(lines: number) {
  const shared = createEventsShared(lines);
  const writer = new EventsWriter(shared);
  const reader = new EventsReader(shared);
  return { shared, writer, reader };
}

describe('the events ring', () => {
  it('sizes the ring to the next power of two above the reader bound, and refuses nonsense', () => {
    expect(createEventsShared(10_000).capacity).toBe(16_384);
    expect(createEventsShared(1).capacity).toBe(2);
    expect(createEventsShared(16_383).capacity).toBe(16_384);
    expect(createEventsShared(16_384).capacity).toBe(32_768);
    for (const bad of [0, -1, 1.5, 2_000_000, NaN]) expect(() => createEventsShared(bad)).toThrow(RangeError);
  });

  it('costs nothing and records nothing while no one reads', () => {
    const { writer, reader } = ring(8);
    writer.record(1, 2);
    expect(reader.head()).toBe(0);
    reader.setReaders(1);
    writer.record(3, 4);
    reader.setReaders(0);
    writer.record(5, 6);
    expect(reader.head()).toBe(1);
    const into = new Int32Array(16);
    expect(reader.take(0, 8, into)).toEqual({ first: 0, count: 1 });
    expect([...into.subarray(0, 2)]).toEqual([3, 4]);
  });

  it('hands out pairs in order from any position, and skips what is older than the bound', () => {
    const { writer, reader } = ring(5); // capacity 8
    reader.setReaders(1);
    for (let i = 0; i < 20; i++) writer.record(i, 100 + i);
    expect(reader.head()).toBe(20);
    const into = new Int32Array(64);
    // From 0: only the last 5 are kept for a reader; 15 are lost.
    expect(reader.take(0, 32, into)).toEqual({ first: 15, count: 5 });
    expect([...into.subarray(0, 10)]).toEqual([15, 115, 16, 116, 17, 117, 18, 118, 19, 119]);
    // A bounded take, from inside the window.
    expect(reader.take(17, 2, into)).toEqual({ first: 17, count: 2 });
    expect([...into.subarray(0, 4)]).toEqual([17, 117, 18, 118]);
    // Nothing new.
    expect(reader.take(20, 32, into)).toEqual({ first: 20, count: 0 });
  });

  it('widens the 32-bit head across its wrap', () => {
    const shared = createEventsShared(100);
    Atomics.store(shared.slots, Slot.head, -3); // 0xfffffffd pairs appended so far
    const writer = new EventsWriter(shared);
    const reader = new EventsReader(shared);
    const start = reader.head();
    expect(start).toBe(0xfffffffd);
    reader.setReaders(1);
    for (let i = 0; i < 10; i++) writer.record(i, i);
    expect(Atomics.load(shared.slots, Slot.head)).toBe(7);
    expect(reader.head()).toBe(start + 10);
    const into = new Int32Array(40);
    expect(reader.take(start, 20, into)).toEqual({ first: start, count: 10 });
    expect([...into.subarray(0, 20)].filter((_, i) => i % 2 === 0)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('wakes a waiting reader on the next append, and says when there is no need to wait', async () => {
    const { writer, reader } = ring(8);
    reader.setReaders(1);
    writer.record(1, 1);
    expect(reader.waitBeyond(0)).toBeNull(); // already beyond
    const wake = reader.waitBeyond(1);
    expect(wake).not.toBeNull();
    let woke = false;
    void wake!.then(() => (woke = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(woke).toBe(false);
    writer.record(2, 2);
    await wake;
    expect(woke).toBe(true);
  });
});

describe('the events ring across threads', () => {
  beforeAll(ensureBuilt, 120_000);

  it('never hands out a torn or overwritten pair while a worker appends flat out', async () => {
    const shared = createEventsShared(1000); // capacity 1024: the writer laps the reader often
    const reader = new EventsReader(shared);
    reader.setReaders(1);
    const ringUrl = pathToFileURL(path.join(REPO_ROOT, 'dist', 'events', 'ring.js')).href;
    const N = 500_000;
    const worker = new Worker(
      `import { workerData } from 'node:worker_threads';
       const { EventsWriter } = await import(workerData.ringUrl);
       const w = new EventsWriter(workerData.shared);
       for (let i = 0; i < workerData.n; i++) w.record(i, ~i);`,
      { eval: true, workerData: { shared, ringUrl, n: N } },
    );
    const done = new Promise<number>((resolve, reject) => {
      worker.on('exit', resolve);
      worker.on('error', reject);
    });
    let exited = false;
    void done.then(() => (exited = true));
    const into = new Int32Array(2 * 4096);
    let pos = 0;
    let seen = 0;
    let lost = 0;
    let bad = 0;
    while (!exited || pos < reader.head()) {
      const t = reader.take(pos, 4096, into);
      lost += t.first - pos;
      for (let k = 0; k < t.count; k++) {
        const p = into[2 * k]!;
        if (p !== t.first + k || into[2 * k + 1] !== ~p) bad++;
      }
      seen += t.count;
      pos = t.first + t.count;
      if (t.count === 0) await new Promise((r) => setImmediate(r));
    }
    expect(await done).toBe(0);
    expect(bad).toBe(0);
    expect(seen + lost).toBe(N);
    expect(seen).toBeGreaterThan(0);
  }, 60_000);
});
