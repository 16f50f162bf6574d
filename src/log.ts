import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import type PinoPretty from 'pino-pretty';

// One root logger for the daemon; each module takes a child named for itself.
// Lines go to stdout: pino's JSON by default (the journal and the tests read
// it), or, for a person at a terminal, the same records through pino-pretty as
// one readable line each. pino-pretty runs as a synchronous stream in the same
// thread (no transport worker), so a line is written before the call returns,
// exactly as in JSON mode. Readable one-line errors for people go to stderr from
// the CLI, not through here.

export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

let format: LogFormat = 'json';

/** The format when none is asked for: pretty on a terminal, JSON otherwise. */
export function defaultLogFormat(stdoutIsTTY: boolean = isatty(1)): LogFormat {
  return stdoutIsTTY ? 'pretty' : 'json';
}

/** A root logger writing to stdout in `fmt`. Each thread builds its own. */
export function createRootLogger(level: string, fmt: LogFormat): Logger {
  if (fmt === 'json') return pino({ name: 'relayfork', level });
  // Loaded only when asked for: a service logging JSON never pays for it.
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  const stream = pretty({
    sync: true,
    destination: 1,
    // fd 1 itself, not process.stdout: in the relay worker that is a pipe to the main thread.
    colorize: isatty(1) && !('NO_COLOR' in process.env),
    translateTime: 'SYS:HH:MM:ss.l',
    singleLine: true,
    // [12:00:01.234] INFO: daemon: mounted {"mountpoint":"/run/relayfork",...}
    ignore: 'pid,hostname,name,module,err',
    messageFormat: prettyMessage,
  });
  return pino({ name: 'relayfork', level }, stream);
}

interface ErrFields {
  type?: string;
  message?: string;
  stack?: string;
}

/** An error we expect (a refusal, a start-up failure) is its sentence; any other is a bug: its stack. */
const EXPECTED_ERRORS = new Set(['FatalError', 'RelayError']);

/** `module: msg`, and an error on the same line, or its stack below when it is a bug. */
export function prettyMessage(record: Record<string, unknown>, messageKey: string): string {
  const module = typeof record.module === 'string' ? `${record.module}: ` : '';
  const text = `${module}${String(record[messageKey] ?? '')}`;
  const err = record.err as ErrFields | undefined;
  if (!err || typeof err !== 'object') return text;
  if (EXPECTED_ERRORS.has(err.type ?? '') || !err.stack) return `${text} (${err.message ?? err.type ?? 'error'})`;
  return `${text}\n    ${err.stack.split('\n').join('\n    ')}`;
}

export let root: Logger = createRootLogger('info', format);

export function configureLogging(level: LevelWithSilent, fmt: LogFormat = defaultLogFormat()): Logger {
  format = fmt;
  root = createRootLogger(level, fmt);
  return root;
}

/** The format chosen at start; the relay worker builds its root logger with it. */
export function logFormat(): LogFormat {
  return format;
}

export function logger(module: string): Logger {
  return root.child({ module });
}
