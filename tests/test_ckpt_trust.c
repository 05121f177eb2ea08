/*
 * Checkpoint metadata and values are not trusted (issue 17, items 5 and 6):
 * every attribute that says where a run stands or what the model takes
 * (step, epoch, step_in_epoch, seed, num_classes, input, mean, std) is
 * covered by the "meta_checksum" attribute and checked against sane ranges
 * (files without that checksum, as older ones, get the range checks); a
 * non-finite weight or momentum is refused at load, by tensor name, even
 * when the tensor checksum matches. Each refusal names the attribute or
 * tensor; alexnet-train (an explicit resume) and alexnet-predict exit 1.
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "nn.h"
#include "testutil.h"

static void build_small(nn_net *net) {
  nn_layer_spec s[3];
  memset(s, 0, sizeof s);
  s[0] = (nn_layer_spec){.kind = NN_CONV,
                         .section = NN_FEATURES,
                         .out = 4,
                         .kernel_h = 3,
                         .kernel_w = 3,
                         .pad_top = 1,
                         .pad_bottom = 1,
                         .pad_left = 1,
                         .pad_right = 1};
  s[1] = (nn_layer_spec){.kind = NN_RELU, .section = NN_FEATURES};
  s[2] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 5};
  char err[512];
  CU_ASSERT_FATAL(nn_net_build(net, s, 3, (nn_shape){3, 6, 6}, err, sizeof err) == 0);
  nn_init_torch_default(net, 1);
}

static ckpt_meta small_meta(void) {
  ckpt_meta m;
  memset(&m, 0, sizeof m);
  m.step = 12;
  m.epoch = 2;
  m.step_in_epoch = 2;
  snprintf(m.arch, sizeof m.arch, "custom");
  m.num_classes = 5;
  for (int c = 0; c < 3; c++) m.mean[c] = 0.5f, m.std[c] = 0.25f;
  return m;
}

/* A saved checkpoint of the small net (with momentum) at a fresh path. */
static void save(const char *name, char *path, size_t len, nn_net *net, float *mom) {
  snprintf(path, len, "%s/%s.h5", tu_scratch_dir(name), name);
  ckpt_meta m = small_meta();
  char err[4096];
  CU_ASSERT_FATAL(ckpt_save(path, net, mom, &m, err, sizeof err) == 0);
}

/* Overwrites attribute `name` (n values of memory type t) in place. */
static void set_attr(const char *path, const char *name, hid_t t, const void *v) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t a = f >= 0 ? H5Aopen(f, name, H5P_DEFAULT) : -1;
  CU_ASSERT_FATAL(a >= 0 && H5Awrite(a, t, v) >= 0);
  H5Aclose(a);
  H5Fclose(f);
}

static void drop_attr(const char *path, const char *name) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0 && H5Adelete(f, name) >= 0);
  H5Fclose(f);
}

/* ckpt_load into a fresh small net with momentum: the message, or "" when it loads. */
static const char *load_msg(const char *path) {
  static char err[4096];
  nn_net net;
  build_small(&net);
  float *mom = calloc(net.num_params, sizeof(float));
  ckpt_meta m;
  err[0] = '\0';
  if (ckpt_load(path, &net, mom, &m, err, sizeof err) == 0) ckpt_meta_free(&m);
  free(mom);
  nn_net_free(&net);
  return err;
}

/* The attribute changed in place: the meta checksum catches it; without
 * the checksum (an older file), the range check names it. */
static void expect_refused(const char *attr, hid_t t, const void *v, const char *range_msg) {
  nn_net net;
  build_small(&net);
  float *mom = calloc(net.num_params, sizeof(float));
  char path[4200];
  save("ckpt_trust", path, sizeof path, &net, mom);
  CU_ASSERT_STRING_EQUAL(load_msg(path), "");
  set_attr(path, attr, t, v);
  TU_ASSERT_CONTAINS(load_msg(path), "attribute checksum mismatch (step, epoch");
  drop_attr(path, "meta_checksum");
  const char *msg = load_msg(path);
  TU_ASSERT_CONTAINS(msg, path);
  TU_ASSERT_CONTAINS(msg, range_msg);
  char err[4096];
  ckpt_meta m;
  CU_ASSERT(ckpt_read_meta(path, &m, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, range_msg);
  free(mom);
  nn_net_free(&net);
}

static void test_attributes(void) {
  int64_t neg = -1, huge = (int64_t)1 << 62, big_epoch = 13, neg_sie = -3;
  expect_refused("step", H5T_NATIVE_INT64, &neg, "attribute step = -1 is out of range [0, 2^40]");
  expect_refused("step", H5T_NATIVE_INT64, &huge,
                 "attribute step = 4611686018427387904 is out of range [0, 2^40]");
  expect_refused("epoch", H5T_NATIVE_INT64, &big_epoch,
                 "attribute epoch = 13 is out of range [0, step = 12]");
  expect_refused("step_in_epoch", H5T_NATIVE_INT64, &neg_sie,
                 "attribute step_in_epoch = -3 is out of range [0, step = 12]");
  int classes = 0, input[3] = {3, 6, 0};
  expect_refused("num_classes", H5T_NATIVE_INT, &classes,
                 "attribute num_classes = 0 is out of range [1, 2^24]");
  expect_refused("input", H5T_NATIVE_INT, input,
                 "attribute input = [3, 6, 0] (C, H, W) is out of range");
  float mean[3] = {0.5f, NAN, 0.5f}, sd[3] = {0.25f, 0.25f, -1.0f};
  expect_refused("mean", H5T_NATIVE_FLOAT, mean, "attribute mean[1] = nan is not finite");
  expect_refused("std", H5T_NATIVE_FLOAT, sd, "attribute std[2] = -1 must be finite and > 0");
}

/* A float stored where an integer belongs, or a count of values that
 * differs, is named. */
static void test_attribute_types(void) {
  nn_net net;
  build_small(&net);
  float *mom = calloc(net.num_params, sizeof(float));
  char path[4200];
  save("ckpt_trust_types", path, sizeof path, &net, mom);
  drop_attr(path, "step");
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t sp = H5Screate(H5S_SCALAR);
  double v = 12.0;
  hid_t a = H5Acreate2(f, "step", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  CU_ASSERT_FATAL(a >= 0 && H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0);
  H5Aclose(a);
  H5Sclose(sp);
  H5Fclose(f);
  TU_ASSERT_CONTAINS(load_msg(path), "attribute step is missing or not 1 integer value");
  free(mom);
  nn_net_free(&net);
}

/* NaN and Inf in a weight or a momentum buffer: ckpt_save writes them (and a
 * matching checksum), ckpt_load refuses them by tensor. */
static void test_non_finite(void) {
  nn_net net;
  build_small(&net);
  float *mom = calloc(net.num_params, sizeof(float));
  char path[4200];
  net.params[3] = NAN;
  save("ckpt_trust_nan_w", path, sizeof path, &net, mom);
  TU_ASSERT_CONTAINS(load_msg(path),
                     "model/features.0.weight holds a non-finite value (nan at "
                     "flat index 3)");
  net.params[3] = 0.0f;
  mom[net.num_params - 1] = -INFINITY;
  save("ckpt_trust_inf_m", path, sizeof path, &net, mom);
  TU_ASSERT_CONTAINS(load_msg(path),
                     "optimizer/momentum/classifier.0.bias holds a non-finite "
                     "value (-inf at flat index 4)");
  /* Weights only (checkpoint.init, predict): the momentum is still checked. */
  nn_net other;
  build_small(&other);
  char err[4096] = "";
  CU_ASSERT(ckpt_load(path, &other, NULL, NULL, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "optimizer/momentum/classifier.0.bias holds a non-finite value");
  nn_net_free(&other);
  free(mom);
  nn_net_free(&net);
}

/* Through the binaries: alexnet-train resuming explicitly from a checkpoint
 * whose step was set to 2^62 (an older file without the meta checksum), and
 * alexnet-predict on one whose mean holds a NaN: exit 1, the attribute named.
 * (Before, the run ended at once with exit 0, and predict printed confident
 * wrong classes.) */
static void test_binaries(void) {
  char dir[4200], ck[4300], cmd[16384], out[1 << 15];
  snprintf(dir, sizeof dir, "%s", tu_scratch_dir("ckpt_trust_bin"));
  snprintf(cmd, sizeof cmd,
           "%s %s/configs/debug.yaml --set run.dir=%s --set train.max_steps=2 "
           "--set checkpoint.every_steps=2 --set dist.threads_per_rank=1",
           tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, dir);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  snprintf(ck, sizeof ck, "%s/checkpoints/step-00000002.h5", dir);
  char huge_ck[4400], nan_ck[4400];
  snprintf(huge_ck, sizeof huge_ck, "%s/huge-step.h5", dir);
  snprintf(nan_ck, sizeof nan_ck, "%s/nan-mean.h5", dir);
  snprintf(cmd, sizeof cmd, "cp %s %s && cp %s %s", ck, huge_ck, ck, nan_ck);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  int64_t huge = (int64_t)1 << 62;
  set_attr(huge_ck, "step", H5T_NATIVE_INT64, &huge);
  drop_attr(huge_ck, "meta_checksum");
  float mean[3] = {0.5f, NAN, 0.5f};
  set_attr(nan_ck, "mean", H5T_NATIVE_FLOAT, mean);
  drop_attr(nan_ck, "meta_checksum");

  snprintf(cmd, sizeof cmd,
           "%s %s/configs/debug.yaml --set run.dir=%s --set checkpoint.resume=%s "
           "--set dist.threads_per_rank=1",
           tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, dir, huge_ck);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 1);
  TU_ASSERT_CONTAINS(out, "attribute step = 4611686018427387904 is out of range [0, 2^40]");

  snprintf(cmd, sizeof cmd, "%s --checkpoint %s --threads 1 %s/tests/fuzz/corpus/image/cut.jpg",
           tu_bin("alexnet-predict"), nan_ck, ALEXNET_SOURCE_DIR);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 1);
  TU_ASSERT_CONTAINS(out, "attribute mean[1] = nan is not finite");
}

int main(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  tu_add_suite("ckpt_trust", (tu_test[]){{"attributes out of range", test_attributes},
                                         {"attribute types", test_attribute_types},
                                         {"non-finite weights and momentum", test_non_finite},
                                         {"through the binaries", test_binaries},
                                         {NULL, NULL}});
  return tu_run_all();
}
