/*
 * powersgd.c: low-rank gradient compression with error feedback (Vogels,
 * Karimireddy, Jaggi, "PowerSGD: Practical Low-Rank Gradient Compression
 * for Distributed Optimization", NeurIPS 2019; PyTorch's powerSGD_hook).
 *
 * Each weight gradient of a conv or linear layer is a matrix M (n, m) =
 * (out, in/groups * kh * kw), row-major in the flat gradient buffer. With
 * r = min(rank, n, m), one step is, on every rank:
 *
 *   M += E                       error feedback: what earlier steps left out
 *   P = M Q                      (n, r); Q (m, r) is last step's (warm start)
 *   P = sum over ranks of P      one allreduce of every matrix's P together
 *   P = orthonormal columns(P)   Gram-Schmidt
 *   Q = M^T P                    (m, r)
 *   Q = average over ranks of Q  one allreduce of every Q
 *   M' = P Q^T                   the rank-r average, the same on every rank
 *   E = M - M', M = M'
 *
 * Every quantity that crosses ranks is a sum of something linear in the local
 * M, so the result depends on the ranks' gradients only through their
 * average: any rank count gives the same step for the same global batch, up
 * to float rounding. Matrices that would not shrink by min_ratio (n m <
 * min_ratio (n + m) r, PyTorch's min_compression_rate) and every other
 * float of the buffer (biases, batch-norm parameters) travel uncompressed,
 * averaged in the same allreduce as the Ps.
 *
 * Layouts: P is kept transposed, Pt (r, n), and Q too, Qt (r, m), so that
 * Gram-Schmidt runs over contiguous rows. The three products are sgemm
 * calls (OpenBLAS): Pt = Qt M^T, Qt = Pt M, M' = Pt^T Qt. At rank 4 they
 * are a few flops per float of M, so the step is bound by memory traffic:
 * the first and last passes go over blocks of rows that stay in cache
 * (M += E with its part of P; M' with the update of E and M), which makes
 * the step read and write M and E about 8 times instead of 13. A
 * dot-product loop per element, as this file first had, ran at 8.6 ns per
 * weight float (527 ms per step for alexnet_owt), bound by the latency of
 * its serial sum.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "internal.h"

typedef struct {
  size_t offset, n, m; /* the matrix grads[offset, offset + n m), (n, m) */
  int r;               /* its approximation rank, min(rank, n, m) */
  float *e;            /* (n, m) error feedback, this rank's */
  float *qt;           /* (r, m) Q transposed: the warm start */
  float *pt;           /* (r, n) P transposed, this step's */
} psgd_matrix;

struct dist_powersgd {
  float *grads; /* (n) not owned */
  size_t n;
  psgd_matrix *mat; /* the compressed matrices, in buffer order */
  int nmat;
  size_t *plain_lo, *plain_hi; /* ranges of floats sent uncompressed */
  int nplain;
  size_t plain_floats, p_floats, q_floats, e_floats;
  float *wire;  /* (max(plain + P floats, Q floats)) what is allreduced */
  float *store; /* every e, qt and pt, one allocation */
  MPI_Comm comm;
  int size;
};

/* ------------------------------------------------------------------------ */
/* The first Q                                                              */

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* A standard normal draw from (matrix, element), the same on every rank
 * (Box-Muller on two hashed uniforms). */
static float normal_at(uint64_t matrix, uint64_t i) {
  uint64_t a = splitmix(matrix * 0x100000001b3ull ^ splitmix(2 * i));
  uint64_t b = splitmix(matrix * 0x100000001b3ull ^ splitmix(2 * i + 1));
  double u = ((double)(a >> 11) + 0.5) * 0x1.0p-53, v = (double)(b >> 11) * 0x1.0p-53;
  return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}

/* Orthonormalizes the r rows of x (r, len) in place, modified Gram-Schmidt
 * in double sums. A row that is (numerically) in the span of the earlier ones
 * becomes zero instead of normalized rounding noise: the approximation then
 * uses fewer directions, as the matrix has fewer. */
static void orthonormalize(float *x, int r, size_t len) {
  for (int k = 0; k < r; k++) {
    float *a = x + (size_t)k * len;
    double before = 0;
    for (size_t i = 0; i < len; i++) before += (double)a[i] * a[i];
    for (int j = 0; j < k; j++) {
      const float *b = x + (size_t)j * len;
      double d = 0;
      for (size_t i = 0; i < len; i++) d += (double)a[i] * b[i];
      const float f = (float)d;
      for (size_t i = 0; i < len; i++) a[i] -= f * b[i];
    }
    double after = 0;
    for (size_t i = 0; i < len; i++) after += (double)a[i] * a[i];
    if (!(after > 1e-10 * before) || after == 0) { /* also NaN: the step's check reports it */
      if (isfinite(after)) memset(a, 0, len * sizeof *a);
      continue;
    }
    const float inv = (float)(1.0 / sqrt(after));
    for (size_t i = 0; i < len; i++) a[i] *= inv;
  }
}

/* ------------------------------------------------------------------------ */
/* Create                                                                   */

static int by_offset(const void *a, const void *b) {
  const dist_matrix *x = a, *y = b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

dist_powersgd *dist_powersgd_create(float *grads, size_t n, const dist_matrix *mats, int nmats,
                                    int rank, double min_ratio, MPI_Comm comm) {
  if (rank <= 0) dist_abort(1, "dist: powersgd rank %d must be at least 1", rank);
  if (nmats < 0 || (nmats > 0 && !mats))
    dist_abort(1, "dist: powersgd needs the list of weight matrices (%d given)", nmats);
  dist_powersgd *p = calloc(1, sizeof *p);
  dist_matrix *sorted = malloc((nmats > 0 ? (size_t)nmats : 1) * sizeof *sorted);
  if (!p || !sorted) dist_abort(1, "dist: out of memory for powersgd");
  if (nmats > 0) memcpy(sorted, mats, (size_t)nmats * sizeof *sorted);
  qsort(sorted, (size_t)nmats, sizeof *sorted, by_offset);
  p->grads = grads;
  p->n = n;
  p->comm = comm;
  DIST_CHECK(MPI_Comm_size(comm, &p->size));
  p->mat = calloc((size_t)nmats + 1, sizeof *p->mat);
  p->plain_lo = calloc((size_t)nmats + 1, sizeof *p->plain_lo);
  p->plain_hi = calloc((size_t)nmats + 1, sizeof *p->plain_hi);
  if (!p->mat || !p->plain_lo || !p->plain_hi) dist_abort(1, "dist: out of memory for powersgd");

  size_t at = 0; /* floats before this are assigned */
  for (int j = 0; j < nmats; j++) {
    const dist_matrix *d = &sorted[j];
    size_t size = d->rows * d->cols;
    if (d->rows == 0 || d->cols == 0 || d->rows > INT_MAX || d->cols > INT_MAX || d->offset > n ||
        size > n - d->offset)
      dist_abort(1,
                 "dist: powersgd matrix %d (%zu x %zu at float %zu) is empty or outside the "
                 "gradient buffer of %zu floats",
                 j, d->rows, d->cols, d->offset, n);
    if (d->offset < at)
      dist_abort(1, "dist: powersgd matrix %d (%zu x %zu at float %zu) overlaps another", j,
                 d->rows, d->cols, d->offset);
    size_t r = (size_t)rank;
    if (r > d->rows) r = d->rows;
    if (r > d->cols) r = d->cols;
    if ((double)size < min_ratio * (double)((d->rows + d->cols) * r)) continue; /* too small */
    if (d->offset > at) {
      p->plain_lo[p->nplain] = at;
      p->plain_hi[p->nplain++] = d->offset;
    }
    psgd_matrix *m = &p->mat[p->nmat++];
    m->offset = d->offset;
    m->n = d->rows;
    m->m = d->cols;
    m->r = (int)r;
    p->p_floats += r * m->n;
    p->q_floats += r * m->m;
    p->e_floats += size;
    at = d->offset + size;
  }
  if (at < n) {
    p->plain_lo[p->nplain] = at;
    p->plain_hi[p->nplain++] = n;
  }
  for (int k = 0; k < p->nplain; k++) p->plain_floats += p->plain_hi[k] - p->plain_lo[k];
  free(sorted);

  size_t wire = p->plain_floats + p->p_floats;
  if (p->q_floats > wire) wire = p->q_floats;
  p->wire = malloc((wire ? wire : 1) * sizeof *p->wire);
  p->store = calloc(p->e_floats + p->q_floats + p->p_floats + 1, sizeof *p->store);
  if (!p->wire || !p->store)
    dist_abort(1, "dist: out of memory for powersgd's %zu floats of error feedback", p->e_floats);
  float *s = p->store;
  for (int j = 0; j < p->nmat; j++) {
    psgd_matrix *m = &p->mat[j];
    m->e = s;
    s += m->n * m->m;
    m->qt = s;
    s += (size_t)m->r * m->m;
    m->pt = s;
    s += (size_t)m->r * m->n;
    for (size_t i = 0; i < (size_t)m->r * m->m; i++) m->qt[i] = normal_at((uint64_t)j, i);
    orthonormalize(m->qt, m->r, m->m);
  }
  return p;
}

void dist_powersgd_free(dist_powersgd *p) {
  if (!p) return;
  free(p->store);
  free(p->wire);
  free(p->plain_lo);
  free(p->plain_hi);
  free(p->mat);
  free(p);
}

/* ------------------------------------------------------------------------ */
/* One step                                                                 */

/* Rows of a matrix per block of the first and last pass: about 128 KiB of M,
 * so that the block's rows stay in the core's L2 cache between the addition
 * of E and P's product (first pass), and between the product for M' and the update
 * of E and M (last pass). */
static size_t block_rows(const psgd_matrix *m) {
  const size_t rows = (size_t)32768 / m->m;
  return rows > 0 ? rows : 1;
}

static void allreduce_sum(dist_powersgd *p, float *buf, size_t count, const char *what) {
  if (p->size == 1 || count == 0) return;
  int slot = dist_watchdog_arm("powersgd allreduce of %s (%zu floats)", what, count);
  DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, p->comm));
  dist_watchdog_disarm(slot);
}

void dist_powersgd_reduce(dist_powersgd *p) {
  const float inv = 1.0f / (float)p->size;
  /* Error feedback, then P = M Q for every matrix, into the wire after the
   * uncompressed floats. */
  float *w = p->wire;
  for (int k = 0; k < p->nplain; k++) {
    size_t len = p->plain_hi[k] - p->plain_lo[k];
    memcpy(w, p->grads + p->plain_lo[k], len * sizeof *w);
    w += len;
  }
  for (int j = 0; j < p->nmat; j++) {
    psgd_matrix *m = &p->mat[j];
    float *g = p->grads + m->offset;
    const size_t rows = block_rows(m);
    for (size_t i0 = 0; i0 < m->n; i0 += rows) {
      const size_t b = m->n - i0 < rows ? m->n - i0 : rows;
      float *gb = g + i0 * m->m;
      const float *eb = m->e + i0 * m->m;
      for (size_t i = 0; i < b * m->m; i++) gb[i] += eb[i];
      /* Pt[:, i0:i0+b] (r, b) = Qt (r, m) M[i0:i0+b]^T (m, b), M's rows still in cache */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m->r, (int)b, (int)m->m, 1.0f, m->qt,
                  (int)m->m, gb, (int)m->m, 0.0f, w + i0, (int)m->n);
    }
    w += (size_t)m->r * m->n;
  }
  allreduce_sum(p, p->wire, p->plain_floats + p->p_floats, "the uncompressed floats and P");

  w = p->wire;
  for (int k = 0; k < p->nplain; k++) {
    size_t len = p->plain_hi[k] - p->plain_lo[k];
    float *g = p->grads + p->plain_lo[k];
    for (size_t i = 0; i < len; i++) g[i] = w[i] * inv;
    w += len;
  }
  /* Orthonormal P, then Q = M^T P into the wire. */
  float *qw = p->wire;
  for (int j = 0; j < p->nmat; j++) {
    psgd_matrix *m = &p->mat[j];
    memcpy(m->pt, w, (size_t)m->r * m->n * sizeof *w);
    w += (size_t)m->r * m->n;
    orthonormalize(m->pt, m->r, m->n);
  }
  for (int j = 0; j < p->nmat; j++) {
    psgd_matrix *m = &p->mat[j];
    /* Qt (r, m) = Pt (r, n) M (n, m) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m->r, (int)m->m, (int)m->n, 1.0f, m->pt,
                (int)m->n, p->grads + m->offset, (int)m->m, 0.0f, qw, (int)m->m);
    qw += (size_t)m->r * m->m;
  }
  allreduce_sum(p, p->wire, p->q_floats, "Q");

  /* Q = the average; M' = P Q^T; E = M - M'; M = M'. */
  qw = p->wire;
  for (int j = 0; j < p->nmat; j++) {
    psgd_matrix *m = &p->mat[j];
    for (size_t i = 0; i < (size_t)m->r * m->m; i++) m->qt[i] = qw[i] * inv;
    qw += (size_t)m->r * m->m;
    float *g = p->grads + m->offset;
    const size_t rows = block_rows(m);
    for (size_t i0 = 0; i0 < m->n; i0 += rows) {
      const size_t b = m->n - i0 < rows ? m->n - i0 : rows;
      float *gb = g + i0 * m->m, *eb = m->e + i0 * m->m;
      /* M'[i0:i0+b] (b, m) = Pt[:, i0:i0+b]^T (b, r) Qt (r, m), into E's rows: the old E was
       * added to M in the first pass and is not needed any more */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)b, (int)m->m, m->r, 1.0f,
                  m->pt + i0, (int)m->n, m->qt, (int)m->m, 0.0f, eb, (int)m->m);
      for (size_t i = 0; i < b * m->m; i++) {
        const float approx = eb[i];
        eb[i] = gb[i] - approx;
        gb[i] = approx;
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Sizes and state                                                          */

size_t dist_powersgd_wire_floats(const dist_powersgd *p) {
  return p->plain_floats + p->p_floats + p->q_floats;
}
size_t dist_powersgd_plain_floats(const dist_powersgd *p) {
  return p->plain_floats;
}
int dist_powersgd_matrices(const dist_powersgd *p) {
  return p->nmat;
}

size_t dist_powersgd_state_floats(const dist_powersgd *p) {
  return p->e_floats + p->q_floats;
}
size_t dist_powersgd_error_floats(const dist_powersgd *p) {
  return p->e_floats;
}

/* State layout: every compressed matrix's E (n, m) in buffer order, then
 * every one's Qt (r, m): the per-rank part first, then the part that is the
 * same on every rank. Copies [offset, offset + count) of it piece by piece. */
void dist_powersgd_state(dist_powersgd *p, float *buf, size_t offset, size_t count, int to_buf) {
  size_t at = 0; /* state index of the piece below */
  for (int part = 0; part < 2 && count > 0; part++) {
    for (int j = 0; j < p->nmat && count > 0; j++) {
      psgd_matrix *m = &p->mat[j];
      float *piece = part == 0 ? m->e : m->qt;
      size_t len = part == 0 ? m->n * m->m : (size_t)m->r * m->m;
      if (offset < at + len) {
        size_t from = offset - at, take = len - from < count ? len - from : count;
        if (to_buf)
          memcpy(buf, piece + from, take * sizeof *buf);
        else
          memcpy(piece + from, buf, take * sizeof *buf);
        buf += take;
        offset += take;
        count -= take;
      }
      at += len;
    }
  }
}
