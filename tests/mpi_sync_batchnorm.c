/*
 * mpi_sync_batchnorm: synchronized batch norm makes training independent of
 * the rank count. Every rank trains, alone and in one process, the whole
 * global batch (the 1-rank run: batch statistics of all samples); then the
 * ranks train the same steps together, each on its share of the batch, with
 * nn's batch norm sums reduced over the ranks (as alexnet-train wires
 * model.sync_batchnorm) and the gradients averaged. Parameters, running
 * statistics and the logits of every step must agree with the 1-rank run
 * within 1e-5 (parameters and statistics: relative, floor 1e-2; logits:
 * relative to the batch's largest). Per-rank
 * statistics (no sync) must differ from it, so the test can tell.
 * ctest runs it on 2 and 4 ranks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "nn.h"
#include "testutil.h"

#define GLOBAL 8 /* samples per step, split over the ranks */
#define STEPS 3
#define CLASSES 5
#define TOL 1e-5

/* conv(3->6, 3x3, pad 1), BN, ReLU, maxpool 2 | linear(96->10), BN1d, ReLU, linear(10->5) */
static void build(nn_net *net, int batch) {
  nn_layer_spec s[8];
  memset(s, 0, sizeof s);
  s[0] = (nn_layer_spec){.kind = NN_CONV,
                         .out = 6,
                         .kernel_h = 3,
                         .kernel_w = 3,
                         .pad_top = 1,
                         .pad_bottom = 1,
                         .pad_left = 1,
                         .pad_right = 1};
  s[1].kind = NN_BATCHNORM;
  s[2].kind = NN_RELU;
  s[3] = (nn_layer_spec){.kind = NN_MAXPOOL, .kernel_h = 2, .kernel_w = 2};
  s[4] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 10};
  s[5] = (nn_layer_spec){.kind = NN_BATCHNORM, .section = NN_CLASSIFIER};
  s[6] = (nn_layer_spec){.kind = NN_RELU, .section = NN_CLASSIFIER};
  s[7] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = CLASSES};
  char err[256];
  CU_ASSERT_EQUAL_FATAL(nn_net_build(net, s, 8, (nn_shape){3, 8, 8}, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(nn_net_alloc(net, batch, 0, err, sizeof err), 0);
  nn_init_kaiming(net, 5);
}

/* The global batch of a step: images with a per-channel offset and scale,
 * so that batch statistics matter; labels i mod CLASSES. */
static void batch_of(int step, float *x, int *labels) {
  size_t per = 3 * 8 * 8;
  for (int i = 0; i < GLOBAL; i++) {
    for (size_t j = 0; j < per; j++) {
      int ch = (int)(j / 64);
      x[i * per + j] =
          0.5f * (float)ch + (1.0f + ch) * (2.0f * nn_uniform(100 + step, i * per + j) - 1.0f);
    }
    labels[i] = (i + step) % CLASSES;
  }
}

static void sum_doubles(void *ctx, double *sums, int n) {
  (void)ctx;
  dist_allreduce_sum_doubles(sums, n);
}

/* Parameters and running statistics: relative, with a floor of 1e-2. */
static double max_err(const float *a, const float *b, size_t n) {
  size_t where;
  return tu_max_rel_err(a, b, n, 1e-2, &where);
}

/* Logits: relative to the largest of the batch (a logit near 0 carries the
 * rounding of the others: different batch sizes run different GEMM blockings). */
static double logit_err(const float *a, const float *b, size_t n) {
  double big = 0;
  for (size_t i = 0; i < n; i++) big = fabs(b[i]) > big ? fabs(b[i]) : big;
  size_t where;
  return tu_max_rel_err(a, b, n, big, &where);
}

/* Trains STEPS steps on `ranks` ranks (1: this process alone, the whole
 * batch) with or without sync; logits of step s's own samples go to
 * logits[s] (rows of this rank's share). */
static void train(nn_net *net, int ranks, int sync, float logits[STEPS][GLOBAL * CLASSES]) {
  int n = GLOBAL / ranks, first = ranks > 1 ? dist_rank() * n : 0;
  size_t per = 3 * 8 * 8;
  float *x = malloc(GLOBAL * per * sizeof(float));
  int labels[GLOBAL];
  float *momentum = calloc(net->num_params, sizeof(float));
  net->bn_reduce = sync ? sum_doubles : NULL;
  nn_sgd_opts o = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f, .decay_bias = 1};
  for (int s = 0; s < STEPS; s++) {
    batch_of(s, x, labels);
    net->training = 1;
    const float *y = nn_forward(net, x + first * per, n);
    memcpy(logits[s], y, (size_t)n * CLASSES * sizeof(float));
    nn_loss(net, labels + first, n, NULL, NULL);
    nn_backward(net, x + first * per, n, NULL, NULL);
    if (ranks > 1) dist_allreduce_average_plain(net->grads, net->num_params);
    nn_sgd_step(net, momentum, &o);
  }
  net->bn_reduce = NULL;
  free(momentum);
  free(x);
}

static void test_sync_equals_one_rank(void) {
  int ranks = dist_size();
  CU_ASSERT_FATAL(GLOBAL % ranks == 0);
  int n = GLOBAL / ranks, first = dist_rank() * n;
  static float ref_logits[STEPS][GLOBAL * CLASSES], logits[STEPS][GLOBAL * CLASSES];
  nn_net ref, net, plain;
  build(&ref, GLOBAL);
  build(&net, GLOBAL);
  build(&plain, GLOBAL);
  train(&ref, 1, 0, ref_logits);
  train(&net, ranks, 1, logits);
  double worst = 0;
  for (int s = 0; s < STEPS; s++) {
    double e = logit_err(logits[s], ref_logits[s] + first * CLASSES, (size_t)n * CLASSES);
    worst = e > worst ? e : worst;
  }
  double ep = max_err(net.params, ref.params, ref.num_params);
  double eb = max_err(net.buffers, ref.buffers, ref.num_buffers);
  printf("\n  [rank %d of %d] sync vs 1 rank: logits %.2e, parameters %.2e, running stats %.2e",
         dist_rank(), ranks, worst, ep, eb);
  CU_ASSERT(worst <= TOL);
  CU_ASSERT(ep <= TOL);
  CU_ASSERT(eb <= TOL);
  /* Evaluation with the running statistics: the same logits. */
  static float x[GLOBAL * 3 * 64];
  int labels[GLOBAL];
  batch_of(STEPS, x, labels);
  net.training = ref.training = 0;
  float *a = malloc(GLOBAL * CLASSES * sizeof(float));
  memcpy(a, nn_forward(&net, x, GLOBAL), GLOBAL * CLASSES * sizeof(float));
  double ee = logit_err(a, nn_forward(&ref, x, GLOBAL), GLOBAL * CLASSES);
  printf(", eval logits %.2e", ee);
  CU_ASSERT(ee <= TOL);
  free(a);
  /* Per-rank statistics are not the global batch's: the check can fail. */
  train(&plain, ranks, 0, logits);
  double ed = max_err(plain.params, ref.params, ref.num_params);
  printf(", per-rank (no sync) parameters %.2e", ed);
  CU_ASSERT(ed > 100 * TOL);
  nn_net_free(&ref);
  nn_net_free(&net);
  nn_net_free(&plain);
}

int main(int argc, char **argv) {
  dist_init(&argc, &argv);
  nn_set_threads(1);
  static const tu_test tests[] = {
      {"sync batch norm on N ranks == 1 rank within 1e-5", test_sync_equals_one_rank},
      {NULL, NULL}};
  tu_add_suite("synchronized batch norm", tests);
  int rc = tu_run_all_ranks(dist_rank());
  dist_finalize();
  return rc;
}
