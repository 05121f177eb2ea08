/*
 * Bad input through the executables, as a user meets it (issue 6): each case
 * checks the message and the exit status. Only what no other test covers
 * through a binary: test_config.c checks every config message at the library
 * level, test_data_format.c / test_data_loader.c every dataset refusal,
 * test_checkpoint.c every checkpoint refusal, test_data_convert.c every
 * decoder refusal; test_train.c and test_eval_predict.c run some of them
 * through alexnet-train, alexnet-eval and alexnet-predict. Here: config files
 * that are not YAML or name unknown things, sizes and shapes that do not fit,
 * dataset and checkpoint files of the wrong kind handed to alexnet-train, and
 * an image of huge dimensions handed to alexnet-predict and alexnet-convert.
 * docs/reliability.md lists them all with the test that proves each.
 *
 * Exit status: 2 for a bad command line or config (nothing starts), 1 for a
 * file found bad once the run has started.
 */
#include <hdf5.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "testutil.h"

static char out[1 << 16];
static char g_dir[4096]; /* the suite's scratch directory */

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CU_ASSERT_FATAL(f != NULL);
  fputs(text, f);
  fclose(f);
}

/* Path of a file in the suite's directory (a static buffer of 4 rotating slots). */
static const char *file(const char *name) {
  static char paths[4][4300];
  static int next;
  char *p = paths[next++ % 4];
  snprintf(p, 4300, "%s/%s", g_dir, name);
  return p;
}

/* Runs a command; checks its exit status and that its output holds each of
 * the NULL-terminated strings that follow. */
static void expect(int want_rc, const char *cmd, ...) {
  int rc = tu_run_cmd(cmd, out, sizeof out);
  if (rc != want_rc) fprintf(stderr, "\n$ %s\n-> %d (expected %d)\n%s\n", cmd, rc, want_rc, out);
  CU_ASSERT(rc == want_rc);
  va_list ap;
  va_start(ap, cmd);
  for (const char *want; (want = va_arg(ap, const char *)) != NULL;) TU_ASSERT_CONTAINS(out, want);
  va_end(ap);
}

/* "alexnet-train CONFIG --set run.dir=<g_dir>/run <extra>" into cmd. */
static const char *train_cmd(const char *config, const char *extra) {
  static char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s %s --set run.dir=%s/run %s", tu_bin("alexnet-train"), config, g_dir,
           extra ? extra : "");
  return cmd;
}

static const char *debug_yaml(void) {
  static char path[4200];
  snprintf(path, sizeof path, "%s/configs/debug.yaml", ALEXNET_SOURCE_DIR);
  return path;
}

/* A checkpoint of the debug config, trained for 2 steps; the other tests
 * start from it. */
static char g_ckpt[4300];

static void test_setup(void) {
  snprintf(g_dir, sizeof g_dir, "%s", tu_scratch_dir("bad_input"));
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s --set train.max_steps=2 --set checkpoint.dir=%s/good",
           train_cmd(debug_yaml(), NULL), g_dir);
  expect(0, cmd, "done: 2 steps", NULL);
  snprintf(g_ckpt, sizeof g_ckpt, "%s/good/step-00000002.h5", g_dir);
}

/* ------------------------------------------------------------------------ */
/* Config files                                                              */

static void test_config_files(void) {
  char cmd[8192], want[8400];
  /* not YAML: the file, line and column */
  write_text(file("broken.yaml"), "run: {name: a\ntrain: {epochs: 3}\n");
  snprintf(want, sizeof want,
           "alexnet-train: %s:2:6: invalid YAML: did not find expected ',' or "
           "'}'",
           file("broken.yaml"));
  expect(2, train_cmd(file("broken.yaml"), NULL), want, NULL);
  /* a binary file given as the config (a checkpoint) */
  snprintf(want, sizeof want, "alexnet-train: %s: not a YAML text: contains a NUL byte", g_ckpt);
  expect(2, train_cmd(g_ckpt, NULL), want, NULL);
  /* an empty file: nothing to train */
  write_text(file("empty.yaml"), "");
  expect(2, train_cmd(file("empty.yaml"), NULL),
         "empty.yaml: model.arch: no model: set model.arch or an explicit model.features / "
         "model.classifier list",
         NULL);
  /* an unknown key in the file, with the suggestion */
  write_text(file("typo.yaml"), "optimizer:\n  lrr: 0.1\n");
  snprintf(want, sizeof want, "%s:2:3: optimizer.lrr: unknown key (did you mean optimizer.lr?)",
           file("typo.yaml"));
  expect(2, train_cmd(file("typo.yaml"), NULL), want, NULL);
  /* a wrong type in the file */
  write_text(file("type.yaml"), "train:\n  epochs: many\n");
  snprintf(want, sizeof want,
           "%s:2:11: train.epochs: expected an integer in [1, 1000000], got \"many\"",
           file("type.yaml"));
  expect(2, train_cmd(file("type.yaml"), NULL), want, NULL);
  /* an architecture that does not exist */
  write_text(file("arch.yaml"), "model: {arch: lenet}\ndata: {synthetic: {n: 64}, crop: 32}\n");
  snprintf(want, sizeof want,
           "%s:1:15: model.arch: unknown architecture 'lenet' (known: alexnet, alexnet_bn, "
           "alexnet_owt, alexnet_cifar)",
           file("arch.yaml"));
  expect(2, train_cmd(file("arch.yaml"), NULL), want, NULL);
  /* the config is a directory */
  snprintf(want, sizeof want, "alexnet-train: %s: cannot read: Is a directory", g_dir);
  expect(2, train_cmd(g_dir, NULL), want, NULL);
  /* --set without a value, an unknown option */
  snprintf(cmd, sizeof cmd, "%s --set", train_cmd(debug_yaml(), NULL));
  expect(2, cmd, "usage: alexnet-train CONFIG", NULL);
  snprintf(cmd, sizeof cmd, "%s --fast", train_cmd(debug_yaml(), NULL));
  expect(2, cmd, "usage: alexnet-train CONFIG", NULL);
}

static void test_sizes_and_shapes(void) {
  char cmd[8192], want[8400];
  /* zero and negative sizes */
  expect(2, train_cmd(debug_yaml(), "--set train.batch_size=0"),
         "--set: train.batch_size: expected an integer in [1, 1048576], got 0", NULL);
  expect(2, train_cmd(debug_yaml(), "--set data.crop=-5"),
         "--set: data.crop: expected an integer in [1, 8192], got -5", NULL);
  expect(2, train_cmd(debug_yaml(), "--set data.synthetic.size=0"),
         "--set: data.synthetic.size: expected an integer in [1, 8192], got 0", NULL);
  /* a crop larger than the images */
  expect(2, train_cmd(debug_yaml(), "--set data.crop=48"),
         "data.crop: 48 is larger than data.synthetic.size 40", NULL);
  /* a global batch larger than the training set */
  expect(2, train_cmd(debug_yaml(), "--set train.batch_size=1024"),
         "train.batch_size: 1024 is larger than the 448 training samples", NULL);
  /* an evaluation batch that does not split over 2 ranks */
  snprintf(cmd, sizeof cmd, "mpiexec -n 2 --oversubscribe %s",
           train_cmd(debug_yaml(), "--set eval.batch_size=33"));
  expect(2, cmd, "--set: eval.batch_size: 33 is not divisible by the 2 ranks", NULL);
  /* a layer list whose shapes do not fit: the layer and the shapes, from
   * --summary and from a run alike */
  write_text(file("shapes.yaml"),
             "model:\n  features: [{conv: {out: 8, kernel: 11}}, relu]\n"
             "  classifier: [{linear: 4}]\n"
             "data: {synthetic: {n: 64, size: 8, classes: 4}, crop: 8}\n");
  snprintf(want, sizeof want, "%s: model: features.0 (conv)", file("shapes.yaml"));
  snprintf(cmd, sizeof cmd, "%s --summary", train_cmd(file("shapes.yaml"), NULL));
  expect(2, cmd, want, "11x11", "3x8x8", NULL);
  expect(2, train_cmd(file("shapes.yaml"), NULL), want, "11x11", "3x8x8", NULL);
  /* a class count that does not fit the data */
  expect(2, train_cmd(debug_yaml(), "--set data.synthetic.classes=10"),
         "model.num_classes: 4 does not match data.synthetic.classes 10", NULL);
}

static void test_missing_paths(void) {
  expect(2, train_cmd(debug_yaml(), "--set data.synthetic.n=0 --set data.train=/nonexistent/t.h5"),
         "--set: data.train: cannot read \"/nonexistent/t.h5\": No such file or directory", NULL);
  expect(2, train_cmd(debug_yaml(), "--set checkpoint.init=/nonexistent/w.h5"),
         "--set: checkpoint.init: cannot read \"/nonexistent/w.h5\": No such file or directory",
         NULL);
  expect(2, train_cmd(debug_yaml(), "--set checkpoint.resume=/nonexistent/step-1.h5"),
         "--set: checkpoint.resume: cannot read \"/nonexistent/step-1.h5\": No such file or "
         "directory",
         NULL);
  expect(2, train_cmd(debug_yaml(), "--set data.val=/nonexistent/v.h5"),
         "--set: data.val: not used with synthetic data (hold out with data.val_fraction)", NULL);
}

/* ------------------------------------------------------------------------ */
/* Dataset files given to alexnet-train                                      */

static const char *with_train(const char *path, const char *more) {
  static char extra[8192];
  snprintf(extra, sizeof extra, "--set data.synthetic.n=0 --set data.train=%s %s", path,
           more ? more : "");
  return train_cmd(debug_yaml(), extra);
}

static void convert_synthetic(const char *out_path, const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s synthetic %s -o %s", tu_bin("alexnet-convert"), args, out_path);
  expect(0, cmd, "alexnet-convert: wrote", NULL);
}

/* Writes a copy of the good dataset with one root attribute changed. */
static void copy_with_int_attr(const char *from, const char *to, const char *name, int value) {
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "cp %s %s", from, to);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  hid_t f = H5Fopen(to, H5F_ACC_RDWR, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  H5Adelete(f, name);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT, &value);
  H5Aclose(a);
  H5Sclose(sp);
  H5Fclose(f);
}

static void test_dataset_files(void) {
  char want[8400], cmd[8400];
  const char *good = file("good.h5");
  convert_synthetic(good, "--n 128 --size 40 --classes 4");
  /* a checkpoint given as the training set: another format */
  snprintf(want, sizeof want,
           "%s: root attribute format = 'alexnet-checkpoint', expected "
           "'alexnet-hdf5'",
           g_ckpt);
  expect(1, with_train(g_ckpt, NULL), want, NULL);
  /* a YAML file: not HDF5 */
  snprintf(want, sizeof want, "%s: not an HDF5 file", debug_yaml());
  expect(1, with_train(debug_yaml(), NULL), want, NULL);
  /* a format version from the future */
  copy_with_int_attr(good, file("v3.h5"), "version", 3);
  expect(1, with_train(file("v3.h5"), NULL), "v3.h5: format version 3 is not supported", NULL);
  /* truncated before the run starts */
  snprintf(cmd, sizeof cmd, "head -c 100000 %s > %s", good, file("cut.h5"));
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  expect(1, with_train(file("cut.h5"), NULL),
         "cut.h5: cannot open as HDF5 (truncated or corrupt file?)", NULL);
  /* images smaller than the crop */
  convert_synthetic(file("small.h5"), "--n 128 --size 24 --classes 4");
  expect(1, with_train(file("small.h5"), NULL),
         "small.h5: /images are 24x24, smaller than the crop 32x32", NULL);
  /* more classes than the model has */
  convert_synthetic(file("ten.h5"), "--n 128 --size 40 --classes 10");
  expect(2, with_train(file("ten.h5"), NULL), "model.num_classes: 4, but ", "ten.h5 has 10 classes",
         NULL);
  /* gray images for a network that takes RGB */
  convert_synthetic(file("gray.h5"), "--n 128 --size 40 --classes 4 --channels 1");
  snprintf(want, sizeof want,
           "model.in_channels: 3, but the data gives 1 channels (%s stores 1; "
           "data.channels: 3 replicates gray)",
           file("gray.h5"));
  expect(2, with_train(file("gray.h5"), "--set data.channels=0"), want, NULL);
  /* a validation file that does not exist, or whose images are smaller than the crop */
  expect(2, with_train(good, "--set data.val=/nonexistent/v.h5 --set data.val_fraction=0"),
         "--set: data.val: cannot read \"/nonexistent/v.h5\": No such file or directory", NULL);
  snprintf(cmd, sizeof cmd, "--set data.val=%s --set data.val_fraction=0", file("small.h5"));
  expect(1, with_train(good, cmd), "small.h5: /images are 24x24, smaller than the crop 32x32",
         NULL);
}

/* ------------------------------------------------------------------------ */
/* Checkpoints given to alexnet-train                                        */

static void test_checkpoint_files(void) {
  char want[8400], cmd[8400], other[4300];
  /* another model's checkpoint: the tensor and both shapes */
  snprintf(cmd, sizeof cmd,
           "%s --set train.max_steps=1 --set checkpoint.dir=%s/other "
           "--set 'model.classifier=[{dropout: 0.25}, {linear: 32}, relu, {linear: 4}]'",
           train_cmd(debug_yaml(), NULL), g_dir);
  expect(0, cmd, "done: 1 steps", NULL);
  snprintf(other, sizeof other, "%s/other/step-00000001.h5", g_dir);
  snprintf(want, sizeof want,
           "checkpoint %s: model/classifier.1.weight has shape 32x2048, the "
           "model needs 64x2048 (a checkpoint of another model?)",
           other);
  snprintf(cmd, sizeof cmd, "--set checkpoint.resume=%s", other);
  expect(1, train_cmd(debug_yaml(), cmd), want, NULL);
  snprintf(cmd, sizeof cmd, "--set checkpoint.resume=never --set checkpoint.init=%s", other);
  expect(1, train_cmd(debug_yaml(), cmd), want, NULL);
  /* truncated */
  snprintf(cmd, sizeof cmd, "head -c 300000 %s > %s", g_ckpt, file("cut-ckpt.h5"));
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  snprintf(cmd, sizeof cmd, "--set checkpoint.resume=%s", file("cut-ckpt.h5"));
  expect(1, train_cmd(debug_yaml(), cmd), "cut-ckpt.h5: cannot open as HDF5 (truncated or corrupt)",
         NULL);
  /* a format version from the future */
  copy_with_int_attr(g_ckpt, file("future.h5"), "version", 99);
  snprintf(cmd, sizeof cmd, "--set checkpoint.resume=%s", file("future.h5"));
  expect(1, train_cmd(debug_yaml(), cmd),
         "future.h5: format version 99 is not supported (this program reads up to 1)", NULL);
  /* a dataset file given as a checkpoint */
  snprintf(cmd, sizeof cmd, "--set checkpoint.resume=%s", file("good.h5"));
  expect(1, train_cmd(debug_yaml(), cmd),
         "good.h5: attribute format is 'alexnet-hdf5', expected 'alexnet-checkpoint'", NULL);
  /* weights only (no momentum) to resume from */
  copy_with_int_attr(g_ckpt, file("weights.h5"), "has_momentum", 0);
  snprintf(cmd, sizeof cmd, "--set checkpoint.resume=%s", file("weights.h5"));
  expect(1, train_cmd(debug_yaml(), cmd),
         "weights.h5: holds no optimizer state (weights only); "
         "use it as checkpoint.init, not to resume",
         NULL);
}

/* ------------------------------------------------------------------------ */
/* Images of huge dimensions                                                  */

/* A PNG header claiming w x h RGB pixels, then the start of an IDAT. */
static void write_huge_png(const char *path, uint32_t w, uint32_t h) {
  uint8_t b[8 + 25 + 8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                           0,    0,   0,   13,  'I',  'H',  'D',  'R'};
  for (int i = 0; i < 4; i++) {
    b[16 + i] = (uint8_t)(w >> (24 - 8 * i));
    b[20 + i] = (uint8_t)(h >> (24 - 8 * i));
  }
  b[24] = 8, b[25] = 2; /* 8-bit RGB; compression, filter, interlace 0 */
  uint32_t crc = (uint32_t)crc32(0, b + 12, 17);
  for (int i = 0; i < 4; i++) b[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
  const uint8_t idat[8] = {0, 0, 0, 4, 'I', 'D', 'A', 'T'};
  memcpy(b + 33, idat, 8);
  FILE *f = fopen(path, "wb");
  CU_ASSERT_FATAL(f != NULL);
  fwrite(b, 1, sizeof b, f);
  fclose(f);
}

static void test_huge_image(void) {
  char cmd[8400], tree[4300];
  write_huge_png(file("huge.png"), 100000, 100000);
  /* predict: refused from the header, before any allocation */
  snprintf(cmd, sizeof cmd, "%s --checkpoint %s %s", tu_bin("alexnet-predict"), g_ckpt,
           file("huge.png"));
  expect(1, cmd,
         "alexnet-predict: ", "huge.png: ", "100000x100000 pixels exceed the limit of 268435456",
         NULL);
  /* convert: the image skipped and named; nothing else readable, an error */
  snprintf(tree, sizeof tree, "%s/tree/cls", g_dir);
  snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s %s/", tree, file("huge.png"), tree);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  snprintf(cmd, sizeof cmd, "%s imagefolder %s/tree -o %s --size 32", tu_bin("alexnet-convert"),
           g_dir, file("tree.h5"));
  expect(1, cmd, "skipped 1 unreadable image(s):", "cls/huge.png: ",
         "100000x100000 pixels exceed the limit", "tree: none of the 1 images could be read", NULL);
}

int main(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  tu_add_suite("bad input", (tu_test[]){{"setup: a good checkpoint", test_setup},
                                        {"config files", test_config_files},
                                        {"sizes and shapes", test_sizes_and_shapes},
                                        {"paths that do not exist", test_missing_paths},
                                        {"dataset files", test_dataset_files},
                                        {"checkpoint files", test_checkpoint_files},
                                        {"huge image", test_huge_image},
                                        {NULL, NULL}});
  return tu_run_all();
}
