/*
 * test_bn_lars_parity: batch norm against torch.nn.BatchNorm1d/2d and LARS
 * against an independent numpy implementation, from
 * tests/reference/bn_lars.h5 (written by make_bn_lars_reference.py, run by
 * hand). Checks, each printed as "OK <what> maxdiff=..." or "FAIL ...":
 *   - one BatchNorm2d and one BatchNorm1d layer alone: the training forward,
 *     backward (dx, dweight, dbias), the running statistics after it, and the
 *     evaluation forward that uses them;
 *   - a small conv-BN-ReLU-pool / linear-BN1d-ReLU-linear network built by
 *     nn_net_build: loss, logits, every gradient, one torch.optim.SGD step
 *     (parameters and running buffers), the evaluation logits after it;
 *   - LARS: weights and momentum saved in a checkpoint, loaded into a fresh
 *     network, one step, against the numpy result.
 * Tolerances as in test_parity: 1e-4 forward and gradients, 1e-5 a step,
 * relative to max(|want|, 1e-2 x max|want| of the tensor).
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "layers.h"
#include "nn.h"
#include "testutil.h"

#define REF ALEXNET_SOURCE_DIR "/tests/reference/bn_lars.h5"
#define FLOOR 1e-2
#define TOL_FORWARD 1e-4
#define TOL_GRAD 1e-4
#define TOL_STEP 1e-5

/* The whole of a float dataset (malloc'd) and its element count, or NULL. */
static float *read_f32(hid_t f, const char *path, size_t *count) {
  if (H5Lexists(f, path, H5P_DEFAULT) <= 0) {
    fprintf(stderr, "\n  %s: missing in the reference\n", path);
    return NULL;
  }
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
  hid_t s = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  float *buf = malloc((n > 0 ? (size_t)n : 1) * sizeof(float));
  if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    free(buf);
    buf = NULL;
  }
  H5Sclose(s);
  H5Dclose(d);
  if (count) *count = (size_t)n;
  return buf;
}

static double attr_double(hid_t f, const char *obj, const char *name) {
  double v = NAN;
  hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
  if (a >= 0) {
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
  }
  return v;
}

/* Compares got[0, n) with the reference tensor at path; prints OK/FAIL. */
static void check(hid_t f, const char *path, const float *got, size_t n, double tol) {
  size_t count = 0;
  float *want = read_f32(f, path, &count);
  CU_ASSERT_PTR_NOT_NULL_FATAL(want);
  CU_ASSERT_EQUAL(count, n);
  if (count != n) {
    fprintf(stderr, "\n  %s: %zu elements, nn has %zu\n", path, count, n);
    free(want);
    return;
  }
  size_t where = 0;
  double err = tu_max_rel_err(got, want, n, FLOOR, &where);
  printf("\n  %s %s maxdiff=%.2e", err <= tol ? "OK  " : "FAIL", path, err);
  if (err > tol) printf(" at %zu: nn %.8g torch %.8g", where, got[where], want[where]);
  CU_ASSERT(err <= tol);
  free(want);
}

static hid_t open_ref(void) {
  hid_t f = H5Fopen(REF, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) fprintf(stderr, "\n  cannot open %s\n", REF);
  return f;
}

/* ---- one batch norm layer ------------------------------------------------- */

static void check_bn_layer(const char *group, int n, int c, int s) {
  hid_t f = open_ref();
  CU_ASSERT_FATAL(f >= 0);
  char p[128];
#define GET(name) (snprintf(p, sizeof p, "%s/%s", group, name), read_f32(f, p, NULL))
  float *x = GET("x"), *dy = GET("dy"), *gamma = GET("weight"), *beta = GET("bias");
  float *rm = GET("running_mean0"), *rv = GET("running_var0");
#undef GET
  CU_ASSERT_FATAL(x && dy && gamma && beta && rm && rv);
  size_t total = (size_t)n * c * s;
  float *y = malloc(total * sizeof(float)), *dx = malloc(total * sizeof(float));
  float *mean = malloc(2 * (size_t)c * sizeof(float)), *invstd = mean + c;
  float *dgamma = malloc(2 * (size_t)c * sizeof(float)), *dbeta = dgamma + c;
  double *sums = malloc(2 * (size_t)c * sizeof(double));
  double count = (double)n * s;
  nn_bn_sums(n, c, s, x, sums);
  nn_bn_finish_stats(c, sums, count, NN_BN_EPS, NN_BN_MOMENTUM, mean, invstd, rm, rv);
  nn_bn_normalize(n, c, s, x, mean, invstd, gamma, beta, y);
  nn_bn_backward_sums(n, c, s, x, dy, mean, invstd, sums);
  nn_bn_backward_params(c, sums, dgamma, dbeta);
  nn_bn_backward_dx(n, c, s, x, dy, mean, invstd, gamma, sums, count, dx);
#define CHECK(name, got, len, tol) \
  (snprintf(p, sizeof p, "%s/%s", group, name), check(f, p, got, len, tol))
  CHECK("y", y, total, TOL_FORWARD);
  CHECK("dx", dx, total, TOL_GRAD);
  CHECK("dweight", dgamma, (size_t)c, TOL_GRAD);
  CHECK("dbias", dbeta, (size_t)c, TOL_GRAD);
  CHECK("running_mean", rm, (size_t)c, TOL_STEP);
  CHECK("running_var", rv, (size_t)c, TOL_STEP);
  /* Evaluation: the running statistics just updated. */
  nn_bn_eval_stats(c, rm, rv, NN_BN_EPS, mean, invstd);
  nn_bn_normalize(n, c, s, x, mean, invstd, gamma, beta, y);
  CHECK("y_eval", y, total, TOL_FORWARD);
  /* dx may overwrite dy (nn runs it in place). */
  nn_bn_eval_stats(c, rm, rv, NN_BN_EPS, mean, invstd);
  memcpy(dx, dy, total * sizeof(float));
  nn_bn_sums(n, c, s, x, sums);
  nn_bn_finish_stats(c, sums, count, NN_BN_EPS, NN_BN_MOMENTUM, mean, invstd, NULL, NULL);
  nn_bn_backward_sums(n, c, s, x, dx, mean, invstd, sums);
  nn_bn_backward_dx(n, c, s, x, dx, mean, invstd, gamma, sums, count, dx);
  CHECK("dx", dx, total, TOL_GRAD);
#undef CHECK
  free(x), free(dy), free(gamma), free(beta), free(rm), free(rv);
  free(y), free(dx), free(mean), free(dgamma), free(sums);
  H5Fclose(f);
}

static void test_bn2d(void) {
  check_bn_layer("bn2d", 4, 5, 18);
}
static void test_bn1d(void) {
  check_bn_layer("bn1d", 6, 7, 1);
}

/* ---- the small network ---------------------------------------------------- */

/* conv(3->4, 3x3, pad 1), BN, ReLU, maxpool 2 | linear(64->8), BN1d, ReLU, linear(8->5). */
static void build_small(nn_net *net, int batch) {
  nn_layer_spec s[8];
  memset(s, 0, sizeof s);
  s[0] = (nn_layer_spec){.kind = NN_CONV,
                         .out = 4,
                         .kernel_h = 3,
                         .kernel_w = 3,
                         .pad_top = 1,
                         .pad_bottom = 1,
                         .pad_left = 1,
                         .pad_right = 1};
  s[1].kind = NN_BATCHNORM;
  s[2].kind = NN_RELU;
  s[3] = (nn_layer_spec){.kind = NN_MAXPOOL, .kernel_h = 2, .kernel_w = 2};
  s[4] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 8};
  s[5] = (nn_layer_spec){.kind = NN_BATCHNORM, .section = NN_CLASSIFIER};
  s[6] = (nn_layer_spec){.kind = NN_RELU, .section = NN_CLASSIFIER};
  s[7] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 5};
  char err[512];
  int rc = nn_net_build(net, s, 8, (nn_shape){3, 8, 8}, err, sizeof err);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL_FATAL(nn_net_alloc(net, batch, 0, err, sizeof err), 0);
}

typedef struct {
  hid_t f;
  const char *group;
  float *base;
  int failed;
} load_ctx;

/* Visitor: base[offset, +count) = group/name (num_batches_tracked included). */
static void load_tensor(void *vctx, const char *name, size_t offset, size_t count, int ndim,
                        const int *dims) {
  (void)ndim, (void)dims;
  load_ctx *c = vctx;
  char p[160];
  snprintf(p, sizeof p, "%s/%s", c->group, name);
  size_t n = 0;
  float *t = read_f32(c->f, p, &n);
  if (!t || n != count) {
    c->failed = 1;
  } else {
    memcpy(c->base + offset, t, count * sizeof(float));
  }
  free(t);
}

typedef struct {
  hid_t f;
  const char *group;
  const float *base;
  double tol;
} check_ctx;

static void check_tensor(void *vctx, const char *name, size_t offset, size_t count, int ndim,
                         const int *dims) {
  (void)ndim, (void)dims;
  check_ctx *c = vctx;
  char p[160];
  snprintf(p, sizeof p, "%s/%s", c->group, name);
  check(c->f, p, c->base + offset, count, c->tol);
}

static void test_network_step(void) {
  hid_t f = open_ref();
  CU_ASSERT_FATAL(f >= 0);
  nn_net net;
  build_small(&net, 6);
  load_ctx lc = {f, "net/init", net.params, 0};
  nn_visit_params(&net, load_tensor, &lc);
  lc.base = net.buffers;
  nn_visit_buffers(&net, load_tensor, &lc);
  CU_ASSERT_FATAL(!lc.failed);
  float *x = read_f32(f, "net/input", NULL);
  int labels[6];
  hid_t d = H5Dopen2(f, "net/labels", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels);
  H5Dclose(d);
  net.training = 1;
  const float *logits = nn_forward(&net, x, 6);
  check(f, "net/logits", logits, 30, TOL_FORWARD);
  float loss = nn_loss(&net, labels, 6, NULL, NULL);
  check(f, "net/loss", &loss, 1, TOL_FORWARD);
  nn_backward(&net, x, 6, NULL, NULL);
  check_ctx cc = {f, "net/grads", net.grads, TOL_GRAD};
  nn_visit_params(&net, check_tensor, &cc);
  float *momentum = calloc(net.num_params, sizeof(float));
  nn_sgd_opts o = {.lr = (float)attr_double(f, "net/step", "lr"),
                   .momentum = (float)attr_double(f, "net/step", "momentum"),
                   .weight_decay = (float)attr_double(f, "net/step", "weight_decay"),
                   .decay_bias = 1};
  nn_sgd_step(&net, momentum, &o);
  cc = (check_ctx){f, "net/step", net.params, TOL_STEP};
  nn_visit_params(&net, check_tensor, &cc);
  cc.base = net.buffers; /* running statistics, and num_batches_tracked = 1 */
  nn_visit_buffers(&net, check_tensor, &cc);
  net.training = 0;
  logits = nn_forward(&net, x, 6);
  check(f, "net/eval_logits", logits, 30, TOL_FORWARD);
  free(momentum);
  free(x);
  nn_net_free(&net);
  H5Fclose(f);
}

/* ---- LARS from a checkpoint ----------------------------------------------- */

static void test_lars_from_checkpoint(void) {
  hid_t f = open_ref();
  CU_ASSERT_FATAL(f >= 0);
  nn_net net, fresh;
  build_small(&net, 2);
  float *momentum = calloc(net.num_params, sizeof(float));
  load_ctx lc = {f, "lars/w", net.params, 0};
  nn_visit_params(&net, load_tensor, &lc);
  lc.group = "lars/v", lc.base = momentum;
  nn_visit_params(&net, load_tensor, &lc);
  for (size_t i = 0; i < net.num_buffers; i++) net.buffers[i] = 0.25f * (float)i; /* round trip */
  CU_ASSERT_FATAL(!lc.failed);
  const char *dir = tu_scratch_dir("bn_lars_parity");
  char path[512], err[4800];
  snprintf(path, sizeof path, "%s/step-00000001.h5", dir);
  ckpt_meta meta;
  memset(&meta, 0, sizeof meta);
  meta.step = 1;
  for (int k = 0; k < 3; k++) meta.std[k] = 1.0f; /* a valid normalization */
  snprintf(meta.arch, sizeof meta.arch, "custom");
  int rc = ckpt_save(path, &net, momentum, &meta, err, sizeof err);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);

  build_small(&fresh, 2);
  float *v = calloc(fresh.num_params, sizeof(float));
  rc = ckpt_load(path, &fresh, v, NULL, err, sizeof err);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL(memcmp(fresh.buffers, net.buffers, net.num_buffers * sizeof(float)), 0);
  lc = (load_ctx){f, "lars/g", fresh.grads, 0};
  nn_visit_params(&fresh, load_tensor, &lc);
  CU_ASSERT_FATAL(!lc.failed);
  nn_lars_opts o = {.lr = (float)attr_double(f, "lars", "lr"),
                    .momentum = (float)attr_double(f, "lars", "momentum"),
                    .weight_decay = (float)attr_double(f, "lars", "weight_decay"),
                    .eta = (float)attr_double(f, "lars", "eta"),
                    .eps = (float)attr_double(f, "lars", "eps")};
  nn_lars_step(&fresh, v, &o);
  check_ctx cc = {f, "lars/w1", fresh.params, TOL_STEP};
  nn_visit_params(&fresh, check_tensor, &cc);
  cc = (check_ctx){f, "lars/v1", v, TOL_STEP};
  nn_visit_params(&fresh, check_tensor, &cc);
  free(v);
  free(momentum);
  nn_net_free(&fresh);
  nn_net_free(&net);
  H5Fclose(f);
}

int main(void) {
  static const tu_test tests[] = {
      {"BatchNorm2d: forward, backward, running stats, eval", test_bn2d},
      {"BatchNorm1d: forward, backward, running stats, eval", test_bn1d},
      {"conv-BN / linear-BN1d net: one SGD step", test_network_step},
      {"LARS: one step from a checkpoint with momentum", test_lars_from_checkpoint},
      {NULL, NULL},
  };
  tu_add_suite("batch norm and LARS against references", tests);
  return tu_run_all();
}
