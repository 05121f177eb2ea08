/*
 * test_nn_layers: every layer kernel of nn/layers.h against a naive reference
 * written here in double with direct loops (forward), and its gradient against
 * central finite differences of that reference (loss = sum(y * r) for a fixed
 * random r) on small odd shapes; larger shapes (the real conv1 geometry, the
 * direct conv plan, chunked batches) against the reference's own analytic
 * gradient, itself checked against finite differences here. The Winograd
 * kernels (3x3 stride 1) are checked directly on any channel count, and
 * through nn_conv_* where the dispatch picks them.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "nn.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state;

static double urand(void) { /* [-1, 1) */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) * 0x1p-52 - 1.0;
}

static float *rand_floats(size_t n, double scale) {
  float *a = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) a[i] = (float)(urand() * scale);
  return a;
}

static double *to_double(const float *a, size_t n) {
  double *d = malloc(sizeof(double) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) d[i] = a ? a[i] : 0.0;
  return d;
}

static float *copy_floats(const float *a, size_t n) {
  float *c = malloc(sizeof(float) * (n ? n : 1));
  memcpy(c, a, sizeof(float) * n);
  return c;
}

static void fill_nan(float *a, size_t n) {
  for (size_t i = 0; i < n; i++) a[i] = NAN;
}

/* An output buffer: NaN until the kernel writes it. */
static float *nan_floats(size_t n) {
  float *a = malloc(sizeof(float) * (n ? n : 1));
  fill_nan(a, n);
  return a;
}

/* max_i |got_i - want_i| / max(|want_i|, 1% of max|want|): elements near the
 * largest are held to a relative error, tiny ones to an absolute one. */
static double err_vs(const float *got, const double *want, size_t n) {
  double big = 1e-30, worst = 0.0;
  for (size_t i = 0; i < n; i++) big = fmax(big, fabs(want[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - want[i]) / fmax(fabs(want[i]), 0.01 * big);
    if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
  }
  return worst;
}

#define EXPECT_CLOSE(got, want, n, tol, what)                                             \
  do {                                                                                    \
    double e_ = err_vs((got), (want), (n));                                               \
    if (!(e_ < (tol))) fprintf(stderr, "\n  %s: error %.3g > %.3g\n", (what), e_, (tol)); \
    CU_ASSERT(e_ < (tol));                                                                \
  } while (0)

/* Central differences of loss(ctx) with respect to each of v[0..n). */
typedef double (*loss_fn)(const void *ctx);
static void fd_grad(loss_fn f, const void *ctx, double *v, size_t n, double eps, double *grad) {
  for (size_t i = 0; i < n; i++) {
    double keep = v[i];
    v[i] = keep + eps;
    double up = f(ctx);
    v[i] = keep - eps;
    double down = f(ctx);
    v[i] = keep;
    grad[i] = (up - down) / (2 * eps);
  }
}

static double dot(const double *a, const double *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* ---- convolution --------------------------------------------------------- */

static nn_conv_geom make_conv(int c, int h, int w, int o, int kh, int kw, int sh, int sw, int pt,
                              int pb, int pl, int pr, int groups) {
  nn_conv_geom g = {c,
                    h,
                    w,
                    o,
                    (h + pt + pb - kh) / sh + 1,
                    (w + pl + pr - kw) / sw + 1,
                    kh,
                    kw,
                    sh,
                    sw,
                    pt,
                    pl,
                    groups,
                    NN_BF16_FP32};
  return g;
}

static size_t conv_x_size(const nn_conv_geom *g, int n) {
  return (size_t)n * g->in_c * g->in_h * g->in_w;
}
static size_t conv_y_size(const nn_conv_geom *g, int n) {
  return (size_t)n * g->out_c * g->out_h * g->out_w;
}
static size_t conv_w_size(const nn_conv_geom *g) {
  return (size_t)g->out_c * (g->in_c / g->groups) * g->kernel_h * g->kernel_w;
}

/* Direct 7-loop convolution; taps outside the input contribute nothing. */
static void ref_conv_forward(const nn_conv_geom *g, int n, const double *x, const double *w,
                             const double *b, int relu, double *y) {
  int cg = g->in_c / g->groups, og = g->out_c / g->groups;
  for (int i = 0; i < n; i++)
    for (int o = 0; o < g->out_c; o++)
      for (int oh = 0; oh < g->out_h; oh++)
        for (int ow = 0; ow < g->out_w; ow++) {
          double s = b ? b[o] : 0.0;
          for (int ci = 0; ci < cg; ci++) {
            int c = (o / og) * cg + ci;
            for (int kh = 0; kh < g->kernel_h; kh++)
              for (int kw = 0; kw < g->kernel_w; kw++) {
                int ih = oh * g->stride_h - g->pad_top + kh;
                int iw = ow * g->stride_w - g->pad_left + kw;
                if (ih < 0 || ih >= g->in_h || iw < 0 || iw >= g->in_w) continue;
                s += x[((size_t)(i * g->in_c + c) * g->in_h + ih) * g->in_w + iw] *
                     w[((size_t)(o * cg + ci) * g->kernel_h + kh) * g->kernel_w + kw];
              }
          }
          if (relu && s < 0) s = 0;
          y[((size_t)(i * g->out_c + o) * g->out_h + oh) * g->out_w + ow] = s;
        }
}

/* The adjoint of the loops above, term by term. */
static void ref_conv_backward(const nn_conv_geom *g, int n, const double *x, const double *w,
                              const double *y, int relu, const double *dy, double *dx, double *dw,
                              double *db) {
  int cg = g->in_c / g->groups, og = g->out_c / g->groups;
  memset(dx, 0, sizeof(double) * conv_x_size(g, n));
  memset(dw, 0, sizeof(double) * conv_w_size(g));
  memset(db, 0, sizeof(double) * g->out_c);
  for (int i = 0; i < n; i++)
    for (int o = 0; o < g->out_c; o++)
      for (int oh = 0; oh < g->out_h; oh++)
        for (int ow = 0; ow < g->out_w; ow++) {
          size_t yi = ((size_t)(i * g->out_c + o) * g->out_h + oh) * g->out_w + ow;
          double d = (relu && !(y[yi] > 0)) ? 0.0 : dy[yi];
          db[o] += d;
          for (int ci = 0; ci < cg; ci++) {
            int c = (o / og) * cg + ci;
            for (int kh = 0; kh < g->kernel_h; kh++)
              for (int kw = 0; kw < g->kernel_w; kw++) {
                int ih = oh * g->stride_h - g->pad_top + kh;
                int iw = ow * g->stride_w - g->pad_left + kw;
                if (ih < 0 || ih >= g->in_h || iw < 0 || iw >= g->in_w) continue;
                size_t xi = ((size_t)(i * g->in_c + c) * g->in_h + ih) * g->in_w + iw;
                size_t wi = ((size_t)(o * cg + ci) * g->kernel_h + kh) * g->kernel_w + kw;
                dx[xi] += w[wi] * d;
                dw[wi] += x[xi] * d;
              }
          }
        }
}

typedef struct {
  const nn_conv_geom *g;
  int n, relu;
  double *x, *w, *b, *r, *y;
} conv_loss_ctx;

static double conv_loss(const void *p) {
  const conv_loss_ctx *c = p;
  ref_conv_forward(c->g, c->n, c->x, c->w, c->b, c->relu, c->y);
  return dot(c->y, c->r, conv_y_size(c->g, c->n));
}

/* Runs the kernel forward and backward with a workspace of exactly
 * nn_conv_workspace_floats(g, n, cap), on 1, 2 and 3 threads (the batch is
 * split between workers), and checks them against the reference; with fd,
 * the gradients also against finite differences. */
static void check_conv(const char *what, const nn_conv_geom *g, int n, int relu, int bias,
                       size_t cap, int fd) {
  size_t xs = conv_x_size(g, n), ys = conv_y_size(g, n), wsz = conv_w_size(g);
  float *x = rand_floats(xs, 1.0), *w = rand_floats(wsz, 0.5), *b = rand_floats(g->out_c, 0.5);
  float *r = rand_floats(ys, 1.0), *y = malloc(sizeof(float) * ys);
  double *xd = to_double(x, xs), *wd = to_double(w, wsz), *bd = to_double(b, g->out_c);
  double *rd = to_double(r, ys), *yd = malloc(sizeof(double) * ys);
  ref_conv_forward(g, n, xd, wd, bias ? bd : NULL, relu, yd);
  double *dxd = malloc(sizeof(double) * xs), *dwd = malloc(sizeof(double) * wsz);
  double *dbd = malloc(sizeof(double) * g->out_c);
  ref_conv_backward(g, n, xd, wd, yd, relu, rd, dxd, dwd, dbd);
  float *dy = malloc(sizeof(float) * ys), *dx = malloc(sizeof(float) * xs);
  float *dw = malloc(sizeof(float) * wsz), *db = malloc(sizeof(float) * g->out_c);
  float *dw2 = malloc(sizeof(float) * wsz);
  char msg[256];
  const int saved_threads = omp_get_max_threads();

  for (int threads = 1; threads <= 3; threads++) {
    omp_set_num_threads(threads);
    size_t wsf = nn_conv_workspace_floats(g, n, cap);
    float *ws = malloc(sizeof(float) * wsf);
    /* Outputs start as NaN: a cell the kernel forgets cannot pass. */
    fill_nan(y, ys), fill_nan(dx, xs), fill_nan(dw, wsz), fill_nan(db, g->out_c);
    fill_nan(dw2, wsz), fill_nan(ws, wsf);
    nn_conv_forward(g, n, x, w, bias ? b : NULL, relu, y, ws, wsf);
    snprintf(msg, sizeof msg, "%s, %d threads: conv forward", what, threads);
    EXPECT_CLOSE(y, yd, ys, 1e-4, msg);

    memcpy(dy, r, sizeof(float) * ys);
    nn_conv_backward(g, n, x, w, y, relu, dy, dx, dw, db, ws, wsf);
    snprintf(msg, sizeof msg, "%s, %d threads: conv dx", what, threads);
    EXPECT_CLOSE(dx, dxd, xs, 1e-4, msg);
    snprintf(msg, sizeof msg, "%s, %d threads: conv dw", what, threads);
    EXPECT_CLOSE(dw, dwd, wsz, 1e-4, msg);
    snprintf(msg, sizeof msg, "%s, %d threads: conv db", what, threads);
    EXPECT_CLOSE(db, dbd, g->out_c, 1e-4, msg);
    /* dy is left masked by y > 0 when relu, untouched otherwise. */
    int masked_ok = 1;
    for (size_t i = 0; i < ys; i++) masked_ok &= dy[i] == ((relu && !(y[i] > 0)) ? 0.0f : r[i]);
    CU_ASSERT(masked_ok);

    /* Without dx and db (a first layer, no bias): the same dw. */
    memcpy(dy, r, sizeof(float) * ys);
    nn_conv_backward(g, n, x, w, y, relu, dy, NULL, dw2, NULL, ws, wsf);
    snprintf(msg, sizeof msg, "%s, %d threads: conv dw without dx", what, threads);
    EXPECT_CLOSE(dw2, dwd, wsz, 1e-4, msg);
    free(ws);

    if (fd && threads == 1) {
      conv_loss_ctx ctx = {g, n, relu, xd, wd, bias ? bd : NULL, rd, malloc(sizeof(double) * ys)};
      double *gx = malloc(sizeof(double) * xs), *gw = malloc(sizeof(double) * wsz);
      double *gb = malloc(sizeof(double) * g->out_c);
      fd_grad(conv_loss, &ctx, xd, xs, 1e-5, gx);
      fd_grad(conv_loss, &ctx, wd, wsz, 1e-5, gw);
      snprintf(msg, sizeof msg, "%s: conv dx vs finite differences", what);
      EXPECT_CLOSE(dx, gx, xs, 1e-4, msg);
      snprintf(msg, sizeof msg, "%s: conv dw vs finite differences", what);
      EXPECT_CLOSE(dw, gw, wsz, 1e-4, msg);
      if (bias) {
        fd_grad(conv_loss, &ctx, bd, g->out_c, 1e-5, gb);
        snprintf(msg, sizeof msg, "%s: conv db vs finite differences", what);
        EXPECT_CLOSE(db, gb, g->out_c, 1e-4, msg);
      }
      free(gx), free(gw), free(gb), free(ctx.y);
    }
  }
  omp_set_num_threads(saved_threads);

  free(x), free(w), free(b), free(r), free(y), free(xd), free(wd), free(bd), free(rd), free(yd);
  free(dy), free(dx), free(dw), free(db), free(dxd), free(dwd), free(dbd), free(dw2);
}

static void test_conv_small_shapes(void) {
  rng_state = 11;
  /* Non-square kernel, stride (2, 1), asymmetric padding, groups 2. */
  nn_conv_geom a = make_conv(4, 9, 8, 6, 3, 2, 2, 1, 1, 2, 0, 1, 2);
  check_conv("k3x2 s2x1 g2", &a, 2, 0, 1, (size_t)1 << 24, 1);
  check_conv("k3x2 s2x1 g2 relu", &a, 2, 1, 1, (size_t)1 << 24, 1);
  /* The paper's conv2 shape, shrunk: k5 p2 groups 2. */
  nn_conv_geom b = make_conv(4, 7, 7, 6, 5, 5, 1, 1, 2, 2, 2, 2, 2);
  check_conv("k5 p2 g2", &b, 3, 1, 1, (size_t)1 << 24, 1);
  /* conv1's k11 s4 with padding [1, 2] (224 -> 55) on a 28 input: 6x6, the
   * last row and column of windows reach into the bottom/right padding. */
  nn_conv_geom c = make_conv(2, 28, 28, 4, 11, 11, 4, 4, 1, 2, 1, 2, 1);
  CU_ASSERT_EQUAL(c.out_h, 6);
  check_conv("k11 s4 p[1,2]", &c, 1, 1, 0, (size_t)1 << 24, 1);
  /* Stride 1 keeping the width, with asymmetric padding: the flat im2col. */
  nn_conv_geom f = make_conv(3, 6, 7, 4, 4, 4, 1, 1, 2, 1, 1, 2, 1);
  CU_ASSERT(f.out_w == f.in_w && f.out_h == f.in_h);
  check_conv("k4 s1 p[2,1]x[1,2]", &f, 2, 1, 1, (size_t)1 << 24, 1);
  /* Outputs up to 64 cells go through a table of taps; larger ones copy rows,
   * or whole planes when the stride is 1 and the width is kept: the same
   * geometries again on larger planes. */
  nn_conv_geom a2 = make_conv(4, 19, 16, 6, 3, 2, 2, 1, 1, 2, 0, 1, 2);
  CU_ASSERT(a2.out_h * a2.out_w > 64);
  check_conv("k3x2 s2x1 g2, rows", &a2, 2, 1, 1, (size_t)1 << 24, 1);
  nn_conv_geom f2 = make_conv(3, 9, 10, 4, 4, 4, 1, 1, 2, 1, 1, 2, 1);
  CU_ASSERT(f2.out_w == f2.in_w && f2.out_h * f2.out_w > 64);
  check_conv("k4 s1 p[2,1]x[1,2], planes", &f2, 2, 1, 1, (size_t)1 << 24, 1);
  /* Kernel 1, stride 3, no padding; and a kernel wider than the input with padding. */
  nn_conv_geom d = make_conv(2, 7, 10, 3, 1, 1, 3, 3, 0, 0, 0, 0, 1);
  check_conv("k1 s3", &d, 2, 0, 1, (size_t)1 << 24, 1);
  nn_conv_geom e = make_conv(2, 3, 2, 4, 2, 5, 1, 2, 0, 1, 2, 2, 2);
  check_conv("k2x5 wider than input", &e, 2, 1, 1, (size_t)1 << 24, 1);
}

/* A workspace cap below the batch forces several chunks, the last one short;
 * with threads, the batch is split between workers (unevenly for 5 images). */
static void test_conv_batch_folding(void) {
  rng_state = 12;
  const int saved_threads = omp_get_max_threads();
  nn_conv_geom g = make_conv(6, 9, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  omp_set_num_threads(1);
  size_t one = nn_conv_workspace_floats(&g, 1, (size_t)1 << 30);
  CU_ASSERT_EQUAL(nn_conv_workspace_floats(&g, 5, 1), one); /* at least one image */
  CU_ASSERT_EQUAL(nn_conv_workspace_floats(&g, 5, 2 * one + 1), 2 * one);
  CU_ASSERT_EQUAL(nn_conv_workspace_floats(&g, 5, (size_t)1 << 30), 5 * one);
  /* More workers need more, but never more than the cap once one image fits. */
  omp_set_num_threads(2);
  CU_ASSERT(nn_conv_workspace_floats(&g, 5, (size_t)1 << 30) > one);
  CU_ASSERT_EQUAL(nn_conv_workspace_floats(&g, 5, 1), one);
  CU_ASSERT(nn_conv_workspace_floats(&g, 5, 3 * one) <= 3 * one);
  omp_set_num_threads(saved_threads);
  /* On one thread: chunks of 2 and of 1; on 2 and 3 the caps below leave room
   * for one worker (cap 1), or for fewer images per worker than it wants. */
  check_conv("5 images, cap 2 images", &g, 5, 1, 1, 2 * one, 0);
  check_conv("5 images, cap 1 float", &g, 5, 0, 1, 1, 0);
  check_conv("5 images, cap 3.5 images", &g, 5, 1, 0, 3 * one + one / 2, 0);
  check_conv("5 images, no cap", &g, 5, 1, 1, (size_t)1 << 30, 0);
  check_conv("1 image, no cap", &g, 1, 1, 1, (size_t)1 << 30, 0);
  /* Stride 2 and a short last chunk of odd width. */
  nn_conv_geom h = make_conv(4, 11, 13, 6, 3, 3, 2, 2, 0, 0, 1, 1, 1);
  omp_set_num_threads(1);
  size_t one_h = nn_conv_workspace_floats(&h, 1, (size_t)1 << 30);
  omp_set_num_threads(saved_threads);
  check_conv("7 images s2, cap 3 images", &h, 7, 1, 1, 3 * one_h, 1);
}

/* Outputs of 2048 pixels and more take the direct (per-image) plan. */
static void test_conv_large_outputs(void) {
  rng_state = 13;
  /* torchvision's conv1 geometry with few channels: 224 -> 55, k11 s4 p[1, 2]. */
  nn_conv_geom g = make_conv(3, 224, 224, 4, 11, 11, 4, 4, 1, 2, 1, 2, 1);
  CU_ASSERT_EQUAL(g.out_h, 55);
  CU_ASSERT_EQUAL(g.out_w, 55);
  check_conv("conv1 224 -> 55", &g, 2, 1, 1, (size_t)1 << 30, 0);
  /* The paper's 227 input without padding gives 55 too. */
  nn_conv_geom p = make_conv(3, 227, 227, 2, 11, 11, 4, 4, 0, 0, 0, 0, 1);
  check_conv("conv1 227 -> 55", &p, 1, 0, 1, (size_t)1 << 30, 0);
  /* Groups and a non-square output in the direct plan. */
  nn_conv_geom q = make_conv(4, 46, 50, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  check_conv("46x50 k3 g2", &q, 3, 1, 1, (size_t)1 << 30, 0);
  /* One image per chunk in the direct plan: on one thread, one image's col. */
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  size_t per_image = (size_t)4 * 9 * 46 * 50;
  CU_ASSERT_EQUAL(nn_conv_workspace_floats(&q, 3, (size_t)1 << 30), per_image);
  omp_set_num_threads(saved_threads);
}

/* ---- winograd ------------------------------------------------------------ */

/* The Winograd kernels called directly (any channel count), with a workspace
 * of exactly nn_winograd_workspace_floats(g, n, cap) filled with NaN, on 1, 2
 * and 3 threads: the forward against the reference, and dx from a dy masked
 * as nn_conv_backward masks it (by the reference's y > 0 when relu). */
static void check_wino(const char *what, const nn_conv_geom *g, int n, int relu, int bias,
                       size_t cap) {
  CU_ASSERT_FATAL(nn_winograd_supports(g));
  size_t xs = conv_x_size(g, n), ys = conv_y_size(g, n), wsz = conv_w_size(g);
  float *x = rand_floats(xs, 1.0), *w = rand_floats(wsz, 0.5), *b = rand_floats(g->out_c, 0.5);
  float *r = rand_floats(ys, 1.0);
  double *xd = to_double(x, xs), *wd = to_double(w, wsz), *bd = to_double(b, g->out_c);
  double *rd = calloc(ys, sizeof(double)), *yd = calloc(ys, sizeof(double));
  for (size_t i = 0; i < ys; i++) rd[i] = r[i];
  double *dxd = malloc(sizeof(double) * xs), *dwd = malloc(sizeof(double) * wsz);
  double *dbd = malloc(sizeof(double) * g->out_c);
  ref_conv_forward(g, n, xd, wd, bias ? bd : NULL, relu, yd);
  ref_conv_backward(g, n, xd, wd, yd, relu, rd, dxd, dwd, dbd);
  float *dy = malloc(sizeof(float) * ys), *y = malloc(sizeof(float) * ys);
  float *dx = malloc(sizeof(float) * xs);
  for (size_t i = 0; i < ys; i++) dy[i] = (relu && !(yd[i] > 0)) ? 0.0f : r[i];
  const int saved_threads = omp_get_max_threads();
  double worst_y = 0.0, worst_dx = 0.0;
  char msg[256];
  for (int threads = 1; threads <= 3; threads++) {
    omp_set_num_threads(threads);
    size_t wsf = nn_winograd_workspace_floats(g, n, cap);
    float *ws = nan_floats(wsf);
    fill_nan(y, ys), fill_nan(dx, xs);
    nn_winograd_forward(g, n, x, w, bias ? b : NULL, relu, y, ws, wsf);
    snprintf(msg, sizeof msg, "%s, %d threads: winograd forward", what, threads);
    EXPECT_CLOSE(y, yd, ys, 1e-4, msg);
    worst_y = fmax(worst_y, err_vs(y, yd, ys));
    fill_nan(ws, wsf);
    nn_winograd_backward_data(g, n, w, dy, dx, ws, wsf);
    snprintf(msg, sizeof msg, "%s, %d threads: winograd dx", what, threads);
    EXPECT_CLOSE(dx, dxd, xs, 1e-4, msg);
    worst_dx = fmax(worst_dx, err_vs(dx, dxd, xs));
    free(ws);
  }
  omp_set_num_threads(saved_threads);
  printf("\n  %-34s forward err %.2g, dx err %.2g", what, worst_y, worst_dx);
  free(x), free(w), free(b), free(r), free(xd), free(wd), free(bd), free(rd), free(yd);
  free(dxd), free(dwd), free(dbd), free(dy), free(y), free(dx);
}

static void test_winograd_kernels(void) {
  rng_state = 14;
  const size_t big = (size_t)1 << 24;
  /* The AlexNet planes (13x13: 7x7 tiles, the last row and column half
   * outside), odd and tiny ones, groups 2, batch 1 and 3. */
  nn_conv_geom a = make_conv(5, 13, 13, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  check_wino("13x13 c5 o7", &a, 1, 1, 1, big);
  check_wino("13x13 c5 o7, no bias, no relu", &a, 3, 0, 0, big);
  nn_conv_geom b = make_conv(4, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  check_wino("7x5 g2", &b, 3, 1, 1, big);
  check_wino("7x5 g2, no relu", &b, 1, 0, 1, big);
  nn_conv_geom c = make_conv(3, 1, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  check_wino("1x1", &c, 3, 1, 1, big);
  nn_conv_geom t23 = make_conv(2, 2, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  check_wino("2x3 g2", &t23, 2, 0, 1, big);
  /* Other paddings: none (9x8 -> 7x6), 2 (5x5 -> 7x7), and asymmetric. */
  nn_conv_geom e = make_conv(3, 9, 8, 4, 3, 3, 1, 1, 0, 0, 0, 0, 1);
  CU_ASSERT(e.out_h == 7 && e.out_w == 6);
  check_wino("pad 0", &e, 2, 1, 1, big);
  nn_conv_geom f = make_conv(3, 5, 5, 4, 3, 3, 1, 1, 2, 2, 2, 2, 1);
  check_wino("pad 2", &f, 2, 1, 1, big);
  nn_conv_geom h = make_conv(4, 6, 7, 2, 3, 3, 1, 1, 0, 2, 2, 0, 2);
  check_wino("pad [0,2]x[2,0]", &h, 2, 0, 1, big);
  /* Padding wider than the kernel: rows and columns of zeros only. */
  nn_conv_geom k = make_conv(2, 3, 4, 3, 3, 3, 1, 1, 3, 1, 4, 2, 1);
  check_wino("pad [3,1]x[4,2]", &k, 2, 1, 1, big);
  /* Small workspaces: one tile column per chunk (cap 1 float), chunks that
   * end inside an image and inside a tile row. */
  check_wino("7x5 g2, cap 1 float", &b, 3, 1, 1, 1);
  nn_conv_geom m = make_conv(3, 13, 13, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  size_t u = (size_t)16 * 5 * 3, per_col = (size_t)16 * (3 + 5);
  check_wino("13x13, cap 10 columns", &m, 3, 1, 1, u + 10 * per_col + 4096);
  /* The sizing: at most the cap once the transformed weights and one column
   * per worker fit; the same for any cap below that. */
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(2);
  size_t cap = u + 10 * per_col + 4096;
  CU_ASSERT(nn_winograd_workspace_floats(&m, 3, cap) <= cap);
  CU_ASSERT_EQUAL(nn_winograd_workspace_floats(&m, 3, 1), nn_winograd_workspace_floats(&m, 3, 2));
  CU_ASSERT(nn_winograd_workspace_floats(&m, 3, big) >= nn_winograd_workspace_floats(&m, 3, cap));
  omp_set_num_threads(saved_threads);
}

static void test_winograd_dispatch(void) {
  rng_state = 15;
  const char *env = getenv("ALEXNET_CONV_ALGO");
  const int on = !(env && strcmp(env, "im2col") == 0); /* this process's setting */
  /* AlexNet's conv3-5 (and the paper's groups 2) use Winograd; stride 2,
   * 5x5 kernels, thin groups and 1x1 planes do not. */
  nn_conv_geom c3 = make_conv(192, 13, 13, 384, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  nn_conv_geom c4 = make_conv(384, 13, 13, 384, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  CU_ASSERT_EQUAL(nn_winograd_applies(&c3), on);
  CU_ASSERT_EQUAL(nn_winograd_applies(&c4), on);
  nn_conv_geom s2 = make_conv(64, 32, 32, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1);
  nn_conv_geom k5 = make_conv(96, 27, 27, 256, 5, 5, 1, 1, 2, 2, 2, 2, 2);
  nn_conv_geom thin = make_conv(30, 13, 13, 64, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  nn_conv_geom one = make_conv(64, 1, 1, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  CU_ASSERT(!nn_winograd_supports(&s2) && !nn_winograd_applies(&s2));
  CU_ASSERT(!nn_winograd_supports(&k5) && !nn_winograd_applies(&k5));
  CU_ASSERT(nn_winograd_supports(&thin) && !nn_winograd_applies(&thin));
  CU_ASSERT(nn_winograd_supports(&one) && !nn_winograd_applies(&one));
  /* The conv's workspace covers Winograd's. */
  CU_ASSERT(nn_conv_workspace_floats(&c4, 64, (size_t)1 << 24) >=
            (on ? nn_winograd_workspace_floats(&c4, 64, (size_t)1 << 24) : 0));
  /* nn_conv_forward/backward through Winograd: against the reference and
   * finite differences (dx, dw, db and dy's mask), dense and groups 2. */
  nn_conv_geom a = make_conv(16, 4, 3, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  nn_conv_geom g2 = make_conv(32, 4, 3, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  CU_ASSERT_EQUAL(nn_winograd_applies(&a), on);
  CU_ASSERT_EQUAL(nn_winograd_applies(&g2), on);
  check_conv("winograd 4x3 c16", &a, 2, 1, 1, (size_t)1 << 24, 1);
  check_conv("winograd 4x3 c32 g2", &g2, 1, 1, 1, (size_t)1 << 24, 1);
  /* The real plane on several images, small caps included. */
  nn_conv_geom p = make_conv(16, 13, 13, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  CU_ASSERT_EQUAL(nn_winograd_applies(&p), on);
  check_conv("winograd 13x13 c16 o24", &p, 3, 1, 1, (size_t)1 << 24, 0);
  check_conv("winograd 13x13, cap 1 float", &p, 3, 0, 1, 1, 0);
}

/* ---- fully connected ----------------------------------------------------- */

static void ref_linear(int n, int in, int out, const double *x, const double *w, const double *b,
                       int relu, double *y) {
  for (int i = 0; i < n; i++)
    for (int o = 0; o < out; o++) {
      double s = b ? b[o] : 0.0;
      for (int k = 0; k < in; k++) s += x[i * in + k] * w[o * in + k];
      y[i * out + o] = (relu && s < 0) ? 0.0 : s;
    }
}

typedef struct {
  int n, in, out, relu;
  double *x, *w, *b, *r, *y;
} linear_ctx;

static double linear_loss(const void *p) {
  const linear_ctx *c = p;
  ref_linear(c->n, c->in, c->out, c->x, c->w, c->b, c->relu, c->y);
  return dot(c->y, c->r, (size_t)c->n * c->out);
}

static void check_linear(int n, int in, int out, int relu, int bias) {
  size_t xs = (size_t)n * in, ys = (size_t)n * out, wsz = (size_t)out * in;
  float *x = rand_floats(xs, 1.0), *w = rand_floats(wsz, 0.5), *b = rand_floats(out, 0.5);
  float *r = rand_floats(ys, 1.0), *y = nan_floats(ys);
  nn_linear_forward(NN_BF16_FP32, n, in, out, x, w, bias ? b : NULL, relu, y);
  double *xd = to_double(x, xs), *wd = to_double(w, wsz), *bd = to_double(b, out);
  double *rd = to_double(r, ys), *yd = malloc(sizeof(double) * ys);
  linear_ctx ctx = {n, in, out, relu, xd, wd, bias ? bd : NULL, rd, yd};
  linear_loss(&ctx);
  EXPECT_CLOSE(y, yd, ys, 1e-5, "linear forward");

  float *dy = copy_floats(r, ys), *dx = nan_floats(xs);
  float *dw = nan_floats(wsz), *db = nan_floats(out);
  nn_linear_backward(NN_BF16_FP32, n, in, out, x, w, y, relu, dy, dx, dw, db);
  double *gx = malloc(sizeof(double) * xs), *gw = malloc(sizeof(double) * wsz);
  double *gb = malloc(sizeof(double) * out);
  fd_grad(linear_loss, &ctx, xd, xs, 1e-5, gx);
  fd_grad(linear_loss, &ctx, wd, wsz, 1e-5, gw);
  EXPECT_CLOSE(dx, gx, xs, 1e-4, "linear dx");
  EXPECT_CLOSE(dw, gw, wsz, 1e-4, "linear dw");
  if (bias) {
    fd_grad(linear_loss, &ctx, bd, out, 1e-5, gb);
    EXPECT_CLOSE(db, gb, out, 1e-4, "linear db");
  }
  float *dy2 = copy_floats(r, ys), *dw2 = nan_floats(wsz);
  nn_linear_backward(NN_BF16_FP32, n, in, out, x, w, y, relu, dy2, NULL, dw2, NULL);
  EXPECT_CLOSE(dw2, gw, wsz, 1e-4, "linear dw without dx");
  free(x), free(w), free(b), free(r), free(y), free(xd), free(wd), free(bd), free(rd), free(yd);
  free(dy), free(dx), free(dw), free(db), free(gx), free(gw), free(gb), free(dy2), free(dw2);
}

static void test_linear(void) {
  rng_state = 21;
  check_linear(3, 7, 5, 0, 1);
  check_linear(4, 13, 9, 1, 1);
  check_linear(1, 5, 3, 1, 0);
  check_linear(5, 33, 17, 0, 0);
}

/* ---- pointwise ----------------------------------------------------------- */

static void test_relu_tanh(void) {
  rng_state = 31;
  const size_t n = 1001;
  float *x = rand_floats(n, 2.0), *r = rand_floats(n, 1.0), *y = nan_floats(n);
  float *dx = nan_floats(n);
  int ok = 1;
  nn_relu_forward(n, x, y);
  for (size_t i = 0; i < n; i++) ok &= y[i] == (x[i] > 0 ? x[i] : 0.0f);
  nn_relu_backward(n, y, r, dx);
  for (size_t i = 0; i < n; i++) ok &= dx[i] == (x[i] > 0 ? r[i] : 0.0f);
  CU_ASSERT(ok);
  /* In place, both ways. */
  float *z = copy_floats(x, n), *dz = copy_floats(r, n);
  nn_relu_forward(n, z, z);
  nn_relu_backward(n, z, dz, dz);
  CU_ASSERT(memcmp(z, y, sizeof(float) * n) == 0);
  CU_ASSERT(memcmp(dz, dx, sizeof(float) * n) == 0);

  /* tanh: values, and the gradient against finite differences in double. */
  double *want = malloc(sizeof(double) * n), *gd = malloc(sizeof(double) * n);
  nn_tanh_forward(n, x, y);
  for (size_t i = 0; i < n; i++) want[i] = tanh((double)x[i]);
  EXPECT_CLOSE(y, want, n, 1e-6, "tanh forward");
  nn_tanh_backward(n, y, r, dx);
  for (size_t i = 0; i < n; i++) {
    double e = 1e-5;
    gd[i] = r[i] * (tanh((double)x[i] + e) - tanh((double)x[i] - e)) / (2 * e);
  }
  EXPECT_CLOSE(dx, gd, n, 1e-5, "tanh backward");
  memcpy(dz, r, sizeof(float) * n);
  nn_tanh_backward(n, y, dz, dz);
  CU_ASSERT(memcmp(dz, dx, sizeof(float) * n) == 0);
  free(x), free(r), free(y), free(dx), free(z), free(dz), free(want), free(gd);
}

static void test_dropout(void) {
  const size_t n = 200003;
  float *x = nan_floats(n), *y = nan_floats(n);
  float *y2 = nan_floats(n), *dx = nan_floats(n);
  for (size_t i = 0; i < n; i++) x[i] = 1.0f + (float)(i % 7);
  const float p = 0.3f, scale = 1.0f / (1.0f - p);
  nn_dropout_forward(n, p, 42, x, y);
  nn_dropout_forward(n, p, 42, x, y2);
  CU_ASSERT(memcmp(y, y2, sizeof(float) * n) == 0); /* same seed, same mask */
  size_t dropped = 0;
  int rule_ok = 1, value_ok = 1;
  for (size_t i = 0; i < n; i++) {
    int keep = nn_uniform(42, i) >= p;
    rule_ok &= keep == (y[i] != 0.0f);
    if (keep) value_ok &= y[i] == x[i] * scale;
    dropped += y[i] == 0.0f;
  }
  CU_ASSERT(rule_ok);
  CU_ASSERT(value_ok);
  double frac = (double)dropped / n;
  CU_ASSERT(fabs(frac - p) < 0.005);
  /* Another seed, another mask. */
  nn_dropout_forward(n, p, 43, x, y2);
  size_t differ = 0;
  for (size_t i = 0; i < n; i++) differ += (y[i] == 0.0f) != (y2[i] == 0.0f);
  CU_ASSERT(differ > n / 4);
  /* Backward applies the same mask and scale; in place works. */
  nn_dropout_backward(n, p, 42, x, dx);
  CU_ASSERT(memcmp(dx, y, sizeof(float) * n) == 0);
  memcpy(y2, x, sizeof(float) * n);
  nn_dropout_forward(n, p, 42, y2, y2);
  CU_ASSERT(memcmp(y2, y, sizeof(float) * n) == 0);
  /* A slice starting at element `first` gets the whole array's mask there
   * (a rank holding part of a global batch), forward and backward. */
  const size_t first = 1000, part = 5003;
  nn_dropout_forward_at(part, p, 42, first, x + first, y2);
  CU_ASSERT(memcmp(y2, y + first, sizeof(float) * part) == 0);
  nn_dropout_backward_at(part, p, 42, first, x + first, y2);
  CU_ASSERT(memcmp(y2, y + first, sizeof(float) * part) == 0);
  /* p = 0 is the identity, p = 1 drops everything. */
  nn_dropout_forward(n, 0.0f, 42, x, y2);
  CU_ASSERT(memcmp(y2, x, sizeof(float) * n) == 0);
  nn_dropout_forward(n, 1.0f, 42, x, y2);
  int all_zero = 1;
  for (size_t i = 0; i < n; i++) all_zero &= y2[i] == 0.0f;
  CU_ASSERT(all_zero);
  free(x), free(y), free(y2), free(dx);
}

/* ---- local response normalization ---------------------------------------- */

typedef struct {
  int n, c, h, w, size;
  double alpha, beta, k;
  double *x, *r, *y;
} lrn_ctx;

/* Straight from PyTorch's definition: avg of x^2 over the zero-padded window
 * of `size` channels (padding size/2 before, (size-1)/2 after). */
static void ref_lrn(const lrn_ctx *c, const double *x, double *scale, double *y) {
  size_t hw = (size_t)c->h * c->w;
  for (int i = 0; i < c->n; i++)
    for (int ch = 0; ch < c->c; ch++)
      for (size_t p = 0; p < hw; p++) {
        double s = 0.0;
        for (int t = 0; t < c->size; t++) {
          int j = ch - c->size / 2 + t;
          if (j < 0 || j >= c->c) continue;
          double v = x[((size_t)i * c->c + j) * hw + p];
          s += v * v;
        }
        size_t at = ((size_t)i * c->c + ch) * hw + p;
        double sc = c->k + c->alpha * s / c->size;
        if (scale) scale[at] = sc;
        y[at] = x[at] / pow(sc, c->beta);
      }
}

static double lrn_loss(const void *p) {
  const lrn_ctx *c = p;
  ref_lrn(c, c->x, NULL, c->y);
  return dot(c->y, c->r, (size_t)c->n * c->c * c->h * c->w);
}

static void check_lrn(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                      double xscale) {
  size_t cnt = (size_t)n * c * h * w;
  float *x = rand_floats(cnt, xscale), *r = rand_floats(cnt, 1.0);
  float *y = nan_floats(cnt);
  float *dx = nan_floats(cnt);
  nn_lrn_forward(n, c, h, w, size, alpha, beta, k, x, y);
  lrn_ctx ctx = {n,
                 c,
                 h,
                 w,
                 size,
                 alpha,
                 beta,
                 k,
                 to_double(x, cnt),
                 to_double(r, cnt),
                 malloc(sizeof(double) * cnt)};
  double *yd = malloc(sizeof(double) * cnt);
  ref_lrn(&ctx, ctx.x, NULL, yd);
  EXPECT_CLOSE(y, yd, cnt, 1e-5, "lrn forward");
  /* Backward from x alone, with room for one thread, then for two. */
  size_t ws_floats = nn_lrn_workspace_floats(c, h, w, 1);
  float *ws = nan_floats(2 * ws_floats);
  nn_lrn_backward(n, c, h, w, size, alpha, beta, k, x, r, dx, ws, ws_floats);
  double *g = malloc(sizeof(double) * cnt);
  fd_grad(lrn_loss, &ctx, ctx.x, cnt, 1e-5 * xscale, g);
  EXPECT_CLOSE(dx, g, cnt, 1e-4, "lrn backward vs finite differences");
  /* In place over dy, two workers: the same bits. */
  float *dy = malloc(sizeof(float) * cnt);
  memcpy(dy, r, sizeof(float) * cnt);
  nn_lrn_backward(n, c, h, w, size, alpha, beta, k, x, dy, dy, ws, 2 * ws_floats);
  CU_ASSERT(memcmp(dy, dx, sizeof(float) * cnt) == 0);
  free(x), free(r), free(y), free(dx), free(dy), free(ws), free(ctx.x), free(ctx.r), free(ctx.y);
  free(yd), free(g);
}

static void test_lrn(void) {
  rng_state = 41;
  /* AlexNet's (5, 1e-4, 0.75, 2) on values large enough for the sum to matter. */
  check_lrn(2, 9, 3, 5, 5, 1e-4f, 0.75f, 2.0f, 30.0);
  /* Stronger normalization so every term of the gradient shows. */
  check_lrn(2, 7, 2, 3, 5, 0.5f, 0.75f, 1.0f, 2.0);
  /* Even size (asymmetric window), a general beta, beta 0.5. */
  check_lrn(1, 8, 3, 3, 4, 0.8f, 0.6f, 1.5f, 2.0);
  check_lrn(2, 6, 1, 7, 3, 1.0f, 0.5f, 1.0f, 2.0);
  /* Window wider than the channels; a plane larger than one tile. */
  check_lrn(1, 3, 2, 2, 7, 0.9f, 0.75f, 1.0f, 2.0);
  check_lrn(2, 4, 17, 19, 5, 0.5f, 0.75f, 1.0f, 2.0);
}

/* ---- pooling ------------------------------------------------------------- */

static nn_pool_geom make_pool(int c, int h, int w, int kh, int kw, int sh, int sw, int pt, int pb,
                              int pl, int pr) {
  nn_pool_geom g = {c,  h,  w, (h + pt + pb - kh) / sh + 1, (w + pl + pr - kw) / sw + 1, kh, kw, sh,
                    sw, pt, pl};
  return g;
}

/* Max over the valid cells of each window; the gradient goes to the first
 * maximum met in row-major order. */
static void ref_maxpool(const nn_pool_geom *g, int n, const double *x, const double *dy, double *y,
                        double *dx) {
  size_t hw = (size_t)g->in_h * g->in_w, ohw = (size_t)g->out_h * g->out_w;
  if (dx) memset(dx, 0, sizeof(double) * n * g->c * hw);
  for (int pl = 0; pl < n * g->c; pl++)
    for (int oh = 0; oh < g->out_h; oh++)
      for (int ow = 0; ow < g->out_w; ow++) {
        double m = -INFINITY;
        long at = -1;
        for (int kh = 0; kh < g->kernel_h; kh++)
          for (int kw = 0; kw < g->kernel_w; kw++) {
            int ih = oh * g->stride_h - g->pad_top + kh, iw = ow * g->stride_w - g->pad_left + kw;
            if (ih < 0 || ih >= g->in_h || iw < 0 || iw >= g->in_w) continue;
            double v = x[pl * hw + (size_t)ih * g->in_w + iw];
            if (at < 0 || v > m) m = v, at = (long)ih * g->in_w + iw;
          }
        size_t o = pl * ohw + (size_t)oh * g->out_w + ow;
        if (y) y[o] = m;
        if (dx) dx[pl * hw + at] += dy[o];
      }
}

typedef struct {
  const nn_pool_geom *g;
  int n;
  double *x, *r, *y;
} pool_ctx;

static double maxpool_loss(const void *p) {
  const pool_ctx *c = p;
  ref_maxpool(c->g, c->n, c->x, NULL, c->y, NULL);
  return dot(c->y, c->r, (size_t)c->n * c->g->c * c->g->out_h * c->g->out_w);
}

static void check_maxpool(const nn_pool_geom *g, int n, int fd) {
  size_t xs = (size_t)n * g->c * g->in_h * g->in_w, ys = (size_t)n * g->c * g->out_h * g->out_w;
  /* Distinct values at least 1e-3 apart (a shuffled ramp), so no window has a
   * near-tie the finite differences could cross; all negative so a padded
   * cell taken as 0 instead of -inf would show. */
  float *x = malloc(sizeof(float) * xs);
  for (size_t i = 0; i < xs; i++) x[i] = -(float)(i + 1) * 1e-3f;
  for (size_t i = xs - 1; i > 0; i--) {
    size_t j = (size_t)((urand() + 1.0) * 0.5 * (double)(i + 1)) % (i + 1);
    float t = x[i];
    x[i] = x[j], x[j] = t;
  }
  float *r = rand_floats(ys, 1.0), *y = nan_floats(ys);
  float *dx = nan_floats(xs);
  uint16_t *am = malloc(sizeof(uint16_t) * ys);
  nn_maxpool_forward(g, n, x, y, am);
  pool_ctx ctx = {g, n, to_double(x, xs), to_double(r, ys), malloc(sizeof(double) * ys)};
  double *yd = malloc(sizeof(double) * ys), *dxd = malloc(sizeof(double) * xs);
  ref_maxpool(g, n, ctx.x, ctx.r, yd, dxd);
  EXPECT_CLOSE(y, yd, ys, 1e-7, "maxpool forward");
  nn_maxpool_backward(g, n, am, r, dx);
  EXPECT_CLOSE(dx, dxd, xs, 1e-5, "maxpool backward");
  /* Without an argmax (evaluation), the same values. */
  float *y2 = nan_floats(ys);
  nn_maxpool_forward(g, n, x, y2, NULL);
  CU_ASSERT(memcmp(y, y2, sizeof(float) * ys) == 0);
  free(y2), free(am);
  double *gd = malloc(sizeof(double) * xs);
  if (fd) {
    fd_grad(maxpool_loss, &ctx, ctx.x, xs, 1e-5, gd);
    EXPECT_CLOSE(dx, gd, xs, 1e-6, "maxpool backward vs finite differences");
  }
  free(x), free(r), free(y), free(dx), free(ctx.x), free(ctx.r), free(ctx.y), free(yd), free(dxd);
  free(gd);
}

static void test_maxpool(void) {
  rng_state = 51;
  nn_pool_geom a = make_pool(3, 13, 13, 3, 3, 2, 2, 0, 0, 0, 0); /* AlexNet's 3/2 */
  check_maxpool(&a, 2, 1);
  nn_pool_geom b = make_pool(2, 8, 9, 2, 2, 2, 2, 0, 0, 0, 0); /* 2x2, odd width floors */
  check_maxpool(&b, 2, 1);
  nn_pool_geom c = make_pool(2, 7, 6, 3, 2, 2, 1, 1, 1, 0, 1); /* padded, non-square */
  check_maxpool(&c, 3, 1);
  nn_pool_geom e = make_pool(2, 6, 7, 2, 3, 2, 2, 1, 0, 1, 1); /* padded left and top */
  check_maxpool(&e, 2, 1);
  /* Rows wider than the forward's row buffer take the plain scan. */
  nn_pool_geom d = make_pool(1, 3, 4101, 2, 3, 1, 2, 0, 1, 1, 1);
  check_maxpool(&d, 1, 0);
}

/* Ties go to the first maximum in row-major order, in forward and backward. */
static void test_maxpool_ties(void) {
  nn_pool_geom g = make_pool(1, 4, 4, 3, 3, 1, 1, 0, 0, 0, 0); /* 2x2 outputs */
  float x[16] = {1, 0, 5, 0, /* window (0,0): 5 at (0,2) and (1,0) */
                 5, 2, 2, 2, /* window (0,1): 5 at (0,2) */
                 3, 3, 3, 2, /* windows (1,*): 5 at (1,0) for (1,0); (1,1) all <= 3 */
                 3, 3, 3, 3};
  float y[4], dy[4] = {1, 10, 100, 1000}, dx[16];
  uint16_t am[4];
  nn_maxpool_forward(&g, 1, x, y, am);
  CU_ASSERT(y[0] == 5 && y[1] == 5 && y[2] == 5 && y[3] == 3);
  nn_maxpool_backward(&g, 1, am, dy, dx);
  /* (0,0) -> (0,2); (0,1) -> (0,2); (1,0) -> (1,0); (1,1): first 3 of rows 1..3,
   * cols 1..3 in row-major order is (2,1). */
  float want[16] = {0, 0, 11, 0, 100, 0, 0, 0, 0, 1000, 0, 0, 0, 0, 0, 0};
  CU_ASSERT(memcmp(dx, want, sizeof want) == 0);
  /* All equal: the gradient goes to the window's top-left cell. */
  float flat[16];
  for (int i = 0; i < 16; i++) flat[i] = -2.0f;
  nn_pool_geom p = make_pool(1, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
  nn_maxpool_forward(&p, 1, flat, y, am);
  nn_maxpool_backward(&p, 1, am, dy, dx);
  float want_flat[16] = {1, 0, 10, 0, 0, 0, 0, 0, 100, 0, 1000, 0, 0, 0, 0, 0};
  CU_ASSERT(memcmp(dx, want_flat, sizeof want_flat) == 0);
  /* Padding is -inf: a window of negative values keeps its maximum. */
  nn_pool_geom q = make_pool(1, 4, 4, 3, 3, 2, 2, 1, 1, 1, 1);
  nn_maxpool_forward(&q, 1, flat, y, am);
  CU_ASSERT(y[0] == -2.0f && y[3] == -2.0f);
  /* A NaN wins its windows, and takes their gradient, as in PyTorch. */
  float xn[16] = {1, 2, 3, 4, 5, NAN, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  nn_maxpool_forward(&g, 1, xn, y, am); /* 3x3 stride 1: every window holds (1,1) */
  CU_ASSERT(isnan(y[0]) && isnan(y[1]) && isnan(y[2]) && isnan(y[3]));
  nn_maxpool_backward(&g, 1, am, dy, dx);
  CU_ASSERT(dx[5] == 1111.0f && dx[0] == 0.0f && dx[15] == 0.0f);
}

static void ref_avgpool(int n, int c, int h, int w, int oh_n, int ow_n, const double *x,
                        double *y) {
  for (int pl = 0; pl < n * c; pl++)
    for (int oh = 0; oh < oh_n; oh++)
      for (int ow = 0; ow < ow_n; ow++) {
        int h0 = (int)floor((double)oh * h / oh_n), h1 = (int)ceil((double)(oh + 1) * h / oh_n);
        int w0 = (int)floor((double)ow * w / ow_n), w1 = (int)ceil((double)(ow + 1) * w / ow_n);
        double s = 0.0;
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) s += x[((size_t)pl * h + ih) * w + iw];
        y[((size_t)pl * oh_n + oh) * ow_n + ow] = s / ((h1 - h0) * (w1 - w0));
      }
}

typedef struct {
  int n, c, h, w, oh, ow;
  double *x, *r, *y;
} avg_ctx;

static double avgpool_loss(const void *p) {
  const avg_ctx *c = p;
  ref_avgpool(c->n, c->c, c->h, c->w, c->oh, c->ow, c->x, c->y);
  return dot(c->y, c->r, (size_t)c->n * c->c * c->oh * c->ow);
}

static void check_avgpool(int n, int c, int h, int w, int oh, int ow) {
  size_t xs = (size_t)n * c * h * w, ys = (size_t)n * c * oh * ow;
  float *x = rand_floats(xs, 1.0), *r = rand_floats(ys, 1.0), *y = nan_floats(ys);
  float *dx = nan_floats(xs);
  nn_avgpool_forward(n, c, h, w, oh, ow, x, y);
  avg_ctx ctx = {
      n, c, h, w, oh, ow, to_double(x, xs), to_double(r, ys), malloc(sizeof(double) * ys)};
  avgpool_loss(&ctx);
  EXPECT_CLOSE(y, ctx.y, ys, 1e-5, "avgpool forward");
  nn_avgpool_backward(n, c, h, w, oh, ow, r, dx);
  double *g = malloc(sizeof(double) * xs);
  fd_grad(avgpool_loss, &ctx, ctx.x, xs, 1e-5, g);
  EXPECT_CLOSE(dx, g, xs, 1e-5, "avgpool backward vs finite differences");
  free(x), free(r), free(y), free(dx), free(ctx.x), free(ctx.r), free(ctx.y), free(g);
}

static void test_avgpool(void) {
  rng_state = 61;
  check_avgpool(2, 3, 13, 13, 6, 6); /* overlapping bins */
  check_avgpool(1, 2, 6, 6, 6, 6);   /* identity */
  check_avgpool(2, 2, 7, 5, 3, 2);
  check_avgpool(1, 1, 2, 3, 5, 4); /* output larger than input */
  check_avgpool(1, 3, 9, 9, 1, 1); /* global */
}

/* ---- loss ---------------------------------------------------------------- */

typedef struct {
  int n, classes;
  const int *labels;
  double *z;
} xent_ctx;

static double ref_xent(const void *p) {
  const xent_ctx *c = p;
  double total = 0.0;
  for (int i = 0; i < c->n; i++) {
    const double *z = c->z + (size_t)i * c->classes;
    double m = z[0], s = 0.0;
    for (int j = 1; j < c->classes; j++) m = fmax(m, z[j]);
    for (int j = 0; j < c->classes; j++) s += exp(z[j] - m);
    total += m + log(s) - z[c->labels[i]];
  }
  return total / c->n;
}

static void test_softmax_xent(void) {
  rng_state = 71;
  const int n = 5, classes = 11;
  int labels[5] = {0, 3, 10, 7, 3};
  float *z = rand_floats((size_t)n * classes, 4.0), *dz = nan_floats(n * classes);
  /* A row of huge logits: stable only if the max is taken out. */
  for (int j = 0; j < classes; j++) z[2 * classes + j] += 1000.0f;
  int c1 = -1, c5 = -1;
  float loss = nn_softmax_xent(n, classes, z, labels, dz, &c1, &c5);
  xent_ctx ctx = {n, classes, labels, to_double(z, (size_t)n * classes)};
  double want = ref_xent(&ctx);
  CU_ASSERT(isfinite(loss));
  CU_ASSERT(fabs(loss - want) < 1e-5 * fmax(1.0, fabs(want)));
  double *g = malloc(sizeof(double) * n * classes);
  fd_grad(ref_xent, &ctx, ctx.z, (size_t)n * classes, 1e-5, g);
  EXPECT_CLOSE(dz, g, (size_t)n * classes, 1e-5, "softmax xent gradient");
  /* Counts from ranks computed here. */
  int w1 = 0, w5 = 0;
  for (int i = 0; i < n; i++) {
    int rank = 0;
    for (int j = 0; j < classes; j++) rank += z[i * classes + j] > z[i * classes + labels[i]];
    w1 += rank < 1, w5 += rank < 5;
  }
  CU_ASSERT_EQUAL(c1, w1);
  CU_ASSERT_EQUAL(c5, w5);
  /* NULL outputs are allowed. */
  CU_ASSERT(nn_softmax_xent(n, classes, z, labels, NULL, NULL, NULL) == loss);
  free(z), free(dz), free(ctx.z), free(g);
}

/* rank = classes with a strictly larger logit; hit@k when rank < k. */
static void test_topk_ties(void) {
  float z[3][8] = {
      {1, 5, 5, 0, 0, 0, 0, 0}, /* label 2 ties the max (class 1): top-1 hit */
      {9, 8, 7, 6, 5, 4, 4, 0}, /* label 5: 5 strictly above: miss at 5 */
      {9, 8, 7, 6, 4, 4, 4, 0}, /* label 6: 4 strictly above: hit at 5, miss at 1 */
  };
  int labels[3] = {2, 5, 6}, c1 = 0, c5 = 0;
  float loss = nn_softmax_xent(3, 8, &z[0][0], labels, NULL, &c1, &c5);
  CU_ASSERT(isfinite(loss));
  CU_ASSERT_EQUAL(c1, 1);
  CU_ASSERT_EQUAL(c5, 2);
  /* Uniform logits: loss ln(classes), every label a hit. */
  float u[2][8] = {{0}};
  int l2[2] = {0, 7};
  loss = nn_softmax_xent(2, 8, &u[0][0], l2, NULL, &c1, &c5);
  CU_ASSERT(fabs(loss - log(8.0)) < 1e-6);
  CU_ASSERT_EQUAL(c1, 2);
  CU_ASSERT_EQUAL(c5, 2);
}

int main(void) {
  static const tu_test conv[] = {
      {"small shapes vs reference and finite differences", test_conv_small_shapes},
      {"batch folded in chunks", test_conv_batch_folding},
      {"large outputs (direct plan)", test_conv_large_outputs},
      {NULL, NULL}};
  static const tu_test others[] = {{"linear", test_linear},
                                   {"relu and tanh", test_relu_tanh},
                                   {"dropout", test_dropout},
                                   {"lrn", test_lrn},
                                   {"maxpool", test_maxpool},
                                   {"maxpool ties and padding", test_maxpool_ties},
                                   {"adaptive avgpool", test_avgpool},
                                   {"softmax cross-entropy", test_softmax_xent},
                                   {"top-k with ties", test_topk_ties},
                                   {NULL, NULL}};
  static const tu_test winograd[] = {
      {"kernels vs reference: odd planes, paddings, groups, small workspaces",
       test_winograd_kernels},
      {"dispatch, and the conv through it vs reference and finite differences",
       test_winograd_dispatch},
      {NULL, NULL}};
  tu_add_suite("conv", conv);
  tu_add_suite("winograd", winograd);
  tu_add_suite("layers", others);
  return tu_run_all();
}
