// Logs lost forks once per episode. A source reports losses as it finds them
// (a netlink overrun reports once per drained batch while it lasts); logging
// each report would flood the log exactly when the machine is busiest. An
// episode ends after QUIET_MS without a loss; it is then logged once, with its
// total. An episode that never ends is logged every LONG_MS.
import type { Logger } from 'pino';

export const QUIET_MS = 1000;
export const LONG_MS = 60_000;

export class LossLog {
  private active = false;
  /** Lost since the episode began, or since its last line if it is a long one. */
  private lost = 0;
  private why = '';
  private started = 0;
  private last = 0;
  private logged = 0;
  /** Episodes begun so far. */
  episodes = 0;

  constructor(private readonly log: Pick<Logger, 'warn'>) {}

  /** A source lost `count` forks at `now` (ms). */
  report(count: number, why: string, now: number): void {
    if (count <= 0) return;
    if (!this.active) {
      this.active = true;
      this.started = now;
      this.logged = now;
      this.episodes++;
    }
    this.lost += count;
    this.why = why;
    this.last = now;
  }

  /** Called from the relay's loop (not per fork): ends or summarises an episode. */
  tick(now: number, lostTotal: number): void {
    if (!this.active) return;
    if (now - this.last >= QUIET_MS) {
      this.write(lostTotal, false, now);
      this.active = false;
    } else if (now - this.logged >= LONG_MS) {
      this.write(lostTotal, true, now);
    }
  }

  private write(lostTotal: number, ongoing: boolean, now: number): void {
    if (this.lost > 0) {
      this.log.warn({ lost: this.lost, why: this.why, ms: this.last - this.started, ongoing, lostTotal }, 'forks lost');
    }
    this.lost = 0;
    this.logged = now;
  }
}
