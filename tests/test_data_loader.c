/*
 * The sharded prefetching loader: global-batch sharding (every index at most
 * once and floor(N/B)*B in all when training, exactly once in evaluation, for
 * p = 1..4), identical global batches for p = 1 and p = 2, augmentation that
 * depends only on (seed, epoch, sample) (not on prefetch depth), the exact
 * crop/mirror/lighting/normalization arithmetic, center crop and TenCrop in
 * torchvision's order, gray data, subsets, resuming mid-epoch, closing at any
 * point, read errors mid-epoch, and every refused option with its message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "internal.h" /* the loader's RNG, to recompute its draws */
#include "testutil.h"

#define N 50
#define H 12
#define W 10

static uint8_t pixel(int64_t i, int y, int x, int c) {
  return (uint8_t)((i * 41 + y * 13 + x * 7 + c * 85) & 0xFF);
}

/* n images of h x w x c, label i % 5. */
static void make_set(const char *path, int64_t n, int h, int w, int c) {
  char err[1024];
  const char *names[5] = {"a", "b", "c", "d", "e"};
  data_writer *wr;
  CU_ASSERT_FATAL(data_writer_create(path, h, w, c, 5, names, 0, &wr, err, sizeof err) == 0);
  uint8_t *img = malloc((size_t)h * w * c);
  for (int64_t i = 0; i < n; i++) {
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int k = 0; k < c; k++) img[((size_t)y * w + x) * c + k] = pixel(i, y, x, k);
    CU_ASSERT_FATAL(data_writer_append(wr, img, (int32_t)(i % 5), err, sizeof err) == 0);
  }
  free(img);
  CU_ASSERT_FATAL(data_writer_finish(wr, err, sizeof err) == 0);
}

static const char *set_path(void) {
  static char path[4200];
  if (!path[0]) {
    snprintf(path, sizeof path, "%s/set.h5", tu_scratch_dir("loader_set"));
    make_set(path, N, H, W, 3);
  }
  return path;
}

static data_loader_opts base_opts(int rank, int ranks, int batch, int train) {
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = set_path();
  o.rank = rank;
  o.ranks = ranks;
  o.global_batch = batch;
  o.train = train;
  o.shuffle = 1;
  o.seed = 11;
  o.crop = 7;
  o.mirror = 1;
  o.lighting = 0.1f;
  for (int c = 0; c < 3; c++) o.mean[c] = 0.5f, o.std[c] = 0.25f;
  return o;
}

static data_loader *open_ok(const data_loader_opts *o) {
  data_loader *ld = NULL;
  char err[2048];
  int rc = data_loader_open(o, &ld, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  return ld;
}

static void start_ok(data_loader *ld, int64_t epoch, int64_t first) {
  char err[2048];
  CU_ASSERT_FATAL(data_loader_start_epoch(ld, epoch, first, err, sizeof err) == 0);
}

static int next_ok(data_loader *ld, data_batch *b) {
  char err[2048];
  int rc = data_loader_next(ld, b, err, sizeof err);
  if (rc < 0) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_FATAL(rc >= 0);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Sharding                                                                  */

static void check_sharding(int p, int B, int train, int64_t epoch) {
  data_loader *ld[4];
  for (int r = 0; r < p; r++) {
    data_loader_opts o = base_opts(r, p, B, train);
    ld[r] = open_ok(&o);
    start_ok(ld[r], epoch, 0);
  }
  int64_t steps = train ? N / B : (N + B - 1) / B;
  CU_ASSERT(data_loader_steps(ld[0]) == steps && data_loader_size(ld[0]) == N);
  int64_t perm[N];
  data_epoch_permutation(N, 11, epoch, train, perm);
  int seen[N] = {0};
  int64_t total = 0;
  for (int64_t k = 0; k < steps; k++) {
    int64_t pos = k * B; /* the union of the ranks' slices, in rank order, is perm[kB, kB + s) */
    for (int r = 0; r < p; r++) {
      data_batch b;
      CU_ASSERT_FATAL(next_ok(ld[r], &b) == 1);
      CU_ASSERT(b.step == k && b.views == 1);
      int64_t s = N - k * B < B ? N - k * B : B;
      CU_ASSERT(b.count == (int)((r + 1) * s / p - r * s / p));
      for (int i = 0; i < b.count; i++) {
        CU_ASSERT(b.indices[i] == perm[pos]);
        CU_ASSERT(b.labels[i] == b.indices[i] % 5);
        seen[b.indices[i]]++;
        pos++, total++;
      }
    }
  }
  for (int r = 0; r < p; r++) {
    data_batch b;
    CU_ASSERT(next_ok(ld[r], &b) == 0);
    CU_ASSERT(next_ok(ld[r], &b) == 0); /* stays at the end */
    data_loader_close(ld[r]);
  }
  int ok = 1;
  for (int i = 0; i < N; i++) ok &= train ? seen[i] <= 1 : seen[i] == 1;
  CU_ASSERT(ok);
  CU_ASSERT(total == (train ? (int64_t)(N / B) * B : N));
}

static void test_sharding(void) {
  for (int p = 1; p <= 4; p++) {
    int bs[3] = {12, 4 * p, 24}; /* 12 and 24 divide by 1..4 */
    for (int k = 0; k < 3; k++) {
      check_sharding(p, bs[k], 1, 0);
      check_sharding(p, bs[k], 1, 5);
      check_sharding(p, bs[k], 0, 0);
    }
  }
  /* the last eval batch of 2 over 3 ranks: rank 0 gets none */
  check_sharding(3, 6, 0, 0);
  /* the permutation differs between epochs, is the identity without shuffle */
  int64_t a[N], b[N];
  data_epoch_permutation(N, 11, 1, 1, a);
  data_epoch_permutation(N, 11, 2, 1, b);
  CU_ASSERT(memcmp(a, b, sizeof a) != 0);
  data_epoch_permutation(N, 11, 2, 0, b);
  for (int i = 0; i < N; i++) CU_ASSERT(b[i] == i);
}

/* ------------------------------------------------------------------------ */
/* Global batches and determinism                                            */

/* All batches of one epoch, concatenated over the ranks: images (floats),
 * indices; returns the number of samples. */
static int64_t epoch_images(int p, int B, int prefetch, uint64_t seed, int64_t epoch, int train,
                            float **images, int64_t **indices) {
  data_loader *ld[4];
  size_t per = 0;
  for (int r = 0; r < p; r++) {
    data_loader_opts o = base_opts(r, p, B, train);
    o.prefetch = prefetch;
    o.seed = seed;
    ld[r] = open_ok(&o);
    start_ok(ld[r], epoch, 0);
  }
  per = (size_t)3 * 7 * 7;
  *images = malloc(N * per * sizeof(float));
  *indices = malloc(N * sizeof(int64_t));
  int64_t n = 0;
  for (;;) {
    int more = 0;
    for (int r = 0; r < p; r++) {
      data_batch b;
      if (next_ok(ld[r], &b) != 1) continue;
      more = 1;
      memcpy(*images + (size_t)n * per, b.images, (size_t)b.count * per * sizeof(float));
      memcpy(*indices + n, b.indices, (size_t)b.count * sizeof(int64_t));
      n += b.count;
    }
    if (!more) break;
  }
  for (int r = 0; r < p; r++) data_loader_close(ld[r]);
  return n;
}

static void test_global_batches_p1_p2(void) {
  for (int train = 0; train < 2; train++) {
    float *a, *b;
    int64_t *ia, *ib;
    int64_t na = epoch_images(1, 8, 2, 3, 4, train, &a, &ia);
    int64_t nb = epoch_images(2, 8, 3, 3, 4, train, &b, &ib);
    CU_ASSERT(na == (train ? 48 : 50) && na == nb);
    CU_ASSERT(memcmp(ia, ib, (size_t)na * sizeof(int64_t)) == 0);
    CU_ASSERT(memcmp(a, b, (size_t)na * 3 * 7 * 7 * sizeof(float)) == 0); /* bitwise */
    free(a), free(b), free(ia), free(ib);
  }
}

static void test_determinism(void) {
  float *a, *b, *c, *d;
  int64_t *ia, *ib, *ic, *id;
  int64_t n = epoch_images(1, 4, 1, 9, 2, 1, &a, &ia);
  epoch_images(1, 4, 6, 9, 2, 1, &b, &ib);  /* another prefetch depth */
  epoch_images(1, 4, 2, 10, 2, 1, &c, &ic); /* another seed */
  epoch_images(1, 4, 2, 9, 3, 1, &d, &id);  /* another epoch */
  size_t bytes = (size_t)n * 3 * 7 * 7 * sizeof(float);
  CU_ASSERT(memcmp(a, b, bytes) == 0 && memcmp(ia, ib, (size_t)n * sizeof(int64_t)) == 0);
  CU_ASSERT(memcmp(ia, ic, (size_t)n * sizeof(int64_t)) != 0);
  CU_ASSERT(memcmp(ia, id, (size_t)n * sizeof(int64_t)) != 0);
  free(a), free(b), free(c), free(d), free(ia), free(ib), free(ic), free(id);
}

/* ------------------------------------------------------------------------ */
/* The arithmetic of each view                                               */

static const double eigval[3] = {0.2175, 0.0188, 0.0045};
static const double eigvec[3][3] = {
    {-0.5675, 0.7192, 0.4009}, {-0.5808, -0.0045, -0.8140}, {-0.5836, -0.6948, 0.4203}};

/* The expected view of sample i: window (x0, y0), flip, added light. */
static double expect_px(int64_t i, int x0, int y0, int flip, const double add[3], int c, int y,
                        int x, int K, const float *mean, const float *sd) {
  int sx = flip ? K - 1 - x : x;
  return (pixel(i, y0 + y, x0 + sx, c) / 255.0 + add[c] - mean[c]) / sd[c];
}

static void test_train_augmentation_exact(void) {
  data_loader_opts o = base_opts(0, 1, 10, 1);
  o.lighting = 0.5f;
  o.seed = 77;
  float mean[3] = {0.4f, 0.5f, 0.6f}, sd[3] = {0.2f, 0.3f, 0.25f};
  memcpy(o.mean, mean, sizeof mean);
  memcpy(o.std, sd, sizeof sd);
  data_loader *ld = open_ok(&o);
  start_ok(ld, 3, 0);
  data_batch b;
  int flips = 0, checked = 0;
  double worst = 0;
  while (next_ok(ld, &b) == 1) {
    for (int s = 0; s < b.count; s++) {
      int64_t i = b.indices[s];
      data_rng r = data_rng_key(77, DATA_STREAM_AUG, 3, (uint64_t)i);
      int x0 = (int)data_rng_below(&r, W - 7 + 1);
      int y0 = (int)data_rng_below(&r, H - 7 + 1);
      int flip = (int)(data_rng_next(&r) >> 63);
      double alpha[3], add[3] = {0, 0, 0};
      for (int j = 0; j < 3; j++) alpha[j] = data_rng_normal(&r) * 0.5;
      for (int c = 0; c < 3; c++)
        for (int j = 0; j < 3; j++) add[c] += eigvec[c][j] * alpha[j] * eigval[j];
      flips += flip;
      for (int c = 0; c < 3; c++)
        for (int y = 0; y < 7; y++)
          for (int x = 0; x < 7; x++) {
            double want = expect_px(i, x0, y0, flip, add, c, y, x, 7, mean, sd);
            double got = b.images[(((size_t)s * 3 + c) * 7 + y) * 7 + x];
            worst = fabs(got - want) > worst ? fabs(got - want) : worst;
          }
      checked++;
    }
  }
  CU_ASSERT(checked == N);
  CU_ASSERT(worst < 1e-4);
  CU_ASSERT(flips > 10 && flips < 40); /* about half mirrored */
  data_loader_close(ld);
}

/* torchvision's TenCrop, literally: five_crop(img) + five_crop(hflip(img)). */
static void test_eval_views(void) {
  for (int ten = 0; ten < 2; ten++) {
    data_loader_opts o = base_opts(0, 1, 16, 0);
    o.ten_crop = ten;
    o.shuffle = 1; /* no effect in evaluation */
    data_loader *ld = open_ok(&o);
    start_ok(ld, 0, 0);
    float mean[3] = {0.5f, 0.5f, 0.5f}, sd[3] = {0.25f, 0.25f, 0.25f};
    double zero[3] = {0, 0, 0}, worst = 0;
    int64_t seen = 0;
    data_batch b;
    /* five_crop's windows: tl, tr, bl, br, center (round half to even: 2.5 -> 2, 1.5 -> 2) */
    int xs[5] = {0, W - 7, 0, W - 7, 2}, ys[5] = {0, 0, H - 7, H - 7, 2};
    while (next_ok(ld, &b) == 1) {
      CU_ASSERT(b.views == (ten ? 10 : 1));
      for (int s = 0; s < b.count; s++, seen++) {
        CU_ASSERT(b.indices[s] == seen); /* evaluation keeps file order */
        for (int v = 0; v < b.views; v++) {
          int k = ten ? v % 5 : 4, flipped = v >= 5;
          /* a window at x of the mirrored image: pixel x' of it is original W-1-(x+x') */
          for (int c = 0; c < 3; c++)
            for (int y = 0; y < 7; y++)
              for (int x = 0; x < 7; x++) {
                double want =
                    flipped
                        ? (pixel(b.indices[s], ys[k] + y, W - 1 - (xs[k] + x), c) / 255.0 - 0.5) /
                              0.25
                        : expect_px(b.indices[s], xs[k], ys[k], 0, zero, c, y, x, 7, mean, sd);
                double got = b.images[((((size_t)s * b.views + v) * 3 + c) * 7 + y) * 7 + x];
                worst = fabs(got - want) > worst ? fabs(got - want) : worst;
              }
        }
      }
    }
    CU_ASSERT(seen == N);
    CU_ASSERT(worst < 1e-5);
    data_loader_close(ld);
  }
}

/* Gray data: fed as 1 channel or replicated to 3; the file's mean/std by default. */
static void test_gray_and_file_stats(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s/gray.h5", tu_scratch_dir("loader_gray"));
  make_set(path, 9, 8, 8, 1);
  data_dataset ds;
  char err[2048];
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  float m = ds.mean[0], s = ds.std[0];
  data_dataset_close(&ds);
  for (int outc = 0; outc <= 3; outc += 3) {
    data_loader_opts o = base_opts(0, 1, 3, 1);
    o.path = path;
    o.crop = 8;
    o.mirror = 0;
    o.lighting = 0.5f; /* only for 3-channel output: adds a colour cast to replicated gray */
    o.out_channels = outc;
    o.std[0] = 0; /* the file's statistics */
    data_loader *ld = open_ok(&o);
    start_ok(ld, 0, 0);
    data_batch b;
    CU_ASSERT_FATAL(next_ok(ld, &b) == 1);
    int planes = outc ? 3 : 1;
    double worst = 0;
    for (int c = 0; c < planes; c++)
      for (int p = 0; p < 64; p++) {
        double want = (pixel(b.indices[0], p / 8, p % 8, 0) / 255.0 - m) / s;
        double got = b.images[c * 64 + p];
        if (outc) { /* lighting shifts each channel uniformly */
          double shift = b.images[c * 64] - ((pixel(b.indices[0], 0, 0, 0) / 255.0 - m) / s);
          want += shift;
        }
        worst = fabs(got - want) > worst ? fabs(got - want) : worst;
      }
    CU_ASSERT(worst < 1e-4);
    data_loader_close(ld);
  }
}

/* ------------------------------------------------------------------------ */
/* Subsets, resuming, closing                                                */

static void test_subset(void) {
  int64_t idx[20];
  for (int i = 0; i < 20; i++) idx[i] = 2 * i + 1;
  for (int train = 0; train < 2; train++) {
    data_loader_opts o = base_opts(0, 1, 6, train);
    o.indices = idx;
    o.num_indices = 20;
    data_loader *ld = open_ok(&o);
    CU_ASSERT(data_loader_size(ld) == 20 && data_loader_steps(ld) == (train ? 3 : 4));
    start_ok(ld, 1, 0);
    int seen[N] = {0};
    data_batch b;
    int64_t total = 0;
    while (next_ok(ld, &b) == 1)
      for (int i = 0; i < b.count; i++) seen[b.indices[i]]++, total++;
    int ok = 1;
    for (int i = 0; i < N; i++) {
      int in_subset = i % 2 == 1 && i < 40;
      ok &= train ? seen[i] <= in_subset : seen[i] == in_subset;
    }
    CU_ASSERT(ok);
    CU_ASSERT(total == (train ? 18 : 20));
    data_loader_close(ld);
  }
}

static void test_resume_mid_epoch(void) {
  data_loader_opts o = base_opts(0, 1, 8, 1);
  data_loader *full = open_ok(&o), *resumed = open_ok(&o);
  start_ok(full, 2, 0);
  start_ok(resumed, 2, 4); /* restarted at once: the first batches are dropped */
  start_ok(resumed, 2, 3);
  data_batch a, b;
  size_t bytes = 8 * 3 * 7 * 7 * sizeof(float);
  for (int k = 0; k < 6; k++) {
    CU_ASSERT_FATAL(next_ok(full, &a) == 1);
    if (k < 3) continue;
    CU_ASSERT_FATAL(next_ok(resumed, &b) == 1);
    CU_ASSERT(a.step == k && b.step == k);
    CU_ASSERT(memcmp(a.indices, b.indices, 8 * sizeof(int64_t)) == 0);
    CU_ASSERT(memcmp(a.images, b.images, bytes) == 0);
  }
  CU_ASSERT(next_ok(full, &a) == 0 && next_ok(resumed, &b) == 0);
  start_ok(resumed, 2, 6); /* at the end: nothing left */
  CU_ASSERT(next_ok(resumed, &b) == 0);
  data_loader_close(full);
  data_loader_close(resumed);
}

/* Closing joins the reader thread wherever it is. */
static void test_close_anytime(void) {
  data_loader_opts o = base_opts(0, 1, 2, 1);
  o.prefetch = 4;
  data_loader *ld = open_ok(&o);
  data_loader_close(ld); /* never started */
  ld = open_ok(&o);
  start_ok(ld, 0, 0);
  data_loader_close(ld); /* producing */
  ld = open_ok(&o);
  start_ok(ld, 0, 0);
  data_batch b;
  CU_ASSERT(next_ok(ld, &b) == 1);
  CU_ASSERT(next_ok(ld, &b) == 1);
  data_loader_close(ld); /* mid-epoch, holding a batch */
  data_loader_close(NULL);
}

/* Once warm, a batch is ready before it is asked for: with a 50 ms "step"
 * between calls the median wait is near zero (the median tolerates a
 * scheduling hiccup on a loaded machine). */
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void test_prefetch_hides_reads(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s/big.h5", tu_scratch_dir("loader_prefetch"));
  make_set(path, 64, 96, 96, 3);
  data_loader_opts o = base_opts(0, 1, 8, 1);
  o.path = path;
  o.crop = 90;
  o.prefetch = 2;
  data_loader *ld = open_ok(&o);
  start_ok(ld, 0, 0);
  data_batch b;
  double waits[7];
  for (int k = 0; k < 7; k++) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CU_ASSERT_FATAL(next_ok(ld, &b) == 1);
    waits[k] = b.wait_ms;
  }
  qsort(waits, 7, sizeof(double), cmp_double);
  if (waits[3] >= 5.0) fprintf(stderr, "\n  median wait %.2f ms\n", waits[3]);
  CU_ASSERT(waits[3] < 5.0);
  data_loader_close(ld);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

static void expect_open_error(const data_loader_opts *o, const char *want) {
  data_loader *ld = NULL;
  char err[2048] = "";
  CU_ASSERT(data_loader_open(o, &ld, err, sizeof err) == -1);
  CU_ASSERT(ld == NULL);
  TU_ASSERT_CONTAINS(err, want);
}

static void test_refused_options(void) {
  data_loader_opts o;
  o = base_opts(0, 3, 10, 1);
  expect_open_error(&o, "set.h5: global batch 10 is not divisible by 3 ranks");
  o = base_opts(0, 1, 0, 1);
  expect_open_error(&o, "global batch 0 must be >= 1");
  o = base_opts(2, 2, 10, 1);
  expect_open_error(&o, "rank 2 is not in [0, 2)");
  o = base_opts(0, 1, 10, 1), o.crop = 11;
  expect_open_error(&o, "set.h5: /images are 12x10, smaller than the crop 11x11");
  o = base_opts(0, 1, 10, 1), o.crop = 0;
  expect_open_error(&o, "crop 0 must be >= 1");
  o = base_opts(0, 1, 10, 1), o.out_channels = 1;
  expect_open_error(&o, "out_channels 1 with 3-channel images");
  o = base_opts(0, 1, 10, 1), o.std[1] = -1;
  expect_open_error(&o, "normalization std[1] = -1, mean[1] = 0.5: std must be > 0");
  o = base_opts(0, 1, 10, 1), o.lighting = -0.1f;
  expect_open_error(&o, "lighting -0.1 must be >= 0");
  o = base_opts(0, 1, 10, 1), o.prefetch = 100;
  expect_open_error(&o, "prefetch 100 is not in 0..64");
  int64_t idx[2] = {3, 50};
  o = base_opts(0, 1, 10, 1), o.indices = idx, o.num_indices = 2;
  expect_open_error(&o, "indices[1] = 50 is out of range [0, 50)");
  o = base_opts(0, 1, 10, 1), o.indices = idx, o.num_indices = 0;
  expect_open_error(&o, "empty subset of indices (zero samples)");
  o = base_opts(0, 1, 10, 1), o.path = "/nonexistent/set.h5";
  expect_open_error(&o, "/nonexistent/set.h5: cannot open: No such file or directory");
  o = base_opts(0, 1, 10, 1), o.path = NULL;
  expect_open_error(&o, "data loader: no dataset path");

  o = base_opts(0, 1, 10, 1);
  data_loader *ld = open_ok(&o);
  data_batch b;
  char err[2048];
  CU_ASSERT(data_loader_next(ld, &b, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "data_loader_next before data_loader_start_epoch");
  CU_ASSERT(data_loader_start_epoch(ld, 0, 6, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "first step 6 is not in [0, 5]");
  CU_ASSERT(data_loader_start_epoch(ld, -1, 0, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "epoch -1 < 0");
  data_loader_close(ld);
}

/* The file truncated under a running loader: next() fails naming the file and
 * the sample, keeps failing, and close still joins the thread. */
static void test_read_error_mid_epoch(void) {
  for (int before = 0; before < 2; before++) {
    char path[4200], err[2048];
    snprintf(path, sizeof path, "%s/big.h5", tu_scratch_dir("loader_truncated"));
    make_set(path, 64, 64, 64, 3); /* one image per chunk, 12 KiB each */
    data_loader_opts o = base_opts(0, 1, 4, 1);
    o.path = path;
    o.crop = 60;
    o.prefetch = 1;
    data_loader *ld = open_ok(&o);
    const data_dataset *ds = data_loader_dataset(ld);
    if (before) CU_ASSERT_FATAL(truncate(path, ds->file_size / 4) == 0);
    start_ok(ld, 0, 0);
    data_batch b;
    int rc = 0, batches = 0;
    if (!before) {
      CU_ASSERT_FATAL(data_loader_next(ld, &b, err, sizeof err) == 1);
      CU_ASSERT_FATAL(truncate(path, ds->file_size / 4) == 0);
    }
    while ((rc = data_loader_next(ld, &b, err, sizeof err)) == 1) batches++;
    CU_ASSERT(rc == -1);
    CU_ASSERT(batches < 15);
    TU_ASSERT_CONTAINS(err, path);
    TU_ASSERT_CONTAINS(err, "sample");
    CU_ASSERT(data_loader_next(ld, &b, err, sizeof err) == -1);
    TU_ASSERT_CONTAINS(err, "sample");
    data_loader_close(ld);
  }
}

int main(void) {
  tu_add_suite("data_loader",
               (tu_test[]){{"sharding p = 1..4", test_sharding},
                           {"global batches p = 1 and 2", test_global_batches_p1_p2},
                           {"determinism", test_determinism},
                           {"train augmentation exact", test_train_augmentation_exact},
                           {"center crop and ten crop", test_eval_views},
                           {"gray and file statistics", test_gray_and_file_stats},
                           {"subset", test_subset},
                           {"resume mid-epoch", test_resume_mid_epoch},
                           {"close anytime", test_close_anytime},
                           {"prefetch hides reads", test_prefetch_hides_reads},
                           {"refused options", test_refused_options},
                           {"read error mid-epoch", test_read_error_mid_epoch},
                           {NULL, NULL}});
  return tu_run_all();
}
