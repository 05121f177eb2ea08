/*
 * nn/lrn.c: local response normalization across channels, PyTorch's
 * nn.LocalResponseNorm:
 *   scale_c = k + alpha/size * sum_{j = c - size/2 .. c + (size-1)/2, 0 <= j < C} x_j^2
 *   y_c = x_c * scale_c^-beta
 * and its gradient
 *   dx_i = dy_i scale_i^-beta
 *          - 2 alpha beta / size * x_i * sum_{j = i - (size-1)/2 .. i + size/2} dy_j x_j
 * scale_j^(-beta-1) (dy_j y_j / scale_j written from x alone).
 *
 * Forward goes plane by plane and sums each window directly, `size` terms per
 * output (as PyTorch's average pool does), so a plane's reads stream from
 * memory once and the window's other planes come from cache.
 *
 * Backward saves nothing from forward: neither the scale nor y (at the paper's
 * batch 64 they would be 2 x 74 MB for the first LRN alone). It works on one
 * image's block of pixels across all channels at a time, recomputing the
 * block's scales from x into the workspace, and writes dx over dy if the
 * caller wants (each dy is read before its dx is written).
 */
#include <math.h>
#include <omp.h>

#include "layers.h"

/* Pixels per inner block: a block's window sums stay in L1. */
enum { LRN_TILE = 256 };
/* Floats of one backward block per channel pair (pw and t), about 256 KB. */
enum { LRN_BLOCK_FLOATS = 1 << 15 };

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

/* scale[p] = k + a * (sum over the window of channel ch of x^2) for count
 * pixels of the image whose channel 0 is xb (planes hw apart). */
static void window_scale(const float *xb, size_t hw, int lo, int hi, int count, float k, float a,
                         float *scale) {
  for (int p = 0; p < count; p++) scale[p] = 0.0f;
  for (int j = lo; j <= hi; j++) {
    const float *xj = xb + (size_t)j * hw;
    for (int p = 0; p < count; p++) scale[p] += xj[p] * xj[p];
  }
  for (int p = 0; p < count; p++) scale[p] = k + a * scale[p];
}

void nn_lrn_forward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                    const float *x, float *y) {
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
    float *yc = y + (size_t)u * hw;
    for (size_t p0 = 0; p0 < hw; p0 += LRN_TILE) {
      const int cnt = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
      float sc[LRN_TILE], pw[LRN_TILE];
      window_scale(xb + p0, hw, lo, hi, cnt, k, a, sc);
      pow_neg(cnt, sc, beta, pw);
      for (int p = 0; p < cnt; p++) yc[p0 + p] = xc[p0 + p] * pw[p];
    }
  }
}

/* Pixels per backward block for c channels: 2 * c * block floats of
 * workspace stay within about a core's L2. */
static int backward_block(int c, size_t hw) {
  int block = LRN_BLOCK_FLOATS / (c > 0 ? c : 1);
  if (block > LRN_TILE) block = LRN_TILE;
  if (block < 8) block = 8;
  if ((size_t)block > hw) block = (int)hw;
  return block;
}

size_t nn_lrn_workspace_floats(int c, int h, int w, int threads) {
  const size_t block = (size_t)backward_block(c, (size_t)h * (size_t)w);
  return (size_t)(threads > 0 ? threads : 1) * 2 * (size_t)c * block;
}

void nn_lrn_backward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                     const float *x, const float *dy, float *dx, float *ws, size_t ws_floats) {
  const size_t hw = (size_t)h * (size_t)w;
  const int before = size / 2, after = (size - 1) / 2;
  const float a = alpha / (float)size;
  const float coef = 2.0f * alpha * beta / (float)size;
  const int block = backward_block(c, hw);
  const long blocks_per_image = (long)((hw + (size_t)block - 1) / (size_t)block);
  const long units = (long)n * blocks_per_image;
  const size_t per_thread = 2 * (size_t)c * (size_t)block;
  int threads = (int)(ws_floats / per_thread);
  if (threads > omp_get_max_threads()) threads = omp_get_max_threads(); /* nn_layer_threads */
  if (threads < 1) threads = 1; /* the caller sized ws for at least one */
#pragma omp parallel num_threads(threads)
  {
    /* pw (C, block): scale^-beta; t (C, block): dy x scale^(-beta-1). */
    float *pw = ws + (size_t)omp_get_thread_num() * per_thread;
    float *t = pw + (size_t)c * (size_t)block;
#pragma omp for schedule(static)
    for (long u = 0; u < units; u++) {
      const size_t img = (size_t)(u / blocks_per_image);
      const size_t p0 = (size_t)(u % blocks_per_image) * (size_t)block;
      const int cnt = (int)(hw - p0 < (size_t)block ? hw - p0 : (size_t)block);
      const size_t base = img * (size_t)c * hw + p0;
      for (int j = 0; j < c; j++) {
        const int lo = j - before < 0 ? 0 : j - before, hi = j + after < c ? j + after : c - 1;
        float *pj = pw + (size_t)j * (size_t)block, *tj = t + (size_t)j * (size_t)block;
        const float *xj = x + base + (size_t)j * hw, *dyj = dy + base + (size_t)j * hw;
        window_scale(x + base, hw, lo, hi, cnt, k, a, tj); /* the scale, for now */
        pow_neg(cnt, tj, beta, pj);
        /* dy y / scale, y rounded as forward rounds it */
        for (int p = 0; p < cnt; p++) tj[p] = dyj[p] * (xj[p] * pj[p]) / tj[p];
      }
      /* Channel i collects j in [i - after, i + before]. */
      for (int i = 0; i < c; i++) {
        const int lo = i - after < 0 ? 0 : i - after, hi = i + before < c ? i + before : c - 1;
        float acc[LRN_TILE];
        for (int p = 0; p < cnt; p++) acc[p] = 0.0f;
        for (int j = lo; j <= hi; j++) {
          const float *tj = t + (size_t)j * (size_t)block;
          for (int p = 0; p < cnt; p++) acc[p] += tj[p];
        }
        const float *xi = x + base + (size_t)i * hw, *dyi = dy + base + (size_t)i * hw;
        const float *pi = pw + (size_t)i * (size_t)block;
        float *dxi = dx + base + (size_t)i * hw;
        for (int p = 0; p < cnt; p++) dxi[p] = dyi[p] * pi[p] - coef * xi[p] * acc[p];
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* The lrn layer (its row in nn/kinds.c)                                     */

float *nn_lrn_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  (void)net;
  const nn_layer_spec *s = &l->spec;
  nn_lrn_forward(n, l->in.c, l->in.h, l->in.w, s->lrn_size, s->lrn_alpha, s->lrn_beta, s->lrn_k, x,
                 y);
  return y;
}

void nn_lrn_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx) {
  const nn_layer_spec *s = &l->spec;
  if (dx)
    nn_lrn_backward(n, l->in.c, l->in.h, l->in.w, s->lrn_size, s->lrn_alpha, s->lrn_beta, s->lrn_k,
                    x, dy, dx, net->workspace, net->workspace_floats);
}

/* One block per thread of the pool, whatever the batch. */
size_t nn_lrn_layer_workspace(const nn_net *net, const nn_layer *l, int n, size_t cap) {
  (void)net, (void)n, (void)cap;
  return nn_lrn_workspace_floats(l->in.c, l->in.h, l->in.w, omp_get_max_threads());
}
