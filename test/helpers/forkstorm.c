/*
 * forkstorm [-p PROCS] [-n FORKS | -t SECONDS] [-r RATE] [-v]
 *
 * A fork storm for the reliability tests and the soak script. PROCS worker
 * processes (default 1) each vfork() a child that _exit(0)s at once and reap it,
 * FORKS times each or for SECONDS (default: until SIGTERM or SIGINT). With -r,
 * the storm as a whole is paced to RATE forks per second.
 *
 * On stdout, each line flushed at once:
 *   worker <pid>            one per worker, before its first fork
 *   ready                   every worker has started
 *   forks <forks> <ms>      with -v, once a second: forks so far, milliseconds since start
 *   done <forks> <ms>       total forks made by all workers, elapsed milliseconds
 *
 * It exits 0 after "done"; SIGTERM or SIGINT ends the storm early (still printing
 * "done"). Every child is reaped: nothing outlives the storm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop = 0;
static void on_stop(int sig) { (void)sig; stop = 1; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long parse(const char *what, const char *s) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0) {
    fprintf(stderr, "forkstorm: bad %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  long procs = 1, forks = -1, seconds = -1, rate = 0;
  int verbose = 0;
  int opt;
  while ((opt = getopt(argc, argv, "p:n:t:r:v")) != -1) {
    switch (opt) {
      case 'p': procs = parse("-p", optarg); break;
      case 'n': forks = parse("-n", optarg); break;
      case 't': seconds = parse("-t", optarg); break;
      case 'r': rate = parse("-r", optarg); break;
      case 'v': verbose = 1; break;
      default:
        fprintf(stderr, "usage: forkstorm [-p PROCS] [-n FORKS | -t SECONDS] [-r RATE] [-v]\n");
        return 2;
    }
  }
  if (procs < 1 || procs > 64) {
    fprintf(stderr, "forkstorm: -p must be 1..64\n");
    return 2;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  /* Per-worker fork counts, shared with the workers. */
  long *counts = mmap(NULL, sizeof(long) * 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (counts == MAP_FAILED) {
    perror("forkstorm: mmap");
    return 1;
  }
  memset(counts, 0, sizeof(long) * 64);

  int ready[2];
  if (pipe(ready) != 0) {
    perror("forkstorm: pipe");
    return 1;
  }

  double start = now_s();
  double per_worker_rate = rate > 0 ? (double)rate / (double)procs : 0;
  pid_t workers[64];
  for (long w = 0; w < procs; w++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("forkstorm: fork");
      return 1;
    }
    if (pid == 0) {
      close(ready[0]);
      printf("worker %ld\n", (long)getpid());
      fflush(stdout);
      if (write(ready[1], "x", 1) != 1) _exit(1);
      close(ready[1]);
      double t0 = now_s();
      long n = 0;
      while (!stop && (forks < 0 || n < forks) && (seconds < 0 || now_s() - t0 < (double)seconds)) {
        if (per_worker_rate > 0) {
          double due = t0 + (double)n / per_worker_rate;
          double wait = due - now_s();
          if (wait > 0) {
            struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
            nanosleep(&ts, NULL);
            continue;
          }
        }
        pid_t c = vfork();
        if (c == 0) _exit(0);
        if (c < 0) {
          if (errno == EAGAIN || errno == EINTR) continue;
          perror("forkstorm: vfork");
          _exit(1);
        }
        while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
        }
        n++;
        counts[w] = n;
      }
      _exit(0);
    }
    workers[w] = pid;
  }
  /* Each worker writes one byte once its "worker" line is out. */
  close(ready[1]);
  for (long w = 0; w < procs; w++) {
    char c;
    ssize_t r = read(ready[0], &c, 1);
    if (r < 0 && errno == EINTR) { w--; continue; }
    if (r != 1) break;
  }
  close(ready[0]);
  printf("ready\n");
  fflush(stdout);

  long running = procs;
  double last_report = now_s();
  while (running > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, verbose ? WNOHANG : 0);
    if (pid > 0) {
      running--;
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    if (stop) {
      for (long k = 0; k < procs; k++) kill(workers[k], SIGTERM);
    }
    if (verbose && now_s() - last_report >= 1.0) {
      long sum = 0;
      for (long w = 0; w < procs; w++) sum += counts[w];
      printf("forks %ld %ld\n", sum, (long)((now_s() - start) * 1000));
      fflush(stdout);
      last_report = now_s();
    }
    if (pid == 0) {
      struct timespec ts = { 0, 50 * 1000 * 1000 };
      nanosleep(&ts, NULL);
    }
  }
  long total = 0;
  for (long w = 0; w < procs; w++) total += counts[w];
  printf("done %ld %ld\n", total, (long)((now_s() - start) * 1000));
  fflush(stdout);
  return 0;
}
