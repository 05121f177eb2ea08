/*
 * Determinism (issue 6): two runs of the same config and seed give
 * bitwise-identical weights and momentum and the same loss, top-1, top-5 and
 * learning rate on every line of metrics.jsonl, on the same rank count and
 * threads per rank, whatever the prefetch depth, the gradient buckets,
 * overlap on or off, and the MPI transport (shared memory or TCP). Across
 * thread counts (checked here) and rank counts (test_train.c) results agree
 * to rounding only; docs/reliability.md says what is bitwise and what is not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "testutil.h"
#include "trainrun.h"

/* 20 steps: across the first epoch's end (14 steps) and its evaluation, with
 * dropout, mirroring and the cosine schedule's warmup all in play. */
#define SET "--set train.max_steps=20 --set log.every_steps=1"

/* Runs the debug config in a fresh scratch dir `name`; dir receives its path. */
static int run(const char *name, const char *launcher, const char *extra, char *dir, size_t len) {
  char set[4096];
  snprintf(dir, len, "%s", tu_scratch_dir(name));
  snprintf(set, sizeof set, SET " %s", extra);
  return tr_train(launcher, dir, set);
}

/* Same final checkpoint bitwise and the same metrics (timings aside). */
static void expect_identical(const char *a, const char *b) {
  char pa[4300], pb[4300];
  tr_ckpt(a, 20, pa, sizeof pa);
  tr_ckpt(b, 20, pb, sizeof pb);
  CU_ASSERT(tr_ckpt_same(pa, pb));
  tr_metric ma[64], mb[64];
  int na = tr_metrics(a, ma, 64), nb = tr_metrics(b, mb, 64);
  CU_ASSERT(na == nb && na >= 21); /* 20 train lines and the evaluations */
  int vals = 0;
  for (int i = 0; i < na && i < nb; i++) {
    int same = ma[i].step == mb[i].step && ma[i].epoch == mb[i].epoch && ma[i].val == mb[i].val &&
               ma[i].loss == mb[i].loss && ma[i].top1 == mb[i].top1 && ma[i].top5 == mb[i].top5 &&
               ma[i].lr == mb[i].lr;
    if (!same)
      fprintf(stderr,
              "\n  metrics line %d: step %lld loss %.6f top1 %.6f vs step %lld loss %.6f "
              "top1 %.6f\n",
              i + 1, (long long)ma[i].step, ma[i].loss, ma[i].top1, (long long)mb[i].step,
              mb[i].loss, mb[i].top1);
    CU_ASSERT(same);
    vals += ma[i].val;
  }
  CU_ASSERT(vals >= 2); /* after the first epoch and at the end */
}

static void test_one_rank(void) {
  char a[4200], b[4200], c[4200], d[4200], pa[4300], pd[4300];
  CU_ASSERT_FATAL(run("determinism_1a", "", "--set dist.threads_per_rank=2", a, sizeof a) == 0);
  CU_ASSERT_FATAL(run("determinism_1b", "", "--set dist.threads_per_rank=2", b, sizeof b) == 0);
  expect_identical(a, b);
  /* a shallower prefetch: the same numbers */
  CU_ASSERT_FATAL(run("determinism_1c", "", "--set dist.threads_per_rank=2 --set data.prefetch=1",
                      c, sizeof c) == 0);
  expect_identical(a, c);
  /* Another thread count splits the batch's gradient sums differently
   * (nn/conv.c: a private dW per thread, summed at the end): equal to
   * rounding, not bitwise. */
  CU_ASSERT_FATAL(run("determinism_1d", "", "--set dist.threads_per_rank=1", d, sizeof d) == 0);
  tr_ckpt(a, 20, pa, sizeof pa);
  tr_ckpt(d, 20, pd, sizeof pd);
  int bitwise = 0;
  double e = tr_ckpt_diff(pa, pd, &bitwise);
  fprintf(stderr, " [2 vs 1 thread: max rel diff %.3g%s] ", e, bitwise ? ", bitwise" : "");
  CU_ASSERT(e < 1e-4);
}

static void test_two_ranks(void) {
  char a[4200], b[4200], c[4200], d[4200];
  CU_ASSERT_FATAL(run("determinism_2a", TR_MPI2, "", a, sizeof a) == 0);
  CU_ASSERT_FATAL(run("determinism_2b", TR_MPI2, "", b, sizeof b) == 0);
  expect_identical(a, b);
  /* overlap off, over TCP */
  CU_ASSERT_FATAL(run("determinism_2c", TR_MPI2 " --mca btl self,tcp", "--set dist.overlap=false",
                      c, sizeof c) == 0);
  expect_identical(a, c);
  /* many small buckets */
  CU_ASSERT_FATAL(run("determinism_2d", TR_MPI2, "--set dist.bucket_mb=0.05", d, sizeof d) == 0);
  expect_identical(a, d);
}

static void test_four_ranks(void) {
  char a[4200], b[4200];
  const char *mpi4 = "mpiexec -n 4 --oversubscribe";
  CU_ASSERT_FATAL(run("determinism_4a", mpi4, "--set dist.threads_per_rank=1", a, sizeof a) == 0);
  CU_ASSERT_FATAL(run("determinism_4b", mpi4, "--set dist.threads_per_rank=1", b, sizeof b) == 0);
  expect_identical(a, b);
}

/* Training on K shards equals training on the one file they were cut from,
 * bitwise (issue 15): global indices, the same sharding over ranks, the same
 * hold-out split, the same mean/std (combined from the exact pixel sums), with
 * RandomResizedCrop and more reader threads on the shards' side. */
static void test_shards(void) {
  const char *data = tu_scratch_dir("determinism_shards_data");
  char one[4300], glob[4300], err[2048];
  snprintf(one, sizeof one, "%s/train.h5", data);
  CU_ASSERT_FATAL(data_write_synthetic(one, 512, 40, 3, 4, 1, err, sizeof err) == 0);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(one, &ds, err, sizeof err) == 0);
  uint8_t *px = malloc((size_t)40 * 40 * 3);
  for (int k = 0; k < 3; k++) { /* uneven shards: 170, 171, 171 */
    char path[4400];
    data_shard_path(one, k, 3, path, sizeof path);
    data_writer *wr;
    CU_ASSERT_FATAL(data_writer_create(path, 40, 40, 3, 4, (const char *const *)ds.class_names, 0,
                                       &wr, err, sizeof err) == 0);
    for (int64_t i = k * 512 / 3; i < (k + 1) * 512 / 3; i++) {
      CU_ASSERT_FATAL(data_dataset_read(&ds, i, px, err, sizeof err) == 0);
      CU_ASSERT_FATAL(data_writer_append(wr, px, ds.labels[i], err, sizeof err) == 0);
    }
    CU_ASSERT_FATAL(data_writer_finish(wr, err, sizeof err) == 0);
  }
  free(px);
  data_dataset_close(&ds);
  snprintf(glob, sizeof glob, "%s/train-*-of-00003.h5", data);
  char a[4200], b[4200], set[9000];
  snprintf(set, sizeof set,
           "--set data.synthetic.n=0 --set data.train=%s --set data.crop_mode=random_resized", one);
  CU_ASSERT_FATAL(run("determinism_shards_a", TR_MPI2, set, a, sizeof a) == 0);
  snprintf(set, sizeof set,
           "--set data.synthetic.n=0 --set 'data.train=%s' --set data.crop_mode=random_resized "
           "--set data.reader_threads=3",
           glob);
  CU_ASSERT_FATAL(run("determinism_shards_b", TR_MPI2, set, b, sizeof b) == 0);
  expect_identical(a, b);
}

int main(void) {
  tu_add_suite("determinism", (tu_test[]){{"1 rank: prefetch, threads", test_one_rank},
                                          {"2 ranks: overlap, TCP, buckets", test_two_ranks},
                                          {"4 ranks", test_four_ranks},
                                          {"shards = one file", test_shards},
                                          {NULL, NULL}});
  return tu_run_all();
}
