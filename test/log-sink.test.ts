import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LogSink } from '../src/log-sink.js';

// The log sink against a real pipe (a FIFO): a reader that reads, one that
// stops, one that goes away.
const open: number[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const fd of open.splice(0)) {
    try {
      closeSync(fd);
    } catch {
      // closed by the test
    }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function fifo(): { r: number; w: number } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'relayfork-logsink-'));
  dirs.push(dir);
  const p = path.join(dir, 'fifo');
  execFileSync('mkfifo', [p]);
  const r = openSync(p, constants.O_RDONLY | constants.O_NONBLOCK);
  const w = openSync(p, constants.O_WRONLY);
  open.push(r, w);
  return { r, w };
}

function readAll(fd: number): string {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw err;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString();
}

describe('LogSink', () => {
  it('writes every line, in order', async () => {
    const { r, w } = fifo();
    const sink = new LogSink(w);
    const lines = Array.from({ length: 500 }, (_, i) => `{"n":${i}}\n`);
    for (const l of lines) sink.write(l);
    await sink.drain(5000);
    expect(readAll(r)).toBe(lines.join(''));
  });

  it('bounds what a reader that stops reading costs, and says how many lines it dropped', async () => {
    const { r, w } = fifo();
    writeSync(w, Buffer.alloc(65536, 'f\n')); // a full pipe: the next write waits for the reader
    const sink = new LogSink(w, 16 << 10);
    const line = `${'x'.repeat(99)}\n`;
    for (let i = 0; i < 3000; i++) sink.write(line); // 300 KB: the pipe holds 64 KB, the sink 16 KB
    await sink.drain(300); // does not wait for ever
    expect(sink.droppedLines).toBeGreaterThan(1000);
    const dropped = sink.droppedLines;
    let out = '';
    for (let i = 0; i < 100 && !out.includes('log lines dropped'); i++) {
      out += readAll(r);
      await new Promise((res) => setTimeout(res, 20));
    }
    out += readAll(r);
    const report = out.split('\n').filter((l) => l.includes('log lines dropped'));
    expect(report).toHaveLength(1);
    expect(JSON.parse(report[0]!)).toMatchObject({ level: 40, dropped, name: 'relayfork' });
    expect(out.split('\n').filter((l) => l === line.trimEnd()).length + dropped).toBe(3000);
  });

  it('stops writing when the reader goes away, and drain() does not wait', async () => {
    const { r, w } = fifo();
    const sink = new LogSink(w);
    for (let i = 0; i < 2000; i++) sink.write(`${'y'.repeat(99)}\n`); // more than the pipe holds
    closeSync(r);
    const t0 = Date.now();
    await sink.drain(5000);
    expect(Date.now() - t0).toBeLessThan(2000);
    sink.write('after\n'); // ignored, no throw
    await sink.drain(100);
  });
});
