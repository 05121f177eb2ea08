/*
 * mpi_dist_reducer: the bucketed, overlapped gradient average under mpiexec
 * (every rank runs the same suites). The reference is a plain MPI_Allreduce
 * of the whole buffer (dist_allreduce_average_plain). Each rank reports its
 * gradients in its own irregular pieces, as a backward of another shape would.
 *
 * With "--fault <mode>" it instead plays one misuse or failure for
 * tests/dist.cmake, which checks the message, exit status and time to die:
 *   watchdog     the last rank sleeps instead of reducing; timeout 1.5 s
 *   bad-bucket   bucket_mb = -1
 *   bad-compress a compression that does not exist
 *   no-buffer    a reducer over 10 floats at NULL
 *   outside      a ready range past the end of the buffer
 *   twice        the same range reported twice in one pass
 *   no-begin     dist_reducer_ready before dist_reducer_begin
 *   begin-twice  dist_reducer_begin twice
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"
#include "testutil.h"

/* Small buckets (0.01 MiB = 2624 floats after alignment) so that test
 * buffers of a few thousand floats span several, none of them full-sized. */
#define SMALL_MB 0.01
#define SMALL_BUCKET 2624

/* The algorithm every test's reducer uses: each suite runs once per
 * algorithm (main), so the ring is tested on one node too. */
static dist_algorithm algo = DIST_ALGO_MPI;

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) {
  return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

typedef enum { VALUES_EXACT, VALUES_RANDOM, VALUES_POSITIVE, VALUES_TINY } values_kind;

/* This rank's gradients: EXACT are multiples of 1/8 below 2^10, whose sums
 * are exact in any order; RANDOM are signed with magnitudes over 2^-20..2^20;
 * POSITIVE are in [0.5, 1.5) times 2^(i%61 - 30); TINY are about 1e-6 times
 * 2^(i%24 - 12), far below what fp16 holds unscaled. */
static void fill(float *g, size_t n, values_kind kind, uint64_t seed) {
  uint64_t s = seed * 1000003u + (uint64_t)dist_rank() * 7919u + 1;
  for (size_t i = 0; i < n; i++) {
    double u = rng_unit(&s);
    switch (kind) {
      case VALUES_EXACT:
        g[i] = (float)((int)(u * 16384) - 8192) * 0.125f;
        break;
      case VALUES_RANDOM:
        g[i] = (float)((u - 0.5) * ldexp(1.0, (int)(rng_next(&s) % 41) - 20));
        break;
      case VALUES_POSITIVE:
        g[i] = (float)ldexp(0.5 + u, (int)(i % 61) - 30);
        break;
      case VALUES_TINY:
        g[i] = (float)(1e-6 * ldexp(0.5 + u, (int)(i % 24) - 12));
        break;
    }
  }
}

/* Reports [0, n) to the reducer from the end backwards in irregular pieces
 * (1 to maxpiece floats, a rank-dependent pattern), as nn_backward would. */
static void report_backwards(dist_reducer *r, size_t n, size_t maxpiece, uint64_t seed) {
  uint64_t s = seed + 31u * (uint64_t)dist_rank();
  size_t end = n;
  while (end > 0) {
    size_t piece = 1 + (size_t)(rng_next(&s) % maxpiece);
    if (piece > end) piece = end;
    dist_reducer_ready(r, end - piece, piece);
    end -= piece;
  }
}

/* One pass: begin, report, finish. */
static void reduce(dist_reducer *r, size_t n, size_t maxpiece, uint64_t seed) {
  dist_reducer_begin(r);
  report_backwards(r, n, maxpiece, seed);
  double ms = dist_reducer_finish(r);
  CU_ASSERT(ms >= 0);
}

static float *alloc_floats(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

/* Fills g with this rank's values and want with their plain average. */
static void fill_with_plain_average(float *g, float *want, size_t n, values_kind kind,
                                    uint64_t seed) {
  fill(g, n, kind, seed);
  memcpy(want, g, n * sizeof *g);
  dist_allreduce_average_plain(want, n);
}

static int bitwise_equal(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof *a) == 0;
}

/* Buffer sizes: one float, less than a bucket, exactly buckets, and
 * not a multiple of the bucket. */
static const size_t sizes[] = {1, 1000, 3 * SMALL_BUCKET, 5 * SMALL_BUCKET + 77, 40000};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void test_none_equals_plain_exact(void) {
  for (size_t k = 0; k < NSIZES; k++) {
    size_t n = sizes[k];
    float *g = alloc_floats(n), *want = alloc_floats(n);
    for (int overlap = 0; overlap <= 1; overlap++) {
      fill_with_plain_average(g, want, n, VALUES_EXACT, k);
      dist_reducer_opts o = {.algorithm = algo, .bucket_mb = SMALL_MB, .overlap = overlap};
      dist_reducer *r = dist_reducer_create(g, n, &o);
      reduce(r, n, 700, k);
      dist_reducer_free(r);
      /* Exact sums: equal bitwise whatever the reduction order. */
      if (!bitwise_equal(g, want, n))
        fprintf(stderr, "\n  [rank %d] n=%zu overlap=%d differs from the plain average\n",
                dist_rank(), n, overlap);
      CU_ASSERT(bitwise_equal(g, want, n));
    }
    free(g);
    free(want);
  }
}

static void test_none_equals_plain_random(void) {
  size_t n = 5 * SMALL_BUCKET + 77;
  float *g = alloc_floats(n), *want = alloc_floats(n);
  fill_with_plain_average(g, want, n, VALUES_RANDOM, 3);
  dist_reducer_opts o = {.algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1};
  dist_reducer *r = dist_reducer_create(g, n, &o);
  reduce(r, n, 3000, 3);
  dist_reducer_free(r);
  if (dist_size() == 2) {
    CU_ASSERT(bitwise_equal(g, want, n)); /* a + b == b + a */
  } else {
    /* More ranks may add in another order for another message size: both
     * are within a few float roundings of the sum of the magnitudes. */
    double *mag = malloc(n * sizeof *mag);
    if (!mag) exit(2);
    float *mine = alloc_floats(n);
    fill(mine, n, VALUES_RANDOM, 3);
    for (size_t i = 0; i < n; i++) mag[i] = fabs((double)mine[i]);
    dist_allreduce_sum_doubles(mag, (int)n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= fabs((double)g[i] - (double)want[i]) <= ldexp(mag[i], -22);
    CU_ASSERT(ok);
    free(mine);
    free(mag);
  }
  free(g);
  free(want);
}

/* Overlap on and off, and a second pass of the same reducer, agree bitwise
 * for every compression; pieces arrive in different patterns each time. */
static void test_overlap_on_equals_off(void) {
  static const dist_compress modes[] = {DIST_COMPRESS_NONE, DIST_COMPRESS_BF16, DIST_COMPRESS_FP16};
  size_t n = 7 * SMALL_BUCKET + 1234;
  float *a = alloc_floats(n), *b = alloc_floats(n);
  for (int m = 0; m < 3; m++) {
    dist_reducer_opts off = {
        .algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 0, .compress = modes[m]};
    dist_reducer_opts on = {
        .algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1, .compress = modes[m]};
    dist_reducer *roff = dist_reducer_create(a, n, &off);
    dist_reducer *ron = dist_reducer_create(b, n, &on);
    for (int pass = 0; pass < 3; pass++) {
      fill(a, n, VALUES_RANDOM, 10 + m);
      fill(b, n, VALUES_RANDOM, 10 + m);
      if (pass == 2) { /* overlap off: nothing reported at all */
        dist_reducer_begin(roff);
        dist_reducer_finish(roff);
      } else {
        reduce(roff, n, 100 + 900 * pass, pass);
      }
      reduce(ron, n, 5000 - 1000 * pass, 99 + pass);
      if (!bitwise_equal(a, b, n))
        fprintf(stderr, "\n  [rank %d] compress %d pass %d: overlap on != off\n", dist_rank(), m,
                pass);
      CU_ASSERT(bitwise_equal(a, b, n));
    }
    dist_reducer_free(roff);
    dist_reducer_free(ron);
  }
  free(a);
  free(b);
}

/* Reports in rising order (the reverse of backward) and in one piece per
 * float for a while: buckets still go out in order and the result is the
 * same as the plain average. */
static void test_any_report_order(void) {
  size_t n = 4 * SMALL_BUCKET + 5;
  float *g = alloc_floats(n), *want = alloc_floats(n);
  fill_with_plain_average(g, want, n, VALUES_EXACT, 5);
  dist_reducer_opts o = {.algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1};
  dist_reducer *r = dist_reducer_create(g, n, &o);
  dist_reducer_begin(r);
  if (dist_rank() % 2 == 0) {
    for (size_t off = 0; off < n; off += 1000)
      dist_reducer_ready(r, off, n - off < 1000 ? n - off : 1000);
  } else {
    for (size_t i = n; i-- > n - 3000;) dist_reducer_ready(r, i, 1);
    dist_reducer_ready(r, 0, n - 3000);
  }
  dist_reducer_finish(r);
  dist_reducer_free(r);
  CU_ASSERT(bitwise_equal(g, want, n));
  free(g);
  free(want);
}

/* The exact average in double, for the compressed tests. */
static void exact_average(const float *g, size_t n, float *out) {
  double *d = malloc(n * sizeof *d);
  if (!d) exit(2);
  for (size_t i = 0; i < n; i++) d[i] = g[i];
  dist_allreduce_sum_doubles(d, (int)n);
  for (size_t i = 0; i < n; i++) out[i] = (float)(d[i] / dist_size());
  free(d);
}

/* Positive inputs: each conversion and each addition in 16 bits errs by at
 * most the unit roundoff u = 2^-precision (8 bits for bf16, 11 for fp16), so
 * the relative error of the average is at most about size * u. */
static void compressed_error(dist_compress mode, values_kind kind, int precision) {
  size_t n = 6 * SMALL_BUCKET + 999;
  float *g = alloc_floats(n), *want = alloc_floats(n);
  fill(g, n, kind, 20 + (uint64_t)mode);
  exact_average(g, n, want);
  dist_reducer_opts o = {.algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1, .compress = mode};
  dist_reducer *r = dist_reducer_create(g, n, &o);
  reduce(r, n, 2000, 7);
  dist_reducer_free(r);
  size_t at = 0;
  double err = tu_max_rel_err(g, want, n, 1e-38, &at);
  double bound = (dist_size() + 1) * ldexp(1.0, -precision);
  if (!(err <= bound))
    fprintf(stderr, "\n  [rank %d] compress %d: relative error %g at %zu (%g vs %g) > %g\n",
            dist_rank(), (int)mode, err, at, g[at], want[at], bound);
  CU_ASSERT(err <= bound);
  if (dist_size() > 1) CU_ASSERT(err > 0); /* it really went through 16 bits */
  free(g);
  free(want);
}
static void test_bf16_error(void) {
  compressed_error(DIST_COMPRESS_BF16, VALUES_POSITIVE, 8);
}
static void test_fp16_error(void) {
  compressed_error(DIST_COMPRESS_FP16, VALUES_TINY, 11);
}

/* NaN and Inf on one rank reach every rank's average (so the training loop's
 * check sees them), in every format. */
static void test_nonfinite_propagates(void) {
  static const dist_compress modes[] = {DIST_COMPRESS_NONE, DIST_COMPRESS_BF16, DIST_COMPRESS_FP16};
  size_t n = 3 * SMALL_BUCKET;
  float *g = alloc_floats(n);
  for (int m = 0; m < 3; m++) {
    for (size_t i = 0; i < n; i++) g[i] = 1.0f;
    if (dist_rank() == dist_size() - 1) {
      g[5] = NAN;
      g[n - 7] = INFINITY;
    }
    dist_reducer_opts o = {
        .algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1, .compress = modes[m]};
    dist_reducer *r = dist_reducer_create(g, n, &o);
    reduce(r, n, 500, 1);
    dist_reducer_free(r);
    CU_ASSERT(isnan(g[5]));
    CU_ASSERT(!isfinite(g[n - 7]));
    CU_ASSERT_EQUAL(g[6], 1.0f);
    CU_ASSERT_EQUAL(g[n - 8], 1.0f);
  }
  free(g);
}

/* With overlap, the bucket at the END of the buffer is reduced while the rest
 * is still unreported, before finish; the floats before it are not touched. */
static void test_last_bucket_goes_first(void) {
  size_t n = 3 * SMALL_BUCKET + 100;
  float *g = alloc_floats(n);
  /* 2^rank: partial sums are integers, the average (2^size - 1) / size is
   * not, so the poll below cannot mistake a partial sum for the result. */
  const float mine = (float)(1 << dist_rank());
  for (size_t i = 0; i < n; i++) g[i] = mine;
  const float avg = (float)((1 << dist_size()) - 1) * (1.0f / (float)dist_size());
  dist_reducer_opts o = {.algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1};
  dist_reducer *r = dist_reducer_create(g, n, &o);
  dist_reducer_begin(r);
  dist_reducer_ready(r, n - SMALL_BUCKET, SMALL_BUCKET);
  /* Poll the bucket's first float until the communication thread is done
   * with it (it writes each float once; the atomic load keeps this honest).
   * Up to 60 s: the other ranks may be descheduled on a loaded machine. */
  float seen = 0;
  for (int tries = 0; tries < 12000; tries++) {
    __atomic_load(&g[n - SMALL_BUCKET], &seen, __ATOMIC_ACQUIRE);
    if (seen == avg) break;
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  CU_ASSERT_EQUAL(seen, avg);
  CU_ASSERT_EQUAL(g[n - SMALL_BUCKET - 1], mine);
  CU_ASSERT_EQUAL(g[0], mine);
  report_backwards(r, n - SMALL_BUCKET, 1500, 4);
  dist_reducer_finish(r);
  dist_reducer_free(r);
  int ok = 1;
  for (size_t i = 0; i < n; i++) ok &= g[i] == avg;
  CU_ASSERT(ok);
  free(g);
}

static void test_defaults_and_empty(void) {
  size_t n = 100;
  float *g = alloc_floats(n);
  for (size_t i = 0; i < n; i++) g[i] = (float)dist_rank();
  dist_reducer_opts d = {.algorithm = algo}; /* otherwise defaults: one 25 MiB bucket */
  dist_reducer *r = dist_reducer_create(g, n, &d);
  reduce(r, n, 30, 2);
  dist_reducer_free(r);
  const int s = dist_size();
  const float avg = (float)(s * (s - 1) / 2) * (1.0f / (float)s);
  CU_ASSERT_EQUAL(g[0], avg);
  CU_ASSERT_EQUAL(g[n - 1], avg);

  dist_reducer *e = dist_reducer_create(NULL, 0, NULL);
  dist_reducer_begin(e);
  dist_reducer_ready(e, 0, 0);
  CU_ASSERT(dist_reducer_finish(e) >= 0);
  dist_reducer_free(e);
  free(g);
}

static void use_mpi(void) {
  algo = DIST_ALGO_MPI;
}
static void use_ring(void) {
  algo = DIST_ALGO_RING;
}
static void use_hier(void) {
  algo = DIST_ALGO_HIER;
}

/* A forced choice sticks; AUTO picks MPI on one node, RING across nodes. */
static void test_algorithm_used(void) {
  float g[4] = {0};
  dist_reducer_opts o = {.algorithm = algo};
  dist_reducer *r = dist_reducer_create(g, 4, &o);
  CU_ASSERT_EQUAL(dist_reducer_algorithm(r), algo);
  dist_reducer_free(r);
  dist_reducer *a = dist_reducer_create(g, 4, NULL);
  dist_algorithm want = dist_local_size() == dist_size() ? DIST_ALGO_MPI : DIST_ALGO_RING;
  CU_ASSERT_EQUAL(dist_reducer_algorithm(a), want);
  dist_reducer_free(a);
}

static int run_fault(const char *mode) {
  size_t n = 3 * SMALL_BUCKET;
  float *g = alloc_floats(n);
  for (size_t i = 0; i < n; i++) g[i] = 1;
  dist_reducer_opts o = {.algorithm = algo, .bucket_mb = SMALL_MB, .overlap = 1};
  if (!strcmp(mode, "bad-bucket")) o.bucket_mb = -1;
  if (!strcmp(mode, "bad-compress")) o.compress = (dist_compress)7;
  if (!strcmp(mode, "no-buffer")) {
    dist_reducer_create(NULL, 10, &o);
    return 0;
  }
  dist_reducer *r = dist_reducer_create(g, n, &o);
  if (!strcmp(mode, "watchdog")) {
    dist_set_timeout(1.5);
    if (dist_rank() == dist_size() - 1) {
      tu_mark_fault("the last rank sleeps instead of reducing");
      sleep(60); /* stuck in "backward"; mpirun ends us */
    } else {
      reduce(r, n, 1000, 1);
    }
    fprintf(stderr, "[rank %d] the reduction completed: the watchdog did not fire\n", dist_rank());
  } else if (!strcmp(mode, "outside")) {
    dist_reducer_begin(r);
    dist_reducer_ready(r, n - 1, 2);
  } else if (!strcmp(mode, "twice")) {
    dist_reducer_begin(r);
    dist_reducer_ready(r, 0, n);
    dist_reducer_ready(r, n - 50, 10);
  } else if (!strcmp(mode, "no-begin")) {
    dist_reducer_ready(r, 0, 1);
  } else if (!strcmp(mode, "begin-twice")) {
    dist_reducer_begin(r);
    dist_reducer_begin(r);
  } else {
    fprintf(stderr, "mpi_dist_reducer: unknown fault mode %s\n", mode);
    return 2;
  }
  dist_reducer_free(r);
  free(g);
  return 0;
}

int main(int argc, char **argv) {
  dist_init(&argc, &argv);
  if (argc == 3 && !strcmp(argv[1], "--fault")) {
    int rc = run_fault(argv[2]);
    dist_finalize();
    return rc;
  }
#define TESTS(A)                                                                             \
  {"none == plain MPI_Allreduce average, exact sums, sizes", test_none_equals_plain_exact},  \
      {"none == plain MPI_Allreduce average, random values", test_none_equals_plain_random}, \
      {"overlap on == off bitwise, none/bf16/fp16, 3 passes", test_overlap_on_equals_off},   \
      {"reports in any order", test_any_report_order},                                       \
      {"bf16 relative error bound", test_bf16_error},                                        \
      {"fp16 relative error bound on tiny gradients", test_fp16_error},                      \
      {"NaN and Inf propagate", test_nonfinite_propagates},                                  \
      {"the last bucket is reduced first, during backward", test_last_bucket_goes_first},    \
      {"default options and an empty buffer", test_defaults_and_empty},                      \
      {"the algorithm " A " is used", test_algorithm_used},
  static const tu_test mpi_tests[] = {{"(algorithm mpi)", use_mpi}, TESTS("mpi"){NULL, NULL}};
  static const tu_test ring_tests[] = {{"(algorithm ring)", use_ring}, TESTS("ring"){NULL, NULL}};
  tu_add_suite("dist reducer, MPI_Allreduce per bucket", mpi_tests);
  static const tu_test hier_tests[] = {{"(algorithm hier)", use_hier}, TESTS("hier"){NULL, NULL}};
  tu_add_suite("dist reducer, dist's ring", ring_tests);
  /* On one node HIER is a reduce into rank 0 and a broadcast back, with a
   * ring of one leader; the multinode tests run it across hosts. */
  tu_add_suite("dist reducer, hierarchical", hier_tests);
  int rc = tu_run_all_ranks(dist_rank());
  dist_finalize();
  return rc;
}
