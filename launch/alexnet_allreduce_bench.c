/*
 * alexnet-allreduce-bench: how fast dist averages a gradient buffer the size
 * of AlexNet's (61,100,840 floats, 244 MB) over the ranks, compared with one
 * plain MPI_Allreduce of the same buffer in the same run.
 *
 *   mpirun -n 2 alexnet-allreduce-bench [--mb 244.4] [--buckets 4,25,100]
 *       [--compress none,bf16,fp16] [--algorithm auto] [--iters 5] [--backward-ms 0]
 *       [--pieces 16] [--json]
 *
 * Every row is measured once per round, rows one after the other, for one
 * warm-up round and --iters rounds: the methods compared alternate within
 * the run, so a change of load on a shared machine hits them all alike.
 * --algorithm takes a list (auto, mpi, ring, hier: dist_algorithm) and adds the
 * reducer rows once per algorithm.
 *
 * Rows (median over --iters rounds, the slowest rank's time):
 *   MPI_Allreduce        one call over the whole buffer, no scaling
 *   plain average        the same plus the 1/size scale (dist_allreduce_average_plain)
 *   reducer              dist's bucketed reducer, overlap on, every bucket
 *                        reported at once: begin to end of finish
 *   reducer+backward     with --backward-ms > 0: the buffer is reported in
 *                        --pieces pieces from the end while the main thread
 *                        spins for backward-ms in total (a stand-in for
 *                        backward's compute); "exposed" is what finish waited
 *                        (overlap on, then off for comparison)
 * Bus bandwidth is NCCL's: bytes / time * 2 (size - 1) / size, for float
 * bytes also when the wire carries 16 bits.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "tool.h"

#define ALEXNET_PARAMS 61100840u

typedef struct {
  size_t n;
  double buckets[16];
  int nbuckets;
  dist_compress compress[3];
  int ncompress;
  dist_algorithm algos[4];
  int nalgos;
  int iters;
  double backward_ms;
  int pieces;
  int json;
} options;

static const char *compress_name(dist_compress c) {
  return c == DIST_COMPRESS_BF16 ? "bf16" : c == DIST_COMPRESS_FP16 ? "fp16" : "none";
}

static const char usage[] =
    "usage: mpirun -n P alexnet-allreduce-bench [--mb MB] [--buckets MiB,MiB,...] "
    "[--compress none,bf16,fp16] [--algorithm auto,mpi,ring,hier] [--iters N] "
    "[--backward-ms MS] [--pieces N] [--json]\n";

static double parse_number(const tool_spec *spec, const char *s, const char *opt) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= 0)) tool_usage(spec, "%s needs a number >= 0", opt);
  return v;
}

static options parse(int argc, char **argv) {
  options o = {.n = ALEXNET_PARAMS,
               .buckets = {4, 25, 100},
               .nbuckets = 3,
               .compress = {DIST_COMPRESS_NONE},
               .ncompress = 1,
               .algos = {DIST_ALGO_AUTO},
               .nalgos = 1,
               .iters = 5,
               .pieces = 16};
  const char *mb = NULL, *buckets = NULL, *compress = NULL, *algorithm = NULL, *backward_ms = NULL;
  const tool_opt opts[] = {TOOL_OPT_STRING("--mb", &mb),
                           TOOL_OPT_STRING("--buckets", &buckets),
                           TOOL_OPT_STRING("--compress", &compress),
                           TOOL_OPT_STRING("--algorithm", &algorithm),
                           TOOL_OPT_INT("--iters", &o.iters, 1, 1 << 20),
                           TOOL_OPT_STRING("--backward-ms", &backward_ms),
                           TOOL_OPT_INT("--pieces", &o.pieces, 1, 1 << 20),
                           TOOL_OPT_FLAG("--json", &o.json),
                           TOOL_OPT_END};
  const tool_spec the_spec = {"alexnet-allreduce-bench", usage, opts, NULL}, *spec = &the_spec;
  tool_parse(spec, argc, argv);
  if (mb) {
    o.n = (size_t)(parse_number(spec, mb, "--mb") * 1e6 / sizeof(float));
    if (o.n == 0 || o.n > (size_t)1 << 30) tool_usage(spec, "--mb must be in (0, 4294]");
  }
  if (buckets) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", buckets);
    o.nbuckets = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
      if (o.nbuckets == 16) tool_usage(spec, "--buckets takes at most 16 sizes");
      o.buckets[o.nbuckets] = parse_number(spec, t, "--buckets");
      if (!(o.buckets[o.nbuckets] > 0 && o.buckets[o.nbuckets] <= 4096))
        tool_usage(spec, "bucket sizes must be in (0, 4096] MiB, not %s", t);
      o.nbuckets++;
    }
  }
  if (compress) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", compress);
    o.ncompress = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
      if (o.ncompress == 3) tool_usage(spec, "--compress takes at most 3 formats");
      if (!strcmp(t, "none"))
        o.compress[o.ncompress++] = DIST_COMPRESS_NONE;
      else if (!strcmp(t, "bf16"))
        o.compress[o.ncompress++] = DIST_COMPRESS_BF16;
      else if (!strcmp(t, "fp16"))
        o.compress[o.ncompress++] = DIST_COMPRESS_FP16;
      else
        tool_usage(spec, "unknown compression %s (none, bf16, fp16)", t);
    }
  }
  if (algorithm) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", algorithm);
    o.nalgos = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
      if (o.nalgos == 4) tool_usage(spec, "--algorithm takes at most 4 algorithms");
      if (!strcmp(t, "auto"))
        o.algos[o.nalgos++] = DIST_ALGO_AUTO;
      else if (!strcmp(t, "mpi"))
        o.algos[o.nalgos++] = DIST_ALGO_MPI;
      else if (!strcmp(t, "ring"))
        o.algos[o.nalgos++] = DIST_ALGO_RING;
      else if (!strcmp(t, "hier"))
        o.algos[o.nalgos++] = DIST_ALGO_HIER;
      else
        tool_usage(spec, "unknown algorithm %s (auto, mpi, ring, hier)", t);
    }
  }
  if (backward_ms) o.backward_ms = parse_number(spec, backward_ms, "--backward-ms");
  if (o.nbuckets == 0 || o.ncompress == 0 || o.nalgos == 0) tool_usage(spec, "nothing to measure");
  return o;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void check(int rc, const char *call) {
  if (rc != MPI_SUCCESS)
    dist_abort(1, "alexnet-allreduce-bench: %s failed (MPI error %d)", call, rc);
}

/* The slowest rank's value (the step waits for it). */
static double max_over_ranks(double v) {
  double m = v;
  check(MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce(MAX)");
  return m;
}

static void spin_ms(double ms) {
  double end = MPI_Wtime() + ms * 1e-3;
  while (MPI_Wtime() < end) {
  }
}

typedef enum { RUN_RAW, RUN_PLAIN, RUN_REDUCER, RUN_BACKWARD } run_kind;

/* One row of the table: what is measured and its times, round by round. */
typedef struct {
  run_kind kind;
  double bucket_mb;
  dist_compress compress;
  dist_algorithm algo; /* as asked; the reducer says what AUTO became */
  int overlap;
  dist_reducer *r;     /* during a run */
  dist_algorithm used; /* what the reducer resolved algo to */
  double *tot, *exp;   /* (iters) the slowest rank's total and finish wait, ms */
} row;

/* One run of a row; returns the slowest rank's total ms, *exposed its wait. */
static double run_once(const options *o, float *g, row *w, double *exposed_out) {
  /* A reducer per run (not per row for the whole run): rows alternate, and
   * a ring reducer of 100 MiB buckets holds a few hundred MB of buffers. */
  if (w->kind == RUN_REDUCER || w->kind == RUN_BACKWARD) {
    dist_reducer_free(w->r);
    dist_reducer_opts ro = {.bucket_mb = w->bucket_mb,
                            .overlap = w->overlap,
                            .compress = w->compress,
                            .algorithm = w->algo};
    w->r = dist_reducer_create(g, o->n, &ro);
  }
  dist_barrier();
  double t0 = MPI_Wtime(), exposed = 0;
  switch (w->kind) {
    case RUN_RAW:
      check(MPI_Allreduce(MPI_IN_PLACE, g, (int)o->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce(SUM)");
      break;
    case RUN_PLAIN:
      dist_allreduce_average_plain(g, o->n);
      break;
    case RUN_REDUCER:
      dist_reducer_begin(w->r);
      dist_reducer_ready(w->r, 0, o->n);
      exposed = dist_reducer_finish(w->r);
      break;
    case RUN_BACKWARD: {
      dist_reducer_begin(w->r);
      size_t end = o->n, piece = (o->n + (size_t)o->pieces - 1) / (size_t)o->pieces;
      while (end > 0) {
        size_t take = piece < end ? piece : end;
        spin_ms(o->backward_ms / o->pieces);
        dist_reducer_ready(w->r, end - take, take);
        end -= take;
      }
      exposed = dist_reducer_finish(w->r);
      break;
    }
  }
  double ms = 1e3 * (MPI_Wtime() - t0);
  if (w->kind == RUN_RAW) { /* keep the values from growing run after run */
    const float s = 1.0f / (float)dist_size();
    for (size_t i = 0; i < o->n; i++) g[i] *= s;
  }
  *exposed_out = max_over_ranks(exposed);
  ms = max_over_ranks(ms);
  if (w->r) { /* keep it for its name in the report, without its buffers */
    dist_algorithm used = dist_reducer_algorithm(w->r);
    dist_reducer_free(w->r);
    w->r = NULL;
    w->used = used;
  }
  return ms;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

static void report(const options *o, const row *w) {
  if (dist_rank() != 0) return;
  const char *method = w->kind == RUN_RAW       ? "MPI_Allreduce"
                       : w->kind == RUN_PLAIN   ? "plain average"
                       : w->kind == RUN_REDUCER ? "reducer"
                       : w->overlap             ? "reducer+backward overlap"
                                                : "reducer+backward no-overlap";
  int with_exposed = w->kind == RUN_REDUCER || w->kind == RUN_BACKWARD;
  double total = median(w->tot, o->iters), exposed = median(w->exp, o->iters);
  const char *algo = with_exposed ? dist_algorithm_name(w->used) : "-";
  int p = dist_size();
  double bytes = (double)o->n * sizeof(float);
  double algbw = bytes / (total * 1e-3) / 1e9;
  double busbw = p > 1 ? algbw * 2.0 * (p - 1) / p : 0;
  char bucket[32] = "-";
  if (w->bucket_mb > 0) snprintf(bucket, sizeof bucket, "%g", w->bucket_mb);
  if (o->json) {
    printf(
        "{\"method\": \"%s\", \"ranks\": %d, \"floats\": %zu, \"bucket_mb\": %s, "
        "\"compress\": \"%s\", \"algorithm\": \"%s\", \"time_ms\": %.2f, \"busbw_gbs\": %.3f",
        method, p, o->n, w->bucket_mb > 0 ? bucket : "null", compress_name(w->compress), algo,
        total, busbw);
    if (with_exposed) printf(", \"exposed_ms\": %.2f", exposed);
    printf("}\n");
  } else {
    char exp[32] = "-";
    if (with_exposed) snprintf(exp, sizeof exp, "%.1f", exposed);
    printf("%-28s %10s  %-8s %-5s %9.1f %11.2f %11s\n", method, bucket, compress_name(w->compress),
           algo, total, busbw, exp);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  dist_init(&argc, &argv);
  options o = parse(argc, argv);
  float *g = malloc(o.n * sizeof *g);
  if (!g) dist_abort(1, "alexnet-allreduce-bench: no memory for %zu floats", o.n);
  for (size_t i = 0; i < o.n; i++) g[i] = 1.0f + (float)((i + (size_t)dist_rank()) % 7) * 0.125f;

  if (dist_rank() == 0 && !o.json) {
    printf("alexnet-allreduce-bench: %d ranks, %zu floats (%.1f MB), median of %d runs",
           dist_size(), o.n, o.n * sizeof(float) / 1e6, o.iters);
    if (o.backward_ms > 0)
      printf(", backward stand-in %.0f ms in %d pieces", o.backward_ms, o.pieces);
    printf("\n%-28s %10s  %-8s %-5s %9s %11s %11s\n", "method", "bucket_MiB", "compress", "algo",
           "time_ms", "busbw_GB/s", "exposed_ms");
  }
  row rows[2 + 4 * 3 * 16 * 3];
  int nrows = 0;
  rows[nrows++] = (row){.kind = RUN_RAW};
  rows[nrows++] = (row){.kind = RUN_PLAIN};
  for (int a = 0; a < o.nalgos; a++)
    for (int c = 0; c < o.ncompress; c++)
      for (int b = 0; b < o.nbuckets; b++) {
        rows[nrows++] = (row){.kind = RUN_REDUCER,
                              .bucket_mb = o.buckets[b],
                              .compress = o.compress[c],
                              .algo = o.algos[a],
                              .overlap = 1};
        if (o.backward_ms > 0)
          for (int overlap = 1; overlap >= 0; overlap--)
            rows[nrows++] = (row){.kind = RUN_BACKWARD,
                                  .bucket_mb = o.buckets[b],
                                  .compress = o.compress[c],
                                  .algo = o.algos[a],
                                  .overlap = overlap};
      }
  for (int i = 0; i < nrows; i++) {
    row *w = &rows[i];
    w->tot = calloc((size_t)o.iters, sizeof *w->tot);
    w->exp = calloc((size_t)o.iters, sizeof *w->exp);
    if (!w->tot || !w->exp) dist_abort(1, "alexnet-allreduce-bench: out of memory");
  }
  for (int it = -1; it < o.iters; it++) /* it = -1: warm-up */
    for (int i = 0; i < nrows; i++) {
      double exposed, ms = run_once(&o, g, &rows[i], &exposed);
      if (it >= 0) {
        rows[i].tot[it] = ms;
        rows[i].exp[it] = exposed;
      }
    }
  for (int i = 0; i < nrows; i++) {
    report(&o, &rows[i]);
    free(rows[i].tot);
    free(rows[i].exp);
  }
  free(g);
  dist_finalize();
  return 0;
}
