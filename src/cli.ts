// argv → options → daemon. Usage errors exit 2, everything else that stops the
// daemon early exits 1 with one readable sentence on stderr.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseSignal, DEFAULT_SIGNAL } from './control/grammar.js';
import { startDaemon, type Daemon } from './daemon.js';
import { FatalError, RelayError } from './errors.js';
import { configureLogging, flushLogs } from './log.js';
import type { LevelWithSilent } from 'pino';

const PKG_ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEFAULT_MOUNT = fileURLToPath(new URL('../mount', import.meta.url));
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const SOURCES = ['auto', 'netlink'];

const HELP = `Usage: relayfork mount [DIR] [options]

Serves DIR/relayfork/{processes,signal} like the 2005 /sys/relayfork module:
every process whose PID is written to 'processes' receives a real-time signal
for each fork on the host (si_pid = parent, si_value = child).

  DIR                 mount point (default: ${DEFAULT_MOUNT})

Options:
  --signal N|NAME     signal to send: 34-64 or SIGRTMIN, RTMIN+n, RTMAX-n (default ${DEFAULT_SIGNAL})
  --source S          fork source: auto or netlink (default auto: the proc connector)
  --threads           relay new threads too, not only new processes
  --log-level L       fatal, error, warn, info, debug, trace or silent (default info)
  -h, --help          show this help
  -V, --version       show the version

Runs in the foreground; SIGINT or SIGTERM unmounts and exits 0.
Exit status: 0 after a clean stop, 2 for a usage error, 1 for anything else.
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
        threads: { type: 'boolean', default: false },
        'log-level': { type: 'string', default: 'info' },
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
  const logLevel = values['log-level']!;
  if (!LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}`);
  let signal = DEFAULT_SIGNAL;
  if (values.signal !== undefined) {
    try {
      signal = parseSignal(values.signal);
    } catch (err) {
      throw new UsageError(`--signal: ${err instanceof RelayError ? err.message : String(err)}`);
    }
  }
  return {
    help: false,
    version: false,
    options: {
      mountDir: dir ?? DEFAULT_MOUNT,
      signal,
      source: source as 'auto' | 'netlink',
      threads: values.threads!,
      logLevel,
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
  const log = configureLogging(args.options!.logLevel as LevelWithSilent);
  let daemon: Daemon | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (!daemon) process.exit(1); // still starting: nothing mounted to leave behind
    log.info({ signal: sig }, 'stopping');
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
  return daemon.done;
}

// The last log lines get a moment to reach stdout, but a stdout that is not
// read (or gone) never holds up the exit.
const exit = (code: number): Promise<never> => flushLogs(1000).then(() => process.exit(code));

main(process.argv.slice(2)).then(exit, (err: unknown) => {
  process.stderr.write(`relayfork: ${err instanceof Error ? err.message : String(err)}\n`);
  return exit(1);
});
