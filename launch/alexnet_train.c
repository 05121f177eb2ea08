/*
 * alexnet-train: data-parallel training from a YAML experiment.
 *
 *   mpirun -n 8 alexnet-train configs/imagenet.yaml     (one rank per process)
 *   alexnet-train configs/debug.yaml                     (one process)
 *   alexnet-train CONFIG [--set key.path=value]... [--print-config] [--summary]
 *
 * Each rank reads its shard of the global batch, runs forward and backward,
 * and hands each layer's finished gradients to dist's bucketed reducer, which
 * averages them over the ranks while backward goes on; then every rank applies
 * the same SGD update to its copy of the flat parameter buffer. Rank 0 writes
 * metrics and checkpoints. Errors on any rank end the whole job with a message
 * naming the rank; SIGTERM/SIGINT end it cleanly with a checkpoint.
 *
 * Exit status: 0 done (or stopped by a signal after a checkpoint), 1 a failure
 * while running, 2 a bad command line or config (nothing started).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "evaluate.h"
#include "nn.h"
#include "setup.h"

static volatile sig_atomic_t stop_signal = 0;
static void on_stop_signal(int sig) { stop_signal = sig; }

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}


static void usage(void) {
  if (dist_rank() == 0)
    fprintf(stderr,
            "usage: alexnet-train CONFIG [--set key.path=value]... [--print-config] [--summary]\n"
            "  CONFIG          a YAML experiment (see docs/config.md), e.g. configs/debug.yaml\n"
            "  --set K=V       override any key, e.g. --set optimizer.lr=0.1 (repeatable)\n"
            "  --print-config  print the effective config and exit\n"
            "  --summary       print the model summary (shapes, parameters, FLOPs) and exit\n");
  setup_exit(2, NULL);
}

/* ------------------------------------------------------------------------ */
/* Gradient hand-off: check each layer's gradients, then pass them on.       */

typedef struct {
  nn_net *net;
  dist_reducer *reducer;
  int bad_layer; /* first layer (from the end) with a non-finite gradient, -1 = none */
} grad_hook;

static void on_grad_ready(void *ctx, size_t offset, size_t count) {
  grad_hook *h = ctx;
  const float *g = h->net->grads + offset;
  float probe = 0.0f; /* x * 0 is 0 for finite x, NaN for Inf or NaN */
#pragma omp simd reduction(+ : probe)
  for (size_t i = 0; i < count; i++) probe += g[i] * 0.0f;
  if (probe != 0.0f && h->bad_layer < 0) {
    for (int l = 0; l < h->net->num_layers; l++)
      if (h->net->layers[l].weight_count && h->net->layers[l].weight_offset == offset)
        h->bad_layer = l;
  }
  dist_reducer_ready(h->reducer, offset, count);
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

typedef struct {
  FILE *jsonl;       /* rank 0: run.dir/metrics.jsonl, appended */
  int tty;           /* rank 0's stderr is a terminal: one updating progress line */
  double start;      /* wall clock at the first step of this process */
  int64_t first_step;
} metrics;

/* epoch: the 0-based epoch the evaluated weights finished (or are inside). */
static void log_val(metrics *m, int64_t step, int64_t epoch, const eval_result *r) {
  if (dist_rank() != 0) return;
  if (m->tty) fprintf(stderr, "\n");
  printf("val   epoch %lld step %lld: loss %.4f top-1 %.2f%% top-5 %.2f%% (%lld samples, "
         "%.1f images/s)\n",
         (long long)epoch + 1, (long long)step, r->loss, 100 * r->top1, 100 * r->top5,
         (long long)r->samples, r->images_per_sec);
  fflush(stdout);
  if (m->jsonl) {
    fprintf(m->jsonl,
            "{\"step\":%lld,\"epoch\":%lld,\"split\":\"val\",\"loss\":%.6f,\"top1\":%.6f,"
            "\"top5\":%.6f,\"samples\":%lld,\"images_per_sec\":%.2f}\n",
            (long long)step, (long long)epoch, r->loss, r->top1, r->top5, (long long)r->samples,
            r->images_per_sec);
    fflush(m->jsonl);
  }
}

/* ------------------------------------------------------------------------ */

typedef struct {
  cfg_config cfg;
  setup_data data;
  nn_net net;
  float *momentum;
  dist_reducer *reducer;
  int64_t step, epoch, step_in_epoch;
  char *config_yaml;
  char ckpt_dir[CFG_PATH_MAX];
  char last_ckpt[CFG_PATH_MAX + 64];
} trainer;

/* Batch norm across ranks. Synchronized (model.sync_batchnorm): nn hands
 * each layer's per-channel sums here and gets back their sum over the ranks,
 * so every rank normalizes by the global batch's statistics and updates the
 * same running statistics. */
static void bn_allreduce(void *ctx, double *sums, int n) {
  (void)ctx;
  dist_allreduce_sum_doubles(sums, n);
}

/* The running statistics are never averaged: without sync each rank's follow
 * its own shard's batches, and rank 0's are the model's (PyTorch DDP's
 * broadcast_buffers gives the same); with sync they agree already. Before an
 * evaluation or a checkpoint, every rank takes rank 0's. */
static void share_buffers(trainer *t) {
  if (t->net.num_buffers) dist_bcast_floats(t->net.buffers, t->net.num_buffers, 0);
}

/* Rank 0 writes a checkpoint; every rank learns whether it worked. */
static int save_checkpoint(trainer *t, char *err, size_t errlen) {
  share_buffers(t);
  int failed = 0;
  char msg[4600] = "";
  /* The other ranks wait in dist_agree while rank 0 writes: file I/O time,
   * not a stuck peer, so the collective watchdog is off until it is done. */
  dist_set_timeout(0);
  if (dist_rank() == 0) {
    char path[CFG_PATH_MAX + 64];
    ckpt_step_path(t->ckpt_dir, t->step, path, sizeof path);
    const data_dataset *ds = data_loader_dataset(t->data.train);
    ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.step = t->step;
    m.epoch = t->epoch;
    m.step_in_epoch = t->step_in_epoch;
    m.seed = t->cfg.run.seed;
    snprintf(m.arch, sizeof m.arch, "%s", t->cfg.model.arch[0] ? t->cfg.model.arch : "custom");
    m.config_yaml = t->config_yaml;
    m.num_classes = t->net.num_classes;
    memcpy(m.mean, t->data.mean, sizeof m.mean);
    memcpy(m.std, t->data.std, sizeof m.std);
    m.class_names = ds && ds->num_classes == t->net.num_classes ? ds->class_names : NULL;
    if (setup_mkdirs(t->ckpt_dir, msg, sizeof msg) != 0 ||
        ckpt_save(path, &t->net, t->momentum, &m, msg, sizeof msg) != 0) {
      failed = 1;
    } else {
      snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", path);
      ckpt_prune(t->ckpt_dir, t->cfg.checkpoint.keep);
    }
  }
  int agreed = dist_agree(failed, msg, sizeof msg);
  dist_set_timeout(t->cfg.dist.timeout_s);
  if (agreed != 0) {
    snprintf(err, errlen, "%s", msg);
    return -1;
  }
  return 0;
}

/* Weights: a resumed checkpoint, checkpoint.init, or a fresh initialization
 * on rank 0; then everything rank 0 has is broadcast. */
static void initialize_state(trainer *t) {
  cfg_config *c = &t->cfg;
  char msg[4600] = "";
  int failed = 0, resumed = 0;
  dist_set_timeout(0); /* rank 0 reads files while the others wait: see save_checkpoint */
  char from[CFG_PATH_MAX + 64] = "";
  int64_t pos[3] = {0, 0, 0};
  if (dist_rank() == 0) {
    ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    if (c->checkpoint.resume == CFG_RESUME_AUTO) {
      int got = ckpt_load_latest(t->ckpt_dir, &t->net, t->momentum, &meta, from, sizeof from,
                                 msg, sizeof msg);
      if (got < 0) failed = 1;
      resumed = got == 1;
    } else if (c->checkpoint.resume == CFG_RESUME_PATH) {
      snprintf(from, sizeof from, "%s", c->checkpoint.resume_path);
      failed = ckpt_load(from, &t->net, t->momentum, &meta, msg, sizeof msg) != 0;
      resumed = !failed;
    }
    /* Not resumed: the momentum starts at zero, even when auto-resume tried a
     * broken checkpoint first (it may have filled the buffer before failing). */
    if (!resumed) memset(t->momentum, 0, t->net.num_params * sizeof(float));
    if (resumed) {
      pos[0] = meta.step, pos[1] = meta.epoch, pos[2] = meta.step_in_epoch;
      printf("resuming from %s: step %lld, epoch %lld, step %lld of the epoch\n", from,
             (long long)meta.step, (long long)meta.epoch + 1, (long long)meta.step_in_epoch);
      snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", from);
    } else if (!failed && c->checkpoint.init[0]) {
      failed = ckpt_load(c->checkpoint.init, &t->net, NULL, NULL, msg, sizeof msg) != 0;
      if (!failed) printf("initial weights from %s\n", c->checkpoint.init);
    } else if (!failed) {
      int paper = c->model.weight_init == CFG_INIT_PAPER ||
                  (c->model.weight_init == CFG_INIT_AUTO && strcmp(c->model.arch, "alexnet") == 0);
      if (paper) nn_init_paper(&t->net, c->run.seed);
      else if (c->model.weight_init == CFG_INIT_KAIMING) nn_init_kaiming(&t->net, c->run.seed);
      else nn_init_torch_default(&t->net, c->run.seed);
    }
    ckpt_meta_free(&meta);
    fflush(stdout);
  }
  if (dist_agree(failed, msg, sizeof msg) != 0) setup_exit(1, "%s", msg);
  dist_set_timeout(c->dist.timeout_s);
  dist_bcast_bytes(pos, sizeof pos, 0);
  dist_bcast_floats(t->net.params, t->net.num_params, 0);
  dist_bcast_floats(t->momentum, t->net.num_params, 0);
  share_buffers(t);
  t->step = pos[0], t->epoch = pos[1], t->step_in_epoch = pos[2];
}

static void format_eta(double seconds, char *out, size_t len) {
  if (!(seconds >= 0) || seconds > 1e8) {
    snprintf(out, len, "?");
  } else if (seconds >= 3600) {
    snprintf(out, len, "%dh%02dm", (int)(seconds / 3600), (int)fmod(seconds / 60, 60));
  } else {
    snprintf(out, len, "%dm%02ds", (int)(seconds / 60), (int)fmod(seconds, 60));
  }
}

static int64_t env_int(const char *name, int64_t fallback) {
  const char *v = getenv(name);
  return v && *v ? atoll(v) : fallback;
}

int main(int argc, char **argv) {
  setup_tool = "alexnet-train";
  dist_init(&argc, &argv);
  const char *config_path = NULL;
  int print_config = 0, summary = 0;
  const char **sets = calloc((size_t)argc, sizeof(char *));
  int num_sets = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) sets[num_sets++] = argv[++i];
    else if (strncmp(argv[i], "--set=", 6) == 0) sets[num_sets++] = argv[i] + 6;
    else if (strcmp(argv[i], "--print-config") == 0) print_config = 1;
    else if (strcmp(argv[i], "--summary") == 0) summary = 1;
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) usage();
    else if (argv[i][0] == '-' || config_path) usage();
    else config_path = argv[i];
  }
  if (!config_path) usage();

  trainer t;
  memset(&t, 0, sizeof t);
  cfg_config *c = &t.cfg;
  char err[8192];
  setup_load_config(config_path, sets, num_sets, c);
  free(sets);
  if (print_config) {
    char *yaml = cfg_to_yaml(c);
    if (dist_rank() == 0 && yaml) fputs(yaml, stdout);
    free(yaml);
    setup_exit(0, NULL);
  }
  if (summary) {
    if (cfg_build_net(c, &t.net, err, sizeof err) != 0) setup_exit(2, "%s", err);
    if (dist_rank() == 0) nn_summary(&t.net, stdout);
    nn_net_free(&t.net);
    setup_exit(0, NULL);
  }
  int bad = cfg_check_ranks(c, dist_size(), err, sizeof err) != 0 ||
            cfg_check_paths(c, err, sizeof err) != 0;
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(2, "%s", err);

  int threads = c->dist.threads_per_rank > 0 ? c->dist.threads_per_rank : dist_default_threads();
  nn_set_threads(threads);
  dist_set_timeout(c->dist.timeout_s);
  if (c->checkpoint.dir[0]) snprintf(t.ckpt_dir, sizeof t.ckpt_dir, "%s", c->checkpoint.dir);
  else snprintf(t.ckpt_dir, sizeof t.ckpt_dir, "%s/checkpoints", c->run.dir);

  /* Data, then the network sized for it. */
  bad = setup_mkdirs(c->run.dir, err, sizeof err) != 0;
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(1, "%s", err);
  /* A checkpoint directory that cannot be written fails now, not at the
   * first checkpoint after hours of training. */
  bad = dist_rank() == 0 && setup_mkdirs(t.ckpt_dir, err, sizeof err) != 0;
  if (!bad && dist_rank() == 0 && access(t.ckpt_dir, W_OK | X_OK) != 0) {
    snprintf(err, sizeof err, "checkpoint directory %s is not writable: %s", t.ckpt_dir,
             strerror(errno));
    bad = 1;
  }
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (setup_resolve(c, &t.data, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (!t.data.train_path[0]) setup_exit(2, "%s: data: no training data (data.train or data.synthetic)",
                                    c->source);
  if (setup_open_loaders(c, &t.data, 1, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (setup_build_net(c, &t.data, &t.net, err, sizeof err) != 0) setup_exit(2, "%s", err);
  int ranks = dist_size();
  int local_batch = c->train.batch_size / ranks;
  int eval_global = c->eval.batch_size > 0 ? c->eval.batch_size : c->train.batch_size;
  int eval_local = (eval_global + ranks - 1) / ranks * (c->eval.ten_crop ? 10 : 1);
  int alloc_batch = local_batch > eval_local ? local_batch : eval_local;
  if (nn_net_alloc(&t.net, alloc_batch, 0, err, sizeof err) != 0) setup_exit(1, "%s", err);
  t.momentum = calloc(t.net.num_params, sizeof(float));
  if (!t.momentum) setup_exit(1, "out of memory for %zu momentum values", t.net.num_params);
  t.config_yaml = cfg_to_yaml(c);

  int64_t steps_per_epoch = data_loader_steps(t.data.train);
  if (steps_per_epoch <= 0)
    setup_exit(2, "%s: train.batch_size: %d is larger than the %lld training samples", c->source,
           c->train.batch_size, (long long)data_loader_size(t.data.train));
  int64_t total_steps = steps_per_epoch * c->train.epochs;
  int64_t stop_at = c->train.max_steps > 0 && c->train.max_steps < total_steps
                        ? c->train.max_steps
                        : total_steps;

  initialize_state(&t);
  dist_reducer_opts ro = {.bucket_mb = c->dist.bucket_mb, .overlap = c->dist.overlap,
                          .compress = (dist_compress)c->dist.compress};
  t.reducer = dist_reducer_create(t.net.grads, t.net.num_params, &ro);
  grad_hook hook = {.net = &t.net, .reducer = t.reducer, .bad_layer = -1};

  metrics m = {.tty = dist_rank() == 0 && isatty(STDERR_FILENO), .start = now(),
               .first_step = t.step};
  if (dist_rank() == 0) {
    char path[CFG_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", c->run.dir);
    m.jsonl = fopen(path, "a");
    if (!m.jsonl) fprintf(stderr, "alexnet-train: cannot append to %s; metrics go to stdout only\n", path);
    printf("alexnet-train: %s, %d rank%s x %d thread%s, global batch %d (%d per rank), "
           "%lld steps per epoch, %d epochs, %zu parameters\n",
           c->run.name, ranks, ranks > 1 ? "s" : "", threads, threads > 1 ? "s" : "",
           c->train.batch_size, local_batch, (long long)steps_per_epoch, c->train.epochs,
           t.net.num_params);
    fflush(stdout);
  }
  signal(SIGTERM, on_stop_signal);
  signal(SIGINT, on_stop_signal);

  /* Test hooks (documented in docs/reliability.md): poison one rank's input
   * (or, with ALEXNET_TEST_NAN_IN=loss, its loss). */
  int64_t nan_step = env_int("ALEXNET_TEST_NAN_AT_STEP", -1);
  int nan_rank = (int)env_int("ALEXNET_TEST_NAN_RANK", 0);
  const char *nan_in = getenv("ALEXNET_TEST_NAN_IN");
  int nan_loss = nan_in && strcmp(nan_in, "loss") == 0;
  int64_t sleep_step = env_int("ALEXNET_TEST_SLEEP_AT_STEP", -1);

  nn_sgd_opts sgd = {.momentum = (float)c->optimizer.momentum,
                     .weight_decay = (float)c->optimizer.weight_decay,
                     .nesterov = c->optimizer.nesterov, .decay_bias = c->optimizer.decay_bias};
  nn_lars_opts lars = {.momentum = sgd.momentum, .weight_decay = sgd.weight_decay,
                       .eta = (float)c->optimizer.lars_eta, .eps = (float)c->optimizer.lars_eps};
  if (c->model.sync_batchnorm) t.net.bn_reduce = bn_allreduce;
  int stopped_by = 0;
  int64_t epoch_start_step = t.step_in_epoch;
  while (t.step < stop_at && !stopped_by) {
    if (data_loader_start_epoch(t.data.train, t.epoch, epoch_start_step, err, sizeof err) != 0)
      setup_exit(1, "[rank %d] %s", dist_rank(), err);
    int epoch_done = 0;
    while (t.step < stop_at) {
      double t0 = now();
      data_batch b;
      char msg[4096] = "";
      int got = data_loader_next(t.data.train, &b, msg, sizeof msg);
      int failed = got < 0;
      if (got < 0) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "rank %d: %s", dist_rank(), msg);
        snprintf(msg, sizeof msg, "%s", tmp);
      }
      if (dist_agree(failed, msg, sizeof msg) != 0)
        setup_exit(1, "%s; stopping at step %lld (the last checkpoint is %s)", msg,
               (long long)t.step, t.last_ckpt[0] ? t.last_ckpt : "none");
      if (got == 0) { /* the loader ran out before steps_per_epoch: treat as the end */
        t.epoch++;
        t.step_in_epoch = 0;
        epoch_done = 1;
        break;
      }
      int poison = t.step == nan_step && dist_rank() == nan_rank;
      if (poison && !nan_loss) b.images[0] = NAN;
      if (t.step == sleep_step && dist_rank() == nan_rank) sleep(3600);
      double t1 = now();
      double lr = cfg_lr_at(c, (double)t.step / (double)steps_per_epoch);
      sgd.lr = lars.lr = (float)lr;
      /* Dropout masks: a function of (seed, step, sample's place in the global
       * batch), so resumes and other rank counts draw the same masks. */
      t.net.training = 1;
      t.net.dropout_seed = nn_hash64(c->run.seed ^ 0xD20F0u, (uint64_t)t.step);
      t.net.sample_offset = (int64_t)dist_rank() * local_batch;
      nn_forward(&t.net, b.images, b.count);
      int c1 = 0, c5 = 0;
      float loss = nn_loss(&t.net, b.labels, b.count, &c1, &c5);
      if (poison && nan_loss) loss = NAN;
      double t2 = now();
      hook.bad_layer = -1;
      dist_reducer_begin(t.reducer);
      nn_backward(&t.net, b.images, b.count, on_grad_ready, &hook);
      double t3 = now();
      double comm_ms = dist_reducer_finish(t.reducer);
      double t4 = now();
      failed = 0;
      if (!isfinite(loss) || hook.bad_layer >= 0) {
        failed = 1;
        snprintf(msg, sizeof msg, "rank %d: non-finite %s at step %lld%s%s", dist_rank(),
                 isfinite(loss) ? "gradient" : "loss", (long long)t.step,
                 hook.bad_layer >= 0 ? " in layer " : "",
                 hook.bad_layer >= 0 ? t.net.layers[hook.bad_layer].name : "");
      }
      if (dist_agree(failed, msg, sizeof msg) != 0)
        setup_exit(1, "%s; stopped before the update reached the weights (the last checkpoint is %s)",
               msg, t.last_ckpt[0] ? t.last_ckpt : "none");
      if (c->optimizer.type == CFG_OPT_LARS) nn_lars_step(&t.net, t.momentum, &lars);
      else nn_sgd_step(&t.net, t.momentum, &sgd);
      double t5 = now();
      double sums[5] = {loss * b.count, b.count, c1, c5, stop_signal != 0};
      dist_allreduce_sum_doubles(sums, 5);
      t.step++;
      t.step_in_epoch++;
      if (sums[4] > 0) stopped_by = 1;

      int log_now = c->log.every_steps > 0 && (t.step % c->log.every_steps == 0 || t.step == stop_at);
      if (dist_rank() == 0 && (log_now || m.tty)) {
        double step_s = t5 - t0;
        double ips = c->train.batch_size / step_s;
        double elapsed = now() - m.start;
        double eta = elapsed / (double)(t.step - m.first_step) * (double)(stop_at - t.step);
        char eta_s[32];
        format_eta(eta, eta_s, sizeof eta_s);
        double mean_loss = sums[0] / sums[1];
        if (m.tty) {
          fprintf(stderr, "\repoch %lld/%d step %lld/%lld loss %.4f top-1 %.1f%% lr %.5g "
                  "%.1f images/s ETA %s   ",
                  (long long)t.epoch + 1, c->train.epochs, (long long)t.step_in_epoch,
                  (long long)steps_per_epoch, mean_loss, 100 * sums[2] / sums[1], lr, ips, eta_s);
          fflush(stderr);
        } else if (log_now) {
          printf("train epoch %lld/%d step %lld/%lld (global %lld) loss %.4f top-1 %.1f%% "
                 "lr %.5g %.1f images/s ETA %s\n",
                 (long long)t.epoch + 1, c->train.epochs, (long long)t.step_in_epoch,
                 (long long)steps_per_epoch, (long long)t.step, mean_loss,
                 100 * sums[2] / sums[1], lr, ips, eta_s);
          fflush(stdout);
        }
        if (log_now && m.jsonl) {
          fprintf(m.jsonl,
                  "{\"step\":%lld,\"epoch\":%lld,\"split\":\"train\",\"loss\":%.6f,\"top1\":%.6f,"
                  "\"top5\":%.6f,\"lr\":%.8g,\"images_per_sec\":%.2f,\"data_ms\":%.3f,"
                  "\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"comm_ms\":%.3f,\"update_ms\":%.3f}\n",
                  (long long)t.step, (long long)t.epoch, mean_loss, sums[2] / sums[1],
                  sums[3] / sums[1], lr, ips, b.wait_ms, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                  comm_ms, (t5 - t4) * 1e3);
          fflush(m.jsonl);
        }
      }
      if (t.step_in_epoch == steps_per_epoch) {
        /* The epoch's last step: the position is the next epoch's start. */
        t.epoch++;
        t.step_in_epoch = 0;
        epoch_done = 1;
      }
      /* A stop by signal and the end of the run checkpoint after the loop. */
      int ckpt_now = !stopped_by &&
                     ((c->checkpoint.every_steps > 0 && t.step % c->checkpoint.every_steps == 0) ||
                     (epoch_done && c->checkpoint.every_epochs > 0 &&
                      t.epoch % c->checkpoint.every_epochs == 0));
      if (ckpt_now && t.step < stop_at && save_checkpoint(&t, err, sizeof err) != 0)
        setup_exit(1, "%s", err);
      if (stopped_by || epoch_done) break;
    }
    if (!epoch_done && !stopped_by && t.step < stop_at) break;
    epoch_start_step = 0;
    int val_now = epoch_done && t.data.val && c->eval.every_epochs > 0 &&
                  t.epoch % c->eval.every_epochs == 0 && t.step < stop_at;
    if (val_now) {
      if (m.tty) fprintf(stderr, "\n");
      eval_result r;
      share_buffers(&t);
      if (eval_run(&t.net, t.data.val, t.epoch, &r, NULL, err, sizeof err) != 0)
        setup_exit(1, "%s; stopping in the evaluation after step %lld (the last checkpoint is %s)",
               err, (long long)t.step, t.last_ckpt[0] ? t.last_ckpt : "none");
      log_val(&m, t.step, t.epoch - 1, &r);
    }
  }
  if (m.tty) fprintf(stderr, "\n");
  if (stopped_by) {
    if (save_checkpoint(&t, err, sizeof err) != 0) setup_exit(1, "%s", err);
    if (dist_rank() == 0)
      printf("stopped by a signal at step %lld; checkpoint %s written; resume with the same "
             "command\n", (long long)t.step, t.last_ckpt);
  } else {
    /* The end: a final checkpoint and a full evaluation. */
    if (save_checkpoint(&t, err, sizeof err) != 0) setup_exit(1, "%s", err);
    if (t.data.val) {
      eval_result r;
      if (eval_run(&t.net, t.data.val, t.epoch, &r, NULL, err, sizeof err) != 0)
        setup_exit(1, "%s", err);
      log_val(&m, t.step, t.step_in_epoch == 0 ? t.epoch - 1 : t.epoch, &r);
    }
    if (dist_rank() == 0)
      printf("done: %lld steps; final checkpoint %s\n", (long long)t.step, t.last_ckpt);
  }
  fflush(stdout);
  if (m.jsonl) fclose(m.jsonl);
  dist_reducer_free(t.reducer);
  setup_free(&t.data);
  nn_net_free(&t.net);
  free(t.momentum);
  free(t.config_yaml);
  cfg_free(c);
  dist_finalize();
  return 0;
}
