// argv → options → daemon. Usage errors exit 2, everything else that stops the
// daemon early exits 1 with one readable sentence on stderr.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseSignal, DEFAULT_SIGNAL } from './control/grammar.js';
import { DEFAULT_EVENTS_BUFFER, MAX_EVENTS_BUFFER } from './events/ring.js';
import { startDaemon, type Daemon } from './daemon.js';
import { FatalError, RelayError } from './errors.js';
import { configureLogging, defaultLogFormat, flushLogs, LOG_FORMATS, type LogFormat } from './log.js';
import { tellServiceManager } from './sd-notify.js';
import { DEFAULT_POLL_INTERVAL_MS, MAX_POLL_INTERVAL_MS, MIN_POLL_INTERVAL_MS } from './sources/poll.js';
import { SOURCE_REQUESTS, type SourceRequest } from './sources/select.js';
import type { LevelWithSilent } from 'pino';

const PKG_ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEFAULT_MOUNT = fileURLToPath(new URL('../mount', import.meta.url));
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const SOURCES: readonly string[] = SOURCE_REQUESTS;

const HELP = `RELAYFORK(8)

NAME
    relayfork - the 2005 /sys/relayfork interface as a FUSE filesystem:
    every fork on the host, relayed as a real-time signal

SYNOPSIS
    relayfork mount [DIR] [OPTIONS]
    relayfork --help | --version

DESCRIPTION
    relayfork serves DIR/relayfork/ in the foreground. Root writes a PID to
    'processes'; from then on that process receives one queued signal for
    every new process on the host, with si_code SI_ASYNCIO (-4), si_pid the
    parent's PID and si_value.sival_int the child's PID. A registrant that
    exits is dropped at once. Registrations live as long as the daemon.

COMMANDS
    mount [DIR]
        Mount DIR, created if missing, and serve it until SIGINT, SIGTERM
        or SIGHUP; then unmount and exit 0. A stale mount left at DIR by a
        killed daemon is cleared first. DIR defaults to
        ${DEFAULT_MOUNT}

OPTIONS
    --signal N|NAME
        The signal to send: 34-64, or a name as kill -l prints it (SIGRTMIN,
        RTMIN+3, SIGRTMAX-2). Default ${DEFAULT_SIGNAL} (SIGRTMIN). 'signal' changes it live.
    --source auto|netlink|poll
        Where forks come from. netlink: the kernel's proc connector, or an
        error at start. poll: a process-table snapshot every --poll-interval
        ms (children that live shorter are counted as lost). Default auto:
        the proc connector where it can be subscribed, otherwise poll.
    --poll-interval MS
        How often --source poll (or auto, when it falls back) reads the
        process table: ${MIN_POLL_INTERVAL_MS}-${MAX_POLL_INTERVAL_MS}, default ${DEFAULT_POLL_INTERVAL_MS}.
    --events-buffer N
        How many lines an 'events' reader may fall behind before the oldest
        are dropped and it reads 'lost N': 1-${MAX_EVENTS_BUFFER}, default ${DEFAULT_EVENTS_BUFFER}.
    --threads
        Relay new threads too, not only new processes. Default off.
    --log-level fatal|error|warn|info|debug|trace|silent
        Default info: start, the fork source, each accepted write, each
        registrant that goes. debug adds refused writes; trace every fork.
    --log-format json|pretty
        Log lines on stdout: pino JSON, or one readable line each. Default
        pretty when stdout is a terminal, json otherwise (the journal).
    -h, --help
        Show this help and exit.
    -V, --version
        Show the version and exit.

FILES
    DIR/relayfork/processes   rw-r--r--  registered PIDs, space separated.
                              Write 'PID' to register, '-PID' to unregister,
                              several at once, all or nothing. Errors:
                              EINVAL (not a PID), ESRCH (no such process),
                              EPERM (PID 1, a kernel thread, the daemon, or
                              a process the daemon may not signal).
    DIR/relayfork/signal      rw-r--r--  the signal; write 34-64 or a name.
    DIR/relayfork/stats       r--r--r--  counters, one 'key value' per line.
    DIR/relayfork/events      r--r--r--  a live stream: 'PARENT CHILD' per fork.
    /dev/fuse                 must be readable and writable by the daemon.

PRIVILEGES
    Root, or exactly these capabilities (the systemd unit runs it so, as an
    unprivileged user):
      CAP_SYS_ADMIN   to mount and unmount the FUSE filesystem
      CAP_NET_ADMIN   to subscribe to the proc connector (--source netlink)
      CAP_KILL        to signal processes of other users
    Without CAP_SYS_ADMIN it exits 1 naming it; without CAP_NET_ADMIN,
    --source netlink exits 1 naming it and auto polls instead; without
    CAP_KILL it warns, and writing another user's PID fails with EPERM.

EXIT STATUS
    0   stopped by SIGINT, SIGTERM or SIGHUP, and unmounted
    1   could not start (privileges, mount point, fork source), or stopped
        because it failed or DIR was unmounted from outside
    2   usage error
    Errors reach stderr as one sentence; the log carries the detail.

EXAMPLE
    # relayfork mount /run/relayfork &
    # trap 'echo a process forked' RTMIN    # first: RTMIN's default kills
    # echo $$ > /run/relayfork/relayfork/processes
    # /bin/true
    a process forked
    # echo -$$ > /run/relayfork/relayfork/processes

SEE ALSO
    README.md and scripts/relayfork.service in the package; examples/ in
    the source repository.
`;

class UsageError extends Error {}

function version(): string {
  const pkg = JSON.parse(readFileSync(`${PKG_ROOT}/package.json`, 'utf8')) as { version: string };
  return pkg.version;
}

function parse(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        signal: { type: 'string' },
        source: { type: 'string', default: 'auto' },
        'poll-interval': { type: 'string' },
        threads: { type: 'boolean', default: false },
        'events-buffer': { type: 'string' },
        'log-level': { type: 'string', default: 'info' },
        'log-format': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', short: 'V', default: false },
      },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message.split('\n')[0]! : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help || values.version) return { help: values.help, version: values.version } as const;
  const [command, dir, ...rest] = positionals;
  if (command === undefined) throw new UsageError('missing command: relayfork mount [DIR]');
  if (command !== 'mount') throw new UsageError(`unknown command '${command}'`);
  if (rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}'`);
  const source = values.source!;
  if (!SOURCES.includes(source)) throw new UsageError(`--source must be one of ${SOURCES.join(', ')}`);
  let pollIntervalMs = DEFAULT_POLL_INTERVAL_MS;
  const interval = values['poll-interval'];
  if (interval !== undefined) {
    if (source === 'netlink') throw new UsageError('--poll-interval applies to --source poll or auto, not netlink');
    if (!/^[0-9]+$/.test(interval) || Number(interval) < MIN_POLL_INTERVAL_MS || Number(interval) > MAX_POLL_INTERVAL_MS) {
      throw new UsageError(`--poll-interval must be a whole number of milliseconds from ${MIN_POLL_INTERVAL_MS} to ${MAX_POLL_INTERVAL_MS}`);
    }
    pollIntervalMs = Number(interval);
  }
  const logLevel = values['log-level']!;
  if (!LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}`);
  const logFormat = values['log-format'] ?? defaultLogFormat();
  if (!(LOG_FORMATS as readonly string[]).includes(logFormat)) {
    throw new UsageError(`--log-format must be one of ${LOG_FORMATS.join(', ')}`);
  }
  let signal = DEFAULT_SIGNAL;
  if (values.signal !== undefined) {
    try {
      signal = parseSignal(values.signal);
    } catch (err) {
      throw new UsageError(`--signal: ${err instanceof RelayError ? err.message : String(err)}`);
    }
  }
  let eventsBuffer = DEFAULT_EVENTS_BUFFER;
  if (values['events-buffer'] !== undefined) {
    const text = values['events-buffer'];
    eventsBuffer = /^[0-9]{1,7}$/.test(text) ? Number(text) : NaN;
    if (!(eventsBuffer >= 1 && eventsBuffer <= MAX_EVENTS_BUFFER)) {
      throw new UsageError(`--events-buffer must be a number of lines from 1 to ${MAX_EVENTS_BUFFER}`);
    }
  }
  return {
    help: false,
    version: false,
    logFormat: logFormat as LogFormat,
    options: {
      mountDir: dir ?? DEFAULT_MOUNT,
      signal,
      source: source as SourceRequest,
      pollIntervalMs,
      threads: values.threads!,
      logLevel,
      eventsBuffer,
    },
  } as const;
}

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parse(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`relayfork: ${err.message} (see relayfork --help)\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`relayfork ${version()}\n`);
    return 0;
  }
  const log = configureLogging(args.options!.logLevel as LevelWithSilent, args.logFormat);
  let daemon: Daemon | null = null;
  // A stop signal during start-up is kept until the mount exists, then acted
  // on, so it never leaves a half-made mount behind; a second one exits at once.
  let stopAsked: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (!daemon) {
      if (stopAsked) process.exit(1);
      stopAsked = sig;
      log.info({ signal: sig }, 'stop requested while starting; stopping once mounted');
      return;
    }
    log.info({ signal: sig }, 'stopping');
    tellServiceManager('STOPPING=1');
    void daemon.stop(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.stderr.write(`relayfork: internal error: ${err.message}\n`);
    if (daemon) void daemon.stop(1);
    else process.exit(1);
  });
  try {
    daemon = await startDaemon(args.options!);
  } catch (err) {
    const fatal = err instanceof FatalError ? err : null;
    log.error({ err }, 'could not start');
    process.stderr.write(`relayfork: ${fatal ? fatal.message : err instanceof Error ? err.message : String(err)}\n`);
    return fatal ? fatal.exitCode : 1;
  }
  tellServiceManager(`READY=1\nSTATUS=serving ${daemon.mountpoint}`);
  if (stopAsked) onSignal(stopAsked);
  return daemon.done;
}

// The last log lines get a moment to reach stdout, but a stdout that is not
// read (or gone) never holds up the exit.
const exit = (code: number): Promise<never> => flushLogs(1000).then(() => process.exit(code));

main(process.argv.slice(2)).then(exit, (err: unknown) => {
  process.stderr.write(`relayfork: ${err instanceof Error ? err.message : String(err)}\n`);
  return exit(1);
});
