// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram
// to the AF_UNIX socket named in $NOTIFY_SOCKET. With Type=notify in the unit,
// `systemctl start relayfork` returns, and units ordered after it start, only
// once the filesystem is mounted. Outside systemd the variable is unset and
// this does nothing.
import { AF_UNIX, close, SOCK_CLOEXEC, SOCK_DGRAM, sendTo, socket } from './kernel/syscalls.js';
import { logger } from './log.js';

const SUN_PATH_MAX = 108;

/** struct sockaddr_un for a path, or for an abstract name written as `@name`. */
export function encodeSockaddrUn(name: string): Buffer {
  const abstract = name.startsWith('@');
  const path = Buffer.from(abstract ? name.slice(1) : name, 'utf8');
  // A path takes its terminating NUL; an abstract name starts with one instead.
  const size = 1 + path.length;
  if (size > SUN_PATH_MAX) throw new Error(`socket name too long: ${name}`);
  const addr = Buffer.alloc(2 + size);
  addr.writeUInt16LE(AF_UNIX, 0);
  path.copy(addr, abstract ? 3 : 2);
  return addr;
}

/**
 * Sends `state` (e.g. `READY=1`) to the service manager. Returns false when
 * not run by one that listens ($NOTIFY_SOCKET unset or not a unix socket);
 * throws if the send fails.
 */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const name = env.NOTIFY_SOCKET;
  if (!name || (name[0] !== '/' && name[0] !== '@')) return false;
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  try {
    sendTo(fd, Buffer.from(state, 'utf8'), encodeSockaddrUn(name));
  } finally {
    close(fd);
  }
  return true;
}

/** sdNotify that logs instead of throwing: telling systemd must never stop the daemon. */
export function tellServiceManager(state: string): void {
  try {
    if (sdNotify(state)) logger('service').debug({ state }, 'told the service manager');
  } catch (err) {
    logger('service').warn({ err }, 'could not notify the service manager ($NOTIFY_SOCKET)');
  }
}
