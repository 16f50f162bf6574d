/*
 * receiver SIGNO [LOGFILE]
 *
 * A registrant for the benchmark. It blocks SIGNO (and SIGTERM), reads them through
 * one signalfd, and buffers `si_pid si_value t_at_read_ns` (CLOCK_MONOTONIC, taken once
 * per read batch) in memory. On SIGTERM or end of file on stdin it drains what is
 * already queued, writes the buffer to LOGFILE (if given) and prints
 *     received N
 * on stdout before exiting 0. It prints `ready PID` once set up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

struct rec { int32_t pid, value; int64_t t; };
static struct rec *recs;
static size_t cap, n;
static int64_t received;
static int logging;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Reads one batch; returns 1 if SIGTERM was among it, -1 on EAGAIN, 0 otherwise. */
static int read_batch(int sfd, int signo) {
  struct signalfd_siginfo infos[128];
  ssize_t got = read(sfd, infos, sizeof infos);
  if (got < 0) {
    if (errno == EAGAIN) return -1;
    if (errno == EINTR) return 0;
    perror("receiver: read(signalfd)");
    exit(1);
  }
  int64_t t = now_ns();
  int term = 0;
  for (size_t i = 0; i < (size_t)got / sizeof infos[0]; i++) {
    if ((int)infos[i].ssi_signo != signo) { term = 1; continue; }
    received++;
    if (!logging) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      recs = realloc(recs, cap * sizeof *recs);
      if (!recs) { perror("receiver: realloc"); exit(1); }
    }
    recs[n].pid = (int32_t)infos[i].ssi_pid;
    recs[n].value = infos[i].ssi_int;
    recs[n].t = t;
    n++;
  }
  return term;
}

static void finish(int sfd, int signo, const char *logfile) {
  int fl = fcntl(sfd, F_GETFL);
  fcntl(sfd, F_SETFL, fl | O_NONBLOCK);
  while (read_batch(sfd, signo) != -1) {}
  if (logfile) {
    FILE *f = fopen(logfile, "w");
    if (!f) { perror("receiver: open log"); exit(1); }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    for (size_t i = 0; i < n; i++)
      fprintf(f, "%d %d %lld\n", recs[i].pid, recs[i].value, (long long)recs[i].t);
    if (fclose(f) != 0) { perror("receiver: write log"); exit(1); }
  }
  printf("received %lld\n", (long long)received);
  fflush(stdout);
  exit(0);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: receiver SIGNO [LOGFILE]\n");
    return 2;
  }
  int signo = atoi(argv[1]);
  const char *logfile = argc == 3 ? argv[2] : NULL;
  logging = logfile != NULL;
  if (signo < 34 || signo > 64) { fprintf(stderr, "receiver: bad signal %s\n", argv[1]); return 2; }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signo);
  sigaddset(&set, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) { perror("receiver: sigprocmask"); return 1; }
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) { perror("receiver: signalfd"); return 1; }
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  struct pollfd fds[2] = { { .fd = sfd, .events = POLLIN }, { .fd = STDIN_FILENO, .events = POLLIN } };
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      perror("receiver: poll");
      return 1;
    }
    if ((fds[0].revents & POLLIN) && read_batch(sfd, signo) == 1) finish(sfd, signo, logfile);
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
      char buf[256];
      ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) finish(sfd, signo, logfile);
    }
  }
}
