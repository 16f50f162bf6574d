// What every fork source gives the fan-out. A source either exposes a file
// descriptor that poll(2) can wait on (the proc connector), or asks to be
// ticked every `intervalMs` (the process-table poll).

export interface ForkSink {
  /** One new process (or thread, with --threads): parent's tgid, the child's pid and tgid. */
  fork(parentTgid: number, childPid: number, childTgid: number): void;
  /** Forks that happened but could not be seen (overruns, poll misses). */
  lost(count: number, why: string): void;
}

export type SourceName = 'netlink' | 'poll';

export interface ForkSource {
  readonly name: SourceName;
  /** A descriptor to poll for readability, or null for a timer-driven source. */
  readonly fd: number | null;
  /** For a timer-driven source: how often to tick. */
  readonly intervalMs: number;
  /** Reads what is ready without blocking and reports it to the sink. */
  drain(sink: ForkSink): void | Promise<void>;
  close(): void;
}
