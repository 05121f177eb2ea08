/*
 * Checkpoints: round trip, atomic write, and every refusal (another model,
 * truncated, incomplete, a future version, another format), each with its
 * message; auto-resume's newest-valid choice and pruning.
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

static void build_cifar(nn_net *net, int classes) {
  nn_layer_spec *specs;
  int count;
  nn_shape input;
  char err[256];
  nn_preset_opts o = {.num_classes = classes};
  CU_ASSERT_FATAL(nn_preset("alexnet_cifar", &o, &specs, &count, &input, err, sizeof err) == 0);
  CU_ASSERT_FATAL(nn_net_build(net, specs, count, input, err, sizeof err) == 0);
  free(specs);
}

static ckpt_meta sample_meta(void) {
  ckpt_meta m;
  memset(&m, 0, sizeof m);
  m.step = 42;
  m.epoch = 3;
  m.step_in_epoch = 7;
  m.seed = 1234567890123ull;
  snprintf(m.arch, sizeof m.arch, "alexnet_cifar");
  m.config_yaml = "run:\n  name: test\n";
  m.num_classes = 10;
  for (int c = 0; c < 3; c++) m.mean[c] = 0.1f * (float)c, m.std[c] = 0.2f + 0.1f * (float)c;
  return m;
}

static void test_round_trip(void) {
  const char *dir = tu_scratch_dir("ckpt_round_trip");
  nn_net a, b;
  build_cifar(&a, 10);
  build_cifar(&b, 10);
  nn_init_torch_default(&a, 5);
  float *mom = malloc(a.num_params * sizeof(float));
  float *mom2 = calloc(a.num_params, sizeof(float));
  for (size_t i = 0; i < a.num_params; i++) mom[i] = nn_normal(9, i);
  char path[4200], err[4400];
  ckpt_step_path(dir, 42, path, sizeof path);
  TU_ASSERT_CONTAINS(path, "step-00000042.h5");
  ckpt_meta m = sample_meta();
  char *names[10] = {"zero", "one", "two",   "three", "four",
                     "five", "six", "seven", "eight", "nine"};
  m.class_names = names;
  CU_ASSERT_FATAL(ckpt_save(path, &a, mom, &m, err, sizeof err) == 0);
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CU_ASSERT(access(tmp, F_OK) != 0); /* renamed away */

  ckpt_meta got;
  CU_ASSERT_FATAL(ckpt_load(path, &b, mom2, &got, err, sizeof err) == 0);
  CU_ASSERT(memcmp(a.params, b.params, a.num_params * sizeof(float)) == 0);
  CU_ASSERT(memcmp(mom, mom2, a.num_params * sizeof(float)) == 0);
  CU_ASSERT(got.step == 42 && got.epoch == 3 && got.step_in_epoch == 7);
  CU_ASSERT(got.seed == 1234567890123ull);
  CU_ASSERT_STRING_EQUAL(got.arch, "alexnet_cifar");
  CU_ASSERT_STRING_EQUAL(got.config_yaml, "run:\n  name: test\n");
  CU_ASSERT(got.num_classes == 10 && got.has_momentum);
  CU_ASSERT(got.input.c == 3 && got.input.h == 32 && got.input.w == 32);
  CU_ASSERT(fabsf(got.std[2] - 0.4f) < 1e-7f);
  CU_ASSERT_FATAL(got.class_names != NULL);
  CU_ASSERT_STRING_EQUAL(got.class_names[7], "seven");
  ckpt_meta_free(&got);

  /* Weights only: momentum absent, refused for resuming, fine for init. */
  char wpath[4200];
  snprintf(wpath, sizeof wpath, "%s/weights.h5", dir);
  m.class_names = NULL;
  CU_ASSERT_FATAL(ckpt_save(wpath, &a, NULL, &m, err, sizeof err) == 0);
  CU_ASSERT(ckpt_load(wpath, &b, mom2, NULL, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "holds no optimizer state");
  CU_ASSERT(ckpt_load(wpath, &b, NULL, NULL, err, sizeof err) == 0);
  free(mom);
  free(mom2);
  nn_net_free(&a);
  nn_net_free(&b);
}

static void save_sample(const char *path, nn_net *net) {
  char err[4400];
  ckpt_meta m = sample_meta();
  CU_ASSERT_FATAL(ckpt_save(path, net, NULL, &m, err, sizeof err) == 0);
}

static void test_refusals(void) {
  const char *dir = tu_scratch_dir("ckpt_refusals");
  char path[4200], bad[4300], err[4400], cmd[9000], out[4096];
  nn_net a, other;
  build_cifar(&a, 10);
  build_cifar(&other, 7);
  nn_init_torch_default(&a, 1);
  snprintf(path, sizeof path, "%s/good.h5", dir);
  save_sample(path, &a);

  /* Missing file. */
  snprintf(bad, sizeof bad, "%s/nope.h5", dir);
  CU_ASSERT(ckpt_load(bad, &a, NULL, NULL, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "nope.h5: No such file");

  /* Another model (7 classes). */
  CU_ASSERT(ckpt_load(path, &other, NULL, NULL, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "has 10 classes, the model has 7");

  /* Truncated. */
  snprintf(bad, sizeof bad, "%s/truncated.h5", dir);
  snprintf(cmd, sizeof cmd, "head -c 300000 '%s' > '%s'", path, bad);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  CU_ASSERT(ckpt_load(bad, &a, NULL, NULL, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "truncated.h5");

  /* Not HDF5 at all. */
  snprintf(bad, sizeof bad, "%s/text.h5", dir);
  snprintf(cmd, sizeof cmd, "echo 'hello' > '%s'", bad);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  CU_ASSERT(ckpt_load(bad, &a, NULL, NULL, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "not an HDF5 file");

  /* Attribute edits through the HDF5 API: future version, another format,
   * missing completeness marker, a flipped weight (checksum). */
  struct {
    const char *file, *expect;
    int edit;
  } cases[] = {
      {"future.h5", "format version 99 is not supported", 0},
      {"format.h5", "attribute format is 'something-else'", 1},
      {"incomplete.h5", "incomplete (its writer was interrupted)", 2},
      {"corrupt.h5", "checksum mismatch", 3},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    snprintf(bad, sizeof bad, "%s/%s", dir, cases[k].file);
    save_sample(bad, &a);
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    if (cases[k].edit == 0) {
      int v = 99;
      hid_t at = H5Aopen(f, "version", H5P_DEFAULT);
      H5Awrite(at, H5T_NATIVE_INT, &v);
      H5Aclose(at);
    } else if (cases[k].edit == 1) {
      H5Adelete(f, "format");
      hid_t t = H5Tcopy(H5T_C_S1);
      H5Tset_size(t, H5T_VARIABLE);
      hid_t sp = H5Screate(H5S_SCALAR);
      hid_t at = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
      const char *v = "something-else";
      H5Awrite(at, t, &v);
      H5Aclose(at), H5Sclose(sp), H5Tclose(t);
    } else if (cases[k].edit == 2) {
      H5Adelete(f, "complete");
    } else {
      hid_t ds = H5Dopen2(f, "model/classifier.6.bias", H5P_DEFAULT);
      float v[10];
      H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
      v[3] += 1.0f;
      H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
      H5Dclose(ds);
    }
    H5Fclose(f);
    CU_ASSERT(ckpt_load(bad, &a, NULL, NULL, err, sizeof err) == -1);
    TU_ASSERT_CONTAINS(err, cases[k].expect);
  }
  nn_net_free(&a);
  nn_net_free(&other);
}

/* Auto-resume takes the newest checkpoint that loads; broken newer ones are skipped. */
static void test_latest_and_prune(void) {
  const char *dir = tu_scratch_dir("ckpt_latest");
  char path[4200], err[4400], cmd[9000], out[4096];
  nn_net a, b;
  build_cifar(&a, 10);
  build_cifar(&b, 10);
  char found[4200];
  CU_ASSERT(ckpt_load_latest(dir, &b, NULL, NULL, found, sizeof found, err, sizeof err) == 0);
  for (int step = 10; step <= 40; step += 10) {
    nn_init_torch_default(&a, (uint64_t)step);
    ckpt_step_path(dir, step, path, sizeof path);
    save_sample(path, &a);
  }
  /* step 40 truncated, step 30 a half-written .tmp left by a crash (ignored). */
  ckpt_step_path(dir, 40, path, sizeof path);
  snprintf(cmd, sizeof cmd, "truncate -s 100000 '%s' && cp '%s' '%s/step-00000050.h5.tmp'", path,
           path, dir);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  CU_ASSERT(ckpt_load_latest(dir, &b, NULL, NULL, found, sizeof found, err, sizeof err) == 1);
  TU_ASSERT_CONTAINS(found, "step-00000030.h5");
  nn_init_torch_default(&a, 30);
  CU_ASSERT(memcmp(a.params, b.params, a.num_params * sizeof(float)) == 0);

  /* checkpoint.keep 2 after step 40 of this run (run_id ""): of the files
   * that verify, 30 and 20 stay and 10 goes; the truncated 40, another
   * run's 25 and a later step 60 are neither counted nor deleted. */
  ckpt_meta other = sample_meta();
  snprintf(other.run_id, sizeof other.run_id, "other");
  ckpt_step_path(dir, 25, path, sizeof path);
  CU_ASSERT_FATAL(ckpt_save(path, &a, NULL, &other, err, sizeof err) == 0);
  ckpt_step_path(dir, 60, path, sizeof path);
  save_sample(path, &a);
  CU_ASSERT(ckpt_prune_run(dir, 2, &a, "", 40) == 1);
  const int64_t gone[] = {10}, kept[] = {20, 25, 30, 40, 60};
  ckpt_step_path(dir, gone[0], path, sizeof path);
  CU_ASSERT(access(path, F_OK) != 0);
  for (size_t k = 0; k < sizeof kept / sizeof *kept; k++) {
    ckpt_step_path(dir, kept[k], path, sizeof path);
    CU_ASSERT(access(path, F_OK) == 0);
  }
  /* Another run's newest file is found; none when asked for "other". */
  char other_path[4200], other_run[64];
  CU_ASSERT(ckpt_find_other_run(dir, "", &a, other_path, sizeof other_path, other_run,
                                sizeof other_run) == 1);
  TU_ASSERT_CONTAINS(other_path, "step-00000025.h5");
  CU_ASSERT_STRING_EQUAL(other_run, "other");
  nn_net_free(&a);
  nn_net_free(&b);
}

/* A directory that cannot be written: a clear message, nothing else touched. */
static void test_unwritable(void) {
  const char *dir = tu_scratch_dir("ckpt_unwritable");
  char path[4200], err[4400];
  nn_net a;
  build_cifar(&a, 10);
  snprintf(path, sizeof path, "%s/no/such/dir/step.h5", dir);
  ckpt_meta m = sample_meta();
  CU_ASSERT(ckpt_save(path, &a, NULL, &m, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "cannot create");
  nn_net_free(&a);
}

int main(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  tu_add_suite("checkpoint", (tu_test[]){{"round trip", test_round_trip},
                                         {"refusals", test_refusals},
                                         {"latest and prune", test_latest_and_prune},
                                         {"unwritable", test_unwritable},
                                         {NULL, NULL}});
  return tu_run_all();
}
