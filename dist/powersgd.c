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
 * every loop below runs over contiguous memory: Pt[k][i] = M[i,:] . Qt[k,:],
 * Qt[k,:] = sum_i Pt[k][i] M[i,:], M'[i,:] = sum_k Pt[k][i] Qt[k,:].
 */
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
    if (d->rows == 0 || d->cols == 0 || d->offset > n || size > n - d->offset)
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
    for (size_t i = 0; i < m->n * m->m; i++) g[i] += m->e[i];
    for (int k = 0; k < m->r; k++) {
      const float *q = m->qt + (size_t)k * m->m;
      for (size_t i = 0; i < m->n; i++) {
        const float *row = g + i * m->m;
        float d = 0;
        for (size_t c = 0; c < m->m; c++) d += row[c] * q[c];
        w[(size_t)k * m->n + i] = d;
      }
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
    const float *g = p->grads + m->offset;
    memset(qw, 0, (size_t)m->r * m->m * sizeof *qw);
    for (size_t i = 0; i < m->n; i++) {
      const float *row = g + i * m->m;
      for (int k = 0; k < m->r; k++) {
        const float f = m->pt[(size_t)k * m->n + i];
        float *q = qw + (size_t)k * m->m;
        for (size_t c = 0; c < m->m; c++) q[c] += f * row[c];
      }
    }
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
    for (size_t i = 0; i < m->n; i++) {
      float *row = g + i * m->m, *e = m->e + i * m->m;
      for (size_t c = 0; c < m->m; c++) e[c] = row[c];
      for (size_t c = 0; c < m->m; c++) row[c] = 0;
      for (int k = 0; k < m->r; k++) {
        const float f = m->pt[(size_t)k * m->n + i];
        const float *q = m->qt + (size_t)k * m->m;
        for (size_t c = 0; c < m->m; c++) row[c] += f * q[c];
      }
      for (size_t c = 0; c < m->m; c++) e[c] -= row[c];
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
