import { pino, type Logger, type LevelWithSilent } from 'pino';
import { LogSink } from './log-sink.js';

// One root logger for the daemon; each module takes a child named for itself.
// JSON lines on stdout: the journal and the tests read them. Readable one-line
// errors for people go to stderr from the CLI, not through here.
// The lines go through a LogSink rather than pino's own destination: it never
// blocks, bounds what a reader that stops reading can cost, and cannot hang
// the exit (see log-sink.ts). The relay worker's lines come through it too.
const sink = new LogSink(1);

export let root: Logger = pino({ name: 'relayfork', level: 'info' }, sink);

export function configureLogging(level: LevelWithSilent): Logger {
  root = pino({ name: 'relayfork', level }, sink);
  return root;
}

export function logger(module: string): Logger {
  return root.child({ module });
}

/** Writes a line formatted by another thread's logger (the relay worker's). */
export function writeLogLine(line: string): void {
  sink.write(line);
}

/** Lets queued lines go out before exiting, waiting at most timeoutMs. */
export function flushLogs(timeoutMs = 1000): Promise<void> {
  return sink.drain(timeoutMs);
}
