/*
 * nn/pool.c: max pooling (floor mode, padded cells are -inf) and adaptive
 * average pooling, with PyTorch's CPU semantics: a max window keeps its first
 * maximum in row-major scan order (a NaN wins), and the gradient goes there.
 * Work is split across threads by (image, channel) plane.
 */
#include <math.h>
#include <string.h>

#include "layers.h"

/* Index (into the plane) of the maximum of window (oh, ow), as PyTorch's CPU
 * kernel picks it: starts at the window's first valid cell, then moves on a
 * strictly greater value or a NaN. Returns -1 for a window with no valid cell. */
static inline long window_argmax(const nn_pool_geom *g, const float *plane, int oh, int ow) {
  int h0 = oh * g->stride_h - g->pad_top, w0 = ow * g->stride_w - g->pad_left;
  int h1 = h0 + g->kernel_h, w1 = w0 + g->kernel_w;
  if (h1 > g->in_h) h1 = g->in_h;
  if (w1 > g->in_w) w1 = g->in_w;
  if (h0 < 0) h0 = 0;
  if (w0 < 0) w0 = 0;
  if (h0 >= h1 || w0 >= w1) return -1;
  long best = (long)h0 * g->in_w + w0;
  float m = -INFINITY;
  for (int ih = h0; ih < h1; ih++) {
    const float *row = plane + (size_t)ih * (size_t)g->in_w;
    for (int iw = w0; iw < w1; iw++) {
      const float v = row[iw];
      const int take = (v > m) | isnan(v); /* selects, not branches: ties are common */
      m = take ? v : m;
      best = take ? (long)ih * g->in_w + iw : best;
    }
  }
  return best;
}

void nn_maxpool_forward(const nn_pool_geom *g, int n, const float *x, float *y) {
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
  const long planes = (long)n * g->c;
#pragma omp parallel for schedule(static)
  for (long pl = 0; pl < planes; pl++) {
    const float *xp = x + (size_t)pl * hw;
    float *yp = y + (size_t)pl * ohw;
    for (int oh = 0; oh < g->out_h; oh++) {
      for (int ow = 0; ow < g->out_w; ow++) {
        const long at = window_argmax(g, xp, oh, ow);
        yp[(size_t)oh * (size_t)g->out_w + (size_t)ow] = at < 0 ? -INFINITY : xp[at];
      }
    }
  }
}

void nn_maxpool_backward(const nn_pool_geom *g, int n, const float *x, const float *y,
                         const float *dy, float *dx) {
  (void)y; /* the scan that produced y is repeated, so ties resolve identically */
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
  const long planes = (long)n * g->c;
#pragma omp parallel for schedule(static)
  for (long pl = 0; pl < planes; pl++) {
    const float *xp = x + (size_t)pl * hw;
    const float *dyp = dy + (size_t)pl * ohw;
    float *dxp = dx + (size_t)pl * hw;
    memset(dxp, 0, sizeof(float) * hw);
    for (int oh = 0; oh < g->out_h; oh++) {
      for (int ow = 0; ow < g->out_w; ow++) {
        const long at = window_argmax(g, xp, oh, ow);
        if (at >= 0) dxp[at] += dyp[(size_t)oh * (size_t)g->out_w + (size_t)ow];
      }
    }
  }
}

/* PyTorch's adaptive bins: [floor(i*in/out), ceil((i+1)*in/out)). */
static inline int bin_start(int i, int in, int out) { return (int)(((long)i * in) / out); }
static inline int bin_end(int i, int in, int out) {
  return (int)(((long)(i + 1) * in + out - 1) / out);
}

void nn_avgpool_forward(int n, int c, int h, int w, int out_h, int out_w, const float *x,
                        float *y) {
  const size_t hw = (size_t)h * (size_t)w, ohw = (size_t)out_h * (size_t)out_w;
  const long planes = (long)n * c;
#pragma omp parallel for schedule(static)
  for (long pl = 0; pl < planes; pl++) {
    const float *xp = x + (size_t)pl * hw;
    float *yp = y + (size_t)pl * ohw;
    for (int oh = 0; oh < out_h; oh++) {
      const int h0 = bin_start(oh, h, out_h), h1 = bin_end(oh, h, out_h);
      for (int ow = 0; ow < out_w; ow++) {
        const int w0 = bin_start(ow, w, out_w), w1 = bin_end(ow, w, out_w);
        float s = 0.0f;
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) s += xp[(size_t)ih * (size_t)w + (size_t)iw];
        yp[(size_t)oh * (size_t)out_w + (size_t)ow] = s / (float)((h1 - h0) * (w1 - w0));
      }
    }
  }
}

void nn_avgpool_backward(int n, int c, int h, int w, int out_h, int out_w, const float *dy,
                         float *dx) {
  const size_t hw = (size_t)h * (size_t)w, ohw = (size_t)out_h * (size_t)out_w;
  const long planes = (long)n * c;
#pragma omp parallel for schedule(static)
  for (long pl = 0; pl < planes; pl++) {
    const float *dyp = dy + (size_t)pl * ohw;
    float *dxp = dx + (size_t)pl * hw;
    memset(dxp, 0, sizeof(float) * hw);
    for (int oh = 0; oh < out_h; oh++) {
      const int h0 = bin_start(oh, h, out_h), h1 = bin_end(oh, h, out_h);
      for (int ow = 0; ow < out_w; ow++) {
        const int w0 = bin_start(ow, w, out_w), w1 = bin_end(ow, w, out_w);
        const float d = dyp[(size_t)oh * (size_t)out_w + (size_t)ow] / (float)((h1 - h0) * (w1 - w0));
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) dxp[(size_t)ih * (size_t)w + (size_t)iw] += d;
      }
    }
  }
}
