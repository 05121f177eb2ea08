/*
 * nn/conv.c: 2-D convolution (groups, stride, asymmetric padding) as im2col +
 * OpenBLAS sgemm, forward and backward.
 *
 * The batch is split between P workers (OpenMP threads, P = min(threads, n)),
 * each with its own slice of the workspace, so a worker unrolls its images
 * into a col buffer small enough to stay in cache and multiplies it at once
 * with a single-threaded sgemm (OpenBLAS runs on one thread inside a parallel
 * region): no barrier between im2col and GEMM, and no round trip of a large
 * col through memory. With one worker (n = 1, or one thread) the same code runs
 * outside a parallel region, and its loops and GEMMs use every thread instead.
 * Small outputs unroll through a table of taps, stride-1 "same" convolutions
 * copy whole planes, others copy rows (im2col and col2im below).
 *
 * A worker handles its images in chunks of nb:
 *  - folded (outputs under CONV_DIRECT_MIN_OHW): the chunk is unrolled side by
 *    side into col (C*KH*KW, nb*OH*OW), each group's GEMM writes a tile
 *    (O, nb*OH*OW), and one pass scatters the tile into the NCHW output while
 *    adding the bias and the ReLU. Backward gathers dy (masked) into the same
 *    tile layout, then dW += dy_t col^T and dcol = W^T dy_t (over col, which
 *    dW no longer needs) and col2im.
 *  - direct (large outputs, conv1 at 55x55): one image per chunk; the GEMM
 *    writes straight into y, and backward reads dy in place.
 * Backward gives every worker but the first a private dW and db, summed into
 * the caller's at the end.
 *
 * Rows of col are r = (c*KH + kh)*KW + kw, so group g's rows are the
 * contiguous block [g*Kg, (g+1)*Kg), Kg = C/G*KH*KW.
 *
 * In bf16 (g->kernel set) every GEMM is nn_bgemm (nn/bf16.c) instead of sgemm:
 * same shapes, operands rounded to bf16 while packed, float32 accumulation;
 * im2col, col2im, the bias, ReLU and the per-worker dW sums stay float32.
 *
 * 3x3 stride-1 convolutions with enough channels (nn_winograd_applies) run
 * their forward and their dx through Winograd instead (nn/winograd.c); their
 * dW, db and the ReLU mask of dy stay here. The workspace covers both.
 */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "layers.h"

/* Outputs at least this large use the direct plan (see the file comment). */
enum { CONV_DIRECT_MIN_OHW = 2048 };
/* A worker's chunk: as many images as fit in this many floats of col + tile
 * (about a core's L2), but at least CONV_MIN_COLS GEMM columns. */
enum { CONV_CHUNK_FLOATS = 1 << 18, CONV_MIN_COLS = 256 };

typedef struct {
  size_t ohw;     /* OH*OW */
  size_t rows;    /* C*KH*KW: rows of col */
  int kg, og;     /* per group: C/G*KH*KW, O/G */
  int direct;     /* 1: direct plan */
  size_t per_img; /* chunk floats per image: col (+ tile when folded) */
  size_t extra;   /* floats of a private dW and db: O*Kg + O */
  int workers;    /* P */
  int nb;         /* images per chunk */
} conv_plan;

/* Where worker t's slice of the workspace starts: worker 0 has the chunk
 * buffers, every later one the chunk buffers then a private dW and db. The
 * plan needs region(P) floats. */
static size_t region(const conv_plan *p, int t) {
  return (size_t)t * ((size_t)p->nb * p->per_img) + (t > 0 ? (size_t)(t - 1) * p->extra : 0);
}

/* The plan for n images within `budget` floats: the most workers (up to the
 * thread count) that fit with one image each, then the largest chunk up to the
 * cache-sized one. Forward, backward and the sizing share it, so they agree. */
static conv_plan plan_of(const nn_conv_geom *g, int n, size_t budget) {
  conv_plan p;
  p.ohw = (size_t)g->out_h * (size_t)g->out_w;
  p.rows = (size_t)g->in_c * (size_t)g->kernel_h * (size_t)g->kernel_w;
  p.kg = (int)(p.rows / (size_t)g->groups);
  p.og = g->out_c / g->groups;
  p.direct = p.ohw >= CONV_DIRECT_MIN_OHW;
  p.per_img = p.direct ? p.rows * p.ohw : (p.rows + (size_t)g->out_c) * p.ohw;
  p.extra = (size_t)g->out_c * (size_t)p.kg + (size_t)g->out_c;
  if (n < 1) n = 1;
  size_t want = CONV_CHUNK_FLOATS / p.per_img;
  size_t by_cols = (CONV_MIN_COLS + p.ohw - 1) / p.ohw;
  if (want < by_cols) want = by_cols;
  if (want < 1 || p.direct) want = 1;
  int workers = omp_get_max_threads();
  if (workers > n) workers = n;
  if (workers < 1) workers = 1;
  for (; workers > 1; workers--) {
    size_t fixed = (size_t)(workers - 1) * p.extra;
    if (budget >= fixed + (size_t)workers * p.per_img) break;
  }
  size_t fixed = (size_t)(workers - 1) * p.extra;
  size_t nb = budget > fixed ? (budget - fixed) / ((size_t)workers * p.per_img) : 1;
  size_t most = ((size_t)n + (size_t)workers - 1) / (size_t)workers;
  if (nb > want) nb = want;
  if (nb > most) nb = most;
  if (nb < 1) nb = 1;
  p.workers = workers;
  p.nb = (int)nb;
  return p;
}

size_t nn_conv_workspace_floats(const nn_conv_geom *g, int n, size_t cap_floats) {
  conv_plan p = plan_of(g, n, cap_floats);
  size_t need = region(&p, p.workers);
  if (nn_winograd_applies(g)) {
    size_t wino = nn_winograd_workspace_floats(g, n, cap_floats);
    if (wino > need) need = wino;
  }
  return need;
}

/* Valid output columns [*lo, *hi) for kernel column kw: those whose input
 * column ow*stride - pad_left + kw falls inside [0, W). */
static void valid_cols(const nn_conv_geom *g, int kw, int *lo, int *hi) {
  int first = g->pad_left - kw; /* ow*stride must be >= first */
  int a = first > 0 ? (first + g->stride_w - 1) / g->stride_w : 0;
  int last = g->in_w - 1 + g->pad_left - kw; /* ow*stride must be <= last */
  int b = last < 0 ? 0 : last / g->stride_w + 1;
  if (b > g->out_w) b = g->out_w;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

/* Stride 1 with as many output as input columns (every "same" convolution):
 * output cell t = oh*W + ow reads input cell t + shift, so a kernel tap is one
 * contiguous run over the rows [*oh_lo, *oh_hi) whose input row exists, in
 * which only the columns outside valid_cols are wrong (they wrap into the
 * neighbouring row, or past the plane's ends: [*t0, *t1) is the run clipped to
 * the plane). */
static int flat_tap(const nn_conv_geom *g, int kh, int kw, int *oh_lo, int *oh_hi, long *shift,
                    long *t0, long *t1) {
  if (g->stride_h != 1 || g->stride_w != 1 || g->in_w != g->out_w) return 0;
  const long wd = g->in_w, hw = (long)g->in_h * wd;
  int lo = g->pad_top - kh > 0 ? g->pad_top - kh : 0;
  int hi = g->in_h + g->pad_top - kh < g->out_h ? g->in_h + g->pad_top - kh : g->out_h;
  if (hi < lo) hi = lo;
  *oh_lo = lo;
  *oh_hi = hi;
  *shift = (long)(kh - g->pad_top) * wd + (kw - g->pad_left);
  *t0 = (long)lo * wd > -*shift ? (long)lo * wd : -*shift;
  *t1 = (long)hi * wd < hw - *shift ? (long)hi * wd : hw - *shift;
  return 1;
}

/* Small outputs (CIFAR's 4x4 to 16x16) make per-row copies all overhead: a
 * table of every tap's source instead, idx[k*OH*OW + t] = offset in the input
 * plane of tap k (= kh*KW + kw) at output cell t, or -1 over padding.
 * Returns 0 (no table) for outputs or kernels too large for it. */
enum { CONV_TABLE_MAX = 4096, CONV_TABLE_MAX_OHW = 64 };
static int tap_table(const nn_conv_geom *g, int *idx) {
  const int ohw = g->out_h * g->out_w, kk = g->kernel_h * g->kernel_w;
  if (ohw > CONV_TABLE_MAX_OHW || kk * ohw > CONV_TABLE_MAX) return 0;
  for (int kh = 0; kh < g->kernel_h; kh++)
    for (int kw = 0; kw < g->kernel_w; kw++)
      for (int oh = 0; oh < g->out_h; oh++)
        for (int ow = 0; ow < g->out_w; ow++) {
          const int ih = oh * g->stride_h - g->pad_top + kh;
          const int iw = ow * g->stride_w - g->pad_left + kw;
          const int ok = ih >= 0 && ih < g->in_h && iw >= 0 && iw < g->in_w;
          idx[(kh * g->kernel_w + kw) * ohw + oh * g->out_w + ow] = ok ? ih * g->in_w + iw : -1;
        }
  return 1;
}

/* Unrolls m images of x (m, C, H, W) into col (C*KH*KW, ldc): image i fills
 * columns [i*OH*OW, (i+1)*OH*OW). Cells outside the input are zeros. */
static void im2col(const nn_conv_geom *g, int m, const float *x, float *col, size_t ldc) {
  const int kk = g->kernel_h * g->kernel_w;
  const long rows = (long)g->in_c * kk;
  const long units = (long)m * rows;
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
  int idx[CONV_TABLE_MAX];
  if (tap_table(g, idx)) {
    const long planes = (long)m * g->in_c;
#pragma omp parallel for schedule(static)
    for (long u = 0; u < planes; u++) {
      const long img = u / g->in_c, c = u % g->in_c;
      const float *xp = x + (size_t)u * hw;
      for (int k = 0; k < kk; k++) {
        float *dst = col + ((size_t)c * (size_t)kk + (size_t)k) * ldc + (size_t)img * ohw;
        const int *ix = idx + (size_t)k * ohw;
        for (size_t t = 0; t < ohw; t++) dst[t] = ix[t] >= 0 ? xp[ix[t]] : 0.0f;
      }
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (long u = 0; u < units; u++) {
    const long img = u / rows, r = u % rows;
    const int c = (int)(r / kk), kh = (int)(r % kk) / g->kernel_w, kw = (int)(r % kk) % g->kernel_w;
    const float *xp = x + ((size_t)img * (size_t)g->in_c + (size_t)c) * hw;
    float *dst = col + (size_t)r * ldc + (size_t)img * ohw;
    int lo, hi;
    valid_cols(g, kw, &lo, &hi);
    const int sw = g->stride_w, ow_n = g->out_w;
    int oh_lo, oh_hi;
    long shift, t0, t1;
    if (flat_tap(g, kh, kw, &oh_lo, &oh_hi, &shift, &t0, &t1)) {
      memset(dst, 0, sizeof(float) * (size_t)oh_lo * (size_t)ow_n);
      memset(dst + (size_t)oh_hi * (size_t)ow_n, 0,
             sizeof(float) * (size_t)(g->out_h - oh_hi) * (size_t)ow_n);
      if (t1 > t0) memcpy(dst + t0, xp + (t0 + shift), sizeof(float) * (size_t)(t1 - t0));
      for (int oh = oh_lo; oh < oh_hi; oh++) {
        float *d = dst + (size_t)oh * (size_t)ow_n;
        for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
        for (int ow = hi; ow < ow_n; ow++) d[ow] = 0.0f;
      }
      continue;
    }
    for (int oh = 0; oh < g->out_h; oh++, dst += ow_n) {
      const int ih = oh * g->stride_h - g->pad_top + kh;
      if (ih < 0 || ih >= g->in_h || lo == hi) {
        memset(dst, 0, sizeof(float) * (size_t)ow_n);
        continue;
      }
      for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
      const float *src = xp + (size_t)ih * (size_t)g->in_w + (lo * sw - g->pad_left + kw);
      if (sw == 1) {
        memcpy(dst + lo, src, sizeof(float) * (size_t)(hi - lo));
      } else {
        for (int ow = lo; ow < hi; ow++) dst[ow] = src[(ow - lo) * sw];
      }
      for (int ow = hi; ow < ow_n; ow++) dst[ow] = 0.0f;
    }
  }
}

/* The adjoint of im2col: dx (m, C, H, W) = sum over col's cells of their
 * source pixel. dx is overwritten; col is scratch (cells over padding may be
 * zeroed). */
static void col2im(const nn_conv_geom *g, int m, float *col, size_t ldc, float *dx) {
  const long units = (long)m * g->in_c;
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
  const int kk = g->kernel_h * g->kernel_w;
  int idx[CONV_TABLE_MAX];
  const int table = tap_table(g, idx);
#pragma omp parallel for schedule(static)
  for (long u = 0; u < units; u++) {
    const long img = u / g->in_c;
    const int c = (int)(u % g->in_c);
    float *dxp = dx + (size_t)u * hw;
    memset(dxp, 0, sizeof(float) * hw);
    if (table) {
      for (int k = 0; k < kk; k++) {
        const float *src = col + ((size_t)c * (size_t)kk + (size_t)k) * ldc + (size_t)img * ohw;
        const int *ix = idx + (size_t)k * ohw;
        for (size_t t = 0; t < ohw; t++)
          if (ix[t] >= 0) dxp[ix[t]] += src[t];
      }
      continue;
    }
    for (int kh = 0; kh < g->kernel_h; kh++) {
      for (int kw = 0; kw < g->kernel_w; kw++) {
        const size_t r =
            ((size_t)c * (size_t)g->kernel_h + (size_t)kh) * (size_t)g->kernel_w + (size_t)kw;
        float *src = col + r * ldc + (size_t)img * ohw;
        int lo, hi;
        valid_cols(g, kw, &lo, &hi);
        const int sw = g->stride_w;
        int oh_lo, oh_hi;
        long shift, t0, t1;
        if (flat_tap(g, kh, kw, &oh_lo, &oh_hi, &shift, &t0, &t1)) {
          /* Zero the cells that wrap, then add the whole run at once. */
          for (int oh = oh_lo; oh < oh_hi; oh++) {
            float *s = src + (size_t)oh * (size_t)g->out_w;
            for (int ow = 0; ow < lo; ow++) s[ow] = 0.0f;
            for (int ow = hi; ow < g->out_w; ow++) s[ow] = 0.0f;
          }
          for (long t = t0; t < t1; t++) dxp[t + shift] += src[t];
          continue;
        }
        for (int oh = 0; oh < g->out_h; oh++) {
          const int ih = oh * g->stride_h - g->pad_top + kh;
          if (ih < 0 || ih >= g->in_h) continue;
          const float *s = src + (size_t)oh * (size_t)g->out_w;
          float *d = dxp + (size_t)ih * (size_t)g->in_w + (lo * sw - g->pad_left + kw);
          if (sw == 1) {
            for (int ow = lo; ow < hi; ow++) d[ow - lo] += s[ow];
          } else {
            for (int ow = lo; ow < hi; ow++) d[(ow - lo) * sw] += s[ow];
          }
        }
      }
    }
  }
}

/* Per group: out_g (Og, ldo) = W_g (Og, Kg) x col_g (Kg, ldc), N columns. */
static void gemm_forward(const nn_conv_geom *g, const conv_plan *p, const float *w,
                         const float *col, size_t ldc, float *out, size_t ldo, int ncols) {
  for (int grp = 0; grp < g->groups; grp++) {
    if (g->kernel) {
      nn_bgemm(g->kernel, 0, 0, p->og, ncols, p->kg,
               w + (size_t)grp * (size_t)p->og * (size_t)p->kg, p->kg,
               col + (size_t)grp * (size_t)p->kg * ldc, (int)ldc, 0.0f,
               out + (size_t)grp * (size_t)p->og * ldo, (int)ldo);
      continue;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->og, ncols, p->kg, 1.0f,
                w + (size_t)grp * (size_t)p->og * (size_t)p->kg, p->kg,
                col + (size_t)grp * (size_t)p->kg * ldc, (int)ldc, 0.0f,
                out + (size_t)grp * (size_t)p->og * ldo, (int)ldo);
  }
}

/* Per group: dW_g (Og, Kg) = beta dW_g + dy_g (Og, N) x col_g^T; then, if
 * dcol, dcol_g (Kg, N) = W_g^T dy_g (dcol may be col: dW has used it). */
static void gemm_backward(const nn_conv_geom *g, const conv_plan *p, const float *w,
                          const float *dyt, size_t ldd, const float *col, size_t ldc, int ncols,
                          float beta, float *dw, float *dcol) {
  for (int grp = 0; grp < g->groups; grp++) {
    const float *dy_g = dyt + (size_t)grp * (size_t)p->og * ldd;
    const float *col_g = col + (size_t)grp * (size_t)p->kg * ldc;
    const size_t woff = (size_t)grp * (size_t)p->og * (size_t)p->kg;
    if (g->kernel) {
      nn_bgemm(g->kernel, 0, 1, p->og, p->kg, ncols, dy_g, (int)ldd, col_g, (int)ldc, beta,
               dw + woff, p->kg);
      if (dcol)
        nn_bgemm(g->kernel, 1, 0, p->kg, ncols, p->og, w + woff, p->kg, dy_g, (int)ldd, 0.0f,
                 dcol + (size_t)grp * (size_t)p->kg * ldc, (int)ldc);
      continue;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p->og, p->kg, ncols, 1.0f, dy_g, (int)ldd,
                col_g, (int)ldc, beta, dw + woff, p->kg);
    if (dcol) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->kg, ncols, p->og, 1.0f, w + woff,
                  p->kg, dy_g, (int)ldd, 0.0f, dcol + (size_t)grp * (size_t)p->kg * ldc, (int)ldc);
    }
  }
}

/* dst[i] = src[i] + bias, then max(0, .) if relu; dst may equal src. */
static inline void bias_act(size_t count, const float *src, float bias, int relu, float *dst) {
  if (relu) {
    for (size_t i = 0; i < count; i++) {
      float v = src[i] + bias;
      dst[i] = v > 0.0f ? v : 0.0f;
    }
  } else {
    for (size_t i = 0; i < count; i++) dst[i] = src[i] + bias;
  }
}

/* Forward of images [i0, i1) by one worker, with its workspace slice ws. */
static void forward_slice(const nn_conv_geom *g, const conv_plan *p, int i0, int i1, const float *x,
                          const float *w, const float *b, int relu, float *y, float *ws) {
  const size_t in_img = (size_t)g->in_c * (size_t)g->in_h * (size_t)g->in_w;
  const size_t out_img = (size_t)g->out_c * p->ohw;
  const int oc = g->out_c;
  for (int c0 = i0; c0 < i1; c0 += p->nb) {
    const int m = i1 - c0 < p->nb ? i1 - c0 : p->nb;
    const size_t ncols = (size_t)m * p->ohw;
    float *col = ws;
    im2col(g, m, x + (size_t)c0 * in_img, col, ncols);
    if (p->direct) { /* m == 1 */
      float *yi = y + (size_t)c0 * out_img;
      gemm_forward(g, p, w, col, ncols, yi, p->ohw, (int)ncols);
      if (b || relu) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < oc; o++) {
          float *yo = yi + (size_t)o * p->ohw;
          bias_act(p->ohw, yo, b ? b[o] : 0.0f, relu, yo);
        }
      }
      continue;
    }
    float *tile = ws + p->rows * ncols;
    gemm_forward(g, p, w, col, ncols, tile, ncols, (int)ncols);
    const long units = (long)oc * m;
#pragma omp parallel for schedule(static)
    for (long u = 0; u < units; u++) {
      const int o = (int)(u / m), img = (int)(u % m);
      bias_act(p->ohw, tile + (size_t)o * ncols + (size_t)img * p->ohw, b ? b[o] : 0.0f, relu,
               y + (size_t)(c0 + img) * out_img + (size_t)o * p->ohw);
    }
  }
}

/* Worker t of nt takes images [t*n/nt, (t+1)*n/nt). */
static int slice_start(int n, int t, int nt) {
  return (int)((long)n * t / nt);
}

void nn_conv_forward(const nn_conv_geom *g, int n, const float *x, const float *w, const float *b,
                     int relu, float *y, float *ws, size_t ws_floats) {
  if (nn_winograd_applies(g)) {
    nn_winograd_forward(g, n, x, w, b, relu, y, ws, ws_floats);
    return;
  }
  const conv_plan p = plan_of(g, n, ws_floats);
  if (p.workers == 1) {
    forward_slice(g, &p, 0, n, x, w, b, relu, y, ws);
    return;
  }
#pragma omp parallel num_threads(p.workers)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    forward_slice(g, &p, slice_start(n, t, nt), slice_start(n, t + 1, nt), x, w, b, relu, y,
                  ws + region(&p, t));
  }
}

/* Masks dy by y > 0 in place when relu and returns the sum of (masked) dy. */
static inline float mask_and_sum(size_t count, const float *y, int relu, float *dy) {
  float s = 0.0f;
  if (relu) {
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < count; i++) {
      float v = y[i] > 0.0f ? dy[i] : 0.0f;
      dy[i] = v;
      s += v;
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < count; i++) s += dy[i];
  }
  return s;
}

/* Backward of images [i0, i1) by one worker: dW and db of these images only
 * (overwritten), dx of these images. ws: the chunk buffers. */
static void backward_slice(const nn_conv_geom *g, const conv_plan *p, int i0, int i1,
                           const float *x, const float *w, const float *y, int relu, float *dy,
                           float *dx, float *dw, float *db, float *ws) {
  const size_t in_img = (size_t)g->in_c * (size_t)g->in_h * (size_t)g->in_w;
  const size_t out_img = (size_t)g->out_c * p->ohw;
  const int oc = g->out_c;
  if (db) memset(db, 0, sizeof(float) * (size_t)oc);
  for (int c0 = i0; c0 < i1; c0 += p->nb) {
    const int m = i1 - c0 < p->nb ? i1 - c0 : p->nb;
    const size_t ncols = (size_t)m * p->ohw;
    float *col = ws;
    const float *d;  /* dy of the chunk, (O, ncols) */
    if (p->direct) { /* m == 1: dy is already (O, OH*OW) */
      const size_t off = (size_t)c0 * out_img;
#pragma omp parallel for schedule(static)
      for (int o = 0; o < oc; o++) {
        const size_t at = off + (size_t)o * p->ohw;
        const float s = mask_and_sum(p->ohw, y + at, relu, dy + at);
        if (db) db[o] += s;
      }
      d = dy + off;
    } else {
      float *dyt = ws + p->rows * ncols;
      /* One output channel per unit, so the bias sums need no reduction. */
#pragma omp parallel for schedule(static)
      for (int o = 0; o < oc; o++) {
        float s = 0.0f;
        for (int img = 0; img < m; img++) {
          const size_t at = (size_t)(c0 + img) * out_img + (size_t)o * p->ohw;
          s += mask_and_sum(p->ohw, y + at, relu, dy + at);
          memcpy(dyt + (size_t)o * ncols + (size_t)img * p->ohw, dy + at, sizeof(float) * p->ohw);
        }
        if (db) db[o] += s;
      }
      d = dyt;
    }
    im2col(g, m, x + (size_t)c0 * in_img, col, ncols);
    gemm_backward(g, p, w, d, ncols, col, ncols, (int)ncols, c0 > i0 ? 1.0f : 0.0f, dw,
                  dx ? col : NULL);
    if (dx) col2im(g, m, col, ncols, dx + (size_t)c0 * in_img);
  }
}

void nn_conv_backward(const nn_conv_geom *g, int n, const float *x, const float *w, const float *y,
                      int relu, float *dy, float *dx, float *dw, float *db, float *ws,
                      size_t ws_floats) {
  const conv_plan p = plan_of(g, n, ws_floats);
  const size_t wcount = (size_t)g->out_c * (size_t)p.kg;
  const size_t chunk = (size_t)p.nb * p.per_img;
  /* With Winograd, the slices below compute dW and db and mask dy; dx follows
   * from the masked dy. */
  float *wino_dx = dx && nn_winograd_applies(g) ? dx : NULL;
  if (wino_dx) dx = NULL;
  if (p.workers == 1) {
    backward_slice(g, &p, 0, n, x, w, y, relu, dy, dx, dw, db, ws);
    if (wino_dx) nn_winograd_backward_data(g, n, w, dy, wino_dx, ws, ws_floats);
    return;
  }
  int used = 1;
#pragma omp parallel num_threads(p.workers)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float *mine = ws + region(&p, t);
    float *dwt = t ? mine + chunk : dw;
    float *dbt = t ? (db ? mine + chunk + wcount : NULL) : db;
    backward_slice(g, &p, slice_start(n, t, nt), slice_start(n, t + 1, nt), x, w, y, relu, dy, dx,
                   dwt, dbt, mine);
    if (t == 0) used = nt;
  }
  for (int t = 1; t < used; t++) {
    const float *dwt = ws + region(&p, t) + chunk;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < wcount; i++) dw[i] += dwt[i];
    if (db)
      for (int o = 0; o < g->out_c; o++) db[o] += dwt[wcount + (size_t)o];
  }
  if (wino_dx) nn_winograd_backward_data(g, n, w, dy, wino_dx, ws, ws_floats);
}

/* ------------------------------------------------------------------------ */
/* The conv layer (its row in nn/kinds.c)                                    */

static nn_conv_geom layer_geom(const nn_net *net, const nn_layer *l) {
  nn_conv_geom g = {
      .in_c = l->in.c,
      .in_h = l->in.h,
      .in_w = l->in.w,
      .out_c = l->out.c,
      .out_h = l->out.h,
      .out_w = l->out.w,
      .kernel_h = l->spec.kernel_h,
      .kernel_w = l->spec.kernel_w,
      .stride_h = l->spec.stride_h,
      .stride_w = l->spec.stride_w,
      .pad_top = l->spec.pad_top,
      .pad_left = l->spec.pad_left,
      .groups = l->spec.groups,
      .kernel = net->kernel,
  };
  return g;
}

float *nn_conv_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  nn_conv_geom g = layer_geom(net, l);
  nn_conv_forward(&g, n, x, l->weight, l->bias, l->fused_relu, y, net->workspace,
                  net->workspace_floats);
  return y;
}

void nn_conv_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx) {
  nn_conv_geom g = layer_geom(net, l);
  nn_conv_backward(&g, n, x, l->weight, l->output, l->fused_relu, dy, dx, l->dweight, l->dbias,
                   net->workspace, net->workspace_floats);
}

size_t nn_conv_layer_workspace(const nn_net *net, const nn_layer *l, int n, size_t cap) {
  nn_conv_geom g = layer_geom(net, l);
  return nn_conv_workspace_floats(&g, n, cap);
}
