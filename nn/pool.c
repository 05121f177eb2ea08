/*
 * nn/pool.c: max pooling (floor mode, padded cells are -inf) and adaptive
 * average pooling, with PyTorch's CPU semantics: a max window keeps its first
 * maximum in row-major scan order (a NaN wins), and the gradient goes there.
 * Work is split across threads by (image, channel) plane.
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "layers.h"

/* The cells of window (oh, ow) inside the input: rows [h0, h1), columns
 * [w0, w1), empty when the window lies wholly over padding. */
typedef struct {
  int h0, h1, w0, w1;
} window_cells;

static inline window_cells clip_window(const nn_pool_geom *g, int oh, int ow) {
  window_cells c;
  c.h0 = oh * g->stride_h - g->pad_top, c.w0 = ow * g->stride_w - g->pad_left;
  c.h1 = c.h0 + g->kernel_h, c.w1 = c.w0 + g->kernel_w;
  if (c.h1 > g->in_h) c.h1 = g->in_h;
  if (c.w1 > g->in_w) c.w1 = g->in_w;
  if (c.h0 < 0) c.h0 = 0;
  if (c.w0 < 0) c.w0 = 0;
  return c;
}

/* Index (into the plane) of the maximum of window (oh, ow), as PyTorch's CPU
 * kernel picks it: starts at the window's first valid cell, then moves on a
 * strictly greater value or a NaN. Returns -1 for a window with no valid cell. */
static inline long window_argmax(const nn_pool_geom *g, const float *plane, int oh, int ow) {
  const window_cells c = clip_window(g, oh, ow);
  const int h0 = c.h0, h1 = c.h1, w0 = c.w0, w1 = c.w1;
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

/* The larger of a and b, a NaN in either winning, as the scan above. */
static inline float max_nan(float a, float b) {
  return (b > a) | isnan(b) ? b : a;
}

/* Widest input row the separable forward keeps on the stack. */
enum { POOL_ROW_MAX = 4096 };

/* One plane's forward: per output row, the max over the window's input rows
 * (contiguous, vectorized) into t, then over each window's columns of t. The
 * values equal the scan's: a max does not depend on the order. */
static void maxpool_plane(const nn_pool_geom *g, const float *xp, float *yp) {
  float t[POOL_ROW_MAX];
  const int wd = g->in_w;
  for (int oh = 0; oh < g->out_h; oh++) {
    float *yr = yp + (size_t)oh * (size_t)g->out_w;
    int h0 = oh * g->stride_h - g->pad_top, h1 = h0 + g->kernel_h;
    if (h1 > g->in_h) h1 = g->in_h;
    if (h0 < 0) h0 = 0;
    if (h0 >= h1) {
      for (int ow = 0; ow < g->out_w; ow++) yr[ow] = -INFINITY;
      continue;
    }
    memcpy(t, xp + (size_t)h0 * (size_t)wd, sizeof(float) * (size_t)wd);
    for (int ih = h0 + 1; ih < h1; ih++) {
      const float *r = xp + (size_t)ih * (size_t)wd;
      for (int iw = 0; iw < wd; iw++) t[iw] = max_nan(t[iw], r[iw]);
    }
    /* Windows wholly inside the row, [in0, in1), as vector loops over ow (a
     * scalar max would branch, and ties are common after a ReLU); the others
     * clipped one by one. */
    const int sw = g->stride_w, kw = g->kernel_w, pl = g->pad_left;
    int in0 = (pl + sw - 1) / sw, in1 = wd - kw + pl < 0 ? 0 : (wd - kw + pl) / sw + 1;
    if (in1 > g->out_w) in1 = g->out_w;
    if (in0 > in1) in0 = in1;
    for (int ow = in0; ow < in1; ow++) yr[ow] = t[ow * sw - pl];
    for (int k = 1; k < kw; k++)
      for (int ow = in0; ow < in1; ow++) yr[ow] = max_nan(yr[ow], t[ow * sw - pl + k]);
    for (int ow = 0; ow < g->out_w; ow++) {
      if (ow == in0) ow = in1;
      if (ow >= g->out_w) break;
      int w0 = ow * sw - pl, w1 = w0 + kw;
      if (w1 > wd) w1 = wd;
      if (w0 < 0) w0 = 0;
      float m = -INFINITY;
      for (int iw = w0; iw < w1; iw++) m = max_nan(m, t[iw]);
      yr[ow] = m;
    }
  }
}

/* The scan's choice, found faster: its first maximum is the first cell equal
 * to the window's max v (a NaN max, equal to nothing, takes the scan). */
static inline long window_first(const nn_pool_geom *g, const float *plane, int oh, int ow,
                                float v) {
  if (isnan(v)) return window_argmax(g, plane, oh, ow);
  const window_cells c = clip_window(g, oh, ow);
  for (int ih = c.h0; ih < c.h1; ih++) {
    const float *row = plane + (size_t)ih * (size_t)g->in_w;
    for (int iw = c.w0; iw < c.w1; iw++)
      if (row[iw] == v) return (long)ih * g->in_w + iw;
  }
  return window_argmax(g, plane, oh, ow); /* y not from this x: still a valid choice */
}

/* Plane offset `at` of window (oh, ow) as kh * KW + kw within the window. */
static inline uint16_t window_index(const nn_pool_geom *g, int oh, int ow, long at) {
  if (at < 0) return NN_POOL_NO_ARGMAX;
  const long ih = at / g->in_w, iw = at % g->in_w;
  const long kh = ih - ((long)oh * g->stride_h - g->pad_top);
  const long kw = iw - ((long)ow * g->stride_w - g->pad_left);
  return (uint16_t)(kh * g->kernel_w + kw);
}

/* One plane's argmax, given its output. Per output row, the windows wholly
 * inside the input find their first match of y as vector loops over ow,
 * scanning the window backwards with selects so the last match kept is the
 * first in scan order (after a ReLU, ties make an early exit's branch
 * unpredictable); the others through window_first. */
static void maxpool_plane_argmax(const nn_pool_geom *g, const float *xp, const float *yp,
                                 uint16_t *ap) {
  int at[POOL_ROW_MAX];
  const int wd = g->in_w, sw = g->stride_w, kw = g->kernel_w, pl = g->pad_left;
  int in0 = (pl + sw - 1) / sw, in1 = wd - kw + pl < 0 ? 0 : (wd - kw + pl) / sw + 1;
  if (in1 > g->out_w) in1 = g->out_w;
  if (in0 > in1) in0 = in1;
  for (int oh = 0; oh < g->out_h; oh++) {
    const float *yr = yp + (size_t)oh * (size_t)g->out_w;
    uint16_t *ar = ap + (size_t)oh * (size_t)g->out_w;
    const int top = oh * g->stride_h - g->pad_top; /* the window's first row, unclipped */
    int h0 = top, h1 = h0 + g->kernel_h;
    if (h1 > g->in_h) h1 = g->in_h;
    if (h0 < 0) h0 = 0;
    for (int ow = in0; ow < in1; ow++) at[ow] = -1;
    for (int ih = h1 - 1; ih >= h0; ih--) {
      const float *row = xp + (size_t)ih * (size_t)wd;
      for (int k = kw - 1; k >= 0; k--) {
        const int cell = (ih - top) * kw + k;
        const float *r = row - pl + k;
        for (int ow = in0; ow < in1; ow++) at[ow] = r[ow * sw] == yr[ow] ? cell : at[ow];
      }
    }
    for (int ow = 0; ow < g->out_w; ow++) {
      if (ow >= in0 && ow < in1 && at[ow] >= 0) {
        ar[ow] = (uint16_t)at[ow];
      } else {
        ar[ow] = window_index(g, oh, ow, window_first(g, xp, oh, ow, yr[ow]));
      }
    }
  }
}

void nn_maxpool_forward(const nn_pool_geom *g, int n, const float *x, float *y, uint16_t *argmax) {
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
  const long planes = (long)n * g->c;
  const int fast = g->in_w <= POOL_ROW_MAX && (long)g->in_h * g->in_w <= INT_MAX;
#pragma omp parallel for schedule(static)
  for (long pl = 0; pl < planes; pl++) {
    const float *xp = x + (size_t)pl * hw;
    float *yp = y + (size_t)pl * ohw;
    uint16_t *ap = argmax ? argmax + (size_t)pl * ohw : NULL;
    if (fast) {
      maxpool_plane(g, xp, yp);
      if (ap) maxpool_plane_argmax(g, xp, yp, ap);
      continue;
    }
    for (int oh = 0; oh < g->out_h; oh++) {
      for (int ow = 0; ow < g->out_w; ow++) {
        const long at = window_argmax(g, xp, oh, ow);
        const size_t o = (size_t)oh * (size_t)g->out_w + (size_t)ow;
        yp[o] = at < 0 ? -INFINITY : xp[at];
        if (ap) ap[o] = window_index(g, oh, ow, at);
      }
    }
  }
}

void nn_maxpool_backward(const nn_pool_geom *g, int n, const uint16_t *argmax, const float *dy,
                         float *dx) {
  const size_t hw = (size_t)g->in_h * (size_t)g->in_w;
  const size_t ohw = (size_t)g->out_h * (size_t)g->out_w;
  const long planes = (long)n * g->c;
#pragma omp parallel for schedule(static)
  for (long pl = 0; pl < planes; pl++) {
    const uint16_t *ap = argmax + (size_t)pl * ohw;
    const float *dyp = dy + (size_t)pl * ohw;
    float *dxp = dx + (size_t)pl * hw;
    memset(dxp, 0, sizeof(float) * hw);
    for (int oh = 0; oh < g->out_h; oh++) {
      const long h0 = (long)oh * g->stride_h - g->pad_top;
      for (int ow = 0; ow < g->out_w; ow++) {
        const size_t o = (size_t)oh * (size_t)g->out_w + (size_t)ow;
        const int k = ap[o];
        if (k == NN_POOL_NO_ARGMAX) continue;
        const long ih = h0 + k / g->kernel_w;
        const long iw = (long)ow * g->stride_w - g->pad_left + k % g->kernel_w;
        dxp[ih * g->in_w + iw] += dyp[o];
      }
    }
  }
}

/* PyTorch's adaptive bins: [floor(i*in/out), ceil((i+1)*in/out)). */
static inline int bin_start(int i, int in, int out) {
  return (int)(((long)i * in) / out);
}
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
        const float d =
            dyp[(size_t)oh * (size_t)out_w + (size_t)ow] / (float)((h1 - h0) * (w1 - w0));
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) dxp[(size_t)ih * (size_t)w + (size_t)iw] += d;
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* The maxpool and avgpool layers (their rows in nn/kinds.c)                 */

static nn_pool_geom layer_geom(const nn_layer *l) {
  nn_pool_geom g = {
      .c = l->in.c,
      .in_h = l->in.h,
      .in_w = l->in.w,
      .out_h = l->out.h,
      .out_w = l->out.w,
      .kernel_h = l->spec.kernel_h,
      .kernel_w = l->spec.kernel_w,
      .stride_h = l->spec.stride_h,
      .stride_w = l->spec.stride_w,
      .pad_top = l->spec.pad_top,
      .pad_left = l->spec.pad_left,
  };
  return g;
}

/* Saves the argmax for backward unless the network runs without gradients. */
float *nn_maxpool_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  nn_pool_geom g = layer_geom(l);
  nn_maxpool_forward(&g, n, x, y, net->no_grad ? NULL : l->argmax);
  return y;
}

void nn_maxpool_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx) {
  (void)net, (void)x;
  if (!dx) return;
  nn_pool_geom g = layer_geom(l);
  nn_maxpool_backward(&g, n, l->argmax, dy, dx);
}

float *nn_avgpool_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  (void)net;
  nn_avgpool_forward(n, l->in.c, l->in.h, l->in.w, l->out.h, l->out.w, x, y);
  return y;
}

void nn_avgpool_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx) {
  (void)net, (void)x;
  if (dx) nn_avgpool_backward(n, l->in.c, l->in.h, l->in.w, l->out.h, l->out.w, dy, dx);
}
