/*
 * launch/setup.c: data files, loaders and the network from a config, with
 * every rank agreeing on failure.
 */
#include "setup.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist.h"

int setup_mkdirs(const char *dir, char *err, size_t errlen) {
  char path[CFG_PATH_MAX];
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
      snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
      return -1;
    }
    *p = '/';
  }
  if (mkdir(path, 0777) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Rank 0 writes a synthetic file unless it exists; the others wait for it. */
static int make_synthetic(const char *path, int64_t n, const cfg_config *c, uint64_t seed,
                          char *err, size_t errlen) {
  int failed = 0;
  char msg[1024] = "";
  if (dist_rank() == 0 && access(path, R_OK) != 0) {
    failed = setup_mkdirs(c->run.dir, msg, sizeof msg) != 0 ||
             data_write_synthetic(path, n, c->data.synthetic.size, c->data.synthetic.channels,
                                  c->data.synthetic.classes, seed, msg, sizeof msg) != 0;
  }
  if (dist_agree(failed, msg, sizeof msg) != 0) {
    snprintf(err, errlen, "%s", msg);
    return -1;
  }
  return 0;
}

int setup_resolve(const cfg_config *c, setup_data *s, char *err, size_t errlen) {
  memset(s, 0, sizeof *s);
  if (c->data.synthetic.n > 0) {
    /* The set is a function of (n, size, classes, channels, seed); the name
     * says so, so a changed config never reuses a stale file. */
    snprintf(s->train_path, sizeof s->train_path, "%s/synthetic-train-%lld-%d-%d-%d-seed%llu.h5",
             c->run.dir, (long long)c->data.synthetic.n, c->data.synthetic.size,
             c->data.synthetic.classes, c->data.synthetic.channels,
             (unsigned long long)c->run.seed);
    if (make_synthetic(s->train_path, c->data.synthetic.n, c, c->run.seed, err, errlen) != 0)
      return -1;
    if (c->data.val_fraction <= 0 && !c->data.val[0]) {
      int64_t n_val = c->data.synthetic.n / 4 > 0 ? c->data.synthetic.n / 4 : 1;
      snprintf(s->val_path, sizeof s->val_path, "%s/synthetic-val-%lld-%d-%d-%d-seed%llu.h5",
               c->run.dir, (long long)n_val, c->data.synthetic.size, c->data.synthetic.classes,
               c->data.synthetic.channels, (unsigned long long)c->run.seed);
      if (make_synthetic(s->val_path, n_val, c, c->run.seed + 1000003, err, errlen) != 0) return -1;
    }
  } else if (c->data.train[0]) {
    snprintf(s->train_path, sizeof s->train_path, "%s", c->data.train);
  }
  if (c->data.val[0]) snprintf(s->val_path, sizeof s->val_path, "%s", c->data.val);
  if (c->data.val_fraction > 0 && !c->data.val[0] && s->train_path[0]) {
    /* Hold out part of train: every rank draws the same split from the seed. */
    data_dataset ds;
    if (data_dataset_open(s->train_path, &ds, err, errlen) != 0) return -1;
    int64_t n = ds.n;
    data_dataset_close(&ds);
    if (data_holdout_split(n, c->data.val_fraction, c->run.seed, &s->train_indices,
                           &s->num_train_indices, &s->val_indices, &s->num_val_indices, err,
                           errlen) != 0)
      return -1;
    snprintf(s->val_path, sizeof s->val_path, "%s", s->train_path);
  }
  return 0;
}

static void loader_opts(const cfg_config *c, const setup_data *s, int train, data_loader_opts *o) {
  memset(o, 0, sizeof *o);
  o->path = train ? s->train_path : s->val_path;
  o->indices = train ? s->train_indices : s->val_indices;
  o->num_indices = train ? s->num_train_indices : s->num_val_indices;
  o->rank = dist_rank();
  o->ranks = dist_size();
  o->global_batch = train ? c->train.batch_size : setup_eval_batch(c, 1);
  o->train = train;
  o->shuffle = c->data.shuffle;
  o->seed = c->run.seed;
  o->crop = c->data.crop;
  o->mirror = c->data.mirror;
  o->lighting = (float)c->data.lighting;
  o->ten_crop = !train && c->eval.ten_crop;
  o->out_channels = c->data.channels;
  for (int k = 0; k < 3; k++) {
    o->mean[k] = c->data.has_mean ? (float)c->data.mean[k] : 0.0f;
    o->std[k] = c->data.has_std ? (float)c->data.std[k] : 0.0f;
  }
  o->prefetch = c->data.prefetch;
  o->reader_threads = c->data.reader_threads;
  o->crop_mode = c->data.crop_mode;
  o->resize = c->data.resize;
}

/* The normalization into o: the config's mean/std, and the dataset file's
 * statistics for whichever of them the config leaves unset (gray files have
 * one channel, replicated). Returns 0, or -1 with the file's message. */
static int normalization(const cfg_config *c, const char *path, data_loader_opts *o, char *err,
                         size_t errlen) {
  if (c->data.has_mean && c->data.has_std) return 0; /* loader_opts copied them */
  data_dataset ds;
  if (data_dataset_open(path, &ds, err, errlen) != 0) return -1;
  for (int k = 0; k < 3; k++) {
    int fk = k < ds.c ? k : 0;
    o->mean[k] = c->data.has_mean ? (float)c->data.mean[k] : ds.mean[fk];
    o->std[k] = c->data.has_std ? (float)c->data.std[k] : ds.std[fk];
  }
  data_dataset_close(&ds);
  return 0;
}

int setup_open_loaders(const cfg_config *c, setup_data *s, int open_train, char *err,
                       size_t errlen) {
  char msg[2048] = "";
  int failed = 0;
  data_loader_opts o;
  if (open_train && s->train_path[0]) {
    loader_opts(c, s, 1, &o);
    failed = normalization(c, s->train_path, &o, msg, sizeof msg) != 0;
    if (!failed && data_loader_open(&o, &s->train, msg, sizeof msg) != 0) failed = 1;
    if (!failed) {
      memcpy(s->mean, o.mean, sizeof s->mean);
      memcpy(s->std, o.std, sizeof s->std);
    }
  }
  if (!failed && s->val_path[0]) {
    loader_opts(c, s, 0, &o);
    if (open_train && s->train) {
      /* Evaluate with the training normalization. */
      memcpy(o.mean, s->mean, sizeof o.mean);
      memcpy(o.std, s->std, sizeof o.std);
    } else {
      failed = normalization(c, s->val_path, &o, msg, sizeof msg) != 0;
    }
    if (!failed && data_loader_open(&o, &s->val, msg, sizeof msg) != 0) failed = 1;
    if (!failed && !s->train) {
      memcpy(s->mean, o.mean, sizeof s->mean);
      memcpy(s->std, o.std, sizeof s->std);
    }
  }
  if (dist_agree(failed, msg, sizeof msg) != 0) {
    snprintf(err, errlen, "%s", msg);
    return -1;
  }
  return 0;
}

int setup_build_net(cfg_config *c, const setup_data *s, nn_net *net, char *err, size_t errlen) {
  data_loader *ld = s->train ? s->train : s->val;
  const data_dataset *ds = ld ? data_loader_dataset(ld) : NULL;
  if (ds) {
    if (c->model.num_classes == 0) {
      c->model.num_classes = ds->num_classes;
    } else if (c->model.num_classes != ds->num_classes) {
      snprintf(err, errlen, "%s: model.num_classes: %d, but %s has %d classes", c->source,
               c->model.num_classes, ds->path, ds->num_classes);
      return -1;
    }
    int data_channels = c->data.channels > 0 ? c->data.channels : ds->c;
    if (data_channels != c->model.in_channels) {
      snprintf(err, errlen,
               "%s: model.in_channels: %d, but the data gives %d channels (%s stores %d; "
               "data.channels: 3 replicates gray)",
               c->source, c->model.in_channels, data_channels, ds->path, ds->c);
      return -1;
    }
  }
  if (cfg_build_net(c, net, err, errlen) != 0) return -1;
  if (c->train.precision == CFG_PRECISION_BF16) {
    char why[256];
    if (nn_bf16_select(&net->kernel, why, sizeof why) != 0) {
      snprintf(err, errlen, "%s: train.precision: bf16: %s", c->source, why);
      nn_net_free(net);
      return -1;
    }
  }
  return 0;
}

void setup_load_config(const char *config_path, const char *const *sets, int num_sets,
                       cfg_config *c) {
  char err[8192];
  if (cfg_load(config_path, c, err, sizeof err) != 0) setup_exit(2, "%s", err);
  for (int i = 0; i < num_sets; i++)
    if (cfg_set(c, sets[i], err, sizeof err) != 0) setup_exit(2, "%s", err);
  if (cfg_validate(c, err, sizeof err) != 0) setup_exit(2, "%s", err);
}

int setup_eval_batch(const cfg_config *c, int ranks) {
  int global = c->eval.batch_size > 0 ? c->eval.batch_size : c->train.batch_size;
  return (global + ranks - 1) / ranks * ranks;
}

void setup_free(setup_data *s) {
  if (s->train) data_loader_close(s->train);
  if (s->val) data_loader_close(s->val);
  free(s->train_indices);
  free(s->val_indices);
  memset(s, 0, sizeof *s);
}

const char *setup_tool = "alexnet";

void setup_exit(int status, const char *fmt, ...) {
  if (fmt && dist_rank() == 0) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", setup_tool);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
  }
  dist_finalize();
  exit(status);
}
