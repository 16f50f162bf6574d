// The fan-out: one preallocated siginfo, rewritten per fork, sent through each
// registrant's pidfd. Runs in the relay worker, next to the source.
import { Errno, pidfdSendSignal, SI_ASYNCIO } from '../kernel/syscalls.js';
import { Counter, Control, type SharedState } from './shared.js';

// siginfo_t on x86-64 / generic 64-bit, 128 bytes:
//   int si_signo;   // 0
//   int si_errno;   // 4
//   int si_code;    // 8
//   (pad)           // 12: the union is 8-aligned
//   union { struct { pid_t si_pid; uid_t si_uid; union sigval si_value; } _rt; ... }
//     si_pid        // 16
//     si_uid        // 20
//     si_value      // 24 (sival_int in the low 4 bytes)
const SIGINFO_SIZE = 128;
const OFF_SIGNO = 0;
const OFF_CODE = 8;
const OFF_PID = 16;
const OFF_UID = 20;
const OFF_VALUE = 24;
/** The lowest relay signal: Target.sigs holds signal s as bit s - 34. */
export const SIGRT_BASE = 34;

export interface Target {
  id: number;
  pid: number;
  pidfd: number;
  dropped: number;
  droppedSinceLog: number;
  lastDropLog: number;
  // Kept by the pending watch (pending-watch.ts), read here per fork:
  /** Signals sent since its queue was last seen without any of ours: at most this many are pending. */
  unconfirmed: number;
  /** No signal is queued while unconfirmed >= cap; 0 while it is held. */
  cap: number;
  /** Relay signals sent since last seen drained, as bits (1 << (signo - 34)). */
  sigs: number;
  // The pending watch's own bookkeeping:
  /** At or above this many unconfirmed signals the watch takes a closer look. */
  soft: number;
  /** When a check first saw ours still pending (ms), 0 when last seen drained. */
  pendingSince: number;
  /** Not queueing to it until it drains. */
  held: boolean;
  heldSince: number;
  droppedAtHold: number;
  /** Real uid (whose RLIMIT_SIGPENDING count its signals use) and its limit; -1/0 until read. */
  uid: number;
  limit: number;
}

/**
 * A registrant whose /proc/PID/status the pending watch has not read (it reads
 * it as the registrant is added, and again at every check until it can): not
 * capped, since nothing is known of its user's queue.
 */
export const UNWATCHED_CAP = Infinity;

export interface FanOutEvents {
  /** The registrant's process is gone (ESRCH): stop sending, tell the registry. */
  gone(target: Target): void;
  /** Called at most once a second per registrant while its queue refuses signals. */
  dropping(target: Target, errno: number, count: number): void;
}

export class FanOut {
  readonly targets: Target[] = [];
  private readonly info = Buffer.from(new ArrayBuffer(SIGINFO_SIZE));
  /** The same siginfo as 32-bit words: written per fork without Buffer's validating writers. */
  private readonly infoWords = new Int32Array(this.info.buffer, 0, SIGINFO_SIZE >> 2);
  private readonly counters: Float64Array;
  private readonly control: Int32Array;

  constructor(state: SharedState, private readonly events: FanOutEvents) {
    this.counters = state.counters;
    this.control = state.control;
    this.info.writeInt32LE(SI_ASYNCIO, OFF_CODE);
    this.info.writeUInt32LE(0, OFF_UID); // sent on root's behalf
    this.signo = Atomics.load(this.control, Control.signal);
  }

  /**
   * The signal to send, read from shared memory when the main thread says it
   * changed (with the registry's generation), not per fork: an Atomics.load
   * is a builtin call that TurboFan does not inline here.
   */
  private signo: number;

  /** Takes the signal the main thread set; called before any fork that starts after the change. */
  syncSignal(): void {
    this.signo = Atomics.load(this.control, Control.signal);
  }

  add(id: number, pid: number, pidfd: number): Target {
    const t: Target = {
      id, pid, pidfd, dropped: 0, droppedSinceLog: 0, lastDropLog: 0,
      unconfirmed: 0, cap: UNWATCHED_CAP, sigs: 0,
      soft: UNWATCHED_CAP, pendingSince: 0, held: false, heldSince: 0, droppedAtHold: 0, uid: -1, limit: 0,
    };
    this.targets.push(t);
    return t;
  }

  /** Removes a target and returns it (its pidfd is the caller's to close). */
  remove(id: number): Target | undefined {
    const i = this.targets.findIndex((t) => t.id === id);
    if (i < 0) return undefined;
    return this.targets.splice(i, 1)[0];
  }

  /**
   * One fork: every registrant gets one queued signal, unless it has `cap`
   * signals it may not have read yet (see pending-watch.ts): those are dropped.
   */
  relay(parentTgid: number, childPid: number): void {
    const counters = this.counters;
    counters[Counter.forksSeen]!++;
    const targets = this.targets;
    if (targets.length === 0) return;
    const signo = this.signo;
    const sigBit = 1 << (signo - SIGRT_BASE);
    const info = this.info;
    const w = this.infoWords;
    w[OFF_SIGNO >> 2] = signo;
    w[OFF_PID >> 2] = parentTgid;
    w[OFF_VALUE >> 2] = childPid;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      if (t.unconfirmed >= t.cap) {
        counters[Counter.signalsDropped]!++;
        t.dropped++;
        continue;
      }
      const err = pidfdSendSignal(t.pidfd, signo, info);
      if (err === 0) {
        counters[Counter.signalsSent]!++;
        t.unconfirmed++;
        t.sigs |= sigBit;
        continue;
      }
      if (err === Errno.ESRCH) {
        this.events.gone(t); // removes it from targets
        i--;
        continue;
      }
      // EAGAIN: the receiver's queue (RLIMIT_SIGPENDING) is full. Anything else
      // (EPERM without CAP_KILL) is a drop too; neither stops the relay.
      counters[Counter.signalsDropped]!++;
      t.dropped++;
      t.droppedSinceLog++;
      const now = Date.now();
      if (now - t.lastDropLog >= 1000) {
        this.events.dropping(t, err, t.droppedSinceLog);
        t.lastDropLog = now;
        t.droppedSinceLog = 0;
      }
    }
  }
}
