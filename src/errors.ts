// Typed errors thrown by the pure grammar and the registry. Only fs/ turns them
// into a FUSE reply (-errno); nothing here knows about FUSE.

export type ErrnoName = 'EINVAL' | 'ESRCH' | 'EPERM' | 'EACCES' | 'ENOENT' | 'EISDIR' | 'ENOTDIR' | 'EBADF' | 'EINTR';

export class RelayError extends Error {
  readonly code: ErrnoName;

  constructor(code: ErrnoName, message: string) {
    super(message);
    this.name = 'RelayError';
    this.code = code;
  }
}

export const invalid = (message: string): RelayError => new RelayError('EINVAL', message);

/** An error a user must see as one sentence and an exit status (CLI and start-up). */
export class FatalError extends Error {
  readonly exitCode: number;

  constructor(message: string, exitCode = 1, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FatalError';
    this.exitCode = exitCode;
  }
}
