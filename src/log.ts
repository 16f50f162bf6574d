import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import type PinoPretty from 'pino-pretty';
import { LogSink } from './log-sink.js';

// One root logger for the daemon; each module takes a child named for itself.
// Lines go to stdout: pino's JSON by default (the journal and the tests read
// it), or, for a person at a terminal, the same records through pino-pretty as
// one readable line each. Readable one-line errors for people go to stderr
// from the CLI, not through here.
// Every line goes through a LogSink rather than pino's own destination: it
// never blocks, bounds what a reader that stops reading can cost, and cannot
// hang the exit (see log-sink.ts). The relay worker's lines come through it
// too: the worker hands its JSON lines to this thread (writeLogLine).

export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

const sink = new LogSink(1);
let format: LogFormat = 'json';
let pretty: { write(line: string): unknown } | null = null;

/** The format when none is asked for: pretty on a terminal, JSON otherwise. */
export function defaultLogFormat(stdoutIsTTY: boolean = isatty(1)): LogFormat {
  return stdoutIsTTY ? 'pretty' : 'json';
}

function prettyStream(): { write(line: string): unknown } {
  // Loaded only when asked for: a service logging JSON never pays for it.
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  const prettify = prettyFactory({
    colorize: isatty(1) && !('NO_COLOR' in process.env),
    translateTime: 'SYS:HH:MM:ss.l',
    singleLine: true,
    // [12:00:01.234] INFO: daemon: mounted {"mountpoint":"/run/relayfork",...}
    ignore: 'pid,hostname,name,module,err',
    messageFormat: prettyMessage,
  });
  // The JSON line pino (or the relay worker) wrote, made readable, into the same sink.
  return { write: (line: string) => sink.write(prettify(line)) };
}

/** A root logger writing to stdout in `fmt`, through the sink. */
export function createRootLogger(level: string, fmt: LogFormat): Logger {
  if (fmt === 'json') return pino({ name: 'relayfork', level }, sink);
  pretty ??= prettyStream();
  return pino({ name: 'relayfork', level }, pretty as unknown as pino.DestinationStream);
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

export function logger(module: string): Logger {
  return root.child({ module });
}

/** Writes a JSON line formatted by another thread's logger (the relay worker's), in this format. */
export function writeLogLine(line: string): void {
  if (format === 'pretty') {
    pretty ??= prettyStream();
    pretty.write(line);
  } else {
    sink.write(line);
  }
}

/** Lets queued lines go out before exiting, waiting at most timeoutMs. */
export function flushLogs(timeoutMs = 1000): Promise<void> {
  return sink.drain(timeoutMs);
}
