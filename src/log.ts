import { pino, type Logger, type LevelWithSilent } from 'pino';

// One root logger for the daemon; each module takes a child named for itself.
// JSON lines on stdout: the journal and the tests read them. Readable one-line
// errors for people go to stderr from the CLI, not through here.
// pino's own stdout destination (asynchronous, flushed at exit), kept so that
// lines formatted by the relay worker's logger go out through it too.
const destination = pino.destination(1);

export let root: Logger = pino({ name: 'relayfork', level: 'info' }, destination);

export function configureLogging(level: LevelWithSilent): Logger {
  root = pino({ name: 'relayfork', level }, destination);
  return root;
}

export function logger(module: string): Logger {
  return root.child({ module });
}

/** Writes a line formatted by another thread's logger (the relay worker's) where the root logger writes. */
export function writeLogLine(line: string): void {
  destination.write(line);
}
