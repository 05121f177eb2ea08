/*
 * nn/conv.c: 2-D convolution (groups, stride, asymmetric padding) as im2col +
 * OpenBLAS sgemm, forward and backward.
 *
 * Two plans, picked from the output size alone (so forward, backward and the
 * workspace size always agree):
 *  - folded (small outputs, conv2..conv5): nb images are unrolled side by side
 *    into col (C*KH*KW, nb*OH*OW), so each group's GEMM has N = nb*OH*OW;
 *    its result lands in a tile (O, nb*OH*OW) that one pass scatters into the
 *    NCHW output while adding the bias and the ReLU. Backward gathers dy into
 *    the same tile layout, then dW += dy_t col^T and dcol = W^T dy_t (written
 *    over col, which dW no longer needs) and col2im.
 *  - direct (large outputs, conv1 at 55x55): one image at a time, the GEMM
 *    writes straight into y (and reads dy in place in backward), since N =
 *    OH*OW is already large enough for the GEMM to run at full speed.
 *
 * Workspace per image: folded (C*KH*KW + O) * OH*OW floats, direct
 * C*KH*KW * OH*OW. Rows of col are r = (c*KH + kh)*KW + kw, so group g's rows
 * are the contiguous block [g*Kg, (g+1)*Kg), Kg = C/G*KH*KW.
 */
#include <cblas.h>
#include <string.h>

#include "layers.h"

/* Outputs at least this large use the direct plan (see the file comment). */
enum { CONV_DIRECT_MIN_OHW = 2048 };

typedef struct {
  size_t ohw;     /* OH*OW */
  size_t rows;    /* C*KH*KW: rows of col */
  int kg, og;     /* per group: C/G*KH*KW, O/G */
  int direct;     /* 1: direct plan */
  size_t per_img; /* workspace floats per image */
} conv_plan;

static conv_plan plan_of(const nn_conv_geom *g) {
  conv_plan p;
  p.ohw = (size_t)g->out_h * (size_t)g->out_w;
  p.rows = (size_t)g->in_c * (size_t)g->kernel_h * (size_t)g->kernel_w;
  p.kg = (int)(p.rows / (size_t)g->groups);
  p.og = g->out_c / g->groups;
  p.direct = p.ohw >= CONV_DIRECT_MIN_OHW;
  p.per_img = p.direct ? p.rows * p.ohw : (p.rows + (size_t)g->out_c) * p.ohw;
  return p;
}

/* Images per chunk for a workspace of ws_floats (at least 1, at most n). */
static int images_per_chunk(const conv_plan *p, int n, size_t ws_floats) {
  if (p->direct) return 1;
  size_t nb = ws_floats / p->per_img;
  if (nb < 1) nb = 1;
  if (nb > (size_t)n) nb = (size_t)n;
  return (int)nb;
}

size_t nn_conv_workspace_floats(const nn_conv_geom *g, int n, size_t cap_floats) {
  conv_plan p = plan_of(g);
  if (n < 1) n = 1;
  return (size_t)images_per_chunk(&p, n, cap_floats) * p.per_img;
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

/* Unrolls m images of x (m, C, H, W) into col (C*KH*KW, ldc): image i fills
 * columns [i*OH*OW, (i+1)*OH*OW). Cells outside the input are zeros. */
static void im2col(const nn_conv_geom *g, int m, const float *x, float *col, size_t ldc) {
  const int kk = g->kernel_h * g->kernel_w;
  const long rows = (long)g->in_c * kk;
  const long units = (long)m * rows;
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
#pragma omp parallel for schedule(static)
  for (long u = 0; u < units; u++) {
    const long img = u / rows, r = u % rows;
    const int c = (int)(r / kk), kh = (int)(r % kk) / g->kernel_w, kw = (int)(r % kk) % g->kernel_w;
    const float *xp = x + ((size_t)img * (size_t)g->in_c + (size_t)c) * hw;
    float *dst = col + (size_t)r * ldc + (size_t)img * ohw;
    int lo, hi;
    valid_cols(g, kw, &lo, &hi);
    const int sw = g->stride_w, ow_n = g->out_w;
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
 * source pixel. dx is overwritten. */
static void col2im(const nn_conv_geom *g, int m, const float *col, size_t ldc, float *dx) {
  const long units = (long)m * g->in_c;
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
#pragma omp parallel for schedule(static)
  for (long u = 0; u < units; u++) {
    const long img = u / g->in_c;
    const int c = (int)(u % g->in_c);
    float *dxp = dx + (size_t)u * hw;
    memset(dxp, 0, sizeof(float) * hw);
    for (int kh = 0; kh < g->kernel_h; kh++) {
      for (int kw = 0; kw < g->kernel_w; kw++) {
        const size_t r = ((size_t)c * (size_t)g->kernel_h + (size_t)kh) * (size_t)g->kernel_w +
                         (size_t)kw;
        const float *src = col + r * ldc + (size_t)img * ohw;
        int lo, hi;
        valid_cols(g, kw, &lo, &hi);
        const int sw = g->stride_w;
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p->og, p->kg, ncols, 1.0f, dy_g,
                (int)ldd, col_g, (int)ldc, beta, dw + woff, p->kg);
    if (dcol) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->kg, ncols, p->og, 1.0f, w + woff,
                  p->kg, dy_g, (int)ldd, 0.0f, dcol + (size_t)grp * (size_t)p->kg * ldc,
                  (int)ldc);
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

void nn_conv_forward(const nn_conv_geom *g, int n, const float *x, const float *w, const float *b,
                     int relu, float *y, float *ws, size_t ws_floats) {
  const conv_plan p = plan_of(g);
  const size_t in_img = (size_t)g->in_c * (size_t)g->in_h * (size_t)g->in_w;
  const size_t out_img = (size_t)g->out_c * p.ohw;
  const int nb = images_per_chunk(&p, n, ws_floats);
  const int oc = g->out_c;

  if (p.direct) {
    for (int i = 0; i < n; i++) {
      float *yi = y + (size_t)i * out_img;
      im2col(g, 1, x + (size_t)i * in_img, ws, p.ohw);
      gemm_forward(g, &p, w, ws, p.ohw, yi, p.ohw, (int)p.ohw);
      if (b || relu) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < oc; o++) {
          float *yo = yi + (size_t)o * p.ohw;
          bias_act(p.ohw, yo, b ? b[o] : 0.0f, relu, yo);
        }
      }
    }
    return;
  }

  for (int i0 = 0; i0 < n; i0 += nb) {
    const int m = n - i0 < nb ? n - i0 : nb;
    const size_t ncols = (size_t)m * p.ohw;
    float *col = ws, *tile = ws + p.rows * ncols;
    im2col(g, m, x + (size_t)i0 * in_img, col, ncols);
    gemm_forward(g, &p, w, col, ncols, tile, ncols, (int)ncols);
    const long units = (long)oc * m;
#pragma omp parallel for schedule(static)
    for (long u = 0; u < units; u++) {
      const int o = (int)(u / m), img = (int)(u % m);
      bias_act(p.ohw, tile + (size_t)o * ncols + (size_t)img * p.ohw, b ? b[o] : 0.0f, relu,
               y + (size_t)(i0 + img) * out_img + (size_t)o * p.ohw);
    }
  }
}

/* Masks dy by y > 0 in place when relu and returns the sum of (masked) dy. */
static inline double mask_and_sum(size_t count, const float *y, int relu, float *dy) {
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

void nn_conv_backward(const nn_conv_geom *g, int n, const float *x, const float *w, const float *y,
                      int relu, float *dy, float *dx, float *dw, float *db, float *ws,
                      size_t ws_floats) {
  const conv_plan p = plan_of(g);
  const size_t in_img = (size_t)g->in_c * (size_t)g->in_h * (size_t)g->in_w;
  const size_t out_img = (size_t)g->out_c * p.ohw;
  const int nb = images_per_chunk(&p, n, ws_floats);
  const int oc = g->out_c;

  if (p.direct) {
    /* Mask and bias sums per output channel, over the whole batch at once. */
    if (relu || db) {
#pragma omp parallel for schedule(static)
      for (int o = 0; o < oc; o++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) {
          const size_t off = (size_t)i * out_img + (size_t)o * p.ohw;
          s += mask_and_sum(p.ohw, y + off, relu, dy + off);
        }
        if (db) db[o] = (float)s;
      }
    }
    for (int i = 0; i < n; i++) {
      im2col(g, 1, x + (size_t)i * in_img, ws, p.ohw);
      gemm_backward(g, &p, w, dy + (size_t)i * out_img, p.ohw, ws, p.ohw, (int)p.ohw,
                    i ? 1.0f : 0.0f, dw, dx ? ws : NULL);
      if (dx) col2im(g, 1, ws, p.ohw, dx + (size_t)i * in_img);
    }
    return;
  }

  if (db) memset(db, 0, sizeof(float) * (size_t)oc);
  for (int i0 = 0; i0 < n; i0 += nb) {
    const int m = n - i0 < nb ? n - i0 : nb;
    const size_t ncols = (size_t)m * p.ohw;
    float *col = ws, *dyt = ws + p.rows * ncols;
    /* Gather dy (masked) into dyt (O, m*OH*OW); one output channel per unit
     * so the bias sums need no reduction across threads. */
#pragma omp parallel for schedule(static)
    for (int o = 0; o < oc; o++) {
      double s = 0.0;
      for (int img = 0; img < m; img++) {
        const size_t off = (size_t)(i0 + img) * out_img + (size_t)o * p.ohw;
        float *src = dy + off;
        float *dst = dyt + (size_t)o * ncols + (size_t)img * p.ohw;
        s += mask_and_sum(p.ohw, y + off, relu, src);
        memcpy(dst, src, sizeof(float) * p.ohw);
      }
      if (db) db[o] += (float)s;
    }
    im2col(g, m, x + (size_t)i0 * in_img, col, ncols);
    gemm_backward(g, &p, w, dyt, ncols, col, ncols, (int)ncols, i0 ? 1.0f : 0.0f, dw,
                  dx ? col : NULL);
    if (dx) col2im(g, m, col, ncols, dx + (size_t)i0 * in_img);
  }
}
