// Runs the daemon the way the systemd unit does: as an unprivileged user, with
// exactly the given capabilities (inheritable + ambient + bounding set, nothing
// else) and no_new_privs, through setpriv.
//
// One thing differs from a host where udev runs: there /dev/fuse is mode 0666,
// here (a VM without udev) it may be 0600 root, which no unprivileged user can
// open whatever its capabilities short of CAP_DAC_OVERRIDE. Rather than chmod
// the host's device node, the daemon gets a private mount namespace (unshare
// --propagation private: nothing done in it reaches the host) in which a node
// for the same device, with the mode asked for, is bound over /dev/fuse. Its
// FUSE mount lives in that namespace too; the test reaches it through
// /proc/PID/root (see `view`), and it disappears with the daemon, so no mount
// can be left behind on the host.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

export const NOBODY = 65534;

export interface Confinement {
  /** Command prefix for startDaemon/runCli/startReceiver: it execs the daemon's argv. */
  wrap: string[];
  /** Removes the scratch directory (call after the daemon has exited). */
  release(): Promise<void>;
}

/** A path in the confined daemon's mount namespace, as this process can open it. */
export const view = (daemonPid: number, p: string): string => `/proc/${daemonPid}/root${p}`;

/** setpriv's capability list: `-all` then `+cap` for each (names as setpriv spells them). */
const capList = (caps: readonly string[]): string => ['-all', ...caps.map((c) => `+${c}`)].join(',');

/** setpriv as `uid` with exactly `caps` and no_new_privs: a prefix that execs the rest. */
export function asUserWithCaps(uid: number, caps: readonly string[]): string[] {
  const list = capList(caps);
  return [
    'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups',
    `--inh-caps=${list}`, `--ambient-caps=${list}`, `--bounding-set=${list}`, '--no-new-privs', '--',
  ];
}

/** The device number of /dev/fuse (10:229 on Linux, read rather than assumed). */
async function fuseDevice(): Promise<{ major: number; minor: number }> {
  const { rdev } = await stat('/dev/fuse');
  return { major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
}

const SHIM = [
  'set -e',
  'dev=$1 mode=$2 major=$3 minor=$4; shift 4',
  'mount -t tmpfs -o mode=0755,size=64k relayfork-dev "$dev"',
  'mknod -m "$mode" "$dev/fuse" c "$major" "$minor"',
  'mount --bind "$dev/fuse" /dev/fuse',
  'exec "$@"',
].join('\n');

/**
 * A confinement for one daemon: private mount namespace, /dev/fuse of mode
 * `fuseMode` (default 0666, as udev makes it), then uid `uid` with only `caps`.
 */
export async function confine(opts: { uid?: number; caps: readonly string[]; fuseMode?: number }): Promise<Confinement> {
  const dev = await mkdtemp(path.join(os.tmpdir(), 'relayfork-dev-'));
  const { major, minor } = await fuseDevice();
  const mode = (opts.fuseMode ?? 0o666).toString(8).padStart(4, '0');
  return {
    wrap: [
      'unshare', '--mount', '--propagation', 'private', '--',
      'sh', '-c', SHIM, 'sh', dev, mode, String(major), String(minor),
      ...asUserWithCaps(opts.uid ?? NOBODY, opts.caps),
    ],
    async release() {
      await rm(dev, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

/** Capability masks from /proc/PID/status, and the ids. */
export async function processCreds(pid: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const line of (await readFile(`/proc/${pid}/status`, 'utf8')).split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Linux capability numbers, for reading masks. */
export const CAP_NUMBER: Record<string, number> = { CAP_KILL: 5, CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21 };

export function capMask(caps: readonly string[]): bigint {
  let m = 0n;
  for (const c of caps) {
    const n = CAP_NUMBER[c];
    if (n === undefined) throw new Error(`unknown capability ${c}`);
    m |= 1n << BigInt(n);
  }
  return m;
}
