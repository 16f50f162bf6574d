/*
 * fsops write FILE PID SECONDS   alternately writes "PID\n" and "-PID\n" to FILE, each as
 *                                open(O_WRONLY|O_TRUNC) + write + close, like `echo PID > FILE`
 * fsops read FILE SECONDS        open + read to end of file + close, like `cat FILE`
 *
 * The registry round trips of the benchmark, run from their own process (never from the
 * daemon). Prints `fsops op=OP ops=N elapsed_s=S ops_per_s=R p50_us=X p99_us=Y errors=E`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int writing = argc == 5 && strcmp(argv[1], "write") == 0;
  if (!writing && !(argc == 4 && strcmp(argv[1], "read") == 0)) {
    fprintf(stderr, "usage: fsops write FILE PID SECONDS | fsops read FILE SECONDS\n");
    return 2;
  }
  const char *file = argv[2];
  double secs = atof(argv[writing ? 4 : 3]);
  char add[32], del[32], buf[65536];
  int addlen = snprintf(add, sizeof add, "%s\n", writing ? argv[3] : "");
  int dellen = snprintf(del, sizeof del, "-%s\n", writing ? argv[3] : "");
  size_t cap = 1 << 16, n = 0;
  int64_t *lat = malloc(cap * sizeof *lat);
  long errors = 0;
  int64_t t0 = now_ns(), end = t0 + (int64_t)(secs * 1e9), t;
  while ((t = now_ns()) < end) {
    int ok = 0;
    if (writing) {
      int fd = open(file, O_WRONLY | O_TRUNC);
      const char *text = n % 2 ? del : add;
      int len = n % 2 ? dellen : addlen;
      ok = fd >= 0 && write(fd, text, (size_t)len) == len;
      if (fd >= 0 && close(fd) != 0) ok = 0;
    } else {
      int fd = open(file, O_RDONLY);
      ssize_t got = 1;
      while (fd >= 0 && (got = read(fd, buf, sizeof buf)) > 0) {}
      ok = fd >= 0 && got == 0;
      if (fd >= 0) close(fd);
    }
    if (!ok) {
      if (++errors <= 3) fprintf(stderr, "fsops: %s %s: %s\n", argv[1], file, strerror(errno));
      if (errors > 1000) break;
      continue;
    }
    if (n == cap) {
      cap *= 2;
      lat = realloc(lat, cap * sizeof *lat);
      if (!lat) { perror("fsops: realloc"); return 1; }
    }
    lat[n++] = now_ns() - t;
  }
  double elapsed = (double)(now_ns() - t0) / 1e9;
  qsort(lat, n, sizeof *lat, cmp);
  double p50 = n ? (double)lat[n / 2] / 1e3 : 0, p99 = n ? (double)lat[(size_t)((double)n * 0.99)] / 1e3 : 0;
  printf("fsops op=%s ops=%zu elapsed_s=%.3f ops_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%ld\n", argv[1], n,
         elapsed, (double)n / elapsed, p50, p99, errors);
  return errors ? 1 : 0;
}
