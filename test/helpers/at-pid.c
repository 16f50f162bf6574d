/*
 * at-pid PID COMMAND [ARG...]
 *
 * Runs COMMAND as a child whose PID is PID, the way checkpoint/restore tools
 * do: under an exclusive flock on /proc/sys/kernel/ns_last_pid (which CRIU
 * takes too), write PID-1 there, fork, and at once write back the value read
 * before, so the host's PID allocation carries on where it was. Needs root
 * (CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE).
 *
 * Another fork on the host between the write and ours takes PID first: then
 * the child is not started and at-pid exits 3 ("missed"); callers retry.
 * Otherwise it waits for the child (which dies with it: PR_SET_PDEATHSIG) and
 * exits with its status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int write_last(int fd, long v) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld", v);
  return pwrite(fd, buf, (size_t)n, 0) == n ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: at-pid PID COMMAND [ARG...]\n");
    return 2;
  }
  long want = strtol(argv[1], NULL, 10);
  if (want < 2) {
    fprintf(stderr, "at-pid: bad PID %s\n", argv[1]);
    return 2;
  }
  int fd = open("/proc/sys/kernel/ns_last_pid", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    perror("at-pid: open ns_last_pid");
    return 1;
  }
  if (flock(fd, LOCK_EX) != 0) {
    perror("at-pid: flock");
    return 1;
  }
  char saved[32] = {0};
  if (pread(fd, saved, sizeof saved - 1, 0) <= 0) {
    perror("at-pid: read ns_last_pid");
    return 1;
  }
  long before = strtol(saved, NULL, 10);
  pid_t parent = getpid();
  if (write_last(fd, want - 1) != 0) {
    perror("at-pid: write ns_last_pid");
    return 1;
  }
  pid_t child = fork();
  if (child == 0) {
    if (getpid() != want) _exit(3);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    execvp(argv[2], argv + 2);
    _exit(127);
  }
  int restore_errno = write_last(fd, before) == 0 ? 0 : errno;
  flock(fd, LOCK_UN);
  close(fd);
  if (restore_errno != 0) fprintf(stderr, "at-pid: could not restore ns_last_pid: %s\n", strerror(restore_errno));
  if (child < 0) {
    perror("at-pid: fork");
    return 1;
  }
  if (child != want) {
    waitpid(child, NULL, 0);
    fprintf(stderr, "at-pid: missed: got %ld, not %ld\n", (long)child, want);
    return 3;
  }
  int status;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) return 1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
