import { describe, expect, it } from 'vitest';
import { parseStats, renderStats } from '../../src/control/stats.js';

describe('stats rendering', () => {
  it('writes every key as `key value` lines, in a fixed order', () => {
    const text = renderStats({
      source: 'netlink',
      signal: 34,
      registrants: 2,
      forksSeen: 1234,
      forksLost: 5,
      signalsSent: 2468,
      signalsDropped: 1,
      registrantsPruned: 3,
      uptimeS: 61,
      eventsReaders: 1,
      eventsLost: 0,
    });
    expect(text).toBe(
      'source netlink\nsignal 34\nregistrants 2\nforks_seen 1234\nforks_lost 5\nsignals_sent 2468\n' +
        'signals_dropped 1\nregistrants_pruned 3\nuptime_s 61\nevents_readers 1\nevents_lost 0\n',
    );
    const back = parseStats(text);
    expect(back.get('forks_seen')).toBe('1234');
    expect(back.get('source')).toBe('netlink');
    expect([...back.keys()]).toHaveLength(11);
  });
});
