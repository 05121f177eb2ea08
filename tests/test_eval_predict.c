/*
 * alexnet-eval, alexnet-predict and import-torchvision.py, run as a user
 * runs them: a checkpoint from a short training run of a tiny synthetic
 * config, then evaluation on 1 and 2 ranks (same figures), several
 * checkpoints, ten crops, per-class accuracy and the confusion CSV;
 * predictions on PNGs written from validation samples (they agree with the
 * evaluation); activation maps; a checkpoint without a stored config; the
 * torchvision round trip (the same top-5 as torchvision to 0.01%); and every
 * bad input with its message and exit status. Plus unit checks of the
 * pieces (JET table, bilinear resize, top-k, labels).
 */
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "evaluate.h"
#include "nn.h"
#include "predict_core.h"
#include "testutil.h"

#define OUT_MAX (1 << 16)

/* What the eval_predict suite's set-up (setup_trained_run) prepares once for
 * its cases, which only read it: a trained tiny run and files made from it. */
static struct {
  char dir[4096];         /* the suite's scratch directory */
  char config[4200];      /* tiny.yaml */
  char ckpts[4200];       /* its run's checkpoint directory; step 48 is the newest */
  char val[4200];         /* the synthetic validation file (64 samples) */
  char eval_out[OUT_MAX]; /* alexnet-eval of the newest checkpoint on 1 rank,
                           * center crop, --per-class --confusion confusion.csv */
  double top1, loss;      /* its figures */
  double class_top1[4];   /* and per class */
  int labels[64];         /* pngs/sample<i>.png: validation sample i, its label */
  /* val40.h5: 64 synthetic 40x40 images of the same 4 classes (seed 7) */
} fx;
static char out[OUT_MAX];

/* A tiny 5-conv net on 32x32 synthetic images of 4 classes: 48 steps, ~2 s. */
static const char *tiny_yaml =
    "run: {name: tiny, dir: %s/run, seed: 3, deterministic: true}\n"
    "model:\n"
    "  in_channels: 3\n"
    "  weight_init: torch\n"
    "  features:\n"
    "    - {conv: {out: 16, kernel: 3, padding: 1}}\n"
    "    - relu\n"
    "    - {maxpool: {kernel: 2}}\n"
    "    - {conv: {out: 16, kernel: 3, padding: 1}}\n"
    "    - relu\n"
    "    - {maxpool: {kernel: 2}}\n"
    "    - {conv: {out: 16, kernel: 3, padding: 1}}\n"
    "    - relu\n"
    "    - {conv: {out: 16, kernel: 3, padding: 1}}\n"
    "    - relu\n"
    "    - {conv: {out: 16, kernel: 3, padding: 1}}\n"
    "    - relu\n"
    "    - {maxpool: {kernel: 2}}\n"
    "  classifier:\n"
    "    - {linear: 4}\n"
    "data:\n"
    "  synthetic: {n: 256, size: 32, classes: 4, channels: 3}\n"
    "  crop: 32\n"
    "train: {batch_size: 16, epochs: 3}\n"
    "optimizer: {lr: 0.05, momentum: 0.9, schedule: cosine, warmup_epochs: 0.5}\n"
    "dist: {threads_per_rank: 1}\n"
    "checkpoint: {every_epochs: 1, keep: 3}\n"
    "eval: {every_epochs: 0, batch_size: 32}\n"
    "log: {every_steps: 16}\n";

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CU_ASSERT_FATAL(f != NULL);
  fputs(text, f);
  fclose(f);
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The number after "key": in the last line of text holding it; NAN if none. */
static double json_number(const char *text, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = NULL, *q = text;
  while ((q = strstr(q, pat))) p = q++;
  return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* Runs a tool; returns its exit status and leaves stdout+stderr in out. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[16384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = tu_run_cmd(cmd, out, sizeof out);
  return rc;
}

/* The tools under test, as strings for run(). */
static char eval_bin[4200], predict_bin[4200], import_py[4200];

/* ------------------------------------------------------------------------ */
/* The suite's set-up                                                        */

/* Writes validation sample i of ds as <dir>/sample<i>.png; returns its label,
 * or -1 with the reason printed. */
static int write_sample_png(data_dataset *ds, int64_t i, const char *dir) {
  uint8_t *px = malloc((size_t)ds->h * ds->w * ds->c);
  char err[1024], path[4400];
  snprintf(path, sizeof path, "%s/sample%lld.png", dir, (long long)i);
  int ok = px && data_dataset_read(ds, i, px, err, sizeof err) == 0 &&
           data_png_write(path, ds->w, ds->h, ds->c, px, err, sizeof err) == 0;
  free(px);
  if (!ok) fprintf(stderr, "\n  %s: %s\n", path, px ? err : "out of memory");
  return ok ? ds->labels[i] : -1;
}

/* Prints why the set-up failed; returns -1 (CUnit then runs none of the cases). */
static int setup_failed(const char *what) {
  fprintf(stderr, "\n  eval_predict set-up: %s\n%s\n", what, out);
  return -1;
}

/* Trains the tiny config (48 steps, ~2 s), evaluates its newest checkpoint
 * on 1 rank (the figures that later cases compare with), writes every
 * validation sample as a PNG and a second validation set of 40x40 images. */
static int setup_trained_run(void) {
  snprintf(fx.dir, sizeof fx.dir, "%s", tu_scratch_dir("eval_predict"));
  snprintf(eval_bin, sizeof eval_bin, "%s", tu_bin("alexnet-eval"));
  snprintf(predict_bin, sizeof predict_bin, "%s", tu_bin("alexnet-predict"));
  snprintf(import_py, sizeof import_py, "%s/launch/import-torchvision.py", ALEXNET_SOURCE_DIR);
  char yaml[4096], path[4400], err[1024];
  snprintf(yaml, sizeof yaml, tiny_yaml, fx.dir);
  snprintf(fx.config, sizeof fx.config, "%s/tiny.yaml", fx.dir);
  FILE *f = fopen(fx.config, "w");
  if (!f || fputs(yaml, f) < 0 || fclose(f) != 0) return setup_failed("cannot write tiny.yaml");
  snprintf(fx.ckpts, sizeof fx.ckpts, "%s/run/checkpoints", fx.dir);
  snprintf(fx.val, sizeof fx.val, "%s/run/synthetic-val-64-32-4-3-seed3.h5", fx.dir);
  if (run("%s '%s'", tu_bin("alexnet-train"), fx.config) != 0)
    return setup_failed("alexnet-train failed");
  snprintf(path, sizeof path, "%s/step-00000048.h5", fx.ckpts);
  if (!file_exists(path) || !file_exists(fx.val))
    return setup_failed("no step-00000048.h5 or validation file after training");

  if (run("%s '%s' --checkpoint '%s' --per-class --confusion '%s/confusion.csv'", eval_bin,
          fx.config, fx.ckpts, fx.dir) != 0)
    return setup_failed("alexnet-eval failed");
  snprintf(fx.eval_out, sizeof fx.eval_out, "%s", out);
  fx.top1 = json_number(out, "top1");
  fx.loss = json_number(out, "loss");
  const char *pc = strstr(out, "\"per_class_top1\":[");
  if (!pc || !(fx.top1 > 0)) return setup_failed("no top1 or per_class_top1 in the evaluation");
  pc += strlen("\"per_class_top1\":[");
  for (int k = 0; k < 4; k++) {
    fx.class_top1[k] = strtod(pc, (char **)&pc);
    pc++;
  }

  char dir[4200];
  snprintf(dir, sizeof dir, "%s/pngs", fx.dir);
  mkdir(dir, 0777);
  data_dataset ds;
  if (data_dataset_open(fx.val, &ds, err, sizeof err) != 0 || ds.n != 64) {
    snprintf(out, sizeof out, "%s", err);
    return setup_failed("the validation file does not hold 64 samples");
  }
  int ok = 1;
  for (int64_t i = 0; i < 64 && ok; i++) ok = (fx.labels[i] = write_sample_png(&ds, i, dir)) >= 0;
  data_dataset_close(&ds);
  if (!ok) return setup_failed("cannot write the samples as PNG");

  snprintf(path, sizeof path, "%s/val40.h5", fx.dir);
  if (data_write_synthetic(path, 64, 40, 3, 4, 7, err, sizeof err) != 0) {
    snprintf(out, sizeof out, "%s", err);
    return setup_failed("cannot write val40.h5");
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* alexnet-eval                                                              */

/* The set-up's evaluation (1 rank, newest checkpoint, --per-class,
 * --confusion confusion.csv): its output, the CSV and the run's metrics. */
static void test_eval_one_rank(void) {
  char csv[4400], metrics[4400];
  snprintf(csv, sizeof csv, "%s/confusion.csv", fx.dir);
  snprintf(metrics, sizeof metrics, "%s/run/metrics.jsonl", fx.dir);
  const char *text = fx.eval_out;
  TU_ASSERT_CONTAINS(text, "step-00000048.h5 (step 48, epoch 3)");
  TU_ASSERT_CONTAINS(text, "images/s");
  TU_ASSERT_CONTAINS(text, "class_3");
  CU_ASSERT(fx.top1 >= 0.5 && fx.top1 <= 1.0); /* chance is 0.25 */
  CU_ASSERT(json_number(text, "top5") == 1.0); /* 4 classes */
  CU_ASSERT(json_number(text, "samples") == 64);
  CU_ASSERT(json_number(text, "step") == 48);
  CU_ASSERT(fx.loss > 0 && fx.loss < 1.386); /* below ln 4 */
  double mean = 0;
  for (int k = 0; k < 4; k++) mean += fx.class_top1[k] / 4;
  CU_ASSERT(fabs(mean - fx.top1) < 1e-6); /* 16 samples per class */

  /* The confusion matrix: a header and 4 rows of 4 counts, 16 per row. */
  FILE *f = fopen(csv, "r");
  CU_ASSERT_FATAL(f != NULL);
  char line[1024];
  int rows = 0, diag = 0;
  CU_ASSERT(fgets(line, sizeof line, f) && strcmp(line,
                                                  "true\\predicted,class_0,class_1,class_2,"
                                                  "class_3\n") == 0);
  while (fgets(line, sizeof line, f)) {
    char name[64];
    long v[4];
    CU_ASSERT(sscanf(line, "%63[^,],%ld,%ld,%ld,%ld", name, &v[0], &v[1], &v[2], &v[3]) == 5);
    CU_ASSERT(v[0] + v[1] + v[2] + v[3] == 16);
    if (rows < 4) diag += (int)v[rows];
    rows++;
  }
  fclose(f);
  CU_ASSERT(rows == 4);
  CU_ASSERT(diag == (int)lround(fx.top1 * 64));

  /* The run's metrics got a val line naming the checkpoint (the first of
   * eval's lines: training wrote none, eval.every_epochs being 0). */
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "grep -m 1 '\"checkpoint\"' '%s'", metrics);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  TU_ASSERT_CONTAINS(out, "\"split\":\"val\"");
  TU_ASSERT_CONTAINS(out, "\"checkpoint\":\"");
  TU_ASSERT_CONTAINS(out, "step-00000048.h5\"");
  CU_ASSERT(fabs(json_number(out, "top1") - fx.top1) < 1e-9);
}

static void test_eval_two_ranks(void) {
  /* An odd batch is rounded up to split over the ranks; the figures do not change. */
  int rc = run("mpiexec -n 2 %s '%s' --checkpoint '%s/step-00000048.h5' --set eval.batch_size=33",
               eval_bin, fx.config, fx.ckpts);
  if (rc != 0) fprintf(stderr, "\n%s\n", out); /* e.g. mpiexec refusing root without OMPI_* */
  CU_ASSERT_FATAL(rc == 0);
  TU_ASSERT_CONTAINS(out, "evaluation batch 33 rounded up to 34 to split over 2 ranks");
  CU_ASSERT(json_number(out, "ranks") == 2);
  CU_ASSERT(json_number(out, "samples") == 64);
  CU_ASSERT(json_number(out, "top1") == fx.top1);
  CU_ASSERT(fabs(json_number(out, "loss") - fx.loss) < 1e-5);
}

static void test_eval_several(void) {
  char csv[4400], cmd[9000];
  snprintf(csv, sizeof csv, "%s/several.csv", fx.dir);
  snprintf(cmd, sizeof cmd, "grep -c '\"checkpoint\"' '%s/run/metrics.jsonl'", fx.dir);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  int before = atoi(out);
  int rc = run("%s '%s' --checkpoint '%s/step-00000016.h5' '%s/step-00000048.h5' --confusion '%s'",
               eval_bin, fx.config, fx.ckpts, fx.ckpts, csv);
  CU_ASSERT_FATAL(rc == 0);
  const char *first = strstr(out, "{\"step\":16,");
  const char *second = strstr(out, "{\"step\":48,");
  CU_ASSERT(first && second && first < second);
  char path[4400];
  snprintf(path, sizeof path, "%s/several-step-00000016.csv", fx.dir);
  CU_ASSERT(file_exists(path));
  snprintf(path, sizeof path, "%s/several-step-00000048.csv", fx.dir);
  CU_ASSERT(file_exists(path));

  /* Both went to the run's metrics; a checkpoint outside the run does not. */
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  CU_ASSERT(atoi(out) == before + 2);
  before = atoi(out);
  rc = run("cp '%s/step-00000048.h5' '%s/outside.h5' && %s '%s' --checkpoint '%s/outside.h5'",
           fx.ckpts, fx.dir, eval_bin, fx.config, fx.dir);
  CU_ASSERT(rc == 0);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  CU_ASSERT(atoi(out) == before);
}

/* TenCrop vs center crop on 40x40 images of the same classes. */
static void test_eval_ten_crop(void) {
  char val40[4400];
  snprintf(val40, sizeof val40, "%s/val40.h5", fx.dir);
  int rc = run("%s '%s' --checkpoint '%s' --data '%s'", eval_bin, fx.config, fx.ckpts, val40);
  CU_ASSERT_FATAL(rc == 0);
  double top1 = json_number(out, "top1"), loss = json_number(out, "loss");
  TU_ASSERT_CONTAINS(out, "\"ten_crop\":false");
  TU_ASSERT_CONTAINS(out, "center crop");
  rc =
      run("%s '%s' --checkpoint '%s' --data '%s' --ten-crop", eval_bin, fx.config, fx.ckpts, val40);
  CU_ASSERT_FATAL(rc == 0);
  TU_ASSERT_CONTAINS(out, "\"ten_crop\":true");
  TU_ASSERT_CONTAINS(out, "ten crops");
  double top1_10 = json_number(out, "top1"), loss_10 = json_number(out, "loss");
  CU_ASSERT(json_number(out, "samples") == 64); /* samples, not views */
  CU_ASSERT(top1 > 0.4 && top1_10 > 0.4);
  CU_ASSERT(fabs(top1 - top1_10) <= 0.25);
  CU_ASSERT(loss != loss_10); /* other views, another average */
  CU_ASSERT(fabs(loss - loss_10) < 0.5 * loss + 0.1);
}

/* ------------------------------------------------------------------------ */
/* alexnet-predict                                                           */

/* Every validation sample as a PNG (the set-up's) through predict: the same
 * top-1 as alexnet-eval, and the easiest class predicted for all its samples. */
static void test_predict_agrees_with_eval(void) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/pngs", fx.dir);
  const int *labels = fx.labels;
  static char cmd[64 * 4500 + 8192];
  int len = snprintf(cmd, sizeof cmd, "%s --checkpoint '%s/step-00000048.h5' --top 1 --batch 24",
                     predict_bin, fx.ckpts);
  for (int i = 0; i < 64; i++)
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s/sample%d.png'", dir, i);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  int easy = 0;
  for (int k = 1; k < 4; k++)
    if (fx.class_top1[k] > fx.class_top1[easy]) easy = k;
  int hits = 0, easy_hits = 0;
  const char *p = out;
  for (int i = 0; i < 64; i++) {
    char head[4400];
    snprintf(head, sizeof head, "sample%d.png:\nclass_", i);
    p = strstr(p, head);
    CU_ASSERT_FATAL(p != NULL);
    p += strlen(head);
    int predicted = atoi(p);
    hits += predicted == labels[i];
    easy_hits += labels[i] == easy && predicted == easy;
    CU_ASSERT(strstr(p, "%\n") != NULL);
  }
  CU_ASSERT(hits == (int)lround(fx.top1 * 64));
  CU_ASSERT(easy_hits == (int)lround(fx.class_top1[easy] * 16));
  CU_ASSERT(fx.class_top1[easy] == 1.0);

  /* One image: the seed's lines and nothing else; 4 classes = 4 lines by default. */
  int rc =
      run("%s --checkpoint '%s/step-00000048.h5' '%s/sample0.png'", predict_bin, fx.ckpts, dir);
  CU_ASSERT(rc == 0);
  int lines = 0;
  double total = 0;
  for (const char *q = out; *q; q = strchr(q, '\n') ? strchr(q, '\n') + 1 : q + strlen(q)) {
    char name[64];
    double pct;
    CU_ASSERT(sscanf(q, "%63[^:]: %lf%%", name, &pct) == 2);
    total += pct;
    lines++;
  }
  CU_ASSERT(lines == 4);
  CU_ASSERT(fabs(total - 100.0) < 0.01);
}

static void test_predict_labels(void) {
  char labels[4400];
  snprintf(labels, sizeof labels, "%s/labels.txt", fx.dir);
  write_file(labels, "circle\r\nsquare\nstripes\nnoise"); /* CRLF and no final newline */
  int rc = run("%s --checkpoint '%s/step-00000048.h5' --labels '%s' --top 4 '%s/pngs/sample1.png'",
               predict_bin, fx.ckpts, labels, fx.dir);
  CU_ASSERT(rc == 0);
  TU_ASSERT_CONTAINS(out, "circle: ");
  TU_ASSERT_CONTAINS(out, "square: ");
  TU_ASSERT_CONTAINS(out, "noise: ");
  CU_ASSERT(strstr(out, "\r") == NULL);
}

static int png_size(const char *path, int *w, int *h, double *spread) {
  data_image img;
  char err[1024];
  if (data_image_load(path, 0, &img, err, sizeof err) != 0) return -1;
  *w = img.w, *h = img.h;
  int lo = 255, hi = 0;
  for (size_t i = 0; i < (size_t)img.w * img.h * 3; i++) {
    lo = img.pixels[i] < lo ? img.pixels[i] : lo;
    hi = img.pixels[i] > hi ? img.pixels[i] : hi;
  }
  *spread = hi - lo;
  data_image_free(&img);
  return 0;
}

static void test_activation_maps(void) {
  char maps[4400], path[4600];
  snprintf(maps, sizeof maps, "%s/maps", fx.dir);
  int rc = run("%s --checkpoint '%s/step-00000048.h5' --activation-maps '%s' '%s/pngs/sample2.png'",
               predict_bin, fx.ckpts, maps, fx.dir);
  CU_ASSERT_FATAL(rc == 0);
  TU_ASSERT_CONTAINS(out, "activation maps of conv1..conv5 written to");
  for (int k = 1; k <= 5; k++) {
    int w, h;
    double spread;
    snprintf(path, sizeof path, "%s/conv%d_activation_map.png", maps, k);
    CU_ASSERT_FATAL(png_size(path, &w, &h, &spread) == 0);
    CU_ASSERT(w == 32 && h == 32);
    CU_ASSERT(spread > 64); /* a JET ramp over the image, not a constant */
  }
  int w, h;
  double spread;
  snprintf(path, sizeof path, "%s/activation_maps.png", maps);
  CU_ASSERT_FATAL(png_size(path, &w, &h, &spread) == 0);
  CU_ASSERT(w == 5 * 32 && h == 32);
  snprintf(path, sizeof path, "%s/conv6_activation_map.png", maps);
  CU_ASSERT(!file_exists(path));

  /* Several images: a folder per image; a repeated name gets its position. */
  snprintf(maps, sizeof maps, "%s/maps_several", fx.dir);
  rc =
      run("mkdir -p '%s/other' && cp '%s/pngs/sample3.png' '%s/other/sample2.png' && "
          "%s --checkpoint '%s/step-00000048.h5' --activation-maps '%s' '%s/pngs/sample2.png' "
          "'%s/pngs/sample3.png' '%s/other/sample2.png'",
          fx.dir, fx.dir, fx.dir, predict_bin, fx.ckpts, maps, fx.dir, fx.dir, fx.dir);
  CU_ASSERT(rc == 0);
  const char *expect[] = {"sample2/conv5_activation_map.png", "sample3/activation_maps.png",
                          "sample2-3/conv1_activation_map.png"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", maps, expect[i]);
    CU_ASSERT(file_exists(path));
  }

  /* An output folder that cannot be made. */
  rc =
      run("%s --checkpoint '%s/step-00000048.h5' --activation-maps '%s/tiny.yaml/x' "
          "'%s/pngs/sample2.png'",
          predict_bin, fx.ckpts, fx.dir, fx.dir);
  CU_ASSERT(rc == 1);
  TU_ASSERT_CONTAINS(out, "alexnet-predict: cannot create directory");
}

/* Copies fx.dir/<from> to path (unless they are the same file) and rewrites
 * one of its attributes through the HDF5 API (dropping meta_checksum). */
static void copy_with_attr(const char *path, const char *from, const char *attr, hid_t type,
                           const void *value) {
  char cmd[9000], src[4400];
  snprintf(src, sizeof src, "%s/%s", fx.dir, from);
  if (strcmp(src, path) != 0) {
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, path);
    CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  }
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  hid_t a = H5Aopen(f, attr, H5P_DEFAULT);
  CU_ASSERT_FATAL(a >= 0);
  CU_ASSERT(H5Awrite(a, type, value) >= 0);
  H5Aclose(a);
  /* As a file written before meta_checksum covered the attributes: the
   * checks after that one are what these cases test. */
  if (H5Aexists(f, "meta_checksum") > 0) CU_ASSERT(H5Adelete(f, "meta_checksum") >= 0);
  H5Fclose(f);
}

static void copy_with_input(const char *path, const char *from, const int input[3]) {
  copy_with_attr(path, from, "input", H5T_NATIVE_INT, input);
}

/* Writes <fx.dir>/noconfig.h5: an alexnet_cifar of 3 classes with no stored
 * config (as an imported torchvision file without one); m receives its
 * metadata. */
static void save_noconfig(ckpt_meta *m, char *path, size_t len) {
  nn_layer_spec *specs;
  int count;
  nn_shape input;
  char err[4400];
  nn_preset_opts o = {.num_classes = 3};
  CU_ASSERT_FATAL(nn_preset("alexnet_cifar", &o, &specs, &count, &input, err, sizeof err) == 0);
  nn_net net;
  CU_ASSERT_FATAL(nn_net_build(&net, specs, count, input, err, sizeof err) == 0);
  free(specs);
  nn_init_torch_default(&net, 11);
  memset(m, 0, sizeof *m);
  snprintf(m->arch, sizeof m->arch, "alexnet_cifar");
  m->num_classes = 3;
  for (int k = 0; k < 3; k++) m->mean[k] = 0.5f, m->std[k] = 0.25f;
  snprintf(path, len, "%s/noconfig.h5", fx.dir);
  CU_ASSERT_FATAL(ckpt_save(path, &net, NULL, m, err, sizeof err) == 0);
  nn_net_free(&net);
}

/* A checkpoint with no stored config: the network comes from its arch
 * attribute. */
static void test_predict_arch_fallback(void) {
  char err[4400], path[4400];
  ckpt_meta m;
  nn_net net;
  save_noconfig(&m, path, sizeof path);
  int rc = run("%s --checkpoint '%s' '%s/pngs/sample0.png'", predict_bin, path, fx.dir);
  CU_ASSERT(rc == 0);
  TU_ASSERT_CONTAINS(out, "0: ");
  TU_ASSERT_CONTAINS(out, "2: ");

  /* A small model without convolutions: it predicts, but has no activation maps. */
  cfg_config c;
  m.config_yaml =
      "model: {in_channels: 3, num_classes: 4, classifier: [{linear: 4}]}\n"
      "data: {crop: 8}\n";
  CU_ASSERT_FATAL(cfg_load_string(m.config_yaml, "linear", &c, err, sizeof err) == 0);
  CU_ASSERT_FATAL(cfg_build_net(&c, &net, err, sizeof err) == 0);
  cfg_free(&c);
  snprintf(m.arch, sizeof m.arch, "custom");
  m.num_classes = 4;
  snprintf(path, sizeof path, "%s/linear.h5", fx.dir);
  CU_ASSERT_FATAL(ckpt_save(path, &net, NULL, &m, err, sizeof err) == 0);
  rc = run("%s --checkpoint '%s' '%s/pngs/sample0.png'", predict_bin, path, fx.dir);
  CU_ASSERT(rc == 0);
  rc = run("%s --checkpoint '%s' --activation-maps '%s/nomaps' '%s/pngs/sample0.png'", predict_bin,
           path, fx.dir, fx.dir);
  CU_ASSERT(rc == 2);
  TU_ASSERT_CONTAINS(out, "alexnet-predict: --activation-maps: the model has no convolution");

  /* Checkpoints the network cannot be rebuilt from (refused before their
   * weights are read, so the small model's weights stand in): no config and
   * arch "custom"; a stored config that does not load; an unknown arch; a
   * stored normalization that cannot be used; a non-square input for a
   * preset; an input other than what the stored config builds. */
  struct {
    const char *file, *arch, *config, *expect;
    float std1;
    int input[3]; /* written over the attribute when input[0] > 0 */
  } cases[] = {
      {"custom-noconfig.h5",
       "custom",
       NULL,
       "custom-noconfig.h5: no stored config and arch 'custom': the network cannot be rebuilt",
       0.25f,
       {0, 0, 0}},
      {"bad-config.h5",
       "custom",
       "model: {bogus: 1}\n",
       "bad-config.h5: its stored config does not load: ",
       0.25f,
       {0, 0, 0}},
      {"vgg.h5", "vgg16", NULL, "vgg.h5: arch: unknown architecture 'vgg16'", 0.25f, {0, 0, 0}},
      {"zero-std.h5",
       "alexnet_cifar",
       NULL,
       "zero-std.h5: attribute std[1] = 0 must be finite and > 0",
       0.0f,
       {0, 0, 0}},
      {"nonsquare.h5",
       "alexnet_cifar",
       NULL,
       "nonsquare.h5: input 3x32x40 does not fit preset 'alexnet_cifar' (square)",
       0.25f,
       {3, 32, 40}},
      {"wrong-input.h5",
       "custom",
       m.config_yaml,
       "wrong-input.h5: the rebuilt network takes 3x8x8 inputs, the checkpoint says 3x64x64",
       0.25f,
       {3, 64, 64}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    snprintf(m.arch, sizeof m.arch, "%s", cases[k].arch);
    m.config_yaml = (char *)cases[k].config;
    m.std[1] = cases[k].std1;
    snprintf(path, sizeof path, "%s/%s", fx.dir, cases[k].file);
    CU_ASSERT_FATAL(ckpt_save(path, &net, NULL, &m, err, sizeof err) == 0);
    if (cases[k].input[0] > 0) copy_with_input(path, cases[k].file, cases[k].input);
    rc = run("%s --checkpoint '%s' '%s/pngs/sample0.png'", predict_bin, path, fx.dir);
    CU_ASSERT(rc == 1);
    TU_ASSERT_CONTAINS(out, "alexnet-predict: checkpoint ");
    TU_ASSERT_CONTAINS(out, cases[k].expect);
  }
  nn_net_free(&net);
}

/* ------------------------------------------------------------------------ */
/* Bad input                                                                 */

/* One bad input: the arguments (run in the scratch directory), the exit
 * status, and up to three pieces of the expected output. */
typedef struct {
  const char *args;
  int rc;
  const char *expect[3];
} bad_case;

static void run_cases(const char *bin, const bad_case *cases, size_t n) {
  for (size_t k = 0; k < n; k++) {
    int rc = run("cd '%s' && %s %s", fx.dir, bin, cases[k].args);
    if (rc != cases[k].rc) fprintf(stderr, "\n  %s %s: exit status %d\n", bin, cases[k].args, rc);
    CU_ASSERT(rc == cases[k].rc);
    for (int e = 0; e < 3 && cases[k].expect[e]; e++) TU_ASSERT_CONTAINS(out, cases[k].expect[e]);
  }
}

#define CK "--checkpoint run/checkpoints/step-00000048.h5"
#define IMG "pngs/sample0.png"

static void test_bad_input_predict(void) {
  char f[4400], cmd[9000], err[1024];
  snprintf(cmd, sizeof cmd, "cd '%s' && head -c 200 " IMG " > truncated.png", fx.dir);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  snprintf(f, sizeof f, "%s/empty.jpg", fx.dir);
  write_file(f, "");
  snprintf(f, sizeof f, "%s/three.txt", fx.dir);
  write_file(f, "a\nb\nc\n");
  uint8_t gray[40 * 30]; /* a grayscale PNG is fine: converted to RGB */
  for (int i = 0; i < 40 * 30; i++) gray[i] = (uint8_t)(i * 7);
  snprintf(f, sizeof f, "%s/gray.png", fx.dir);
  CU_ASSERT_FATAL(data_png_write(f, 40, 30, 1, gray, err, sizeof err) == 0);

  const bad_case cases[] = {
      /* Images: a missing one is named and the others still predicted. */
      {CK " none.png " IMG,
       1,
       {"alexnet-predict: none.png: cannot open: No such file or directory", IMG ":\nclass_"}},
      {CK " tiny.yaml", 1, {"alexnet-predict: tiny.yaml: not a JPEG or PNG image"}},
      {CK " truncated.png", 1, {"alexnet-predict: truncated.png: corrupt PNG"}},
      {CK " empty.jpg", 1, {"alexnet-predict: empty.jpg: empty file"}},
      {CK " --top 1 gray.png", 0, {"class_"}},
      /* Checkpoints: missing, a dataset file (another format), text. */
      {"--checkpoint none.h5 " IMG,
       1,
       {"alexnet-predict: checkpoint none.h5: No such file or directory"}},
      {"--checkpoint val40.h5 " IMG,
       1,
       {"attribute format is 'alexnet-hdf5', expected 'alexnet-checkpoint'"}},
      {"--checkpoint tiny.yaml " IMG, 1, {"checkpoint tiny.yaml: not an HDF5 file"}},
      /* Labels: wrong line count, missing, binary. */
      {CK " --labels three.txt " IMG,
       1,
       {"alexnet-predict: labels three.txt: 3 lines, but the model has 4 classes (one name per "
        "line)"}},
      {CK " --labels none.txt " IMG, 1, {"labels none.txt: No such file or directory"}},
      {CK " --labels val40.h5 " IMG, 1, {"labels val40.h5: not a text file (it holds NUL bytes)"}},
      /* The command line. */
      {CK, 2, {"alexnet-predict: no image given", "usage: alexnet-predict"}},
      {IMG, 2, {"alexnet-predict: --checkpoint is required"}},
      {CK " --top 0 " IMG, 2, {"alexnet-predict: --top 0: expected an integer >= 1"}},
      {CK " --top 9 " IMG, 2, {"alexnet-predict: --top 9: the model has only 4 classes"}},
      {CK " --bogus " IMG, 2, {"alexnet-predict: unknown option --bogus"}},
      {CK " " IMG " --labels", 2, {"alexnet-predict: --labels needs a value"}},
      {CK " --precision fp16 " IMG,
       2,
       {"alexnet-predict: --precision fp16: expected fp32 or bf16"}},
      {"--help", 2, {"--activation-maps DIR"}},
  };
  run_cases(predict_bin, cases, sizeof cases / sizeof cases[0]);
  CU_ASSERT(run("cd '%s' && ALEXNET_BF16_KERNEL=fast %s " CK " --precision bf16 " IMG, fx.dir,
                predict_bin) == 1);
  TU_ASSERT_CONTAINS(out,
                     "alexnet-predict: --precision bf16: ALEXNET_BF16_KERNEL=fast: unknown "
                     "kernel");
  /* bf16: the same top class, a probability within bf16's rounding. */
  char fp32_line[256];
  CU_ASSERT_FATAL(run("cd '%s' && %s " CK " --top 1 " IMG, fx.dir, predict_bin) == 0);
  snprintf(fp32_line, sizeof fp32_line, "%s", out);
  CU_ASSERT_FATAL(run("cd '%s' && %s " CK " --top 1 --precision bf16 " IMG, fx.dir, predict_bin) ==
                  0);
  char c32[64], c16[64];
  double p32 = 0, p16 = 0;
  CU_ASSERT(sscanf(fp32_line, "%63[^:]: %lf%%", c32, &p32) == 2);
  CU_ASSERT(sscanf(out, "%63[^:]: %lf%%", c16, &p16) == 2);
  CU_ASSERT(strcmp(c32, c16) == 0);
  CU_ASSERT(fabs(p32 - p16) <= 1.0);
  /* Nothing printed for an image that failed. */
  CU_ASSERT(run("cd '%s' && %s " CK " truncated.png 2>/dev/null", fx.dir, predict_bin) == 1);
  CU_ASSERT(out[0] == '\0');
}

/* --precision bf16 (each kernel this CPU runs): the same checkpoint's
 * figures within bf16's rounding of the float32 ones (a sample near a tie may
 * flip: at most 2 of 64), and predict's top class of a sample likewise. */
static void test_eval_predict_bf16(void) {
  const char *kernels[] = {"emulated", "avx512_bf16", "amx"};
  for (int k = 0; k < 3; k++) {
    if (k == 1 && !nn_bf16_cpu_has_avx512bf16()) {
      printf("\n  (avx512_bf16 not run: this CPU lacks AVX512-BF16)");
      continue;
    }
    if (k == 2 && !nn_bf16_cpu_has_amx()) {
      printf("\n  (amx not run: this CPU lacks AMX-BF16)");
      continue;
    }
    int rc = run("ALEXNET_BF16_KERNEL=%s %s '%s' --checkpoint '%s' --precision bf16", kernels[k],
                 eval_bin, fx.config, fx.ckpts);
    CU_ASSERT_FATAL(rc == 0);
    const double top1 = json_number(out, "top1"), loss = json_number(out, "loss");
    printf("\n  %s: top1 %.4f (fp32 %.4f), loss %.5f (fp32 %.5f)", kernels[k], top1, fx.top1, loss,
           fx.loss);
    CU_ASSERT(fabs(top1 - fx.top1) <= 2.0 / 64 + 1e-9);
    CU_ASSERT(fabs(loss - fx.loss) <= 1e-2 * fx.loss);
    CU_ASSERT(loss != fx.loss); /* really bf16 */
  }
  const bad_case cases[] = {
      {"tiny.yaml --checkpoint run/checkpoints --precision fp16",
       2,
       {"alexnet-eval: --precision fp16: expected fp32 or bf16"}},
      {"tiny.yaml --checkpoint run/checkpoints --set train.precision=half",
       2,
       {"train.precision: expected fp32 or bf16"}},
  };
  run_cases(eval_bin, cases, sizeof cases / sizeof cases[0]);
  int rc =
      run("cd '%s' && ALEXNET_BF16_KERNEL=fast %s tiny.yaml --checkpoint run/checkpoints "
          "--precision bf16",
          fx.dir, eval_bin);
  CU_ASSERT(rc == 2);
  TU_ASSERT_CONTAINS(out,
                     "tiny.yaml: train.precision: bf16: ALEXNET_BF16_KERNEL=fast: unknown "
                     "kernel");
}

static void test_bad_input_eval(void) {
  char f[4400];
  ckpt_meta m;
  save_noconfig(&m, f, sizeof f);
  snprintf(f, sizeof f, "%s/emptydir", fx.dir);
  mkdir(f, 0777);
  snprintf(f, sizeof f, "%s/tiny-zero-std.h5", fx.dir);
  copy_with_attr(f, "run/checkpoints/step-00000048.h5", "std", H5T_NATIVE_FLOAT,
                 (float[]){0.25f, 0.0f, 0.25f});
  const bad_case cases[] = {
      /* Checkpoints: missing; another model's (the good one after it is
       * still evaluated); another format; no valid one in a directory; a
       * stored normalization that cannot be used. */
      {"tiny.yaml --checkpoint none.h5",
       1,
       {"alexnet-eval: checkpoint none.h5: No such file or directory"}},
      {"tiny.yaml --checkpoint noconfig.h5 run/checkpoints/step-00000048.h5",
       1,
       {"alexnet-eval: checkpoint noconfig.h5: has 3 classes, the model has 4", "{\"step\":48,"}},
      {"tiny.yaml --checkpoint val40.h5",
       1,
       {"attribute format is 'alexnet-hdf5', expected 'alexnet-checkpoint'"}},
      {"tiny.yaml --checkpoint emptydir",
       1,
       {"alexnet-eval: checkpoint directory emptydir: no valid checkpoint (step-<N>.h5)"}},
      {"tiny.yaml --checkpoint tiny-zero-std.h5",
       1,
       {"tiny-zero-std.h5: attribute std[1] = 0 must be finite and > 0"}},
      /* Outputs and data. */
      {"tiny.yaml --checkpoint run/checkpoints --confusion nodir/c.csv",
       1,
       {"alexnet-eval: --confusion nodir/c.csv: cannot create: No such file or directory"}},
      {"tiny.yaml --checkpoint run/checkpoints --set data.synthetic.n=0 "
       "--set data.train=run/synthetic-val-64-32-4-3-seed3.h5",
       2,
       {"alexnet-eval: tiny.yaml: data: no validation data"}},
      {"tiny.yaml --checkpoint run/checkpoints --data none.h5", 2, {"alexnet-eval: ", "none.h5"}},
      /* The config and the command line. */
      {"tiny.yaml --checkpoint run/checkpoints --set model.bogus=1",
       2,
       {"alexnet-eval: ", "model.bogus"}},
      {"tiny.yaml", 2, {"alexnet-eval: no --checkpoint given", "usage: alexnet-eval"}},
      {"--checkpoint run/checkpoints", 2, {"alexnet-eval: no CONFIG given"}},
      {"tiny.yaml --checkpoint run/checkpoints --bogus",
       2,
       {"alexnet-eval: unknown option --bogus"}},
  };
  run_cases(eval_bin, cases, sizeof cases / sizeof cases[0]);
}

/* ------------------------------------------------------------------------ */
/* torchvision                                                               */

/* A randomly initialized torchvision AlexNet (its last layer scaled up so
 * the softmax is peaked and the comparison sharp) saved by torch.save, and
 * torchvision's top-5 for each image given, as "index probability" lines. */
static const char *torch_side =
    "import sys, torch, torchvision\n"
    "from torchvision import transforms\n"
    "from PIL import Image\n"
    "torch.manual_seed(0)\n"
    "torch.set_num_threads(2)\n"
    "m = torchvision.models.alexnet()\n"
    "with torch.no_grad():\n"
    "    m.classifier[6].weight.mul_(2000.0)\n"
    "torch.save(m.state_dict(), sys.argv[1])\n"
    "m.eval()\n"
    "tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),\n"
    "    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])\n"
    "for path in sys.argv[2:]:\n"
    "    x = tf(Image.open(path).convert('RGB')).unsqueeze(0)\n"
    "    with torch.no_grad():\n"
    "        p = torch.softmax(m(x), 1)[0].double()\n"
    "    v, i = p.topk(5)\n"
    "    print(path + ':')\n"
    "    for a, b in zip(i.tolist(), v.tolist()):\n"
    "        print('%d: %.6f%%' % (a, 100 * b))\n";

/* Exported weights load into torchvision by name and equal the checkpoint's. */
static const char *export_check =
    "import sys, h5py, torch\n"
    "sd = torch.load(sys.argv[1])\n"
    "f = h5py.File(sys.argv[2], 'r')\n"
    "names = list(sd)\n"
    "assert names == sorted(f['model'], key=lambda n: (n.split('.')[0] != 'features', "
    "int(n.split('.')[1]), n.endswith('bias'))), names\n"
    "for k, v in sd.items():\n"
    "    assert (v.numpy() == f['model'][k][()]).all(), k\n"
    "print('export OK', len(names))\n";

/* Broken inputs for the importer, made in the current directory from a
 * checkpoint (argv[1]): state dicts of another model, a list, a dict of
 * non-tensors; checkpoints with a flipped weight, no completeness marker, a
 * future version, no /model, no momentum where it should be. */
static const char *make_bad =
    "import shutil, sys, h5py, torch, torchvision\n"
    "names = list(torchvision.models.alexnet(num_classes=4).state_dict())\n"
    "sd = {n: torch.zeros(1) for n in names}\n"
    "sd['features.0.weight'] = torch.zeros(64, 3, 11, 11)\n"
    "sd['features.0.bias'] = torch.zeros(64)\n"
    "sd['classifier.6.weight'] = torch.zeros(4, 4096)\n"
    "torch.save(sd, 'odd-shape.pth')\n"
    "sd['extra.weight'] = torch.zeros(1)\n"
    "del sd['features.8.bias']\n"
    "torch.save(sd, 'odd-names.pth')\n"
    "torch.save([1, 2], 'list.pth')\n"
    "torch.save({'a': 1}, 'nontensor.pth')\n"
    "def broken(name, edit):\n"
    "    shutil.copy(sys.argv[1], name)\n"
    "    with h5py.File(name, 'r+') as f:\n"
    "        edit(f)\n"
    "def flip(f):\n"
    "    f['model/classifier.0.bias'][0] += 1\n"
    "broken('checksum.h5', flip)\n"
    "broken('incomplete.h5', lambda f: f.attrs.__delitem__('complete'))\n"
    "broken('future.h5', lambda f: f.attrs.modify('version', 99))\n"
    "broken('nomodel.h5', lambda f: f.__delitem__('model'))\n"
    "broken('nomomentum.h5', lambda f: f.__delitem__('optimizer'))\n";

/* Runs import-torchvision.py's main (argv[1]) once per further argument
 * (a command line), in this one process, and prints each one's output and
 * exit status between "== case <k>: exit status <rc>" and "== end". */
static const char *import_cases =
    "import contextlib, importlib.util, io, shlex, sys\n"
    "spec = importlib.util.spec_from_file_location('importer', sys.argv[1])\n"
    "importer = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(importer)\n"
    "for k, args in enumerate(sys.argv[2:]):\n"
    "    text = io.StringIO()\n"
    "    with contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):\n"
    "        try:\n"
    "            rc = importer.main(shlex.split(args))\n"
    "        except SystemExit as e:\n"
    "            rc = e.code\n"
    "    print('== case %d: exit status %s\\n%s== end' % (k, rc, text.getvalue()))\n";

/* A smooth colour pattern with noise, w x h, as PNG. */
static void write_test_image(const char *path, int w, int h) {
  uint8_t *px = malloc((size_t)w * h * 3);
  char err[1024];
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *p = px + ((size_t)y * w + x) * 3;
      double noise = 40.0 * (nn_uniform(5, (uint64_t)(y * w + x)) - 0.5);
      double v[3] = {128 + 100 * sin(x / 17.0) + noise, 128 + 100 * cos(y / 11.0) - noise,
                     (double)((x + y) % 256)};
      for (int c = 0; c < 3; c++) p[c] = (uint8_t)(v[c] < 0 ? 0 : v[c] > 255 ? 255 : v[c]);
    }
  CU_ASSERT_FATAL(data_png_write(path, w, h, 3, px, err, sizeof err) == 0);
  free(px);
}

/* Parses "<image>:" then five lines of line_format (an index, a percentage)
 * into idx/pct. */
static int parse_top5(const char *text, const char *image, const char *line_format, int *idx,
                      double *pct) {
  char head[4600];
  snprintf(head, sizeof head, "%s:\n", image);
  const char *p = strstr(text, head);
  if (!p) return -1;
  p += strlen(head);
  for (int k = 0; k < 5; k++) {
    if (sscanf(p, line_format, &idx[k], &pct[k]) != 2) return -1;
    p = strchr(p, '\n');
    if (!p) return -1;
    p++;
  }
  return 0;
}

static void test_torchvision_round_trip(void) {
  if (run("/usr/bin/python3 -c 'import torch, torchvision, h5py, PIL'") != 0)
    TU_SKIP(
        "/usr/bin/python3 cannot import torch, torchvision, h5py and PIL (apt-get install "
        "python3-torch python3-torchvision python3-h5py python3-pil)");
  char script[4400], pth[4400], h5[4400], big[4400], exact[4400];
  snprintf(script, sizeof script, "%s/torch_side.py", fx.dir);
  write_file(script, torch_side);
  snprintf(pth, sizeof pth, "%s/alexnet_random.pth", fx.dir);
  snprintf(h5, sizeof h5, "%s/alexnet_random.h5", fx.dir);
  snprintf(big, sizeof big, "%s/photo.png", fx.dir);
  snprintf(exact, sizeof exact, "%s/photo224.png", fx.dir);
  write_test_image(big, 300, 260); /* resized (shrunk) to 224x224 */
  write_test_image(exact, 224, 224);
  int rc = run("/usr/bin/python3 '%s' '%s' '%s' '%s'", script, pth, big, exact);
  if (rc != 0) fprintf(stderr, "\n%s\n", out);
  CU_ASSERT_FATAL(rc == 0);
  static char reference[OUT_MAX];
  snprintf(reference, sizeof reference, "%s", out);

  /* Class names "c0".."c999" stored by the importer, printed by predict. */
  char labels[4400];
  snprintf(labels, sizeof labels, "%s/c1000.txt", fx.dir);
  FILE *lf = fopen(labels, "w");
  CU_ASSERT_FATAL(lf != NULL);
  for (int k = 0; k < 1000; k++) fprintf(lf, "c%d\n", k);
  fclose(lf);
  rc = run("/usr/bin/python3 '%s' '%s' -o '%s' --labels '%s'", import_py, pth, h5, labels);
  CU_ASSERT_FATAL(rc == 0);
  TU_ASSERT_CONTAINS(out, "16 tensors, 61100840 parameters, 1000 classes");
  rc = run("%s --checkpoint '%s' '%s' '%s'", predict_bin, h5, big, exact);
  CU_ASSERT_FATAL(rc == 0);
  const char *images[2] = {big, exact};
  for (int i = 0; i < 2; i++) {
    int ti[5], ci[5];
    double tp[5], cp[5];
    CU_ASSERT_FATAL(parse_top5(reference, images[i], "%d: %lf%%", ti, tp) == 0);
    CU_ASSERT_FATAL(parse_top5(out, images[i], "c%d: %lf%%", ci, cp) == 0);
    for (int k = 0; k < 5; k++) {
      if (ti[k] != ci[k] || fabs(tp[k] - cp[k]) > 0.01)
        fprintf(stderr, "\n  %s #%d: torchvision %d %.6f%%, alexnet-predict %d %.4f%%\n", images[i],
                k + 1, ti[k], tp[k], ci[k], cp[k]);
      CU_ASSERT(ti[k] == ci[k]);
      CU_ASSERT(fabs(tp[k] - cp[k]) <= 0.01);
    }
    CU_ASSERT(tp[0] > 20); /* a sharp comparison, not a uniform softmax */
  }

  /* Export our own checkpoint; torch reads it back with the same values. */
  char exported[4400], check[4400];
  snprintf(exported, sizeof exported, "%s/tiny_export.pth", fx.dir);
  snprintf(check, sizeof check, "%s/export_check.py", fx.dir);
  write_file(check, export_check);
  rc =
      run("/usr/bin/python3 '%s' --export '%s/step-00000048.h5' -o '%s' && "
          "/usr/bin/python3 '%s' '%s' '%s/step-00000048.h5'",
          import_py, fx.ckpts, exported, check, exported, fx.ckpts);
  CU_ASSERT(rc == 0);
  TU_ASSERT_CONTAINS(out, "export OK 12");

  /* Bad input for the importer (files made by make_bad, in the scratch dir). */
  char bad[4400], python[4400];
  snprintf(bad, sizeof bad, "%s/make_bad.py", fx.dir);
  write_file(bad, make_bad);
  rc = run("cd '%s' && /usr/bin/python3 '%s' '%s/step-00000048.h5'", fx.dir, bad, fx.ckpts);
  CU_ASSERT_FATAL(rc == 0);
  snprintf(bad, sizeof bad, "%s/three.txt", fx.dir);
  write_file(bad, "a\nb\nc\n");
  const bad_case cases[] = {
      {"tiny.yaml -o x.h5",
       1,
       {"import-torchvision.py: tiny.yaml: cannot read as a PyTorch state dict"}},
      {"none.pth -o x.h5", 1, {"import-torchvision.py: none.pth: no such file"}},
      {"tiny_export.pth -o x.h5", 1, {"tiny_export.pth: not a torchvision AlexNet state dict"}},
      {"odd-names.pth -o x.h5",
       1,
       {"not torchvision's AlexNet: missing features.8.bias; unexpected extra.weight"}},
      {"odd-shape.pth -o x.h5",
       1,
       {"features.3.weight has shape 1, torchvision's AlexNet has 192x64x5x5"}},
      {"list.pth -o x.h5", 1, {"list.pth: holds a list, not a state dict"}},
      {"nontensor.pth -o x.h5", 1, {"nontensor.pth: entry a is of type int, not a tensor"}},
      {"alexnet_random.pth -o nodir/x.h5",
       1,
       {"nodir/x.h5: cannot write: no such directory nodir"}},
      {"alexnet_random.pth -o x.h5 --labels none.txt",
       1,
       {"labels none.txt: [Errno 2] No such file"}},
      {"alexnet_random.pth -o x.h5 --labels three.txt",
       1,
       {"labels three.txt: 3 lines, but the model has 1000 classes"}},
      {"--export checksum.h5 -o x.pth",
       1,
       {"checkpoint checksum.h5: checksum mismatch (the file is corrupt)"}},
      {"--export incomplete.h5 -o x.pth",
       1,
       {"incomplete.h5: incomplete (its writer was interrupted)"}},
      {"--export future.h5 -o x.pth",
       1,
       {"future.h5: format version 99 is not supported (this program reads up to 1)"}},
      {"--export nomodel.h5 -o x.pth", 1, {"nomodel.h5: group /model is missing"}},
      {"--export nomomentum.h5 -o x.pth",
       1,
       {"nomomentum.h5: group /optimizer/momentum is missing"}},
      {"--export val40.h5 -o x.pth",
       1,
       {"attribute format is 'alexnet-hdf5', expected 'alexnet-checkpoint'"}},
      {"--export none.h5 -o x.pth", 1, {"checkpoint none.h5: no such file"}},
      {"--export tiny.yaml -o x.pth", 1, {"checkpoint tiny.yaml: not an HDF5 file"}},
      {"--export run/checkpoints/step-00000048.h5 -o pngs", 1, {"pngs: cannot write: "}},
      {"--export run/checkpoints/step-00000048.h5 -o nodir/x.pth",
       1,
       {"nodir/x.pth: cannot write: no such directory nodir"}},
      {"-o x.h5", 2, {"give either a .pth file to import or --export CKPT"}},
      {"alexnet_random.pth -o x.h5 --input-size 32",
       2,
       {"--input-size 32: AlexNet needs at least 63"}},
  };
  /* One python process runs them all (loading torch once costs seconds). */
  snprintf(python, sizeof python, "%s/import_cases.py", fx.dir);
  write_file(python, import_cases);
  static char cmd[16384];
  size_t n = sizeof cases / sizeof cases[0];
  int len = snprintf(cmd, sizeof cmd, "cd '%s' && /usr/bin/python3 import_cases.py '%s'", fx.dir,
                     import_py);
  for (size_t k = 0; k < n; k++)
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'", cases[k].args);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  for (size_t k = 0; k < n; k++) {
    char head[64];
    snprintf(head, sizeof head, "== case %zu: exit status ", k);
    char *block = strstr(out, head), *end = block ? strstr(block, "== end") : NULL;
    CU_ASSERT_FATAL(block && end);
    *end = '\0';
    if (atoi(block + strlen(head)) != cases[k].rc)
      fprintf(stderr, "\n  import-torchvision.py %s: %s\n", cases[k].args, block);
    CU_ASSERT(atoi(block + strlen(head)) == cases[k].rc);
    for (int e = 0; e < 3 && cases[k].expect[e]; e++) TU_ASSERT_CONTAINS(block, cases[k].expect[e]);
    *end = '=';
  }
  /* And as separate processes: the exit statuses reach the shell. */
  rc = run("cd '%s' && /usr/bin/python3 '%s' none.pth -o x.h5", fx.dir, import_py);
  CU_ASSERT(rc == 1);
  TU_ASSERT_CONTAINS(out, "import-torchvision.py: none.pth: no such file");
  rc = run("cd '%s' && /usr/bin/python3 '%s' -o x.h5", fx.dir, import_py);
  CU_ASSERT(rc == 2);
  TU_ASSERT_CONTAINS(out, "give either a .pth file to import or --export CKPT");
  unlink(pth); /* 244 MB each */
  unlink(h5);
}

/* ------------------------------------------------------------------------ */
/* The pieces                                                                */

static void test_jet_table(void) {
  /* OpenCV's COLORMAP_JET (as RGB) at a few entries. */
  struct {
    int v;
    uint8_t rgb[3];
  } cases[] = {{0, {0, 0, 128}},    {1, {0, 0, 132}},       {64, {0, 128, 255}},
               {96, {2, 255, 254}}, {128, {130, 255, 126}}, {192, {255, 124, 0}},
               {255, {128, 0, 0}}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t got[3];
    predict_jet((uint8_t)cases[i].v, got);
    if (memcmp(got, cases[i].rgb, 3) != 0)
      fprintf(stderr, "\n  jet(%d) = %d %d %d\n", cases[i].v, got[0], got[1], got[2]);
    CU_ASSERT(memcmp(got, cases[i].rgb, 3) == 0);
  }
}

static void test_bilinear(void) {
  /* F.interpolate(tensor([[0., 1.], [2., 3.]])[None, None], size=(4, 4),
   * mode="bilinear", align_corners=False) */
  const float src[4] = {0, 1, 2, 3};
  const float want[16] = {0,    0.25f, 0.75f, 1,    0.5f, 0.75f, 1.25f, 1.5f,
                          1.5f, 1.75f, 2.25f, 2.5f, 2,    2.25f, 2.75f, 3};
  float got[16];
  predict_bilinear(src, 2, 2, got, 4, 4);
  CU_ASSERT(tu_max_rel_err(got, want, 16, 1e-3, NULL) < 1e-6);
  /* Shrinking 4 -> 2 samples at 0.5 + 2i - 0.5: the mean of each pair. */
  const float row[4] = {0, 2, 4, 6};
  float half[2];
  predict_bilinear(row, 1, 4, half, 1, 2);
  CU_ASSERT(fabsf(half[0] - 1) < 1e-6f && fabsf(half[1] - 5) < 1e-6f);
}

/* eval's hit rule: ties count against the label, NaN is a miss. Before,
 * a network whose scores were NaN or all equal scored 100% top-1 and top-5
 * (every comparison with the label's score was false). */
static void test_eval_label_rank(void) {
  const double plain[5] = {0.1, 0.4, 0.2, 0.25, 0.05};
  CU_ASSERT_EQUAL(eval_label_rank(plain, 5, 1), 0);
  CU_ASSERT_EQUAL(eval_label_rank(plain, 5, 3), 1);
  CU_ASSERT_EQUAL(eval_label_rank(plain, 5, 4), 4);
  const double equal[10] = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
  CU_ASSERT_EQUAL(eval_label_rank(equal, 10, 0), 9);
  /* Probabilities underflowed: one class 1, the label tied at 0 with 8. */
  const double under[10] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  CU_ASSERT(eval_label_rank(under, 10, 3) >= 5);
  double nan_label[4] = {0.2, 0.3, 0.5, 0};
  nan_label[3] = NAN;
  CU_ASSERT_EQUAL(eval_label_rank(nan_label, 4, 3), 4);
  double nan_other[4] = {0.2, 0.3, 0.5, 0.1};
  nan_other[0] = NAN;
  CU_ASSERT_EQUAL(eval_label_rank(nan_other, 4, 2), 4);
}

static void test_top_k_and_softmax(void) {
  const float logits[6] = {1, 3, 3, -2, 0, 2};
  double p[6];
  nn_softmax(6, logits, p);
  double sum = 0;
  for (int i = 0; i < 6; i++) sum += p[i];
  CU_ASSERT(fabs(sum - 1) < 1e-12);
  int idx[4];
  predict_top_k(p, 6, 4, idx);
  CU_ASSERT(idx[0] == 1 && idx[1] == 2 && idx[2] == 5 && idx[3] == 0);
}

static void test_overlay(void) {
  /* A map rising left to right over a mid-grey image: blue (cold) on the
   * left, red (hot) on the right, 0.6 of the grey kept. */
  float act[2 * 1 * 2] = {0, 1, 0, 3}; /* 2 channels of 1x2: mean 0, 2 */
  uint8_t rgb[8 * 4 * 3], o[8 * 4 * 3];
  memset(rgb, 100, sizeof rgb);
  predict_activation_overlay(act, (nn_shape){2, 1, 2}, rgb, 8, 4, o);
  /* left: jet(0) = (0, 0, 128): 0.6 * 100 + 0.4 * (0, 0, 128) */
  CU_ASSERT(o[0] == 60 && o[1] == 60 && o[2] == 111);
  /* right: jet(255) = (128, 0, 0) */
  const uint8_t *r = o + 7 * 3;
  CU_ASSERT(r[0] == 111 && r[1] == 60 && r[2] == 60);
  /* A constant map is all jet(0), not NaN. */
  float flat[2] = {5, 5};
  predict_activation_overlay(flat, (nn_shape){1, 1, 2}, rgb, 8, 4, o);
  CU_ASSERT(o[5 * 3 + 2] == 111);
}

int main(void) {
  tu_add_suite_with(
      "eval_predict", setup_trained_run, NULL,
      (tu_test[]){{"eval on 1 rank: figures, per class, confusion, metrics", test_eval_one_rank},
                  {"eval on 2 ranks: the same figures", test_eval_two_ranks},
                  {"eval in bf16", test_eval_predict_bf16},
                  {"eval of several checkpoints", test_eval_several},
                  {"eval ten crops vs center crop", test_eval_ten_crop},
                  {"predict agrees with eval", test_predict_agrees_with_eval},
                  {"predict with labels", test_predict_labels},
                  {"activation maps", test_activation_maps},
                  {"predict from the arch attribute", test_predict_arch_fallback},
                  {"bad input: predict", test_bad_input_predict},
                  {"bad input: eval", test_bad_input_eval},
                  {"torchvision round trip", test_torchvision_round_trip},
                  {NULL, NULL}});
  tu_add_suite("predict_core", (tu_test[]){{"JET table", test_jet_table},
                                           {"bilinear like F.interpolate", test_bilinear},
                                           {"softmax and top-k", test_top_k_and_softmax},
                                           {"eval: ties and NaN are misses", test_eval_label_rank},
                                           {"overlay", test_overlay},
                                           {NULL, NULL}});
  return tu_run_all();
}
