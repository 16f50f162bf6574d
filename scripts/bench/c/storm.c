/*
 * storm -w WORKERS [-r RATE] [-d SECONDS] [-l LOGFILE]
 *
 * The fork-storm generator. WORKERS processes each loop
 *     t = clock_gettime(CLOCK_MONOTONIC); pid = fork(); child: _exit(0); parent: waitpid(pid)
 * for SECONDS (default 1), unpaced, or paced so that all workers together fork RATE
 * times a second (each worker keeps an absolute schedule, offset from the others so
 * the forks interleave; a worker that falls behind skips ahead rather than bursting,
 * so the achieved rate may be lower than asked, and is printed). With -l, every worker buffers `child_pid t_before_fork_ns`
 * in memory and appends it to LOGFILE at the end, after a `# parent PID` line.
 *
 * On stdout, once all workers are done:
 *     storm forks=N elapsed_s=S rate=R workers=W parents=PID,PID,...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct rec { int32_t pid; int64_t t; };
struct shared { volatile int64_t forks; volatile int32_t pid; };

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
  struct timespec ts = { .tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL };
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; perror("storm: write"); _exit(1); }
    p += w; n -= (size_t)w;
  }
}

static void worker(int index, int workers, double rate, int64_t t0, int64_t t_end,
                   const char *logfile, struct shared *sh) {
  size_t cap = logfile ? 1 << 16 : 0, n = 0;
  struct rec *recs = cap ? malloc(cap * sizeof *recs) : NULL;
  int64_t period = rate > 0 ? (int64_t)(1e9 * workers / rate) : 0;
  int64_t next = t0 + (period ? period * index / workers : 0);
  int64_t forks = 0;
  sleep_until(t0);
  for (;;) {
    if (period) {
      sleep_until(next);
      next += period;
    }
    int64_t t = now_ns();
    if (period && next < t - period) next = t; /* fell behind: skip, never burst to catch up */
    if (t >= t_end) break;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0) { if (errno == EAGAIN || errno == ENOMEM) continue; perror("storm: fork"); _exit(1); }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    forks++;
    if (recs) {
      if (n == cap) {
        cap *= 2;
        recs = realloc(recs, cap * sizeof *recs);
        if (!recs) { perror("storm: realloc"); _exit(1); }
      }
      recs[n].pid = pid;
      recs[n].t = t;
      n++;
    }
  }
  sh->forks = forks;
  if (recs) {
    size_t size = 64 + n * 32, len = 0;
    char *text = malloc(size);
    if (!text) { perror("storm: malloc"); _exit(1); }
    len += (size_t)snprintf(text + len, size - len, "# parent %d\n", (int)getpid());
    for (size_t i = 0; i < n; i++)
      len += (size_t)snprintf(text + len, size - len, "%d %lld\n", recs[i].pid, (long long)recs[i].t);
    int fd = open(logfile, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) { perror("storm: open log"); _exit(1); }
    write_all(fd, text, len);
    close(fd);
  }
  _exit(0);
}

int main(int argc, char **argv) {
  int workers = 1;
  double rate = 0, secs = 1;
  const char *logfile = NULL;
  int opt;
  while ((opt = getopt(argc, argv, "w:r:d:l:")) != -1) {
    switch (opt) {
      case 'w': workers = atoi(optarg); break;
      case 'r': rate = atof(optarg); break;
      case 'd': secs = atof(optarg); break;
      case 'l': logfile = optarg; break;
      default:
        fprintf(stderr, "usage: storm -w WORKERS [-r RATE] [-d SECONDS] [-l LOGFILE]\n");
        return 2;
    }
  }
  if (workers < 1 || workers > 256 || secs <= 0 || rate < 0) {
    fprintf(stderr, "storm: bad arguments\n");
    return 2;
  }
  if (logfile) {
    int fd = open(logfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { perror("storm: create log"); return 1; }
    close(fd);
  }
  struct shared *sh = mmap(NULL, sizeof *sh * (size_t)workers, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) { perror("storm: mmap"); return 1; }
  int64_t t0 = now_ns() + 20000000LL; /* everyone starts together, 20 ms from now */
  int64_t t_end = t0 + (int64_t)(secs * 1e9);
  for (int i = 0; i < workers; i++) {
    pid_t pid = fork();
    if (pid < 0) { perror("storm: fork worker"); return 1; }
    if (pid == 0) worker(i, workers, rate, t0, t_end, logfile, &sh[i]);
    sh[i].pid = pid;
  }
  int failed = 0, status;
  for (int i = 0; i < workers; i++) {
    while (waitpid(sh[i].pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
  }
  double elapsed = (double)(now_ns() - t0) / 1e9;
  if (elapsed > secs) elapsed = secs; /* the tail is the last wait, not forking */
  int64_t forks = 0;
  for (int i = 0; i < workers; i++) forks += sh[i].forks;
  printf("storm forks=%lld elapsed_s=%.3f rate=%.0f workers=%d parents=", (long long)forks, elapsed,
         (double)forks / elapsed, workers);
  for (int i = 0; i < workers; i++) printf("%s%d", i ? "," : "", (int)sh[i].pid);
  printf("\n");
  return failed;
}
