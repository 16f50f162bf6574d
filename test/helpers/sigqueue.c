/*
 * sigqueue PID SIGNO VALUE
 *
 * Queues one signal with sigqueue(3) (si_code SI_QUEUE), as any program may,
 * and says whether the kernel took it: "ok", or "error <errno> <message>" and
 * exit status 1. An RT signal is refused with EAGAIN when the receiver's user
 * has RLIMIT_SIGPENDING signals queued already.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: sigqueue PID SIGNO VALUE\n");
    return 2;
  }
  union sigval v;
  v.sival_int = atoi(argv[3]);
  if (sigqueue((pid_t)atoi(argv[1]), atoi(argv[2]), v) != 0) {
    printf("error %d %s\n", errno, strerror(errno));
    return 1;
  }
  printf("ok\n");
  return 0;
}
