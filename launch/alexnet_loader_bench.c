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
#include "tool.h"
#include "util.h"

static const char usage[] =
    "usage: alexnet-loader-bench DATA [--crop 224] [--batch 64] [--reader-threads 1]\n"
    "                            [--crop-mode fixed|random_resized] [--steps 20] [--warmup 2]\n"
    "DATA: a dataset file, a glob of shards (quoted) or several paths one per line.\n";

int main(int argc, char **argv) {
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.ranks = 1, o.train = 1, o.shuffle = 1, o.seed = 1, o.mirror = 1;
  int crop = 224, batch = 64, threads = 1, steps = 20, warmup = 2;
  const char *mode = "fixed";
  tool_list args = {0};
  const tool_opt options[] = {TOOL_OPT_INT("--crop", &crop, 1, 8192),
                              TOOL_OPT_INT("--batch", &batch, 1, 1 << 20),
                              TOOL_OPT_INT("--reader-threads", &threads, 1, 256),
                              TOOL_OPT_STRING("--crop-mode", &mode),
                              TOOL_OPT_INT("--steps", &steps, 1, 1 << 20),
                              TOOL_OPT_INT("--warmup", &warmup, 0, 1 << 20),
                              TOOL_OPT_END};
  const tool_spec spec = {"alexnet-loader-bench", usage, options, &args};
  tool_parse(&spec, argc, argv);
  if (args.count != 1) tool_usage(&spec, "%s", args.count ? "one DATA only" : "missing DATA");
  if (strcmp(mode, "fixed") != 0 && strcmp(mode, "random_resized") != 0)
    tool_usage(&spec, "--crop-mode %s: expected fixed or random_resized", mode);
  o.path = args.items[0];
  o.crop = crop, o.global_batch = batch, o.reader_threads = threads;
  o.crop_mode = strcmp(mode, "random_resized") == 0 ? DATA_CROP_RANDOM_RESIZED : DATA_CROP_FIXED;
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
    if (++done == warmup) t0 = util_now();
    if (done > warmup) images += b.count;
  }
  double t = util_now() - t0;
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
  tool_list_free(&args);
  return rc == 0 ? 0 : 1;
}
