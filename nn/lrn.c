/*
 * nn/lrn.c: local response normalization across channels, PyTorch's
 * nn.LocalResponseNorm:
 *   scale_c = k + alpha/size * sum_{j = c - size/2 .. c + (size-1)/2, 0 <= j < C} x_j^2
 *   y_c = x_c * scale_c^-beta
 * and its gradient
 *   dx_i = dy_i scale_i^-beta
 *          - 2 alpha beta / size * x_i * sum_{j = i - (size-1)/2 .. i + size/2} dy_j y_j / scale_j.
 *
 * Both window sums slide along the channels, per tile of pixels, in double
 * (one add and one subtract per channel, whatever the size, with no drift
 * worth the name); the rest is vectorizable float loops.
 */
#include <math.h>

#include "layers.h"

/* Pixels per unit of work: the running sums of a tile stay in L1. */
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

static inline void acc_squares(int count, const float *x, double sign, double *acc) {
  for (int p = 0; p < count; p++) acc[p] += sign * ((double)x[p] * (double)x[p]);
}

void nn_lrn_forward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                    const float *x, float *scale, float *y) {
  const size_t hw = (size_t)h * (size_t)w;
  const int tiles = (int)((hw + LRN_TILE - 1) / LRN_TILE);
  const int before = size / 2, after = (size - 1) / 2;
  const float a = alpha / (float)size;
  const long units = (long)n * tiles;
#pragma omp parallel for schedule(static)
  for (long u = 0; u < units; u++) {
    const size_t img = (size_t)(u / tiles), p0 = (size_t)(u % tiles) * LRN_TILE;
    const int cnt = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
    const size_t base = img * (size_t)c * hw + p0;
    const float *xb = x + base;
    double acc[LRN_TILE];
    float pw[LRN_TILE];
    for (int p = 0; p < cnt; p++) acc[p] = 0.0;
    for (int j = 0; j <= after && j < c; j++) acc_squares(cnt, xb + (size_t)j * hw, 1.0, acc);
    for (int ch = 0; ch < c; ch++) {
      if (ch > 0) {
        if (ch + after < c) acc_squares(cnt, xb + (size_t)(ch + after) * hw, 1.0, acc);
        if (ch - before - 1 >= 0) acc_squares(cnt, xb + (size_t)(ch - before - 1) * hw, -1.0, acc);
      }
      float *sc = scale + base + (size_t)ch * hw;
      for (int p = 0; p < cnt; p++) sc[p] = k + a * (float)(acc[p] > 0.0 ? acc[p] : 0.0);
      pow_neg(cnt, sc, beta, pw);
      const float *xc = xb + (size_t)ch * hw;
      float *yc = y + base + (size_t)ch * hw;
      for (int p = 0; p < cnt; p++) yc[p] = xc[p] * pw[p];
    }
  }
}

/* acc[p] += sign * dy[p] * y[p] / s[p]: channel j's share of the window sum. */
static inline void acc_ratio(int count, const float *dy, const float *y, const float *s,
                             double sign, double *acc) {
  for (int p = 0; p < count; p++) acc[p] += sign * (double)(dy[p] * y[p] / s[p]);
}

void nn_lrn_backward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                     const float *x, const float *scale, const float *y, const float *dy,
                     float *dx) {
  (void)k; /* already inside scale */
  const size_t hw = (size_t)h * (size_t)w;
  const int tiles = (int)((hw + LRN_TILE - 1) / LRN_TILE);
  const int before = size / 2, after = (size - 1) / 2;
  const float coef = 2.0f * alpha * beta / (float)size;
  const long units = (long)n * tiles;
#pragma omp parallel for schedule(static)
  for (long u = 0; u < units; u++) {
    const size_t img = (size_t)(u / tiles), p0 = (size_t)(u % tiles) * LRN_TILE;
    const int cnt = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
    const size_t base = img * (size_t)c * hw + p0;
    const float *xb = x + base, *sb = scale + base, *yb = y + base, *db = dy + base;
    double acc[LRN_TILE];
    float pw[LRN_TILE];
    for (int p = 0; p < cnt; p++) acc[p] = 0.0;
    /* Channel i collects j in [i - after, i + before]. */
    for (int j = 0; j <= before && j < c; j++) {
      const size_t o = (size_t)j * hw;
      acc_ratio(cnt, db + o, yb + o, sb + o, 1.0, acc);
    }
    for (int i = 0; i < c; i++) {
      if (i > 0) {
        if (i + before < c) {
          const size_t o = (size_t)(i + before) * hw;
          acc_ratio(cnt, db + o, yb + o, sb + o, 1.0, acc);
        }
        if (i - after - 1 >= 0) {
          const size_t o = (size_t)(i - after - 1) * hw;
          acc_ratio(cnt, db + o, yb + o, sb + o, -1.0, acc);
        }
      }
      const size_t o = (size_t)i * hw;
      pow_neg(cnt, sb + o, beta, pw);
      float *dxc = dx + base + o;
      for (int p = 0; p < cnt; p++) dxc[p] = db[o + p] * pw[p] - coef * xb[o + p] * (float)acc[p];
    }
  }
}
