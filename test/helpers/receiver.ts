// A real registrant: the compiled test/helpers/receiver.c, which blocks the given RT
// signals and prints the siginfo of each one it reads through a signalfd.
import { spawn, type ChildProcess } from 'node:child_process';
import { compileHelper } from './native.js';

export interface Sig {
  signo: number;
  /** si_code */
  code: number;
  /** si_pid */
  pid: number;
  /** si_value.sival_int */
  value: number;
}

export interface Receiver {
  pid: number;
  proc: ChildProcess;
  /** Every signal read so far, in order. */
  signals: Sig[];
  /** Resolves (with all signals so far) once pred(signals) holds; rejects after timeoutMs. */
  waitFor(pred: (signals: readonly Sig[]) => boolean, timeoutMs?: number): Promise<Sig[]>;
  /** A --stuck receiver starts reading its signals. */
  unstick(): void;
  /** Closes its stdin (it exits 0 on EOF) and waits; SIGKILLs it if that takes over 3 s. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitInfo(): { code: number | null; signal: NodeJS.Signals | null } | null;
  stderr(): string;
}

const receivers = new Set<Receiver>();

export interface ReceiverOptions {
  readyTimeoutMs?: number;
  /**
   * A command that runs the receiver, e.g. `nsenter ... --` into another PID
   * namespace, or a helper that picks its PID: then `pid` is the PID the
   * receiver reports (its own, in its namespace), not the PID of the command spawned.
   */
  prefix?: string[];
  /** Block the signals but leave them queued, unread, until unstick(). */
  stuck?: boolean;
}

export async function startReceiver(signo: number | number[], options: number | ReceiverOptions = {}): Promise<Receiver> {
  const opts: ReceiverOptions = typeof options === 'number' ? { readyTimeoutMs: options } : options;
  const { readyTimeoutMs = 5000, prefix = [] } = opts;
  const bin = await compileHelper('receiver');
  const signos = Array.isArray(signo) ? signo : [signo];
  const [cmd, ...args] = [...prefix, bin, ...(opts.stuck ? ['--stuck'] : []), ...signos.map(String)];
  const proc = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });

  const signals: Sig[] = [];
  let err = '';
  let partial = '';
  let readyPid: number | null = null;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const l of [...listeners]) l();
  };

  // A receiver that is killed while the test writes to its stdin must not crash the test.
  proc.stdin!.on('error', () => undefined);
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      const f = line.split(' ');
      if (f[0] === 'ready' && f.length === 2) {
        readyPid = Number(f[1]);
      } else if (f[0] === 'sig' && f.length === 5) {
        signals.push({ signo: Number(f[1]), code: Number(f[2]), pid: Number(f[3]), value: Number(f[4]) });
      } else {
        err += `unexpected receiver output: ${line}\n`;
      }
    }
    notify();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('error', (e) => {
      err += `spawn error: ${String(e)}\n`;
      if (proc.pid === undefined) {
        exit = { code: null, signal: null };
        notify();
        resolve(exit);
      }
    });
    proc.on('close', (code, signal) => {
      exit = { code, signal };
      notify();
      resolve(exit);
    });
  });

  const waitFor = (pred: (s: readonly Sig[]) => boolean, timeoutMs = 5000): Promise<Sig[]> =>
    new Promise<Sig[]>((resolve, reject) => {
      let done = false;
      const check = () => {
        if (done) return;
        if (pred(signals)) {
          done = true;
          cleanup();
          resolve(signals);
        } else if (exit !== null) {
          done = true;
          cleanup();
          reject(new Error(`receiver ${proc.pid} exited (${JSON.stringify(exit)}) before the wait was met; ` +
            `${signals.length} signals; stderr: ${err}`));
        }
      };
      const t = setTimeout(() => {
        if (done) return;
        done = true;
        cleanup();
        reject(new Error(`receiver ${proc.pid}: wait not met within ${timeoutMs} ms; ${signals.length} signals so far, ` +
          `last: ${JSON.stringify(signals.slice(-10))}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(t);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });

  const receiver: Receiver = {
    pid: -1, // set from `ready <pid>` below
    unstick() {
      proc.stdin!.write('read\n');
    },
    proc,
    signals,
    waitFor,
    exitInfo: () => exit,
    stderr: () => err,
    async stop() {
      if (exit !== null) return exit;
      proc.stdin!.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      const info = await exited;
      clearTimeout(t);
      return info;
    },
  };
  receivers.add(receiver);

  // Wait for `ready <pid>`.
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (readyPid !== null) {
        finish();
        receiver.pid = readyPid;
        if (prefix.length === 0 && readyPid !== proc.pid) reject(new Error(`receiver reported pid ${readyPid}, spawned ${proc.pid}`));
        else resolve();
      } else if (exit !== null) {
        finish();
        reject(new Error(`receiver exited (${JSON.stringify(exit)}) before ready: ${err}`));
      }
    };
    const t = setTimeout(() => {
      finish();
      proc.kill('SIGKILL');
      reject(new Error(`receiver not ready within ${readyTimeoutMs} ms: ${err}`));
    }, readyTimeoutMs);
    const finish = () => {
      clearTimeout(t);
      listeners.delete(check);
    };
    listeners.add(check);
    check();
  });
  return receiver;
}

/** Stops every receiver started and not yet exited (SIGKILL). */
export async function cleanupReceivers(): Promise<void> {
  const all = [...receivers];
  receivers.clear();
  await Promise.all(
    all.map(async (r) => {
      if (r.exitInfo() === null) {
        try {
          r.proc.kill('SIGKILL');
        } catch {
          // gone
        }
        await r.stop();
      }
    }),
  );
}
