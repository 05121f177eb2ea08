/*
 * test_recipes_config: the config keys of batch norm, LARS and kaiming init
 * (issue 13). Each bad value gives one line with the file, line, column and
 * key; good values load, validate and survive --print-config's round trip;
 * the presets and the shipped recipes build.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "nn.h"
#include "testutil.h"

#define ERRLEN 4096
#define DATA "data: {synthetic: {n: 64, size: 32, channels: 3}, crop: 32}\n"
#define BN_NET                                                                 \
  "model:\n"                                                                   \
  "  features: [{conv: {out: 8, kernel: 3}}, batchnorm, relu, {maxpool: 2}]\n" \
  "  classifier: [{linear: 16}, batchnorm, relu, {linear: 10}]\n"

/* Loads and validates text; returns the first error (or "" when valid). */
static const char *problem(const char *text, int ranks) {
  static char err[ERRLEN];
  cfg_config c;
  err[0] = '\0';
  if (cfg_load_string(text, "t.yaml", &c, err, ERRLEN) != 0) return err;
  if (cfg_validate(&c, err, ERRLEN) == 0) cfg_check_ranks(&c, ranks, err, ERRLEN);
  cfg_free(&c);
  return err;
}

static void expect(const char *text, int ranks, const char *want) {
  const char *got = problem(text, ranks);
  if (strcmp(got, want) != 0) fprintf(stderr, "\n  want: %s\n  got:  %s\n", want, got);
  CU_ASSERT_STRING_EQUAL(got, want);
}

static void test_bad_values(void) {
  expect(BN_NET DATA "optimizer: {type: lars, lars_eta: 0}\n", 1,
         "t.yaml:5:35: optimizer.lars_eta: expected a positive number, got 0");
  expect(BN_NET DATA "optimizer: {type: lars, lars_eta: -0.001}\n", 1,
         "t.yaml:5:35: optimizer.lars_eta: expected a positive number, got -0.001");
  expect(BN_NET DATA "optimizer: {lars_eps: -1}\n", 1,
         "t.yaml:5:23: optimizer.lars_eps: expected a number >= 0, got -1");
  expect(BN_NET DATA "optimizer: {type: adam}\n", 1,
         "t.yaml:5:19: optimizer.type: expected sgd or lars, got \"adam\"");
  expect(BN_NET DATA "optimizer: {type: lars, nesterov: true}\n", 1,
         "t.yaml:5:35: optimizer.nesterov: is not part of LARS (optimizer.type: lars); set it "
         "false");
  /* sync_batchnorm with one rank */
  expect(
      "model:\n  sync_batchnorm: true\n"
      "  features: [{conv: {out: 8, kernel: 3}}, batchnorm, relu, {maxpool: 2}]\n"
      "  classifier: [{linear: 10}]\n" DATA,
      1,
      "t.yaml:2:19: model.sync_batchnorm: true with one rank: there is nothing to "
      "synchronize (one rank's batch statistics are the global batch's); set it false or run "
      "on more ranks");
  expect(
      "model:\n  sync_batchnorm: true\n"
      "  features: [{conv: {out: 8, kernel: 3}}, batchnorm, relu, {maxpool: 2}]\n"
      "  classifier: [{linear: 10}]\n" DATA,
      2, "");
  /* batchnorm in an impossible place */
  expect(
      "model:\n  features: [{conv: {out: 8, kernel: 3}}, relu, batchnorm]\n"
      "  classifier: [{linear: 10}]\n" DATA,
      1,
      "t.yaml:2:13: model.features: [2] batchnorm: must directly follow a conv (BatchNorm2d) "
      "or a linear layer (BatchNorm1d), not relu");
  expect(
      "model:\n  features: [batchnorm, {conv: {out: 8, kernel: 3}}]\n"
      "  classifier: [{linear: 10}]\n" DATA,
      1,
      "t.yaml:2:13: model.features: [0] batchnorm: must directly follow a conv (BatchNorm2d) "
      "or a linear layer (BatchNorm1d), not the start of the list");
  expect(
      "model:\n  features: [{conv: {out: 8, kernel: 3}}, batchnorm]\n"
      "  classifier: [batchnorm, {linear: 10}]\n" DATA,
      1,
      "t.yaml:3:15: model.classifier: [0] batchnorm: must directly follow a conv "
      "(BatchNorm2d) or a linear layer (BatchNorm1d), not the start of the list");
  expect(
      "model: {weight_init: he, features: [{conv: {out: 8, kernel: 3}}], classifier: "
      "[{linear: 10}]}\n" DATA,
      1, "t.yaml:1:22: model.weight_init: expected auto, paper, torch or kaiming, got \"he\"");
}

static void test_good_values_round_trip(void) {
  char err[ERRLEN];
  cfg_config c, back;
  const char *one =
      "model:\n"
      "  weight_init: kaiming\n"
      "  features: [{conv: {out: 8, kernel: 3}}, batchnorm, relu, {maxpool: 2}]\n"
      "  classifier: [{linear: 16}, batchnorm, relu, {linear: 10}]\n" DATA
      "optimizer: {type: lars, lr: 2, lars_eta: 0.002, lars_eps: 0, warmup_epochs: 1}\n";
  int rc = cfg_load_string(one, "t.yaml", &c, err, ERRLEN);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.model.weight_init, CFG_INIT_KAIMING);
  CU_ASSERT_EQUAL(c.optimizer.type, CFG_OPT_LARS);
  CU_ASSERT_DOUBLE_EQUAL(c.optimizer.lars_eta, 0.002, 1e-12);
  CU_ASSERT_EQUAL(c.model.features[1].kind, NN_BATCHNORM);
  CU_ASSERT_EQUAL(c.model.classifier[1].kind, NN_BATCHNORM);
  char *yaml = cfg_to_yaml(&c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(yaml);
  TU_ASSERT_CONTAINS(yaml, "- batchnorm");
  TU_ASSERT_CONTAINS(yaml, "type: lars");
  TU_ASSERT_CONTAINS(yaml, "lars_eta: 0.002");
  CU_ASSERT_EQUAL_FATAL(cfg_load_string(yaml, "back.yaml", &back, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(back.optimizer.type, CFG_OPT_LARS);
  CU_ASSERT_EQUAL(back.model.num_features, 4);
  CU_ASSERT_EQUAL(back.model.features[1].kind, NN_BATCHNORM);
  free(yaml);
  nn_net net;
  CU_ASSERT_EQUAL(cfg_build_net(&c, &net, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(net.num_buffers, (2 * 8 + 1) + (2 * 16 + 1)); /* mean, var, count */
  nn_net_free(&net);
  cfg_free(&back);
  cfg_free(&c);
  /* Defaults. */
  CU_ASSERT_EQUAL_FATAL(cfg_load_string(BN_NET DATA, "t.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.optimizer.type, CFG_OPT_SGD);
  CU_ASSERT_DOUBLE_EQUAL(c.optimizer.lars_eta, 0.001, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(c.optimizer.lars_eps, 1e-9, 1e-18);
  CU_ASSERT_EQUAL(c.model.sync_batchnorm, 0);
  cfg_free(&c);
}

/* The preset alexnet_bn: BN after each of the five convolutions, before the
 * ReLU, no LRN; builds at 227 with 10 classes. */
static void test_alexnet_bn_preset(void) {
  nn_layer_spec *specs = NULL;
  int count = 0;
  nn_shape in;
  char err[256];
  nn_preset_opts o = {.num_classes = 10};
  CU_ASSERT_EQUAL_FATAL(nn_preset("alexnet_bn", &o, &specs, &count, &in, err, sizeof err), 0);
  int convs = 0, bns = 0, lrns = 0;
  for (int i = 0; i < count; i++) {
    convs += specs[i].kind == NN_CONV;
    lrns += specs[i].kind == NN_LRN;
    if (specs[i].kind == NN_BATCHNORM) {
      bns++;
      CU_ASSERT_EQUAL(specs[i - 1].kind, NN_CONV);
      CU_ASSERT_EQUAL(specs[i + 1].kind, NN_RELU);
    }
  }
  CU_ASSERT_EQUAL(convs, 5);
  CU_ASSERT_EQUAL(bns, 5);
  CU_ASSERT_EQUAL(lrns, 0);
  nn_net net;
  CU_ASSERT_EQUAL(nn_net_build(&net, specs, count, in, err, sizeof err), 0);
  CU_ASSERT_PTR_NOT_NULL(nn_param_by_name(&net, "features.1.weight", NULL, NULL));
  CU_ASSERT_PTR_NOT_NULL(nn_buffer_by_name(&net, "features.1.running_var", NULL, NULL));
  CU_ASSERT_PTR_NOT_NULL(nn_buffer_by_name(&net, "features.5.num_batches_tracked", NULL, NULL));
  nn_init_kaiming(&net, 1);
  float *w = nn_param_by_name(&net, "features.1.weight", NULL, NULL);
  float *rv = nn_buffer_by_name(&net, "features.1.running_var", NULL, NULL);
  CU_ASSERT(w && w[0] == 1.0f && rv && rv[0] == 1.0f);
  nn_net_free(&net);
  free(specs);
}

/* Kaiming: conv/linear weights with std sqrt(2 / fan_in), the last layer
 * sqrt(1 / fan_in), biases 0. */
static void test_kaiming_std(void) {
  nn_layer_spec s[3];
  memset(s, 0, sizeof s);
  s[0] = (nn_layer_spec){.kind = NN_CONV, .out = 64, .kernel_h = 3, .kernel_w = 3};
  s[1] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 256};
  s[2] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 100};
  nn_net net;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(nn_net_build(&net, s, 3, (nn_shape){32, 8, 8}, err, sizeof err), 0);
  nn_init_kaiming(&net, 3);
  for (int i = 0; i < 3; i++) {
    nn_layer *l = &net.layers[i];
    double sum = 0, sq = 0;
    for (size_t j = 0; j < l->weight_count; j++)
      sum += l->weight[j], sq += (double)l->weight[j] * l->weight[j];
    double n = (double)l->weight_count, mean = sum / n, sd = sqrt(sq / n - mean * mean);
    double fan_in = n / l->out.c, want = sqrt((i == 2 ? 1.0 : 2.0) / fan_in);
    printf("\n  %s: std %.5f, want %.5f (%zu weights)", l->name, sd, want, l->weight_count);
    CU_ASSERT(fabs(sd / want - 1) < 0.03);
    for (size_t j = 0; j < l->bias_count; j++) CU_ASSERT_EQUAL(l->bias[j], 0.0f);
  }
  nn_net_free(&net);
}

int main(void) {
  static const tu_test tests[] = {
      {"bad values: file, line, column, key", test_bad_values},
      {"good values load, validate, round trip, build", test_good_values_round_trip},
      {"preset alexnet_bn", test_alexnet_bn_preset},
      {"kaiming init", test_kaiming_std},
      {NULL, NULL},
  };
  tu_add_suite("batch norm, LARS and kaiming config", tests);
  return tu_run_all();
}
