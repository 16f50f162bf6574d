/*
 * receiver [--stuck] SIGNO [SIGNO...]
 *
 * A registrant for the integration tests. It blocks the given signals, reads them
 * through a signalfd and prints, on stdout:
 *
 *   ready <pid>                              once everything is set up
 *   sig <signo> <code> <si_pid> <si_int>     one line per signal received
 *
 * Every line is flushed at once. It exits 0 on SIGTERM (which it does not block) or
 * when its stdin reaches end of file, so it never outlives the test that spawned it.
 *
 * With --stuck it blocks the signals but does not read them (they stay queued,
 * charged to its user's RLIMIT_SIGPENDING) until a line "read" arrives on stdin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  int first = 1;
  int reading = 1;
  if (argc > 1 && strcmp(argv[1], "--stuck") == 0) {
    reading = 0;
    first = 2;
  }
  if (argc <= first) {
    fprintf(stderr, "usage: receiver [--stuck] SIGNO [SIGNO...]\n");
    return 2;
  }

  sigset_t set;
  sigemptyset(&set);
  for (int i = first; i < argc; i++) {
    char *end = NULL;
    errno = 0;
    long signo = strtol(argv[i], &end, 10);
    if (errno != 0 || end == argv[i] || *end != '\0' || signo < 1 || signo > 64) {
      fprintf(stderr, "receiver: bad signal number: %s\n", argv[i]);
      return 2;
    }
    if (sigaddset(&set, (int)signo) != 0) {
      fprintf(stderr, "receiver: sigaddset(%ld): %s\n", signo, strerror(errno));
      return 2;
    }
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, NULL) != 0) {
    perror("receiver: sigaction(SIGTERM)");
    return 1;
  }

  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
    perror("receiver: sigprocmask");
    return 1;
  }
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) {
    perror("receiver: signalfd");
    return 1;
  }

  printf("ready %ld\n", (long)getpid());
  fflush(stdout);

  struct pollfd fds[2];
  fds[0].fd = STDIN_FILENO;
  fds[0].events = POLLIN;
  fds[1].fd = sfd;
  fds[1].events = POLLIN;

  for (;;) {
    fds[0].revents = 0;
    fds[1].revents = 0;
    int n = poll(fds, reading ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("receiver: poll");
      return 1;
    }

    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo infos[64];
      ssize_t got = read(sfd, infos, sizeof infos);
      if (got < 0) {
        if (errno != EINTR && errno != EAGAIN) {
          perror("receiver: read(signalfd)");
          return 1;
        }
      } else {
        size_t count = (size_t)got / sizeof infos[0];
        for (size_t i = 0; i < count; i++) {
          printf("sig %u %d %u %d\n", infos[i].ssi_signo, infos[i].ssi_code,
                 infos[i].ssi_pid, infos[i].ssi_int);
        }
        fflush(stdout);
      }
    }

    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
      char buf[256];
      ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) {
        return 0; /* end of file (or a dead stdin): the test is gone */
      }
      if (got >= 4 && memmem(buf, (size_t)got, "read", 4) != NULL) reading = 1;
      /* anything else written to stdin is ignored */
    }
  }
}
