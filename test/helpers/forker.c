/*
 * forker N
 *
 * A fork storm for the integration tests: forks N children, each of which
 * exits at once, keeping at most 32 unreaped (so the storm never holds many
 * processes, and does not wait for each child to be scheduled). Prints
 * "done <pid> <N>" once all are reaped, and exits 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  char *end = NULL;
  long n = argc == 2 ? strtol(argv[1], &end, 10) : -1;
  if (argc != 2 || *end != '\0' || n < 0) {
    fprintf(stderr, "usage: forker N\n");
    return 2;
  }
  long outstanding = 0;
  for (long i = 0; i < n || outstanding > 0;) {
    if (i < n && outstanding < 32) {
      pid_t pid = fork();
      if (pid < 0) {
        perror("forker: fork");
        return 1;
      }
      if (pid == 0) _exit(0);
      i++;
      outstanding++;
      continue;
    }
    if (wait(NULL) > 0) {
      outstanding--;
    } else if (errno != EINTR) {
      perror("forker: wait");
      return 1;
    }
  }
  printf("done %d %ld\n", (int)getpid(), n);
  return 0;
}
