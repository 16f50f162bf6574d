#!/usr/bin/env python3
"""on_fork.py: told by relayfork about every new process on the host.

    sudo python3 examples/on_fork.py [DIR]     DIR defaults to /run/relayfork/relayfork

It reads the signal number from DIR/signal, blocks that signal, opens a signalfd(2)
for it through ctypes, and only then registers itself (writing its PID to
DIR/processes takes root; otherwise it prints the command for root). For each fork
it prints one line:

    parent <ssi_pid> child <ssi_int>

Why signalfd, and the limits of what Python offers without it:
- signal.signal() handlers get (signum, frame) only: no siginfo, so neither the
  parent nor the child.
- signal.sigwaitinfo() returns a struct_siginfo with si_pid (the parent) but no
  si_value: Python does not expose it, so the child's PID is lost.
- A signalfd reads the kernel's struct signalfd_siginfo (128 bytes), which has both
  (ssi_pid, ssi_int); the standard library has no signalfd, hence ctypes. The layout
  below is the same on every Linux architecture; the byte order is the machine's.
- The signal must be blocked in every thread, or one that has it unblocked takes it
  with the default action (terminate): block it before starting any thread (new
  threads inherit the mask), as done here first thing.
- Signals queue up to RLIMIT_SIGPENDING; a reader that falls further behind loses
  them (relayfork counts them as dropped). If root changes DIR/signal while this
  runs, the new signal is not blocked and terminates it.
"""
import ctypes
import os
import signal
import struct
import sys

SIGINFO_SIZE = 128  # sizeof(struct signalfd_siginfo)
# uint32 ssi_signo, int32 ssi_errno, int32 ssi_code, uint32 ssi_pid, ... int32 ssi_int at 44
HEAD = struct.Struct("=IiiI")
SSI_INT = struct.Struct("=i")
SSI_INT_OFFSET = 44

libc = ctypes.CDLL(None, use_errno=True)


class SigSet(ctypes.Structure):
    """glibc's sigset_t: 1024 bits."""
    _fields_ = [("val", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))]


def signalfd_for(signo: int) -> int:
    mask = SigSet()
    libc.sigemptyset(ctypes.byref(mask))
    if libc.sigaddset(ctypes.byref(mask), signo) != 0:
        raise OSError(ctypes.get_errno(), f"sigaddset({signo})")
    fd = libc.signalfd(-1, ctypes.byref(mask), os.O_CLOEXEC)  # SFD_CLOEXEC == O_CLOEXEC
    if fd < 0:
        raise OSError(ctypes.get_errno(), "signalfd")
    return fd


def main() -> int:
    rf = sys.argv[1] if len(sys.argv) > 1 else "/run/relayfork/relayfork"
    with open(os.path.join(rf, "signal")) as f:
        signo = int(f.read())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signo})  # first: the default action terminates
    fd = signalfd_for(signo)

    try:
        with open(os.path.join(rf, "processes"), "w") as f:
            f.write(f"{os.getpid()}\n")
        print(f"on_fork.py: registered {os.getpid()} with {rf} for signal {signo}", file=sys.stderr, flush=True)
    except OSError as e:
        print(f"on_fork.py: cannot register ({e.strerror}); as root run: echo {os.getpid()} > {rf}/processes",
              file=sys.stderr, flush=True)

    while True:
        data = os.read(fd, SIGINFO_SIZE * 64)  # as many queued signals as fit, at least one
        lines = []
        for off in range(0, len(data) - SIGINFO_SIZE + 1, SIGINFO_SIZE):
            _signo, _errno, _code, parent = HEAD.unpack_from(data, off)
            (child,) = SSI_INT.unpack_from(data, off + SSI_INT_OFFSET)
            lines.append(f"parent {parent} child {child}\n")
        sys.stdout.write("".join(lines))
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
