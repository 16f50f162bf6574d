// Unit tests of the pure analysis: node --test scripts/bench/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { matchLatencies, median, parseKv, parseProcStat, parseReceiverLog, parseStormLog, quantile, topFunctions } from './analyze.mjs';

const b = (s) => Buffer.from(s, 'latin1');

test('storm log: parents from headers, children with sorted times', () => {
  const s = parseStormLog(b('# parent 10\n100 5000\n101 6000\n# parent 11\n100 2000\n'));
  assert.deepEqual([...s.parents], [10, 11]);
  assert.equal(s.forks, 3);
  assert.deepEqual(s.byChild.get(100), [2000, 5000]);
});

test('receiver log keeps only the storm parents', () => {
  const r = parseReceiverLog(b('10 100 5100\n99 100 5200\n11 101 6100\n'), new Set([10, 11]));
  assert.equal(r.received, 3);
  assert.equal(r.ours, 2);
  assert.deepEqual(r.byChild.get(100), [5100]);
});

test('a reused PID matches each read to the latest fork before it, once', () => {
  const storm = parseStormLog(b('# parent 1\n7 1000\n7 5000\n7 9000\n'));
  // the signal for the fork at 5000 is lost; 1000 → 1200, 9000 → 9300
  const recv = parseReceiverLog(b('1 7 1200\n1 7 9300\n'), storm.parents);
  assert.deepEqual(matchLatencies(storm, recv).sort((x, y) => x - y), [200, 300]);
  // a duplicate read of the same fork is not counted twice
  const dup = parseReceiverLog(b('1 7 1200\n1 7 1300\n'), storm.parents);
  assert.deepEqual(matchLatencies(storm, dup), [200]);
  // a read before any fork of that PID (another host fork) is ignored
  const early = parseReceiverLog(b('1 7 500\n'), storm.parents);
  assert.deepEqual(matchLatencies(storm, early), []);
});

test('quantiles and medians', () => {
  assert.equal(quantile([5, 1, 3, 2, 4], 0.5), 3);
  assert.equal(quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99), 10);
  assert.ok(Number.isNaN(quantile([], 0.5)));
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(median([NaN, 1]), 1);
});

test('key=value lines and /proc/PID/stat with a hostile comm', () => {
  assert.deepEqual(parseKv('storm forks=12 rate=3.5 parents=1,2'), { forks: 12, rate: 3.5, parents: '1,2' });
  const stat = '42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 17 23 0 0 20 0 1 0';
  assert.deepEqual(parseProcStat(stat), { utime: 17, stime: 23 });
});

test('top functions by self samples', () => {
  const profile = {
    nodes: [
      { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 } },
      { id: 2, callFrame: { functionName: 'relay', url: 'file:///fan-out.js', lineNumber: 9 } },
      { id: 3, callFrame: { functionName: 'relay', url: 'file:///fan-out.js', lineNumber: 9 } },
    ],
    samples: [2, 2, 3, 1],
    startTime: 0,
    endTime: 4000,
  };
  const top = topFunctions(profile);
  assert.equal(top[0].name, 'relay');
  assert.equal(top[0].samples, 3);
  assert.equal(top[0].line, 10);
  assert.equal(top[0].pct, 75);
});
