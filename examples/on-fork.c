/*
 * on-fork: told by relayfork about every new process on the host, with SA_SIGINFO.
 *
 *   cc -O2 -Wall -o on-fork examples/on-fork.c
 *   sudo ./on-fork [DIR]          DIR defaults to /run/relayfork/relayfork
 *
 * It reads the signal number from DIR/signal, installs a handler for it, and only
 * then registers itself (writing its PID to DIR/processes takes root; otherwise it
 * prints the command for root). For each fork it prints one line:
 *
 *   parent <si_pid> child <si_value.sival_int>
 *
 * Limits: the handler runs once per queued signal; if this process falls behind by
 * more than its RLIMIT_SIGPENDING, the kernel refuses further signals and relayfork
 * counts them as dropped. A program that must see every fork in order, or does more
 * than print, should block the signal and read it with signalfd(2) or sigwaitinfo(2)
 * instead (see on_fork.py, or test/helpers/receiver.c). If root changes DIR/signal
 * while this runs, the new signal's default action terminates it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* printf is not async-signal-safe: format by hand and write(2), which is. */
static char *put_int(char *p, long v) {
  char digits[24];
  int n = 0;
  unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
  do digits[n++] = (char)('0' + u % 10); while ((u /= 10) != 0);
  if (v < 0) *p++ = '-';
  while (n > 0) *p++ = digits[--n];
  return p;
}

static void on_fork(int sig, siginfo_t *si, void *ctx) {
  (void)sig;
  (void)ctx;
  int saved = errno;
  char line[64], *p = line;
  memcpy(p, "parent ", 7), p += 7;
  p = put_int(p, si->si_pid);
  memcpy(p, " child ", 7), p += 7;
  p = put_int(p, si->si_value.sival_int);
  *p++ = '\n';
  (void)!write(STDOUT_FILENO, line, (size_t)(p - line));
  errno = saved;
}

static int read_signal(const char *dir) {
  char path[4096], buf[16] = {0};
  snprintf(path, sizeof path, "%s/signal", dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0) {
    fprintf(stderr, "on-fork: cannot read %s: %s (is relayfork running?)\n", path, strerror(errno));
    exit(1);
  }
  close(fd);
  return atoi(buf);
}

/* echo PID > DIR/processes; 0 or an errno. */
static int register_self(const char *dir) {
  char path[4096], line[32];
  snprintf(path, sizeof path, "%s/processes", dir);
  int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return errno;
  int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
  int err = write(fd, line, (size_t)n) == n ? 0 : errno;
  close(fd);
  return err;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/run/relayfork/relayfork";
  int signo = read_signal(dir);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fork;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(signo, &sa, NULL) != 0) { /* first: the default action terminates */
    fprintf(stderr, "on-fork: sigaction(%d): %s\n", signo, strerror(errno));
    return 1;
  }

  int err = register_self(dir);
  if (err == 0) {
    fprintf(stderr, "on-fork: registered %d with %s for signal %d\n", (int)getpid(), dir, signo);
  } else {
    fprintf(stderr, "on-fork: cannot register (%s); as root run: echo %d > %s/processes\n",
            strerror(err), (int)getpid(), dir);
  }
  for (;;) pause();
}
