/*
 * bf16_kernels KERNEL: one bf16 kernel (avx512_bf16, amx or emulated, as
 * ALEXNET_BF16_KERNEL names them) against float32 and float64 references.
 * Registered by tests/bf16.cmake once per kernel; a kernel this CPU cannot
 * run exits 77 (ctest: SKIPPED) and says why.
 *
 * Tolerances, from bf16's 8-bit significand (7 bits stored): rounding an
 * operand to bf16 moves it by at most half an ulp, 2^-8 of itself, so a
 * product a b by at most about 2^-7 |a b|;
 * float32 accumulation adds at most about K 2^-24 sum |a b|. So:
 *  - nn_bgemm against float64 on the same bf16-rounded operands: within
 *    (K + 8) 2^-24 sum_k |a_k b_k| (only the accumulation differs);
 *  - against float64 on the unrounded operands: within 2^-7 sum |a_k b_k|,
 *    and somewhere above the first bound (the operands really were rounded);
 *  - layers of AlexNet's real sizes against the float32 path: relative error
 *    ||got - want|| / ||want|| <= 1e-2 for outputs and gradients. Errors of
 *    independent terms add like a random walk, so a dot product's relative
 *    error is about 2^-8 / sqrt(3) x sqrt(2) (2e-3 measured), for a whole
 *    network's logits a few 1e-3; and
 *    above 1e-5, so that a float32 path passing by mistake fails.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "nn.h"
#include "testutil.h"

static nn_bf16_kernel kern;

static float *rand_floats(size_t n, uint64_t seed, float scale) {
  float *p = malloc(n * sizeof(float) + 64);
  for (size_t i = 0; i < n; i++) p[i] = scale * (2.0f * nn_uniform(seed, i) - 1.0f);
  return p;
}

/* ---- nn_bgemm ------------------------------------------------------------ */

/* op(X)(r, c) for row-major X with leading dimension ld. */
static float elem(const float *x, int trans, int ld, int r, int c) {
  return trans ? x[(size_t)c * ld + r] : x[(size_t)r * ld + c];
}

static void check_gemm(int M, int N, int K, int ta, int tb, float beta, int threads) {
  const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
  float *a = rand_floats((size_t)(ta ? K : M) * lda, 11 + M, 1.0f);
  float *b = rand_floats((size_t)(tb ? N : K) * ldb, 13 + N, 2.0f);
  float *c = rand_floats((size_t)M * ldc, 17, 0.5f);
  float *c0 = malloc((size_t)M * ldc * sizeof(float));
  memcpy(c0, c, (size_t)M * ldc * sizeof(float));
  omp_set_num_threads(threads);
  nn_bgemm(kern, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc);
  double worst_acc = 0, worst_bf16 = 0, above = 0;
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double exact = beta * c0[(size_t)m * ldc + n], rounded = exact, mag = fabs(exact);
      for (int k = 0; k < K; k++) {
        const float x = elem(a, ta, lda, m, k), y = elem(b, tb, ldb, k, n);
        exact += (double)x * y;
        rounded += (double)nn_bf16_round(x) * nn_bf16_round(y);
        mag += fabs((double)x * y);
      }
      const double got = c[(size_t)m * ldc + n];
      const double acc_bound = (K + 8) * 0x1p-24 * mag + 1e-30;
      const double e_acc = fabs(got - rounded) / acc_bound;
      const double e_bf16 = fabs(got - exact) / (0x1p-7 * mag + 1e-30);
      if (e_acc > worst_acc) worst_acc = e_acc;
      if (e_bf16 > worst_bf16) worst_bf16 = e_bf16;
      if (fabs(got - exact) > acc_bound) above = 1;
    }
  /* Columns past N in C (the padding of ldc) are untouched. */
  int pad_ok = 1;
  for (int m = 0; m < M; m++)
    for (int n = N; n < ldc; n++) pad_ok &= c[(size_t)m * ldc + n] == c0[(size_t)m * ldc + n];
  if (worst_acc > 1 || worst_bf16 > 1 || !above || !pad_ok)
    printf(
        "\n  FAIL M %d N %d K %d ta %d tb %d beta %g threads %d: accumulation %.3g, bf16 %.3g "
        "of the bounds, rounded %d, padding kept %d\n",
        M, N, K, ta, tb, beta, threads, worst_acc, worst_bf16, (int)above, pad_ok);
  CU_ASSERT(worst_acc <= 1);
  CU_ASSERT(worst_bf16 <= 1);
  CU_ASSERT(above);
  CU_ASSERT(pad_ok);
  omp_set_num_threads(1);
  free(a), free(b), free(c), free(c0);
}

static void test_gemm_shapes(void) {
  /* Tile edges (MR 12, NR 32), odd K, K past a block (256), M past a block
   * (384), N past a block (2048), every transpose. */
  static const int shapes[][3] = {{1, 1, 1},      {13, 33, 3},   {12, 32, 256}, {25, 70, 257},
                                  {40, 100, 600}, {400, 50, 30}, {7, 2100, 9},  {64, 48, 33}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int t = 0; t < 4; t++)
      check_gemm(shapes[i][0], shapes[i][1], shapes[i][2], t & 1, t >> 1, 0.0f, 1);
}

static void test_gemm_accumulate_threads(void) {
  check_gemm(30, 70, 40, 0, 1, 1.0f, 1);
  /* Outside a parallel region the product splits between threads: along N
   * when N >= M, else along M. */
  check_gemm(50, 700, 300, 0, 0, 0.0f, 2);
  check_gemm(700, 50, 300, 1, 0, 1.0f, 2);
  check_gemm(100, 1000, 200, 1, 1, 0.0f, 3);
}

/* Operands rounded exactly as nn_bf16_round rounds them, in every packing
 * path: A (M, K) holds ties to even both ways, values just off ties, large
 * and small exponents (and, for the emulation, denormals, which the bf16
 * instructions flush), times B = the identity, so C = bf16(A) exactly. */
static void test_packing_rounding(void) {
  const int M = 37, K = 40; /* partial panels and tiles, runs past 16 */
  float *a = malloc((size_t)M * K * sizeof(float)), *at = malloc((size_t)M * K * sizeof(float));
  float *eye = calloc((size_t)K * K, sizeof(float)), *c = malloc((size_t)M * K * sizeof(float));
  for (int k = 0; k < K; k++) eye[(size_t)k * K + k] = 1.0f;
  for (int i = 0; i < M * K; i++) {
    /* A float whose low 16 bits are a tie (0x8000), just under or over one,
     * or random, with the kept bits' last bit odd or even. */
    static const uint32_t lows[] = {0x8000u, 0x7FFFu, 0x8001u, 0x0000u, 0xFFFFu, 0x1234u};
    /* exponent 1 to 253: no rounding up to infinity (inf x 0 would be NaN) */
    const uint32_t hi = (uint32_t)(nn_hash64(5, (uint64_t)i) % 0x7E00u) + 0x0080u;
    uint32_t u = (hi | (i % 2 ? 0x8000u : 0)) << 16 | lows[i % 6];
    if (kern == NN_BF16_EMULATED && i % 37 == 5) u = 0x00012345u + (uint32_t)i; /* denormal */
    memcpy(&a[i], &u, sizeof u);
  }
  for (int m = 0; m < M; m++)
    for (int k = 0; k < K; k++) at[(size_t)k * M + m] = a[(size_t)m * K + k];
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      nn_bgemm(kern, ta, tb, M, K, K, ta ? at : a, ta ? M : K, eye, K, 0.0f, c, K);
      int wrong = 0;
      for (int i = 0; i < M * K; i++) {
        const float want = nn_bf16_round(a[i]);
        wrong += memcmp(&c[i], &want, sizeof want) != 0;
      }
      if (wrong)
        printf("\n  FAIL ta %d tb %d: %d of %d not rounded as nn_bf16_round", ta, tb, wrong, M * K);
      CU_ASSERT(wrong == 0);
    }
  /* A NaN stays a NaN; its row's other products are unaffected. */
  float *ones = malloc((size_t)K * K * sizeof(float));
  for (int i = 0; i < K * K; i++) ones[i] = 1.0f;
  a[3 * K + 7] = NAN;
  nn_bgemm(kern, 0, 0, M, K, K, a, K, ones, K, 0.0f, c, K);
  CU_ASSERT(isnan(c[3 * K]) && !isnan(c[2 * K]) && !isnan(c[4 * K]));
  free(a), free(at), free(eye), free(c), free(ones);
}

/* The emulation's AVX2 code and its plain C code give the same bits (each
 * product of two bf16 is exact, and both add them in the same order). */
static void test_emulated_simd_same_bits(void) {
  static const int shapes[][3] = {{13, 33, 3}, {25, 70, 257}, {40, 100, 600}, {64, 48, 33}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int t = 0; t < 4; t++) {
      const int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2], ta = t & 1, tb = t >> 1;
      const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5;
      float *a = rand_floats((size_t)(ta ? K : M) * lda, 21 + M, 1.0f);
      float *b = rand_floats((size_t)(tb ? N : K) * ldb, 23 + N, 2.0f);
      float *c[2];
      for (int v = 0; v < 2; v++) {
        c[v] = rand_floats((size_t)M * N, 29, 0.5f);
        nn_bf16_emulated_simd(v);
        nn_bgemm(kern, ta, tb, M, N, K, a, lda, b, ldb, 1.0f, c[v], N);
      }
      nn_bf16_emulated_simd(1);
      const int same = memcmp(c[0], c[1], (size_t)M * N * sizeof(float)) == 0;
      if (!same) printf("\n  FAIL M %d N %d K %d ta %d tb %d: AVX2 and C differ", M, N, K, ta, tb);
      CU_ASSERT(same);
      free(a), free(b), free(c[0]), free(c[1]);
    }
}

/* ---- layers of AlexNet's sizes against the float32 path ------------------ */

static double rel_l2(const float *got, const float *want, size_t n) {
  double e = 0, w = 0;
  for (size_t i = 0; i < n; i++) {
    e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
    w += (double)want[i] * want[i];
  }
  return sqrt(e / (w + 1e-300));
}

static void expect_close(const char *what, const char *tensor, const float *got, const float *want,
                         size_t n) {
  const double r = rel_l2(got, want, n);
  const int ok = r <= 1e-2 && r > 1e-5;
  printf("\n  %s %s %s: relative error %.2e", ok ? "OK" : "FAIL", what, tensor, r);
  CU_ASSERT(r <= 1e-2);
  CU_ASSERT(r > 1e-5);
}

static nn_conv_geom conv(int c, int h, int o, int k, int s, int pad, int groups) {
  nn_conv_geom g = {c,
                    h,
                    h,
                    o,
                    (h + 2 * pad - k) / s + 1,
                    (h + 2 * pad - k) / s + 1,
                    k,
                    k,
                    s,
                    s,
                    pad,
                    pad,
                    groups,
                    NN_BF16_FP32};
  return g;
}

/* Forward and backward (relu fused) of g on n images in float32 and in bf16. */
static void check_conv(const char *what, nn_conv_geom g, int n) {
  const size_t xs = (size_t)n * g.in_c * g.in_h * g.in_w;
  const size_t ys = (size_t)n * g.out_c * g.out_h * g.out_w;
  const size_t ws = (size_t)g.out_c * (g.in_c / g.groups) * g.kernel_h * g.kernel_w;
  float *x = rand_floats(xs, 1, 1.0f), *w = rand_floats(ws, 2, 0.05f);
  float *b = rand_floats((size_t)g.out_c, 3, 0.1f), *dy0 = rand_floats(ys, 4, 1.0f);
  float *y[2], *dy[2], *dx[2], *dw[2], *db[2];
  size_t wsf = nn_conv_workspace_floats(&g, n, 1 << 24);
  float *work = malloc(wsf * sizeof(float));
  for (int v = 0; v < 2; v++) {
    g.kernel = v ? kern : NN_BF16_FP32;
    y[v] = malloc(ys * sizeof(float)), dy[v] = malloc(ys * sizeof(float));
    dx[v] = malloc(xs * sizeof(float)), dw[v] = malloc(ws * sizeof(float));
    db[v] = malloc((size_t)g.out_c * sizeof(float));
    nn_conv_forward(&g, n, x, w, b, 1, y[v], work, wsf);
    /* The ReLU mask of the float32 output for both, so that only the
     * products differ in backward. */
    memcpy(dy[v], dy0, ys * sizeof(float));
    nn_conv_backward(&g, n, x, w, y[0], 1, dy[v], dx[v], dw[v], db[v], work, wsf);
  }
  expect_close(what, "y", y[1], y[0], ys);
  expect_close(what, "dx", dx[1], dx[0], xs);
  expect_close(what, "dw", dw[1], dw[0], ws);
  /* db is a float32 sum of dy in both: equal. */
  CU_ASSERT(memcmp(db[0], db[1], (size_t)g.out_c * sizeof(float)) == 0);
  for (int v = 0; v < 2; v++) free(y[v]), free(dy[v]), free(dx[v]), free(dw[v]), free(db[v]);
  free(x), free(w), free(b), free(dy0), free(work);
}

static void test_conv_alexnet_owt(void) {
  check_conv("features.0 (3->64, 11x11/4, 224)", conv(3, 224, 64, 11, 4, 2, 1), 1);
  check_conv("features.3 (64->192, 5x5, 27)", conv(64, 27, 192, 5, 1, 2, 1), 2);
  check_conv("features.6 (192->384, 3x3, 13, Winograd)", conv(192, 13, 384, 3, 1, 1, 1), 2);
  check_conv("features.8 (384->256, 3x3, 13, Winograd)", conv(384, 13, 256, 3, 1, 1, 1), 1);
}

static void test_conv_paper_groups(void) {
  check_conv("alexnet features.4 (96->256, 5x5, groups 2)", conv(96, 27, 256, 5, 1, 2, 2), 1);
  check_conv("alexnet features.10 (384->384, 3x3, groups 2)", conv(384, 13, 384, 3, 1, 1, 2), 1);
}

static void test_linear_classifier(void) {
  const int n = 4, in = 9216, out = 4096;
  float *x = rand_floats((size_t)n * in, 5, 1.0f), *w = rand_floats((size_t)out * in, 6, 0.01f);
  float *b = rand_floats((size_t)out, 7, 0.1f), *dy0 = rand_floats((size_t)n * out, 8, 1.0f);
  float *y[2], *dy[2], *dx[2], *dw[2], *db[2];
  for (int v = 0; v < 2; v++) {
    nn_bf16_kernel k = v ? kern : NN_BF16_FP32;
    y[v] = malloc((size_t)n * out * sizeof(float)), dy[v] = malloc((size_t)n * out * sizeof(float));
    dx[v] = malloc((size_t)n * in * sizeof(float)),
    dw[v] = malloc((size_t)out * in * sizeof(float));
    db[v] = malloc((size_t)out * sizeof(float));
    nn_linear_forward(k, n, in, out, x, w, b, 1, y[v]);
    memcpy(dy[v], dy0, (size_t)n * out * sizeof(float));
    nn_linear_backward(k, n, in, out, x, w, y[0], 1, dy[v], dx[v], dw[v], db[v]);
  }
  expect_close("classifier.1 (9216->4096)", "y", y[1], y[0], (size_t)n * out);
  expect_close("classifier.1 (9216->4096)", "dx", dx[1], dx[0], (size_t)n * in);
  expect_close("classifier.1 (9216->4096)", "dw", dw[1], dw[0], (size_t)out * in);
  for (int v = 0; v < 2; v++) free(y[v]), free(dy[v]), free(dx[v]), free(dw[v]), free(db[v]);
  free(x), free(w), free(b), free(dy0);
}

/* ---- a network ----------------------------------------------------------- */

static void build(nn_net *net, const char *arch, int batch, nn_bf16_kernel k) {
  nn_layer_spec *specs;
  int count;
  nn_shape input;
  char err[256];
  nn_preset_opts opts = {0};
  CU_ASSERT_FATAL(nn_preset(arch, &opts, &specs, &count, &input, err, sizeof err) == 0);
  CU_ASSERT_FATAL(nn_net_build(net, specs, count, input, err, sizeof err) == 0);
  free(specs);
  net->kernel = k;
  CU_ASSERT_FATAL(nn_net_alloc(net, batch, 0, err, sizeof err) == 0);
  nn_init_torch_default(net, 42);
}

/* alexnet_cifar's logits and gradients, float32 against bf16. The logits are
 * held to 1e-2. The gradients at initialization are ill-conditioned (a
 * batch's gradient is a small difference of large per-sample terms, and ReLU
 * masks and pooling windows flip): in float32 alone, moving every weight by a
 * random 2^-8 of itself (bf16's rounding) changes each layer's weight
 * gradient by 4-11%. So each layer's bf16 gradient is held to at most twice
 * what that perturbation does (net 2). */
static void test_network_cifar(void) {
  const int n = 8;
  nn_net net[3];
  for (int v = 0; v < 3; v++) build(&net[v], "alexnet_cifar", n, v == 1 ? kern : NN_BF16_FP32);
  for (size_t i = 0; i < net[2].num_params; i++)
    net[2].params[i] *= 1.0f + 0x1p-8f * (2.0f * nn_uniform(3, i) - 1.0f);
  const size_t in = nn_shape_size(net[0].input) * n;
  float *x = rand_floats(in, 9, 1.0f);
  int labels[8];
  for (int i = 0; i < n; i++) labels[i] = i % 10;
  float loss[3];
  for (int v = 0; v < 3; v++) {
    net[v].dropout_seed = 5;
    nn_forward(&net[v], x, n);
    loss[v] = nn_loss(&net[v], labels, n, NULL, NULL);
    nn_backward(&net[v], x, n, NULL, NULL);
  }
  const float *l0 = net[0].layers[net[0].num_layers - 1].output;
  const float *l1 = net[1].layers[net[1].num_layers - 1].output;
  expect_close("alexnet_cifar", "logits", l1, l0, (size_t)n * 10);
  CU_ASSERT(fabsf(loss[1] - loss[0]) <= 1e-2f * fabsf(loss[0]));
  for (int i = 0; i < net[0].num_layers; i++) {
    const nn_layer *l = net[0].layers + i;
    if (!l->weight_count) continue;
    const double r = rel_l2(net[1].layers[i].dweight, l->dweight, l->weight_count);
    const double p = rel_l2(net[2].layers[i].dweight, l->dweight, l->weight_count);
    printf(
        "\n  %s alexnet_cifar %s.weight gradient: relative error %.2e (float32 with weights "
        "moved by 2^-8: %.2e)",
        r <= 2 * p && r > 1e-5 ? "OK" : "FAIL", l->name, r, p);
    CU_ASSERT(r <= 2 * p);
    CU_ASSERT(r > 1e-5);
  }
  for (int v = 0; v < 3; v++) nn_net_free(&net[v]);
  free(x);
}

/* A short bf16 training run learns: 4 classes of 16x16 images, each class a
 * bright quadrant plus noise; 40 SGD steps take the loss from ln 4 to well
 * under half of it. */
static void test_bf16_learns(void) {
  const nn_layer_spec specs[] = {
      {.kind = NN_CONV,
       .out = 8,
       .kernel_h = 3,
       .kernel_w = 3,
       .pad_top = 1,
       .pad_bottom = 1,
       .pad_left = 1,
       .pad_right = 1},
      {.kind = NN_RELU},
      {.kind = NN_MAXPOOL, .kernel_h = 2, .kernel_w = 2},
      {.kind = NN_CONV,
       .out = 16,
       .kernel_h = 3,
       .kernel_w = 3,
       .pad_top = 1,
       .pad_bottom = 1,
       .pad_left = 1,
       .pad_right = 1},
      {.kind = NN_RELU},
      {.kind = NN_MAXPOOL, .kernel_h = 2, .kernel_w = 2},
      {.kind = NN_FLATTEN, .section = NN_CLASSIFIER},
      {.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 32},
      {.kind = NN_RELU, .section = NN_CLASSIFIER},
      {.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 4},
  };
  nn_net net;
  char err[256];
  CU_ASSERT_FATAL(nn_net_build(&net, specs, 10, (nn_shape){3, 16, 16}, err, sizeof err) == 0);
  net.kernel = kern;
  CU_ASSERT_FATAL(nn_net_alloc(&net, 32, 0, err, sizeof err) == 0);
  nn_init_torch_default(&net, 3);
  float *mom = calloc(net.num_params, sizeof(float));
  const size_t per = 3 * 16 * 16;
  float *x = malloc(32 * per * sizeof(float));
  int labels[32];
  nn_sgd_opts sgd = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0};
  float first = 0, last = 0;
  for (int step = 0; step < 40; step++) {
    for (int i = 0; i < 32; i++) {
      const uint64_t id = (uint64_t)step * 32 + (uint64_t)i;
      labels[i] = (int)(nn_hash64(77, id) % 4);
      for (size_t p = 0; p < per; p++) {
        const int h = (int)(p / 16) % 16, w = (int)(p % 16);
        const int quad = (h >= 8) * 2 + (w >= 8);
        x[i * per + p] = (quad == labels[i] ? 1.0f : 0.0f) + 0.5f * nn_normal(id, p);
      }
    }
    nn_forward(&net, x, 32);
    float loss = nn_loss(&net, labels, 32, NULL, NULL);
    nn_backward(&net, x, 32, NULL, NULL);
    nn_sgd_step(&net, mom, &sgd);
    if (step == 0) first = loss;
    last = loss;
  }
  printf("\n  loss %.3f -> %.3f in 40 bf16 steps", first, last);
  CU_ASSERT(first > 1.2f);
  CU_ASSERT(last < 0.5f * first);
  free(mom), free(x);
  nn_net_free(&net);
}

/* ---- kernel choice ------------------------------------------------------- */

static void test_select_messages(void) {
  char err[256];
  nn_bf16_kernel k;
  setenv("ALEXNET_BF16_KERNEL", "amx", 1);
  if (nn_bf16_cpu_has_amx()) {
    CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == 0 && k == NN_BF16_AMX);
  } else {
    CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == -1);
    TU_ASSERT_CONTAINS(err, "ALEXNET_BF16_KERNEL=amx: this CPU lacks the AMX-BF16 tile");
  }
  setenv("ALEXNET_BF16_KERNEL", "fast", 1);
  CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "ALEXNET_BF16_KERNEL=fast: unknown kernel");
  setenv("ALEXNET_BF16_KERNEL", "emulated", 1);
  CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == 0 && k == NN_BF16_EMULATED);
  setenv("ALEXNET_BF16_KERNEL", "avx512_bf16", 1);
  if (nn_bf16_cpu_has_avx512bf16()) {
    CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == 0 && k == NN_BF16_AVX512);
  } else {
    CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == -1);
    TU_ASSERT_CONTAINS(err, "lacks the AVX512-BF16 instructions");
  }
  unsetenv("ALEXNET_BF16_KERNEL");
  CU_ASSERT(nn_bf16_select(&k, err, sizeof err) == 0);
  CU_ASSERT(k == (nn_bf16_cpu_has_avx512bf16() ? NN_BF16_AVX512 : NN_BF16_EMULATED));
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: bf16_kernels avx512_bf16|amx|emulated\n");
    return 2;
  }
  char err[256];
  setenv("ALEXNET_BF16_KERNEL", argv[1], 1);
  if (nn_bf16_select(&kern, err, sizeof err) != 0) {
    /* The only kernel a build may lack at run time is the CPU's. */
    printf("SKIPPED: %s\n", err);
    return strcmp(argv[1], "avx512_bf16") == 0 || strcmp(argv[1], "amx") == 0 ? 77 : 1;
  }
  unsetenv("ALEXNET_BF16_KERNEL");
  if (nn_bf16_reserve(4) != 0) return 1;
  printf("kernel %s\n", nn_bf16_kernel_name(kern));
  tu_add_suite("bf16_gemm",
               (tu_test[]){{"shapes and transposes", test_gemm_shapes},
                           {"accumulate and threads", test_gemm_accumulate_threads},
                           {"operands rounded as nn_bf16_round", test_packing_rounding},
                           {NULL, NULL}});
  /* Only where the AVX2 code runs: the library's emulation on an AVX2 CPU. */
  const int simd = nn_bf16_emulated_simd(1);
  if (kern == NN_BF16_EMULATED && simd)
    tu_add_suite("bf16_emulated",
                 (tu_test[]){{"AVX2 and plain C give the same bits", test_emulated_simd_same_bits},
                             {NULL, NULL}});
  else if (kern == NN_BF16_EMULATED)
    printf("emulated: plain C only here (no AVX2 and FMA, or the portable build)\n");
  tu_add_suite("bf16_layers",
               (tu_test[]){{"alexnet_owt convolutions", test_conv_alexnet_owt},
                           {"paper convolutions with groups", test_conv_paper_groups},
                           {"classifier linear", test_linear_classifier},
                           {NULL, NULL}});
  tu_add_suite("bf16_network", (tu_test[]){{"alexnet_cifar against fp32", test_network_cifar},
                                           {"a short bf16 run learns", test_bf16_learns},
                                           {"kernel choice and its messages", test_select_messages},
                                           {NULL, NULL}});
  return tu_run_all();
}
