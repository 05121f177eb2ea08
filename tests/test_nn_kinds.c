/*
 * test_nn_kinds: the layer-kind table of nn/kinds.c and the rules nn_net_build
 * takes from it: every row is complete and self-consistent, the validity rules
 * (ranges, maxpool padding, LRN k, what may follow what) refuse with a message
 * naming the layer and the parameter, and shapes are computed in 64 bits so
 * that a huge padding is refused instead of wrapping into a small network.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "testutil.h"

/* Every kind has a row that finds itself by name, a shape rule, its
 * forward and backward, a dimension rule for each kind of tensor it has,
 * parameters whose defaults are valid unless required, and a shorthand that
 * names one of its parameters. */
static void test_table_rows(void) {
  for (int i = 0; i < NN_KIND_COUNT; i++) {
    const nn_kind_desc *k = nn_kind_info((nn_kind)i);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(k->kind, (nn_kind)i);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k->name);
    CU_ASSERT_PTR_EQUAL(nn_kind_find(k->name), k);
    CU_ASSERT_STRING_EQUAL(nn_kind_name((nn_kind)i), k->name);
    CU_ASSERT_PTR_NOT_NULL(k->shape);
    CU_ASSERT_EQUAL(k->learned[0] != NULL, k->weight_dims != NULL);
    CU_ASSERT_EQUAL(k->state[0] != NULL, k->state_dims != NULL);
    CU_ASSERT_PTR_NOT_NULL(k->forward);
    CU_ASSERT_PTR_NOT_NULL(k->backward);
    int required = 0, shorthand_found = k->shorthand == NULL;
    for (const nn_param_desc *p = k->params; p < k->params + NN_KIND_MAX_PARAMS && p->name; p++) {
      CU_ASSERT(p->expect != NULL || p->type == NN_PARAM_BIAS);
      required |= p->required;
      if (k->shorthand && !strcmp(k->shorthand, p->name)) shorthand_found = 1;
    }
    CU_ASSERT(shorthand_found);
    nn_layer_spec s = nn_layer_defaults((nn_kind)i, NN_FEATURES);
    nn_layer_complete(&s);
    char why[256];
    const char *problem = nn_layer_problem(&s, why, sizeof why);
    if (!required && problem) fprintf(stderr, "\n  %s at its defaults: %s\n", k->name, problem);
    CU_ASSERT_EQUAL(problem != NULL, required);
  }
  CU_ASSERT_PTR_NULL(nn_kind_info(NN_KIND_COUNT));
  CU_ASSERT_PTR_NULL(nn_kind_find("conv2d"));
  CU_ASSERT_STRING_EQUAL(nn_kind_name((nn_kind)99), "?");
}

/* The paper's LRN constants are the kind's defaults, so the preset gets them. */
static void test_defaults(void) {
  nn_layer_spec s = nn_layer_defaults(NN_LRN, NN_FEATURES);
  CU_ASSERT_EQUAL(s.lrn_size, 5);
  CU_ASSERT_EQUAL(s.lrn_alpha, 1e-4f);
  CU_ASSERT_EQUAL(s.lrn_beta, 0.75f);
  CU_ASSERT_EQUAL(s.lrn_k, 2.0f);
  nn_layer_spec *specs;
  int count;
  nn_shape in;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(nn_preset("alexnet", NULL, &specs, &count, &in, err, sizeof err), 0);
  int lrns = 0;
  for (int i = 0; i < count; i++)
    if (specs[i].kind == NN_LRN) {
      lrns++;
      CU_ASSERT_EQUAL(memcmp(&specs[i], &s, sizeof s), 0);
    }
  CU_ASSERT_EQUAL(lrns, 2);
  free(specs);
  s = nn_layer_defaults(NN_MAXPOOL, NN_FEATURES);
  s.kernel_h = s.kernel_w = 3;
  nn_layer_complete(&s);
  CU_ASSERT_EQUAL(s.stride_h, 3);
  CU_ASSERT_EQUAL(s.stride_w, 3);
  s = nn_layer_defaults(NN_CONV, NN_FEATURES);
  CU_ASSERT_EQUAL(s.stride_h, 1);
  CU_ASSERT_EQUAL(s.groups, 1);
  CU_ASSERT_EQUAL(s.no_bias, 0);
}

/* Builds [layer, flatten?, linear 4] on a 3x8x8 input; returns nn_net_build's
 * status with its message in err. */
static int build_with(nn_layer_spec first, nn_shape in, char *err, size_t errlen) {
  nn_layer_spec specs[2] = {first, nn_layer_defaults(NN_LINEAR, NN_CLASSIFIER)};
  specs[1].out = 4;
  nn_net net;
  int rc = nn_net_build(&net, specs, 2, in, err, errlen);
  if (rc == 0) nn_net_free(&net);
  CU_ASSERT(rc == 0 || net.num_layers == 0);
  return rc;
}

static void test_build_refuses(void) {
  char err[512];
  nn_shape in = {3, 8, 8};
  /* issue 17: a padding of 2^31 - 1 overflowed int and built a meaningless net */
  nn_layer_spec conv = nn_layer_defaults(NN_CONV, NN_FEATURES);
  conv.out = 8;
  conv.kernel_h = conv.kernel_w = 3;
  conv.pad_top = conv.pad_bottom = conv.pad_left = conv.pad_right = INT_MAX;
  CU_ASSERT_EQUAL(build_with(conv, in, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "features.0 (conv): output 8x4294967300x4294967300 is too large (at most "
                         "2147483647 values per sample); input shape 3x8x8");
  /* one side alone fits in int but not in a sample's size */
  conv.pad_top = conv.pad_bottom = 0;
  conv.pad_left = conv.pad_right = INT_MAX / 2;
  CU_ASSERT_EQUAL(build_with(conv, in, err, sizeof err), -1);
  TU_ASSERT_CONTAINS(err, "features.0 (conv): output 8x6x2147483652 is too large");
  /* a weight with more values than an int counts */
  conv.pad_left = conv.pad_right = 0;
  conv.out = 1 << 20;
  conv.kernel_h = conv.kernel_w = 8;
  nn_shape wide = {64, 8, 8};
  CU_ASSERT_EQUAL(build_with(conv, wide, err, sizeof err), -1);
  TU_ASSERT_CONTAINS(err,
                     "features.0 (conv): weight 1048576x64x8x8 has more than 2147483647 values");
  /* ranges: the same words as the config's */
  conv = nn_layer_defaults(NN_CONV, NN_FEATURES);
  conv.kernel_h = conv.kernel_w = 3;
  CU_ASSERT_EQUAL(build_with(conv, in, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(
      err, "features.0 (conv): out: expected a positive integer, got 0; input shape 3x8x8");
  conv.out = 8;
  conv.stride_w = -1;
  CU_ASSERT_EQUAL(build_with(conv, in, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "features.0 (conv): stride: expected a positive integer or [h, w], got "
                         "[1, -1]; input shape 3x8x8");
  /* nn and the config agree: max-pool padding at most half the kernel ... */
  nn_layer_spec pool = nn_layer_defaults(NN_MAXPOOL, NN_FEATURES);
  pool.kernel_h = pool.kernel_w = 2;
  pool.pad_top = 2;
  CU_ASSERT_EQUAL(build_with(pool, in, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "features.0 (maxpool): padding: expected at most half the kernel 2x2, "
                         "got [2, 0, 0, 0]; input shape 3x8x8");
  pool.pad_top = 1;
  CU_ASSERT_EQUAL(build_with(pool, in, err, sizeof err), 0);
  /* ... and LRN k > 0 */
  nn_layer_spec lrn = nn_layer_defaults(NN_LRN, NN_FEATURES);
  lrn.lrn_k = 0;
  CU_ASSERT_EQUAL(build_with(lrn, in, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(
      err, "features.0 (lrn): k: expected a positive number, got 0; input shape 3x8x8");
  lrn.lrn_k = 1;
  CU_ASSERT_EQUAL(build_with(lrn, in, err, sizeof err), 0);
  /* an input too large to index */
  CU_ASSERT_EQUAL(build_with(lrn, (nn_shape){3, 65536, 65536}, err, sizeof err), -1);
  TU_ASSERT_CONTAINS(err, "input shape 3x65536x65536 must be positive and at most 2147483647");
}

/* Rules that look at the previous layer: a conv after a linear layer, a
 * batch norm anywhere but after a conv or a linear layer. */
static void test_previous_layer_rule(void) {
  nn_layer_spec specs[3] = {nn_layer_defaults(NN_LINEAR, NN_FEATURES),
                            nn_layer_defaults(NN_CONV, NN_FEATURES),
                            nn_layer_defaults(NN_LINEAR, NN_CLASSIFIER)};
  specs[0].out = specs[1].out = specs[2].out = 4;
  specs[1].kernel_h = specs[1].kernel_w = 1;
  char err[512], why[256];
  nn_net net;
  CU_ASSERT_EQUAL(nn_net_build(&net, specs, 3, (nn_shape){3, 8, 8}, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "features.1 (conv): must not follow a linear layer (its output is flat); "
                         "input shape 4x1x1");
  CU_ASSERT_PTR_NULL(nn_layer_problem(&specs[1], why, sizeof why));
  CU_ASSERT_PTR_NULL(nn_layer_follows(NULL, &specs[1], why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(nn_layer_follows(&specs[0], &specs[1], why, sizeof why));

  nn_layer_spec bn = nn_layer_defaults(NN_BATCHNORM, NN_FEATURES);
  nn_layer_spec relu = nn_layer_defaults(NN_RELU, NN_FEATURES);
  CU_ASSERT_PTR_NULL(nn_layer_follows(&specs[0], &bn, why, sizeof why));
  CU_ASSERT_PTR_NULL(nn_layer_follows(&specs[1], &bn, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(nn_layer_follows(&relu, &bn, why, sizeof why));
  CU_ASSERT_STRING_EQUAL(nn_layer_follows(NULL, &bn, why, sizeof why),
                         "must directly follow a conv (BatchNorm2d) or a linear layer "
                         "(BatchNorm1d), not the start of the list");
  /* conv, batchnorm, relu, linear builds: a per-channel weight and bias and
   * 2C + 1 values of state */
  nn_layer_spec net_specs[4] = {specs[1], bn, relu, specs[2]};
  CU_ASSERT_EQUAL_FATAL(nn_net_build(&net, net_specs, 4, (nn_shape){3, 8, 8}, err, sizeof err), 0);
  CU_ASSERT_EQUAL(net.layers[1].weight_count, 4);
  CU_ASSERT_EQUAL(net.layers[1].bias_count, 4);
  CU_ASSERT_EQUAL(net.layers[1].buffer_count, 9);
  nn_net_free(&net);
  nn_layer_spec bad[3] = {relu, bn, specs[2]};
  CU_ASSERT_EQUAL(nn_net_build(&net, bad, 3, (nn_shape){3, 8, 8}, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "features.1 (batchnorm): must directly follow a conv (BatchNorm2d) or a "
                         "linear layer (BatchNorm1d), not relu; input shape 3x8x8");
}

/* The checkpoint's view of a kind's state comes from its row (state names,
 * state_dims), its start from the row's setup and init: batchnorm's
 * running_mean (C), running_var (C, starting at 1), num_batches_tracked (a
 * scalar), one after the other; weight 1 and bias 0 under any
 * initialization. */
typedef struct {
  char names[4][64];
  size_t offsets[4], counts[4];
  int ndims[4], dims0[4], seen;
} visited;

static void record(void *ctx, const char *name, size_t offset, size_t count, int ndim,
                   const int *dims) {
  visited *v = ctx;
  if (v->seen < 4) {
    snprintf(v->names[v->seen], sizeof v->names[0], "%s", name);
    v->offsets[v->seen] = offset, v->counts[v->seen] = count, v->ndims[v->seen] = ndim;
    v->dims0[v->seen] = ndim ? dims[0] : -1;
  }
  v->seen++;
}

static void test_state_from_row(void) {
  nn_layer_spec conv = nn_layer_defaults(NN_CONV, NN_FEATURES);
  conv.out = 5, conv.kernel_h = conv.kernel_w = 3;
  nn_layer_spec linear = nn_layer_defaults(NN_LINEAR, NN_CLASSIFIER);
  linear.out = 2;
  nn_layer_spec specs[3] = {conv, nn_layer_defaults(NN_BATCHNORM, NN_FEATURES), linear};
  nn_net net;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(nn_net_build(&net, specs, 3, (nn_shape){3, 6, 6}, err, sizeof err), 0);
  visited v = {0};
  nn_visit_buffers(&net, record, &v);
  CU_ASSERT_EQUAL_FATAL(v.seen, 3);
  const char *names[3] = {"features.1.running_mean", "features.1.running_var",
                          "features.1.num_batches_tracked"};
  const size_t offsets[3] = {0, 5, 10}, counts[3] = {5, 5, 1};
  const int ndims[3] = {1, 1, 0}, dims0[3] = {5, 5, -1};
  for (int t = 0; t < 3; t++) {
    CU_ASSERT_STRING_EQUAL(v.names[t], names[t]);
    CU_ASSERT_EQUAL(v.offsets[t], offsets[t]);
    CU_ASSERT_EQUAL(v.counts[t], counts[t]);
    CU_ASSERT_EQUAL(v.ndims[t], ndims[t]);
    CU_ASSERT_EQUAL(v.dims0[t], dims0[t]);
  }
  CU_ASSERT_EQUAL(net.num_buffers, 11);
  size_t count = 0;
  const float *var = nn_buffer_by_name(&net, "features.1.running_var", &count, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(var);
  CU_ASSERT_EQUAL(count, 5);
  for (int c = 0; c < 5; c++) CU_ASSERT_EQUAL(var[c], 1.0f);
  CU_ASSERT_EQUAL(net.buffers[0], 0.0f);
  CU_ASSERT_EQUAL(net.buffers[10], 0.0f);
  nn_init_kaiming(&net, 3);
  for (int c = 0; c < 5; c++) {
    CU_ASSERT_EQUAL(net.layers[1].weight[c], 1.0f);
    CU_ASSERT_EQUAL(net.layers[1].bias[c], 0.0f);
  }
  nn_net_free(&net);
}

int main(void) {
  static const tu_test tests[] = {
      {"every kind has a consistent row", test_table_rows},
      {"defaults", test_defaults},
      {"nn_net_build refuses with the kind's rules", test_build_refuses},
      {"a rule on the previous layer", test_previous_layer_rule},
      {"state tensors and fixed starts from the row", test_state_from_row},
      {NULL, NULL},
  };
  tu_add_suite("kinds", tests);
  return tu_run_all();
}
