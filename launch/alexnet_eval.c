/*
 * alexnet-eval: loss, top-1 and top-5 of checkpoints over a whole validation
 * set, on one process or across MPI ranks (each sample counted once).
 *
 *   alexnet-eval CONFIG --checkpoint PATH|DIR [PATH...] [--ten-crop] [--data VAL.h5]
 *                [--per-class] [--confusion FILE.csv] [--set key.path=value]...
 *   mpirun -n 4 alexnet-eval configs/imagenet.yaml --checkpoint runs/imagenet/checkpoints
 *
 * The data and the network come from CONFIG (as alexnet-train sets them up:
 * data.val, a synthetic val file, or the data.val_fraction split), the
 * weights and the normalization from each checkpoint. A directory stands for
 * its newest valid checkpoint; several checkpoints are evaluated one after
 * the other, one result each. Per checkpoint, rank 0 prints a summary line,
 * the per-class table (--per-class), writes the confusion matrix
 * (--confusion), and ends with one JSON line; when the checkpoint lives in
 * the run's checkpoint directory the same figures are appended to
 * <run.dir>/metrics.jsonl as a "val" line with a "checkpoint" key.
 *
 * Exit status: 0 every checkpoint evaluated, 1 a checkpoint or data file
 * could not be used (the other checkpoints are still evaluated), 2 a bad
 * command line or config.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "evaluate.h"
#include "nn.h"
#include "setup.h"


static void usage(const char *why) {
  if (dist_rank() == 0) {
    if (why) fprintf(stderr, "alexnet-eval: %s\n", why);
    fprintf(
        stderr,
        "usage: alexnet-eval CONFIG --checkpoint PATH|DIR [PATH...] [--ten-crop] [--data VAL.h5]\n"
        "                    [--per-class] [--confusion FILE.csv] [--set key.path=value]...\n"
        "  CONFIG            the run's YAML experiment (data and model)\n"
        "  --checkpoint P    a checkpoint, or a checkpoint directory (its newest valid one);\n"
        "                    repeatable, and further positional arguments are checkpoints too\n"
        "  --ten-crop        average the softmax over ten crops (corners, center, mirrored)\n"
        "  --data VAL.h5     evaluate this dataset file instead of the config's validation data\n"
        "  --per-class       print the top-1 accuracy of every class\n"
        "  --confusion FILE  write the confusion matrix as CSV (rows: true class)\n"
        "  --set K=V         override a config key (repeatable)\n");
  }
  setup_exit(2, NULL);
}

/* ------------------------------------------------------------------------ */
/* Output helpers                                                            */

/* s as a JSON string body (quotes, backslashes and control bytes escaped). */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(f, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(f, "\\u%04x", ch);
    else
      fputc(ch, f);
  }
  fputc('"', f);
}

/* s as a CSV field: quoted when it holds a comma, a quote or a line break. */
static void csv_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\r\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

typedef struct {
  const char *path; /* the checkpoint evaluated */
  int64_t step, epoch;
  int ten_crop, ranks;
  const eval_result *r;
  const eval_detail *d; /* per-class counts or NULL */
  int classes;
} report;

/* One JSON object (no newline): the figures of one checkpoint. */
static void json_report(FILE *f, const report *rp, int with_classes) {
  const eval_result *r = rp->r;
  fprintf(f,
          "{\"step\":%lld,\"epoch\":%lld,\"split\":\"val\",\"loss\":%.6f,\"top1\":%.6f,"
          "\"top5\":%.6f,\"samples\":%lld,\"images_per_sec\":%.2f,\"ten_crop\":%s,\"ranks\":%d,"
          "\"checkpoint\":",
          (long long)rp->step, (long long)rp->epoch, r->loss, r->top1, r->top5,
          (long long)r->samples, r->images_per_sec, rp->ten_crop ? "true" : "false", rp->ranks);
  json_string(f, rp->path);
  if (with_classes && rp->d) {
    fprintf(f, ",\"per_class_top1\":[");
    for (int k = 0; k < rp->classes; k++)
      fprintf(f, "%s%.6f", k ? "," : "",
              rp->d->totals[k] ? (double)rp->d->hits[k] / (double)rp->d->totals[k] : 0.0);
    fprintf(f, "]");
  }
  fprintf(f, "}");
}

static int write_confusion(const char *path, const eval_detail *d, int classes, char *const *names,
                           char *err, size_t errlen) {
  FILE *f = fopen(path, "w");
  if (!f) {
    snprintf(err, errlen, "--confusion %s: cannot create: %s", path, strerror(errno));
    return -1;
  }
  fputs("true\\predicted", f);
  for (int k = 0; k < classes; k++) {
    fputc(',', f);
    csv_field(f, names[k]);
  }
  fputc('\n', f);
  for (int t = 0; t < classes; t++) {
    csv_field(f, names[t]);
    for (int k = 0; k < classes; k++)
      fprintf(f, ",%lld", (long long)d->confusion[(size_t)t * classes + k]);
    fputc('\n', f);
  }
  if (fclose(f) != 0) {
    snprintf(err, errlen, "--confusion %s: write error: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* FILE.csv for one checkpoint, FILE-<checkpoint stem>.csv for several. */
static void confusion_path(const char *base, const char *ckpt, int several, char *out, size_t len) {
  if (!several) {
    snprintf(out, len, "%s", base);
    return;
  }
  const char *name = strrchr(ckpt, '/');
  name = name ? name + 1 : ckpt;
  char stem[512];
  snprintf(stem, sizeof stem, "%s", name);
  char *dot = strrchr(stem, '.');
  if (dot && dot != stem) *dot = '\0';
  const char *slash = strrchr(base, '/');
  const char *ext = strrchr(base, '.');
  if (ext && (!slash || ext > slash + 1))
    snprintf(out, len, "%.*s-%s%s", (int)(ext - base), base, stem, ext);
  else
    snprintf(out, len, "%s-%s", base, stem);
}

/* 1 when the checkpoint file lies in directory dir (compared by real path). */
static int lives_in(const char *ckpt, const char *dir) {
  char parent[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", ckpt);
  char *slash = strrchr(parent, '/');
  if (slash)
    *slash = '\0';
  else
    snprintf(parent, sizeof parent, ".");
  if (!parent[0]) snprintf(parent, sizeof parent, "/");
  return realpath(parent, a) && realpath(dir, b) && strcmp(a, b) == 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  setup_tool = "alexnet-eval";
  dist_init(&argc, &argv);
  const char *config_path = NULL, *data_path = NULL, *confusion = NULL;
  int ten_crop = 0, per_class = 0;
  const char **sets = calloc((size_t)argc, sizeof(char *));
  const char **ckpts = calloc((size_t)argc, sizeof(char *));
  int num_sets = 0, num_ckpts = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has_value = i + 1 < argc;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      usage(NULL);
    else if (strcmp(a, "--set") == 0 && has_value)
      sets[num_sets++] = argv[++i];
    else if (strncmp(a, "--set=", 6) == 0)
      sets[num_sets++] = a + 6;
    else if (strcmp(a, "--checkpoint") == 0 && has_value)
      ckpts[num_ckpts++] = argv[++i];
    else if (strcmp(a, "--data") == 0 && has_value)
      data_path = argv[++i];
    else if (strcmp(a, "--confusion") == 0 && has_value)
      confusion = argv[++i];
    else if (strcmp(a, "--ten-crop") == 0)
      ten_crop = 1;
    else if (strcmp(a, "--per-class") == 0)
      per_class = 1;
    else if (a[0] == '-' && a[1] != '\0') {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown option or missing value: %s", a);
      usage(msg);
    } else if (!config_path)
      config_path = a;
    else
      ckpts[num_ckpts++] = a;
  }
  if (!config_path) usage("no CONFIG given");
  if (num_ckpts == 0) usage("no --checkpoint given");

  cfg_config cfg;
  cfg_config *c = &cfg;
  char err[8192];
  setup_load_config(config_path, sets, num_sets, c);
  free(sets);
  if (ten_crop) c->eval.ten_crop = 1;
  if (data_path) {
    /* Only this file: no training data, no synthetic set, no split. */
    c->data.synthetic.n = 0;
    c->data.train[0] = '\0';
    c->data.val_fraction = 0;
    snprintf(c->data.val, sizeof c->data.val, "%s", data_path);
  }
  /* Weights come from --checkpoint; the training-time sources do not apply. */
  c->checkpoint.init[0] = '\0';
  c->checkpoint.resume = CFG_RESUME_NEVER;
  int bad = cfg_check_paths(c, err, sizeof err) != 0;
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(2, "%s", err);
  int ranks = dist_size();
  int eval_global = c->eval.batch_size > 0 ? c->eval.batch_size : c->train.batch_size;
  if (eval_global % ranks != 0) {
    int rounded = (eval_global + ranks - 1) / ranks * ranks;
    if (dist_rank() == 0)
      fprintf(stderr, "alexnet-eval: evaluation batch %d rounded up to %d to split over %d ranks\n",
              eval_global, rounded, ranks);
    eval_global = rounded;
  }
  c->eval.batch_size = eval_global;
  /* Only rank 0 reads checkpoints (the others receive the weights). */
  bad = 0;
  for (int i = 0; i < num_ckpts && !bad && dist_rank() == 0; i++) {
    struct stat st;
    if (stat(ckpts[i], &st) != 0) {
      snprintf(err, sizeof err, "checkpoint %s: %s", ckpts[i], strerror(errno));
      bad = 1;
    }
  }
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(1, "%s", err);

  int threads = c->dist.threads_per_rank > 0 ? c->dist.threads_per_rank : dist_default_threads();
  nn_set_threads(threads);
  dist_set_timeout(c->dist.timeout_s);
  char ckpt_dir[CFG_PATH_MAX + 16];
  if (c->checkpoint.dir[0])
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s", c->checkpoint.dir);
  else
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/checkpoints", c->run.dir);

  /* The validation data, and the network sized for it. */
  setup_data data;
  if (setup_resolve(c, &data, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (!data.val_path[0])
    setup_exit(2,
           "%s: data: no validation data (data.val, data.synthetic, data.val_fraction or "
           "--data)",
           c->source);
  if (setup_open_loaders(c, &data, 0, err, sizeof err) != 0) setup_exit(1, "%s", err);
  nn_net net;
  if (setup_build_net(c, &data, &net, err, sizeof err) != 0) setup_exit(2, "%s", err);
  int views = c->eval.ten_crop ? 10 : 1;
  if (nn_net_alloc(&net, eval_global / ranks * views, 0, err, sizeof err) != 0)
    setup_exit(1, "%s", err);
  int classes = net.num_classes;
  const data_dataset *ds = data_loader_dataset(data.val);
  /* Copies: the loader (and its dataset's names) may be reopened below. */
  char **names = calloc((size_t)classes, sizeof(char *));
  if (!names) setup_exit(1, "out of memory for %d class names", classes);
  for (int k = 0; k < classes; k++) {
    char index[16];
    snprintf(index, sizeof index, "%d", k);
    names[k] =
        strdup(ds && ds->class_names && ds->num_classes == classes ? ds->class_names[k] : index);
    if (!names[k]) setup_exit(1, "out of memory for %d class names", classes);
  }
  int64_t *counts = calloc((size_t)classes * (2 + (size_t)classes), sizeof(int64_t));
  if (!counts) setup_exit(1, "out of memory for a %dx%d confusion matrix", classes, classes);
  if (dist_rank() == 0)
    printf("alexnet-eval: %s, %lld samples of %s, %s, %d rank%s x %d thread%s, batch %d\n",
           c->run.name, (long long)data_loader_size(data.val), data.val_path,
           views == 10 ? "ten crops" : "center crop", ranks, ranks > 1 ? "s" : "", threads,
           threads > 1 ? "s" : "", eval_global);

  int any_failed = 0;
  for (int ci = 0; ci < num_ckpts; ci++) {
    /* Rank 0 loads the weights and hands them, and where they came from, to all. */
    char path[CFG_PATH_MAX + 64] = "";
    char msg[8192] = "";
    double info[8] = {0};
    int failed = 0;
    if (dist_rank() == 0) {
      ckpt_meta meta;
      memset(&meta, 0, sizeof meta);
      if (is_dir(ckpts[ci])) {
        int got =
            ckpt_load_latest(ckpts[ci], &net, NULL, &meta, path, sizeof path, msg, sizeof msg);
        if (got == 0)
          snprintf(msg, sizeof msg, "checkpoint directory %s: no valid checkpoint (step-<N>.h5)",
                   ckpts[ci]);
        failed = got != 1;
      } else {
        snprintf(path, sizeof path, "%s", ckpts[ci]);
        failed = ckpt_load(path, &net, NULL, &meta, msg, sizeof msg) != 0;
      }
      if (!failed) {
        info[0] = (double)meta.step;
        info[1] = (double)meta.epoch;
        for (int k = 0; k < 3; k++) info[2 + k] = meta.mean[k], info[5 + k] = meta.std[k];
        if (!(meta.std[0] > 0 && meta.std[1] > 0 && meta.std[2] > 0)) {
          snprintf(msg, sizeof msg, "checkpoint %s: attribute std [%g, %g, %g] must be > 0", path,
                   (double)meta.std[0], (double)meta.std[1], (double)meta.std[2]);
          failed = 1;
        }
      }
      ckpt_meta_free(&meta);
    }
    if (dist_agree(failed, msg, sizeof msg) != 0) {
      if (dist_rank() == 0) fprintf(stderr, "alexnet-eval: %s\n", msg);
      any_failed = 1;
      continue;
    }
    dist_bcast_bytes(path, sizeof path, 0);
    dist_bcast_bytes(info, sizeof info, 0);
    dist_bcast_floats(net.params, net.num_params, 0);

    /* Evaluate with the normalization the model was trained with. */
    int same = 1;
    for (int k = 0; k < 3; k++)
      same &= data.mean[k] == (float)info[2 + k] && data.std[k] == (float)info[5 + k];
    if (!same) {
      c->data.has_mean = c->data.has_std = 1;
      for (int k = 0; k < 3; k++) c->data.mean[k] = info[2 + k], c->data.std[k] = info[5 + k];
      data_loader_close(data.val);
      data.val = NULL;
      if (setup_open_loaders(c, &data, 0, err, sizeof err) != 0) setup_exit(1, "%s", err);
    }

    eval_result r;
    eval_detail d = {.hits = counts, .totals = counts + classes, .confusion = counts + 2 * classes};
    memset(counts, 0, (size_t)classes * (2 + (size_t)classes) * sizeof(int64_t));
    if (eval_run(&net, data.val, 0, &r, &d, err, sizeof err) != 0) setup_exit(1, "%s", err);
    if (dist_rank() != 0) continue;

    report rp = {.path = path,
                 .step = (int64_t)info[0],
                 .epoch = (int64_t)info[1],
                 .ten_crop = views == 10,
                 .ranks = ranks,
                 .r = &r,
                 .d = &d,
                 .classes = classes};
    printf(
        "%s (step %lld, epoch %lld): loss %.4f, top-1 %.2f%%, top-5 %.2f%% over %lld samples, "
        "%.1f images/s\n",
        path, (long long)rp.step, (long long)rp.epoch, r.loss, 100 * r.top1, 100 * r.top5,
        (long long)r.samples, r.images_per_sec);
    if (per_class) {
      printf("  %-5s %-32s %9s %9s %9s\n", "class", "name", "correct", "samples", "top-1");
      for (int k = 0; k < classes; k++)
        printf("  %-5d %-32s %9lld %9lld %8.2f%%\n", k, names[k], (long long)d.hits[k],
               (long long)d.totals[k],
               d.totals[k] ? 100.0 * (double)d.hits[k] / (double)d.totals[k] : 0.0);
    }
    if (confusion) {
      char cpath[CFG_PATH_MAX + 700];
      confusion_path(confusion, path, num_ckpts > 1, cpath, sizeof cpath);
      if (write_confusion(cpath, &d, classes, names, msg, sizeof msg) != 0) {
        fprintf(stderr, "alexnet-eval: %s\n", msg);
        any_failed = 1;
      } else {
        printf("confusion matrix written to %s\n", cpath);
      }
    }
    if (lives_in(path, ckpt_dir)) {
      char mpath[CFG_PATH_MAX + 32];
      snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", c->run.dir);
      FILE *m = fopen(mpath, "a");
      if (!m) {
        fprintf(stderr, "alexnet-eval: cannot append to %s: %s\n", mpath, strerror(errno));
      } else {
        json_report(m, &rp, 0);
        fputc('\n', m);
        if (fclose(m) != 0)
          fprintf(stderr, "alexnet-eval: writing %s failed: %s\n", mpath, strerror(errno));
      }
    }
    json_report(stdout, &rp, per_class);
    printf("\n");
    fflush(stdout);
  }
  free(counts);
  for (int k = 0; k < classes; k++) free(names[k]);
  free(names);
  free(ckpts);
  nn_net_free(&net);
  setup_free(&data);
  cfg_free(c);
  dist_finalize();
  return any_failed;
}
