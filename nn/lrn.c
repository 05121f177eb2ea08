/*
 * nn/lrn.c: local response normalization across channels, PyTorch's
 * nn.LocalResponseNorm:
 *   scale_c = k + alpha/size * sum_{j = c - size/2 .. c + (size-1)/2, 0 <= j < C} x_j^2
 *   y_c = x_c * scale_c^-beta
 * and its gradient
 *   dx_i = dy_i scale_i^-beta
 *          - 2 alpha beta / size * x_i * sum_{j = i - (size-1)/2 .. i + size/2} dy_j y_j / scale_j.
 *
 * Both go plane by plane and sum each window directly, `size` terms per
 * output (as PyTorch's average pool does), so a plane's reads stream from
 * memory once and the window's other planes come from cache; everything is
 * vectorizable float loops.
 */
#include <math.h>

#include "layers.h"

/* Pixels per inner block: a block's window sums stay in L1. */
enum { LRN_TILE = 256 };

/* out[p] = s[p]^-beta; AlexNet's beta = 0.75 and 0.5 take square roots,
 * which vectorize, instead of powf. */
static void pow_neg(int count, const float *s, float beta, float *out) {
  if (beta == 0.75f) {
    for (int p = 0; p < count; p++) out[p] = 1.0f / (sqrtf(s[p]) * sqrtf(sqrtf(s[p])));
  } else if (beta == 0.5f) {
    for (int p = 0; p < count; p++) out[p] = 1.0f / sqrtf(s[p]);
  } else {
    for (int p = 0; p < count; p++) out[p] = powf(s[p], -beta);
  }
}

void nn_lrn_forward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                    const float *x, float *scale, float *y) {
  const size_t hw = (size_t)h * (size_t)w;
  const int before = size / 2, after = (size - 1) / 2;
  const float a = alpha / (float)size;
  const long planes = (long)n * c;
#pragma omp parallel for schedule(static)
  for (long u = 0; u < planes; u++) {
    const int ch = (int)(u % c);
    const int lo = ch - before < 0 ? 0 : ch - before, hi = ch + after < c ? ch + after : c - 1;
    const float *xb = x + (size_t)(u - ch) * hw; /* this image's channel 0 */
    const float *xc = x + (size_t)u * hw;
    float *sc = scale + (size_t)u * hw, *yc = y + (size_t)u * hw;
    for (size_t p0 = 0; p0 < hw; p0 += LRN_TILE) {
      const int cnt = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
      float acc[LRN_TILE], pw[LRN_TILE];
      for (int p = 0; p < cnt; p++) acc[p] = 0.0f;
      for (int j = lo; j <= hi; j++) {
        const float *xj = xb + (size_t)j * hw + p0;
        for (int p = 0; p < cnt; p++) acc[p] += xj[p] * xj[p];
      }
      for (int p = 0; p < cnt; p++) sc[p0 + p] = k + a * acc[p];
      pow_neg(cnt, sc + p0, beta, pw);
      for (int p = 0; p < cnt; p++) yc[p0 + p] = xc[p0 + p] * pw[p];
    }
  }
}

void nn_lrn_backward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                     const float *x, const float *scale, const float *y, const float *dy,
                     float *dx) {
  (void)k; /* already inside scale */
  const size_t hw = (size_t)h * (size_t)w;
  const int before = size / 2, after = (size - 1) / 2;
  const float coef = 2.0f * alpha * beta / (float)size;
  const long planes = (long)n * c;
#pragma omp parallel for schedule(static)
  for (long u = 0; u < planes; u++) {
    /* Channel i collects j in [i - after, i + before]. */
    const int i = (int)(u % c);
    const int lo = i - after < 0 ? 0 : i - after, hi = i + before < c ? i + before : c - 1;
    const size_t b0 = (size_t)(u - i) * hw, bi = (size_t)u * hw;
    for (size_t p0 = 0; p0 < hw; p0 += LRN_TILE) {
      const int cnt = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
      float acc[LRN_TILE], pw[LRN_TILE];
      for (int p = 0; p < cnt; p++) acc[p] = 0.0f;
      for (int j = lo; j <= hi; j++) {
        const size_t o = b0 + (size_t)j * hw + p0;
        for (int p = 0; p < cnt; p++) acc[p] += dy[o + p] * y[o + p] / scale[o + p];
      }
      pow_neg(cnt, scale + bi + p0, beta, pw);
      for (int p = 0; p < cnt; p++)
        dx[bi + p0 + p] = dy[bi + p0 + p] * pw[p] - coef * x[bi + p0 + p] * acc[p];
    }
  }
}
