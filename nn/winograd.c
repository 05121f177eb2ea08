/*
 * nn/winograd.c: 3x3 stride-1 convolutions (any padding, groups) by Winograd's
 * minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2015): the forward, and the input gradient,
 * which is the same kind of convolution of dy with each kernel turned by 180
 * degrees and the channel roles swapped.
 *
 * The output plane is cut into 2x2 tiles, each computed from a 4x4 input tile
 * d and a kernel g as Y = A^T [(G g G^T) . (B^T d B)] A. Across the channels
 * this is 16 matrix products, one per point p of the 4x4 transformed tile:
 *   M_p (N, O) = V_p (N, C/G) x U_p (C/G, O)   (per group)
 * with N the tiles, V_p the transformed input tiles and U_p the transformed
 * weights. That is 16 multiply-adds per tile per channel pair against
 * im2col's 9 per output pixel (36 per tile): 2.25x fewer, 1.94x on AlexNet's
 * 13x13 planes, whose 7x7 tiles cover 14x14.
 *
 * Why F(2x2, 3x3): in float32 its error is that of the direct sum (the
 * transforms only add, subtract and halve). F(3x3, 3x3) and F(4x4, 3x3)
 * would save another 20% and 26% of the multiplies on 13x13 planes (their
 * tiles waste more there), but their largest relative error on a 384-channel
 * layer was 1.0e-4 and 1.3e-4 to 4.4e-4 (depending on the points), against
 * 2e-5 for F(2x2) and for the direct sum: over the 1e-4 the parity tests hold
 * nn to. The weight gradient stays on im2col (nn/conv.c): F(3x3, 2x2) for it
 * sums every tile of the batch before an output transform that cancels, and
 * reached 7e-5 in a float32 model of 8 images where im2col's sum had 8e-6.
 *
 * Channels are the innermost dimension of V and M (a tile is a row), so the
 * transforms run down the channels in full vectors whatever the plane (a
 * 13x13 plane has rows of only 7 tiles, too short to vectorize along): the
 * input is staged channels-last one image at a time (xh), and the output
 * likewise (yh) on its way back to NCHW with the bias and the ReLU. With
 * tiles innermost instead, the transforms took 40% of the GEMMs' time (perf,
 * conv4's shape); here 15%.
 *
 * Work is split like nn/conv.c: the n * tiles tile columns are divided between
 * P workers (OpenMP threads), each transforming a chunk of columns into its
 * own slice of the workspace, running single-threaded sgemm on it (OpenBLAS's
 * OpenMP build runs on one thread inside a parallel region) and transforming
 * the products back into the output; the weights are transformed first, by
 * all workers together. Chunks are sized for the GEMMs, not for cache (V and
 * M hold 16 * (C + O) floats per column): OpenBLAS gives 80-87 GFLOP/s per
 * core on these shapes from about 96 columns on, and 89-93 at 512-768, which
 * would take 4-8 times the memory.
 *
 * In bf16 (g->kernel set) the 16 GEMMs are nn_bgemm's; the transforms stay
 * float32, so only V and U are rounded, as an im2col column would be.
 *
 * Workspace: U (16, G, C/G, O/G), then per worker V (16, cols, C),
 * M (16, cols, O) and the staging buffers: 15 MiB for AlexNet's conv4 at
 * batch 64 on 2 threads.
 */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

/* Points of the transformed tile. */
enum { WP = 16 };
/* A worker's chunk: about this many floats of V and M, but at least
 * WINO_MIN_COLS tile columns so that the GEMMs stay efficient. */
enum { WINO_CHUNK_FLOATS = 1 << 20, WINO_MIN_COLS = 96 };
/* Below this many channels per group on either side, the GEMMs are too thin
 * for Winograd to pay for its transforms. */
enum { WINO_MIN_CHANNELS = 16 };

/* A 3x3 stride-1 convolution as the kernel sees it: forward, or the input
 * gradient (then cin = O, cout = C). Output cell (oh, ow) reads input rows
 * oh + off_h + [0, 3) and columns ow + off_w + [0, 3); cells outside the
 * input are zeros. */
typedef struct {
  int cin, cout, groups;
  int in_h, in_w, out_h, out_w;
  int off_h, off_w;
  int th, tw;   /* tiles per plane: ceil(out / 2) */
  size_t tiles; /* th * tw */
} wino_shape;

typedef struct {
  wino_shape s;
  size_t u;              /* floats of U: 16 * cin * cout/groups */
  size_t per_col;        /* floats of V and M per tile column: 16 * (cin + cout) */
  size_t total;          /* tile columns of the batch: n * tiles */
  int workers;           /* P */
  nn_bf16_kernel kernel; /* the GEMMs: sgemm (NN_BF16_FP32) or nn_bgemm */
  size_t cols;           /* tile columns per chunk */
  size_t xh, yh;         /* floats of the staging buffers (see stage_input, unstage_output) */
} wino_plan;

static wino_shape shape_forward(const nn_conv_geom *g) {
  wino_shape s = {g->in_c,      g->out_c,           g->groups,          g->in_h,
                  g->in_w,      g->out_h,           g->out_w,           -g->pad_top,
                  -g->pad_left, (g->out_h + 1) / 2, (g->out_w + 1) / 2, 0};
  s.tiles = (size_t)s.th * (size_t)s.tw;
  return s;
}

/* dx (ih, iw) = sum of w (kh, kw) dy (ih + pad_top - kh, iw + pad_left - kw):
 * the kernel turned by 180 degrees, reading dy from row ih + pad_top - 2. */
static wino_shape shape_backward(const nn_conv_geom *g) {
  wino_shape s = {g->out_c,        g->in_c,           g->groups,         g->out_h,
                  g->out_w,        g->in_h,           g->in_w,           g->pad_top - 2,
                  g->pad_left - 2, (g->in_h + 1) / 2, (g->in_w + 1) / 2, 0};
  s.tiles = (size_t)s.th * (size_t)s.tw;
  return s;
}

/* The staging buffers for chunks of `cols` columns: a run of that many tiles
 * of one image spans at most cols / tw + 2 tile rows. */
static void size_stages(wino_plan *p) {
  const wino_shape *s = &p->s;
  size_t rows = p->cols / (size_t)s->tw + 2;
  if (rows > (size_t)s->th) rows = (size_t)s->th;
  p->xh = (2 * rows + 2) * (2 * (size_t)s->tw + 2) * (size_t)s->cin;
  p->yh = (2 * rows) * (2 * (size_t)s->tw) * (size_t)s->cout;
}

/* The plan for n images within `budget` floats: the most workers (up to the
 * thread count and the tile columns) that fit with one column each, then the
 * largest chunk up to the wanted one. Sizing and the kernels share it. */
static wino_plan plan_of(const wino_shape *s, int n, size_t budget) {
  wino_plan p;
  p.s = *s;
  p.u = (size_t)WP * (size_t)s->cin * (size_t)(s->cout / s->groups);
  p.per_col = (size_t)WP * ((size_t)s->cin + (size_t)s->cout);
  p.total = (size_t)(n > 0 ? n : 1) * s->tiles;
  size_t want = WINO_CHUNK_FLOATS / p.per_col;
  if (want < WINO_MIN_COLS) want = WINO_MIN_COLS;
  if (want > p.total) want = p.total;
  p.cols = want; /* the staging for the largest chunk bounds any smaller one's */
  size_stages(&p);
  const size_t stage = p.xh + p.yh;
  int workers = omp_get_max_threads();
  if ((size_t)workers > p.total) workers = (int)p.total;
  if (workers < 1) workers = 1;
  for (; workers > 1; workers--)
    if (budget >= p.u + (size_t)workers * (p.per_col + stage)) break;
  const size_t fixed = p.u + (size_t)workers * stage;
  size_t cols = budget > fixed ? (budget - fixed) / ((size_t)workers * p.per_col) : 1;
  const size_t most = (p.total + (size_t)workers - 1) / (size_t)workers;
  if (cols > want) cols = want;
  if (cols > most) cols = most;
  if (cols < 1) cols = 1;
  p.workers = workers;
  p.cols = cols;
  size_stages(&p);
  return p;
}

/* Floats of one worker's slice: V, M, the staging buffers. */
static size_t slice_floats(const wino_plan *p) {
  return p->cols * p->per_col + p->xh + p->yh;
}

static size_t plan_floats(const wino_plan *p) {
  return p->u + (size_t)p->workers * slice_floats(p);
}

/* The conv algorithm forced by ALEXNET_CONV_ALGO, read once so that sizing
 * and dispatch agree for the whole process: "im2col" turns Winograd off (for
 * benchmarks and comparisons); anything else, or unset, lets
 * nn_winograd_applies decide. */
static int forced_im2col(void) {
  static _Atomic int forced = -1;
  int f = forced;
  if (f < 0) {
    const char *v = getenv("ALEXNET_CONV_ALGO");
    f = v && strcmp(v, "im2col") == 0;
    forced = f;
  }
  return f;
}

int nn_winograd_supports(const nn_conv_geom *g) {
  return g->kernel_h == 3 && g->kernel_w == 3 && g->stride_h == 1 && g->stride_w == 1 &&
         g->groups >= 1 && g->in_c % g->groups == 0 && g->out_c % g->groups == 0 && g->out_h >= 1 &&
         g->out_w >= 1 && g->in_h >= 1 && g->in_w >= 1;
}

int nn_winograd_applies(const nn_conv_geom *g) {
  if (!nn_winograd_supports(g) || forced_im2col()) return 0;
  if (g->in_c / g->groups < WINO_MIN_CHANNELS || g->out_c / g->groups < WINO_MIN_CHANNELS) return 0;
  /* Multiplies: 16 per tile against 9 per output pixel; tiles over the edge
   * waste theirs (a 1x1 output is 16 against 9), so ask for 3/4 or less. */
  const wino_shape f = shape_forward(g), b = shape_backward(g);
  const size_t mul = WP * (f.tiles > b.tiles ? f.tiles : b.tiles);
  const size_t pix = (size_t)g->out_h * (size_t)g->out_w;
  const size_t ipix = (size_t)g->in_h * (size_t)g->in_w;
  return 4 * mul <= 3 * 9 * (pix < ipix ? pix : ipix);
}

size_t nn_winograd_workspace_floats(const nn_conv_geom *g, int n, size_t cap_floats) {
  const wino_shape f = shape_forward(g), b = shape_backward(g);
  const wino_plan pf = plan_of(&f, n, cap_floats), pb = plan_of(&b, n, cap_floats);
  const size_t a = plan_floats(&pf), c = plan_floats(&pb);
  return a > c ? a : c;
}

/* ---- transforms ---------------------------------------------------------- */

/* U_p = (G k G^T)_p for the 3x3 kernels k, with
 * G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], into U (16, G, cin/G,
 * cout/G): per point and group, the (cin/G, cout/G) matrix the GEMM takes.
 * Row r of the G*cin/G and column j: forward, r = grp*Cg + ci, j = o - grp*Og,
 * k = w (o, ci); backward (flip: cin = O, cout = C), r = o, j = ci, k = w (o,
 * ci) turned by 180 degrees, which is w's own order. Rows [r0, r1). */
static void transform_weights(const nn_conv_geom *g, int flip, const float *w, int r0, int r1,
                              float *u) {
  const int cg = g->in_c / g->groups, og = g->out_c / g->groups;
  const int ncol = flip ? cg : og;
  const size_t plane = (size_t)g->out_c * (size_t)cg; /* U_p's floats either way */
  for (int r = r0; r < r1; r++) {
    const float *base;
    size_t step; /* column j's kernel is at base + j*step */
    if (flip) {
      base = w + (size_t)r * (size_t)cg * 9;
      step = 9;
    } else {
      const int grp = r / cg, ci = r % cg;
      base = w + ((size_t)grp * (size_t)og * (size_t)cg + (size_t)ci) * 9;
      step = (size_t)cg * 9;
    }
    float *dst = u + (size_t)r * (size_t)ncol;
#pragma omp simd
    for (int j = 0; j < ncol; j++) {
      const float *src = base + (size_t)j * step;
      float kk[3][3], t[4][3];
      for (int i = 0; i < 3; i++)
        for (int l = 0; l < 3; l++) kk[i][l] = flip ? src[(2 - i) * 3 + (2 - l)] : src[i * 3 + l];
      for (int l = 0; l < 3; l++) {
        t[0][l] = kk[0][l];
        t[1][l] = 0.5f * (kk[0][l] + kk[1][l] + kk[2][l]);
        t[2][l] = 0.5f * (kk[0][l] - kk[1][l] + kk[2][l]);
        t[3][l] = kk[2][l];
      }
      for (int a = 0; a < 4; a++) {
        float *d = dst + (size_t)(a * 4) * plane + (size_t)j;
        d[0] = t[a][0];
        d[plane] = 0.5f * (t[a][0] + t[a][1] + t[a][2]);
        d[2 * plane] = 0.5f * (t[a][0] - t[a][1] + t[a][2]);
        d[3 * plane] = t[a][2];
      }
    }
  }
}

/* Input rows r0 .. r0 + nr - 1 of one image xi (cin, in_h, in_w), columns
 * off_w .. off_w + 2*tw + 1, channels last: xh (nr, 2*tw + 2, cin), zeros
 * outside the image. */
static void stage_input(const wino_shape *s, const float *xi, int r0, int nr, float *xh) {
  const int wb = 2 * s->tw + 2;
  const size_t cin = (size_t)s->cin, in_plane = (size_t)s->in_h * (size_t)s->in_w;
  const int lo = s->off_w < 0 ? -s->off_w : 0;                /* first column inside */
  int hi = s->in_w - s->off_w < wb ? s->in_w - s->off_w : wb; /* one past the last */
  if (hi < lo) hi = lo;
  for (int r = 0; r < nr; r++) {
    const int ir = r0 + r;
    float *dst = xh + (size_t)r * (size_t)wb * cin;
    if (ir < 0 || ir >= s->in_h || hi == lo) {
      memset(dst, 0, sizeof(float) * (size_t)wb * cin);
      continue;
    }
    memset(dst, 0, sizeof(float) * (size_t)lo * cin);
    memset(dst + (size_t)hi * cin, 0, sizeof(float) * (size_t)(wb - hi) * cin);
    /* Gathering down the channels and storing contiguously is the fast
     * order for this transpose (4x the other way on Zen 4 with AVX-512). */
    const float *src = xi + (size_t)ir * (size_t)s->in_w + (lo + s->off_w);
    for (int k = 0; k < hi - lo; k++) {
      float *d = dst + (size_t)(lo + k) * cin;
#pragma omp simd
      for (size_t c = 0; c < cin; c++) d[c] = src[c * in_plane + (size_t)k];
    }
  }
}

/* One tile's 16 points for every channel: d0 its top-left cell in xh (row
 * stride rs floats, column stride cin), V = B^T d B with
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], point p at v + p*ps. */
static void input_tile(const float *d0, size_t rs, int cin, float *v, size_t ps) {
  const float *d1 = d0 + rs, *d2 = d1 + rs, *d3 = d2 + rs;
  const size_t c1 = (size_t)cin, c2 = 2 * c1, c3 = 3 * c1;
#pragma omp simd
  for (int c = 0; c < cin; c++) {
    float t[4][4];
    const size_t col[4] = {0, c1, c2, c3};
    for (int j = 0; j < 4; j++) {
      const size_t at = col[j] + (size_t)c;
      t[0][j] = d0[at] - d2[at];
      t[1][j] = d1[at] + d2[at];
      t[2][j] = d2[at] - d1[at];
      t[3][j] = d1[at] - d3[at];
    }
    for (int i = 0; i < 4; i++) {
      float *o = v + (size_t)(4 * i) * ps + (size_t)c;
      o[0] = t[i][0] - t[i][2];
      o[ps] = t[i][1] + t[i][2];
      o[2 * ps] = t[i][2] - t[i][1];
      o[3 * ps] = t[i][1] - t[i][3];
    }
  }
}

/* One tile's 2x2 outputs for every channel from its 16 points (point p at
 * m + p*ps), Y = A^T M A with A^T = [1 1 1 0; 0 1 -1 -1], into the staging
 * buffer at y0 (row stride rs floats, column stride cout). */
static void output_tile(const float *m, size_t ps, int cout, float *y0, size_t rs) {
  float *y1 = y0 + rs;
  const size_t c1 = (size_t)cout;
#pragma omp simd
  for (int o = 0; o < cout; o++) {
    float s0[4], s1[4];
    for (int j = 0; j < 4; j++) {
      const float m0 = m[(size_t)j * ps + (size_t)o], m1 = m[(size_t)(4 + j) * ps + (size_t)o];
      const float m2 = m[(size_t)(8 + j) * ps + (size_t)o];
      const float m3 = m[(size_t)(12 + j) * ps + (size_t)o];
      s0[j] = m0 + m1 + m2;
      s1[j] = m1 - m2 - m3;
    }
    y0[o] = s0[0] + s0[1] + s0[2];
    y0[c1 + (size_t)o] = s0[1] - s0[2] - s0[3];
    y1[o] = s1[0] + s1[1] + s1[2];
    y1[c1 + (size_t)o] = s1[1] - s1[2] - s1[3];
  }
}

/* The pixels of tiles [t0, t1) of one image (tile rows from ty0 on) from the
 * staging buffer yh (rows, 2*tw, cout) into yi (cout, out_h, out_w), plus
 * the bias, then the ReLU. */
static void unstage_output(const wino_shape *s, const float *yh, int ty0, size_t t0, size_t t1,
                           const float *bias, int relu, float *yi) {
  const size_t cout = (size_t)s->cout, yw = 2 * (size_t)s->tw;
  const size_t out_plane = (size_t)s->out_h * (size_t)s->out_w;
  for (size_t t = t0; t < t1;) {
    const int ty = (int)(t / (size_t)s->tw), ta = (int)(t % (size_t)s->tw);
    const int tb = t1 - t < (size_t)(s->tw - ta) ? ta + (int)(t1 - t) : s->tw;
    const int lo = 2 * ta, hi = 2 * tb < s->out_w ? 2 * tb : s->out_w;
    for (int u = 0; u < 2 && 2 * ty + u < s->out_h; u++) {
      const int oh = 2 * ty + u;
      const float *src = yh + (size_t)(2 * (ty - ty0) + u) * yw * cout;
      float *dst = yi + (size_t)oh * (size_t)s->out_w;
      for (size_t o = 0; o < cout; o++) {
        const float b = bias ? bias[o] : 0.0f;
        float *d = dst + o * out_plane;
        if (relu) {
          for (int c = lo; c < hi; c++) {
            const float v = src[(size_t)c * cout + o] + b;
            d[c] = v > 0.0f ? v : 0.0f;
          }
        } else {
          for (int c = lo; c < hi; c++) d[c] = src[(size_t)c * cout + o] + b;
        }
      }
    }
    t += (size_t)(tb - ta);
  }
}

/* Tile columns [c0, c0 + ncols) of the batch x into v (16, ncols, cin), one
 * image's part at a time through the staging buffer xh. */
static void input_chunk(const wino_plan *p, const float *x, size_t c0, size_t ncols, float *v,
                        float *xh) {
  const wino_shape *s = &p->s;
  const size_t in_img = (size_t)s->cin * (size_t)s->in_h * (size_t)s->in_w;
  const size_t rs = (2 * (size_t)s->tw + 2) * (size_t)s->cin, ps = ncols * (size_t)s->cin;
  for (size_t t = c0; t < c0 + ncols;) {
    const size_t img = t / s->tiles, first = t % s->tiles;
    const size_t last = first + (c0 + ncols - t) < s->tiles ? first + (c0 + ncols - t) : s->tiles;
    const int ty0 = (int)(first / (size_t)s->tw), ty1 = (int)((last - 1) / (size_t)s->tw);
    stage_input(s, x + img * in_img, 2 * ty0 + s->off_h, 2 * (ty1 - ty0) + 4, xh);
    for (size_t k = first; k < last; k++) {
      const int ty = (int)(k / (size_t)s->tw), tx = (int)(k % (size_t)s->tw);
      input_tile(xh + (size_t)(2 * (ty - ty0)) * rs + (size_t)(2 * tx) * (size_t)s->cin, rs, s->cin,
                 v + (t - c0 + (k - first)) * (size_t)s->cin, ps);
    }
    t += last - first;
  }
}

/* m (16, ncols, cout), tile columns [c0, c0 + ncols) of the batch, into y
 * (n, cout, out_h, out_w) with the bias and the ReLU, one image's part at a
 * time through the staging buffer yh. */
static void output_chunk(const wino_plan *p, const float *m, size_t c0, size_t ncols,
                         const float *bias, int relu, float *y, float *yh) {
  const wino_shape *s = &p->s;
  const size_t out_img = (size_t)s->cout * (size_t)s->out_h * (size_t)s->out_w;
  const size_t rs = 2 * (size_t)s->tw * (size_t)s->cout, ps = ncols * (size_t)s->cout;
  for (size_t t = c0; t < c0 + ncols;) {
    const size_t img = t / s->tiles, first = t % s->tiles;
    const size_t last = first + (c0 + ncols - t) < s->tiles ? first + (c0 + ncols - t) : s->tiles;
    const int ty0 = (int)(first / (size_t)s->tw);
    for (size_t k = first; k < last; k++) {
      const int ty = (int)(k / (size_t)s->tw), tx = (int)(k % (size_t)s->tw);
      output_tile(m + (t - c0 + (k - first)) * (size_t)s->cout, ps, s->cout,
                  yh + (size_t)(2 * (ty - ty0)) * rs + (size_t)(2 * tx) * (size_t)s->cout, rs);
    }
    unstage_output(s, yh, ty0, first, last, bias, relu, y + img * out_img);
    t += last - first;
  }
}

/* Tile columns [t0, t1) by one worker with its slice ws. */
static void run_slice(const wino_plan *p, size_t t0, size_t t1, const float *x, const float *u,
                      const float *bias, int relu, float *y, float *ws) {
  const wino_shape *s = &p->s;
  const int cg = s->cin / s->groups, og = s->cout / s->groups;
  const size_t plane = (size_t)s->cin * (size_t)og;
  float *v = ws, *m = v + p->cols * WP * (size_t)s->cin;
  float *xh = ws + p->cols * p->per_col, *yh = xh + p->xh;
  for (size_t c0 = t0; c0 < t1; c0 += p->cols) {
    const size_t ncols = t1 - c0 < p->cols ? t1 - c0 : p->cols;
    input_chunk(p, x, c0, ncols, v, xh);
    for (int pt = 0; pt < WP; pt++) {
      const float *up = u + (size_t)pt * plane;
      const float *vp = v + (size_t)pt * ncols * (size_t)s->cin;
      float *mp = m + (size_t)pt * ncols * (size_t)s->cout;
      for (int grp = 0; grp < s->groups; grp++) {
        if (p->kernel) {
          nn_bgemm(p->kernel, 0, 0, (int)ncols, og, cg, vp + (size_t)grp * (size_t)cg, s->cin,
                   up + (size_t)grp * (size_t)cg * (size_t)og, og, 0.0f,
                   mp + (size_t)grp * (size_t)og, s->cout);
          continue;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ncols, og, cg, 1.0f,
                    vp + (size_t)grp * (size_t)cg, s->cin,
                    up + (size_t)grp * (size_t)cg * (size_t)og, og, 0.0f,
                    mp + (size_t)grp * (size_t)og, s->cout);
      }
    }
    output_chunk(p, m, c0, ncols, bias, relu, y, yh);
  }
}

/* Worker t of nt takes tile columns [t*total/nt, (t+1)*total/nt). */
static size_t slice_start(size_t total, int t, int nt) {
  return total * (size_t)t / (size_t)nt;
}

/* The convolution of shape s (weights transformed from w, turned when flip)
 * of n images x into y, with the workspace ws (ws_floats). */
static void run(const nn_conv_geom *g, const wino_shape *s, int flip, int n, const float *x,
                const float *w, const float *bias, int relu, float *y, float *ws,
                size_t ws_floats) {
  if (n < 1) return;
  wino_plan p = plan_of(s, n, ws_floats);
  p.kernel = g->kernel;
  const int rows = flip ? g->out_c : g->in_c; /* of U: G * cin/G */
  float *u = ws;
  if (p.workers == 1) {
    transform_weights(g, flip, w, 0, rows, u);
    run_slice(&p, 0, p.total, x, u, bias, relu, y, ws + p.u);
    return;
  }
#pragma omp parallel num_threads(p.workers)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    transform_weights(g, flip, w, (int)((long)rows * t / nt), (int)((long)rows * (t + 1) / nt), u);
#pragma omp barrier
    run_slice(&p, slice_start(p.total, t, nt), slice_start(p.total, t + 1, nt), x, u, bias, relu, y,
              ws + p.u + (size_t)t * slice_floats(&p));
  }
}

void nn_winograd_forward(const nn_conv_geom *g, int n, const float *x, const float *w,
                         const float *b, int relu, float *y, float *ws, size_t ws_floats) {
  const wino_shape s = shape_forward(g);
  run(g, &s, 0, n, x, w, b, relu, y, ws, ws_floats);
}

void nn_winograd_backward_data(const nn_conv_geom *g, int n, const float *w, const float *dy,
                               float *dx, float *ws, size_t ws_floats) {
  const wino_shape s = shape_backward(g);
  run(g, &s, 1, n, dy, w, NULL, 0, dx, ws, ws_floats);
}
