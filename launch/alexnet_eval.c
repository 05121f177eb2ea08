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
#include "metrics.h"
#include "nn.h"
#include "setup.h"
#include "tool.h"

static const char usage[] =
    "usage: alexnet-eval CONFIG --checkpoint PATH|DIR [PATH...] [--ten-crop] [--data VAL.h5]\n"
    "                    [--per-class] [--confusion FILE.csv] [--precision fp32|bf16]\n"
    "                    [--set key.path=value]...\n"
    "  CONFIG            the run's YAML experiment (data and model)\n"
    "  --checkpoint P    a checkpoint, or a checkpoint directory (its newest valid one);\n"
    "                    repeatable, and further positional arguments are checkpoints too\n"
    "  --ten-crop        average the softmax over ten crops (corners, center, mirrored)\n"
    "  --data VAL.h5     evaluate this dataset file instead of the config's validation data\n"
    "  --per-class       print the top-1 accuracy of every class\n"
    "  --confusion FILE  write the confusion matrix as CSV (rows: true class)\n"
    "  --precision P     fp32 or bf16 products in convolutions and linear layers\n"
    "                    (default: the config's train.precision)\n"
    "  --set K=V         override a config key (repeatable)\n";

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
  const char *path;   /* the checkpoint evaluated */
  const char *run_id; /* the run that wrote it */
  int64_t step, epoch;
  int ten_crop, ranks;
  const eval_result *r;
  const eval_detail *d; /* per-class counts or NULL */
  int classes;
} report;

/* One JSON object (no newline): the figures of one checkpoint. */
static void json_report(FILE *f, const report *rp, int with_classes) {
  metrics_val_json(f, rp->step, rp->epoch, rp->r);
  fprintf(f, ",\"ten_crop\":%s,\"ranks\":%d,\"checkpoint\":", rp->ten_crop ? "true" : "false",
          rp->ranks);
  json_string(f, rp->path);
  metrics_run_json(f, rp->run_id);
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

/* The command line and the config, made to evaluate: only --data when
 * given, weights from --checkpoint alone, the batch a multiple of ranks. */
typedef struct {
  tool_list args, ckpts, sets;
  const char *data_path, *confusion, *precision;
  int ten_crop, per_class;
} eval_args;

static void parse_args(int argc, char **argv, eval_args *a, cfg_config *c) {
  memset(a, 0, sizeof *a);
  const tool_opt opts[] = {TOOL_OPT_LIST("--set", &a->sets),
                           TOOL_OPT_LIST("--checkpoint", &a->ckpts),
                           TOOL_OPT_STRING("--data", &a->data_path),
                           TOOL_OPT_STRING("--confusion", &a->confusion),
                           TOOL_OPT_STRING("--precision", &a->precision),
                           TOOL_OPT_FLAG("--ten-crop", &a->ten_crop),
                           TOOL_OPT_FLAG("--per-class", &a->per_class),
                           TOOL_OPT_END};
  const tool_spec spec = {"alexnet-eval", usage, opts, &a->args};
  tool_parse(&spec, argc, argv);
  if (a->args.count == 0) tool_usage(&spec, "no CONFIG given");
  /* Positional arguments after CONFIG are checkpoints too. */
  for (int i = 1; i < a->args.count; i++) {
    if (!a->ckpts.items) a->ckpts.items = calloc((size_t)argc, sizeof(char *));
    if (!a->ckpts.items) setup_exit(1, "out of memory");
    a->ckpts.items[a->ckpts.count++] = a->args.items[i];
  }
  if (a->ckpts.count == 0) tool_usage(&spec, "no --checkpoint given");
  const int bf16 = tool_precision(&spec, a->precision);
  setup_load_config(a->args.items[0], a->sets.items, a->sets.count, c);
  if (a->precision) c->train.precision = bf16 ? CFG_PRECISION_BF16 : CFG_PRECISION_FP32;
  if (a->ten_crop) c->eval.ten_crop = 1;
  if (a->data_path) {
    /* Only this file: no training data, no synthetic set, no split. */
    c->data.synthetic.n = 0;
    c->data.train[0] = '\0';
    c->data.val_fraction = 0;
    snprintf(c->data.val, sizeof c->data.val, "%s", a->data_path);
  }
  /* Weights come from --checkpoint; the training-time sources do not apply. */
  c->checkpoint.init[0] = '\0';
  c->checkpoint.resume = CFG_RESUME_NEVER;
  char err[8192];
  int bad = cfg_check_paths(c, err, sizeof err) != 0;
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(2, "%s", err);
  int ranks = dist_size();
  int eval_global = setup_eval_batch(c, 1), rounded = setup_eval_batch(c, ranks);
  if (rounded != eval_global && dist_rank() == 0)
    fprintf(stderr, "alexnet-eval: evaluation batch %d rounded up to %d to split over %d ranks\n",
            eval_global, rounded, ranks);
  c->eval.batch_size = rounded;
  /* Only rank 0 reads checkpoints (the others receive the weights). */
  bad = 0;
  for (int i = 0; i < a->ckpts.count && !bad && dist_rank() == 0; i++) {
    struct stat st;
    if (stat(a->ckpts.items[i], &st) != 0) {
      snprintf(err, sizeof err, "checkpoint %s: %s", a->ckpts.items[i], strerror(errno));
      bad = 1;
    }
  }
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(1, "%s", err);
}

/* What the loop shares: the data, the network, the class names and counts. */
typedef struct {
  cfg_config *c;
  setup_data data;
  nn_net net;
  int classes, views, ranks;
  char **names;    /* (classes) */
  int64_t *counts; /* (classes * (2 + classes)): hits, totals, confusion */
} evaluator;

static void evaluator_open(evaluator *e, cfg_config *c, int threads) {
  char err[8192];
  memset(e, 0, sizeof *e);
  e->c = c;
  e->ranks = dist_size();
  if (setup_resolve(c, &e->data, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (!e->data.val_path[0])
    setup_exit(2,
               "%s: data: no validation data (data.val, data.synthetic, data.val_fraction or "
               "--data)",
               c->source);
  if (setup_open_loaders(c, &e->data, 0, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (setup_build_net(c, &e->data, &e->net, err, sizeof err) != 0) setup_exit(2, "%s", err);
  e->views = c->eval.ten_crop ? 10 : 1;
  if (nn_net_alloc(&e->net, c->eval.batch_size / e->ranks * e->views, 0, err, sizeof err) != 0)
    setup_exit(1, "%s", err);
  int classes = e->classes = e->net.num_classes;
  const data_dataset *ds = data_loader_dataset(e->data.val);
  /* Copies: the loader (and its dataset's names) may be reopened later. */
  e->names = calloc((size_t)classes, sizeof(char *));
  if (!e->names) setup_exit(1, "out of memory for %d class names", classes);
  for (int k = 0; k < classes; k++) {
    char index[16];
    snprintf(index, sizeof index, "%d", k);
    e->names[k] =
        strdup(ds && ds->class_names && ds->num_classes == classes ? ds->class_names[k] : index);
    if (!e->names[k]) setup_exit(1, "out of memory for %d class names", classes);
  }
  e->counts = calloc((size_t)classes * (2 + (size_t)classes), sizeof(int64_t));
  if (!e->counts) setup_exit(1, "out of memory for a %dx%d confusion matrix", classes, classes);
  if (dist_rank() == 0)
    printf("alexnet-eval: %s, %lld samples of %s, %s, %d rank%s x %d thread%s, batch %d\n",
           c->run.name, (long long)data_loader_size(e->data.val), e->data.val_path,
           e->views == 10 ? "ten crops" : "center crop", e->ranks, e->ranks > 1 ? "s" : "", threads,
           threads > 1 ? "s" : "", c->eval.batch_size);
}

static void evaluator_close(evaluator *e) {
  free(e->counts);
  for (int k = 0; k < e->classes; k++) free(e->names[k]);
  free(e->names);
  nn_net_free(&e->net);
  setup_free(&e->data);
}

/* Rank 0 loads the weights of checkpoint (a file or a directory's newest)
 * and hands them, the file's path and its meta to every rank. info: step,
 * epoch, step_in_epoch, mean[3], std[3]; run_id (rank 0): the run that wrote
 * it. Returns 0, or -1 with the message on every rank. */
static int load_weights(evaluator *e, const char *ckpt, char *path, size_t pathlen, double info[9],
                        char run_id[40], char *msg, size_t msglen) {
  int failed = 0;
  if (dist_rank() == 0) {
    ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    if (is_dir(ckpt)) {
      int got = ckpt_load_latest(ckpt, &e->net, NULL, &meta, path, pathlen, msg, msglen);
      if (got == 0)
        snprintf(msg, msglen, "checkpoint directory %s: no valid checkpoint (step-<N>.h5)", ckpt);
      failed = got != 1;
    } else {
      snprintf(path, pathlen, "%s", ckpt);
      failed = ckpt_load(path, &e->net, NULL, &meta, msg, msglen) != 0;
    }
    if (!failed) {
      info[0] = (double)meta.step;
      info[1] = (double)meta.epoch;
      info[2] = (double)meta.step_in_epoch;
      snprintf(run_id, 40, "%s", meta.run_id);
      for (int k = 0; k < 3; k++) info[3 + k] = meta.mean[k], info[6 + k] = meta.std[k];
      if (!(meta.std[0] > 0 && meta.std[1] > 0 && meta.std[2] > 0)) {
        snprintf(msg, msglen, "checkpoint %s: attribute std [%g, %g, %g] must be > 0", path,
                 (double)meta.std[0], (double)meta.std[1], (double)meta.std[2]);
        failed = 1;
      }
    }
    ckpt_meta_free(&meta);
  }
  if (dist_agree(failed, msg, msglen) != 0) return -1;
  dist_bcast_bytes(path, pathlen, 0);
  dist_bcast_bytes(info, 9 * sizeof(double), 0);
  dist_bcast_floats(e->net.params, e->net.num_params, 0);
  /* Evaluate with the normalization the model was trained with. */
  int same = 1;
  for (int k = 0; k < 3; k++)
    same &= e->data.mean[k] == (float)info[3 + k] && e->data.std[k] == (float)info[6 + k];
  if (!same) {
    cfg_config *c = e->c;
    c->data.has_mean = c->data.has_std = 1;
    for (int k = 0; k < 3; k++) c->data.mean[k] = info[3 + k], c->data.std[k] = info[6 + k];
    data_loader_close(e->data.val);
    e->data.val = NULL;
    char err[8192];
    if (setup_open_loaders(c, &e->data, 0, err, sizeof err) != 0) setup_exit(1, "%s", err);
  }
  return 0;
}

/* Rank 0's output for one checkpoint: the summary line, the per-class
 * table, the confusion file, the metrics.jsonl line, the JSON line.
 * Returns 0, or 1 when the confusion file could not be written. */
static int report_one(const evaluator *e, const eval_args *a, report *rp) {
  const eval_result *r = rp->r;
  const eval_detail *d = rp->d;
  int failed = 0;
  printf(
      "%s (step %lld, epoch %lld): loss %.4f, top-1 %.2f%%, top-5 %.2f%% over %lld samples, "
      "%.1f images/s\n",
      rp->path, (long long)rp->step, (long long)rp->epoch + 1, r->loss, 100 * r->top1,
      100 * r->top5, (long long)r->samples, r->images_per_sec);
  if (a->per_class) {
    printf("  %-5s %-32s %9s %9s %9s\n", "class", "name", "correct", "samples", "top-1");
    for (int k = 0; k < e->classes; k++)
      printf("  %-5d %-32s %9lld %9lld %8.2f%%\n", k, e->names[k], (long long)d->hits[k],
             (long long)d->totals[k],
             d->totals[k] ? 100.0 * (double)d->hits[k] / (double)d->totals[k] : 0.0);
  }
  if (a->confusion) {
    char cpath[CFG_PATH_MAX + 700], msg[8192];
    confusion_path(a->confusion, rp->path, a->ckpts.count > 1, cpath, sizeof cpath);
    if (write_confusion(cpath, d, e->classes, e->names, msg, sizeof msg) != 0) {
      fprintf(stderr, "alexnet-eval: %s\n", msg);
      failed = 1;
    } else {
      printf("confusion matrix written to %s\n", cpath);
    }
  }
  if (lives_in(rp->path, e->c->checkpoint.dir)) {
    char mpath[CFG_PATH_MAX + 32];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", e->c->run.dir);
    FILE *m = fopen(mpath, "a");
    if (!m) {
      fprintf(stderr, "alexnet-eval: cannot append to %s: %s\n", mpath, strerror(errno));
    } else {
      json_report(m, rp, 0);
      fputc('\n', m);
      if (fclose(m) != 0)
        fprintf(stderr, "alexnet-eval: writing %s failed: %s\n", mpath, strerror(errno));
    }
  }
  json_report(stdout, rp, a->per_class);
  printf("\n");
  fflush(stdout);
  return failed;
}

int main(int argc, char **argv) {
  dist_init(&argc, &argv);
  cfg_config c;
  eval_args a;
  parse_args(argc, argv, &a, &c);
  int threads = tool_threads(c.dist.threads_per_rank);
  dist_set_timeout(c.dist.timeout_s);
  evaluator e;
  evaluator_open(&e, &c, threads);

  int any_failed = 0;
  for (int ci = 0; ci < a.ckpts.count; ci++) {
    char path[CFG_PATH_MAX + 64] = "", msg[8192] = "", run_id[40] = "";
    double info[9] = {0};
    if (load_weights(&e, a.ckpts.items[ci], path, sizeof path, info, run_id, msg, sizeof msg) !=
        0) {
      if (dist_rank() == 0) fprintf(stderr, "alexnet-eval: %s\n", msg);
      any_failed = 1;
      continue;
    }
    eval_result r;
    int classes = e.classes;
    eval_detail d = {
        .hits = e.counts, .totals = e.counts + classes, .confusion = e.counts + 2 * classes};
    memset(e.counts, 0, (size_t)classes * (2 + (size_t)classes) * sizeof(int64_t));
    if (eval_run(&e.net, e.data.val, 0, &r, &d, msg, sizeof msg) != 0) setup_exit(1, "%s", msg);
    if (dist_rank() != 0) continue;
    /* The epoch of the checkpoint's last step, 0-based as in the trainer's lines. */
    int64_t epoch = (int64_t)info[1], step_in_epoch = (int64_t)info[2];
    if (step_in_epoch == 0 && epoch > 0) epoch--;
    report rp = {.path = path,
                 .run_id = run_id,
                 .step = (int64_t)info[0],
                 .epoch = epoch,
                 .ten_crop = e.views == 10,
                 .ranks = e.ranks,
                 .r = &r,
                 .d = &d,
                 .classes = classes};
    any_failed |= report_one(&e, &a, &rp);
  }
  evaluator_close(&e);
  tool_list_free(&a.args);
  tool_list_free(&a.ckpts);
  tool_list_free(&a.sets);
  cfg_free(&c);
  dist_finalize();
  return any_failed;
}
