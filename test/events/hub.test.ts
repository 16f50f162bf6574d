import { performance } from 'node:perf_hooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { EventsHub, type EventsHandle } from '../../src/events/hub.js';
import { createEventsShared, EventsWriter } from '../../src/events/ring.js';
import { configureLogging } from '../../src/log.js';

beforeAll(() => {
  configureLogging('silent');
});

function setup(limit = 10_000) {
  const shared = createEventsShared(limit);
  const writer = new EventsWriter(shared);
  const hub = new EventsHub(shared, { mountpoint: '/nonexistent', path: '/relayfork/events' });
  return { writer, hub };
}

/** One read through the hub: resolves with what it replied and when. */
function read(h: EventsHandle, pos: number, len = 4096): Promise<{ text: string | null; err: unknown; at: number }> {
  return new Promise((resolve) =>
    h.read(pos, len, (err, data) => resolve({ err, text: data ? data.toString('latin1') : null, at: performance.now() })),
  );
}

describe('the events hub', () => {
  it('answers a waiting read as soon as the worker appends, after a quiet spell', async () => {
    const { writer, hub } = setup();
    const h = hub.open();
    const r = read(h, 0);
    await new Promise((res) => setTimeout(res, 50));
    const t0 = performance.now();
    writer.record(1, 2);
    const got = await r;
    expect(got.text).toBe('1 2\n');
    expect(got.at - t0).toBeLessThan(50); // woken by the append, not by a timer
    hub.stop();
  });

  it('batches while lines keep coming: one reply per reader per 10 ms, sooner for a big backlog', async () => {
    const { writer, hub } = setup();
    const h = hub.open();
    writer.record(1, 1);
    const first = await read(h, 0);
    expect(first.text).toBe('1 1\n');
    writer.record(2, 2);
    const second = await read(h, 4); // lines are waiting, but the last reply was just now
    expect(second.text).toBe('2 2\n');
    expect(second.at - first.at).toBeGreaterThanOrEqual(8);
    for (let i = 0; i < 600; i++) writer.record(3, 3);
    const third = await read(h, 8); // a backlog of 600 lines goes out at once
    expect(third.at - second.at).toBeLessThan(8);
    expect(third.text!.split('\n').length - 1).toBe(600);
    hub.stop();
  });

  it('serves the bytes a reader seeks back to at once', async () => {
    const { writer, hub } = setup();
    const h = hub.open();
    writer.record(10, 11);
    writer.record(10, 12);
    const a = await read(h, 0, 128);
    expect(a.text).toBe('10 11\n10 12\n');
    const b = await read(h, 6, 128);
    expect(b.text).toBe('10 12\n');
    expect(b.at - a.at).toBeLessThan(8);
    hub.stop();
  });

  it('counts readers and lost lines, answers end of file on close and on stop', async () => {
    const { writer, hub } = setup(10);
    const a = hub.open();
    const b = hub.open();
    expect(hub.stats()).toEqual({ readers: 2, lost: 0 });
    for (let i = 0; i < 25; i++) writer.record(1, i);
    const got = await read(a, 0);
    expect(got.text!.startsWith('lost 15\n')).toBe(true);
    expect(hub.stats().lost).toBe(15);
    const waiting = read(a, got.text!.length);
    b.release();
    expect(hub.stats().readers).toBe(1);
    hub.stop();
    expect((await waiting).text).toBe('');
    expect((await read(a, 0)).text).toBe(''); // after stop: end of file at once
    a.release();
    expect(hub.stats().readers).toBe(0);
    writer.record(9, 9); // nobody reads: not even recorded
    expect(hub.stats().lost).toBe(15);
  });
});
