import { pino, type Logger, type LevelWithSilent } from 'pino';

// One root logger for the daemon; each module takes a child named for itself.
// JSON lines on stdout: the journal and the tests read them. Readable one-line
// errors for people go to stderr from the CLI, not through here.
export let root: Logger = pino({ name: 'relayfork', level: 'info' });

export function configureLogging(level: LevelWithSilent): Logger {
  root = pino({ name: 'relayfork', level });
  return root;
}

export function logger(module: string): Logger {
  return root.child({ module });
}
