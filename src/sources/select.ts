// Which fork source to run: the one asked for, or under `auto` the proc
// connector where the kernel acknowledges the subscription, else the poll.
import { NetlinkSource, NetlinkUnavailable, type NetlinkOptions } from './netlink.js';
import { PollSource, PollUnavailable } from './poll.js';
import type { ForkSource } from './source.js';

export type SourceRequest = 'auto' | 'netlink' | 'poll';
export const SOURCE_REQUESTS: readonly SourceRequest[] = ['auto', 'netlink', 'poll'];

export interface SelectOptions extends NetlinkOptions {
  pollIntervalMs: number;
  onSnapshotError?: (err: unknown) => void;
}

export interface Chosen {
  source: ForkSource;
  /** Why this source, in a few words, for the start-up log line. */
  reason: string;
}

/** No source that was asked for (or, under auto, none at all) can run here. */
export class SourceUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SourceUnavailable';
  }
}

export async function openSource(request: SourceRequest, opts: SelectOptions): Promise<Chosen> {
  const poll = () => PollSource.open({ intervalMs: opts.pollIntervalMs, ...(opts.onSnapshotError ? { onSnapshotError: opts.onSnapshotError } : {}) });
  switch (request) {
    case 'netlink':
      try {
        return { source: NetlinkSource.connect(opts), reason: 'requested with --source netlink' };
      } catch (err) {
        if (err instanceof NetlinkUnavailable) throw new SourceUnavailable(err.message, { cause: err });
        throw err;
      }
    case 'poll':
      try {
        return { source: await poll(), reason: 'requested with --source poll' };
      } catch (err) {
        if (err instanceof PollUnavailable) throw new SourceUnavailable(err.message, { cause: err });
        throw err;
      }
    case 'auto': {
      let netlinkWhy: string;
      try {
        return { source: NetlinkSource.connect(opts), reason: 'the proc connector acknowledged the subscription' };
      } catch (err) {
        // Any failure to subscribe, expected (NetlinkUnavailable) or not, is a
        // reason to poll rather than to stop.
        netlinkWhy = err instanceof Error ? err.message : String(err);
      }
      try {
        return { source: await poll(), reason: `the proc connector is unavailable: ${netlinkWhy}` };
      } catch (err) {
        if (!(err instanceof PollUnavailable)) throw err;
        throw new SourceUnavailable(`the proc connector is unavailable (${netlinkWhy}) and so is polling (${err.message})`, { cause: err });
      }
    }
  }
}
