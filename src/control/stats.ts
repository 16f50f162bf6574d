// relayfork/stats, pure: a snapshot of the daemon's numbers in, `key value`
// lines out, always in this order. README's "stats" section says what each
// key means; scripts may rely on the keys, not on their order.

export interface StatsSnapshot {
  /** The fork source in use: netlink or poll. */
  source: string;
  /** The signal sent to registrants. */
  signal: number;
  /** Processes registered now. */
  registrants: number;
  /** Forks relayed (new processes; threads too with --threads), since start. */
  forksSeen: number;
  /** Forks the source could not see: netlink overruns, poll misses. */
  forksLost: number;
  /** Signals queued to registrants. */
  signalsSent: number;
  /** Signals a registrant's full queue (or a permission) refused. */
  signalsDropped: number;
  /** Registrants removed because their process ended. */
  registrantsPruned: number;
  /** Whole seconds since the daemon started. */
  uptimeS: number;
  /** `events` handles open now. */
  eventsReaders: number;
  /** Lines of `events` dropped for readers that fell behind, summed over readers. */
  eventsLost: number;
}

const KEYS: ReadonlyArray<[string, keyof StatsSnapshot]> = [
  ['source', 'source'],
  ['signal', 'signal'],
  ['registrants', 'registrants'],
  ['forks_seen', 'forksSeen'],
  ['forks_lost', 'forksLost'],
  ['signals_sent', 'signalsSent'],
  ['signals_dropped', 'signalsDropped'],
  ['registrants_pruned', 'registrantsPruned'],
  ['uptime_s', 'uptimeS'],
  ['events_readers', 'eventsReaders'],
  ['events_lost', 'eventsLost'],
];

export function renderStats(s: StatsSnapshot): string {
  return KEYS.map(([key, field]) => `${key} ${String(s[field])}\n`).join('');
}

/** Reads `key value` lines back (for scripts and tests). */
export function parseStats(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp > 0) out.set(line.slice(0, sp), line.slice(sp + 1));
  }
  return out;
}
