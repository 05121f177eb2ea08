/*
 * alexnet-loader-bench: how many images per second the data loader delivers
 * from a dataset file (or shard glob) with a training configuration's
 * augmentation: read, JPEG decode, crop (fixed or RandomResizedCrop),
 * mirror, normalize. The batches are taken as fast as they come (no
 * training step), so the figure is the loader's own throughput with
 * `--reader-threads` threads. A benchmark prints figures; it asserts nothing.
 *
 *   alexnet-loader-bench DATA [--crop 224] [--batch 64] [--reader-threads 1]
 *                        [--crop-mode fixed|random_resized] [--steps 20] [--warmup 2]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data.h"

static const char usage[] =
    "usage: alexnet-loader-bench DATA [--crop 224] [--batch 64] [--reader-threads 1]\n"
    "                            [--crop-mode fixed|random_resized] [--steps 20] [--warmup 2]\n";

int main(int argc, char **argv) {
  if (argc < 2 || argv[1][0] == '-') {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = argv[1];
  o.ranks = 1, o.global_batch = 64, o.train = 1, o.shuffle = 1, o.seed = 1, o.crop = 224;
  o.mirror = 1, o.reader_threads = 1;
  int steps = 20, warmup = 2;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "alexnet-loader-bench: %s needs a value\n%s", a, usage);
      return 2;
    }
    i++;
    if (strcmp(a, "--crop") == 0)
      o.crop = atoi(v);
    else if (strcmp(a, "--batch") == 0)
      o.global_batch = atoi(v);
    else if (strcmp(a, "--reader-threads") == 0)
      o.reader_threads = atoi(v);
    else if (strcmp(a, "--steps") == 0)
      steps = atoi(v);
    else if (strcmp(a, "--warmup") == 0)
      warmup = atoi(v);
    else if (strcmp(a, "--crop-mode") == 0 && strcmp(v, "fixed") == 0)
      o.crop_mode = DATA_CROP_FIXED;
    else if (strcmp(a, "--crop-mode") == 0 && strcmp(v, "random_resized") == 0)
      o.crop_mode = DATA_CROP_RANDOM_RESIZED;
    else {
      fprintf(stderr, "alexnet-loader-bench: bad option %s %s\n%s", a, v, usage);
      return 2;
    }
  }
  if (steps < 1 || warmup < 0) {
    fprintf(stderr, "alexnet-loader-bench: --steps must be >= 1, --warmup >= 0\n");
    return 2;
  }
  o.prefetch = o.reader_threads > 2 ? o.reader_threads : 2;
  char err[2048];
  data_loader *ld;
  if (data_loader_open(&o, &ld, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-loader-bench: %s\n", err);
    return 1;
  }
  int64_t per_epoch = data_loader_steps(ld), epoch = 0, done = 0;
  if (per_epoch < 1) {
    fprintf(stderr, "alexnet-loader-bench: %s: fewer samples than one batch of %d\n", o.path,
            o.global_batch);
    data_loader_close(ld);
    return 1;
  }
  double t0 = 0;
  int64_t images = 0;
  int rc = data_loader_start_epoch(ld, 0, 0, err, sizeof err);
  while (rc == 0 && done < warmup + steps) {
    data_batch b;
    int got = data_loader_next(ld, &b, err, sizeof err);
    if (got < 0) {
      rc = -1;
      break;
    }
    if (got == 0) {
      rc = data_loader_start_epoch(ld, ++epoch, 0, err, sizeof err);
      continue;
    }
    if (++done == warmup) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      t0 = ts.tv_sec + 1e-9 * ts.tv_nsec;
    }
    if (done > warmup) images += b.count;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double t = ts.tv_sec + 1e-9 * ts.tv_nsec - t0;
  const data_dataset *ds = data_loader_dataset(ld);
  if (rc == 0)
    printf(
        "alexnet-loader-bench: %s (%s, %lld images), crop %d %s, batch %d, %d reader "
        "thread(s): %.1f images/s (%.2f ms per batch)\n",
        o.path, ds->encoding == DATA_ENCODING_JPEG ? "jpeg" : "raw", (long long)ds->n, o.crop,
        o.crop_mode == DATA_CROP_RANDOM_RESIZED ? "random_resized" : "fixed", o.global_batch,
        o.reader_threads, (double)images / t, 1e3 * t / steps);
  else
    fprintf(stderr, "alexnet-loader-bench: %s\n", err);
  data_loader_close(ld);
  return rc == 0 ? 0 : 1;
}
