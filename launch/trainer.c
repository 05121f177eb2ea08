/*
 * launch/trainer.c: set-up, the step, and the checkpoint and evaluation
 * schedules of alexnet-train (see trainer.h).
 */
#include "trainer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "tool.h"
#include "util.h"

const trainer_hooks *trainer_test_hooks = NULL;

static volatile sig_atomic_t stop_signal = 0;
static void on_stop_signal(int sig) {
  stop_signal = sig;
}

void trainer_catch_signals(void) {
  signal(SIGTERM, on_stop_signal);
  signal(SIGINT, on_stop_signal);
  signal(SIGHUP, on_stop_signal); /* a closed terminal or ssh session */
}

static const char *last_ckpt(const trainer *t) {
  return t->last_ckpt[0] ? t->last_ckpt : "none";
}

/* ------------------------------------------------------------------------ */
/* Gradient hand-off: check each layer's gradients, then pass them on.       */

static void on_grad_ready(void *ctx, size_t offset, size_t count) {
  trainer_grad_hook *h = ctx;
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
/* Batch norm across ranks                                                   */

/* Synchronized (model.sync_batchnorm): nn hands each layer's per-channel
 * sums here and gets back their sum over the ranks, so every rank normalizes
 * by the global batch's statistics and updates the same running statistics. */
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

/* ------------------------------------------------------------------------ */
/* Set-up                                                                    */

/* A fresh run id: 16 hex digits from the kernel's random source (the clock
 * and the pid when it cannot be read). */
static void new_run_id(char *out, size_t len) {
  uint64_t v = 0;
  FILE *f = fopen("/dev/urandom", "rb");
  if (!f || fread(&v, sizeof v, 1, f) != 1) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = nn_hash64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, (uint64_t)getpid());
  }
  if (f) fclose(f);
  snprintf(out, len, "%016llx", (unsigned long long)v);
}

/* The run's lineage (docs/reliability.md, "Runs sharing a directory"): a
 * resume continues the checkpoint's run id; a fresh start takes a new one.
 * With checkpoint.resume never, a fresh start refuses (status 2) a
 * checkpoint directory holding another run's checkpoints that auto-resume
 * would take, since a later auto-resume could not tell the two runs apart.
 * (With auto, a fresh start means nothing there loads.) Rank 0. Returns 0,
 * or 2 with the message. */
static int choose_run_id(trainer *t, const ckpt_meta *resumed, char *msg, size_t msglen) {
  if (resumed && resumed->run_id[0]) {
    snprintf(t->run_id, sizeof t->run_id, "%s", resumed->run_id);
    return 0;
  }
  /* A checkpoint from before run ids: its run goes on under a new id (its
   * own older files are then never pruned, only kept). */
  new_run_id(t->run_id, sizeof t->run_id);
  if (resumed || t->cfg->checkpoint.resume != CFG_RESUME_NEVER) return 0;
  char other[CFG_PATH_MAX + 64], other_run[64];
  if (!ckpt_find_other_run(t->ckpt_dir, NULL, &t->net, other, sizeof other, other_run,
                           sizeof other_run))
    return 0;
  snprintf(msg, msglen,
           "checkpoint directory %s holds checkpoints of another run (newest: %s, run %s), and "
           "this run starts afresh (checkpoint.resume: never); to continue that run use "
           "checkpoint.resume=auto, to start a new one give it its own directory "
           "(--set run.dir=DIR or --set checkpoint.dir=DIR), or move those files away",
           t->ckpt_dir, other, other_run);
  return 2;
}

/* Weights: a resumed checkpoint, checkpoint.init, or a fresh initialization
 * on rank 0; then everything rank 0 has is broadcast. */
static void initialize_state(trainer *t) {
  cfg_config *c = t->cfg;
  char msg[4600] = "";
  int failed = 0, resumed = 0;
  /* Rank 0 reads files while the others wait: file I/O time, not a stuck
   * peer, so the collective watchdog is off until it is done. */
  dist_set_timeout(0);
  char from[CFG_PATH_MAX + 64] = "";
  int64_t pos[3] = {0, 0, 0};
  if (dist_rank() == 0) {
    ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    if (c->checkpoint.resume == CFG_RESUME_AUTO) {
      int got = ckpt_load_latest(t->ckpt_dir, &t->net, t->momentum, &meta, from, sizeof from, msg,
                                 sizeof msg);
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
    if (!failed) failed = choose_run_id(t, resumed ? &meta : NULL, msg, sizeof msg);
    if (resumed && !failed) {
      pos[0] = meta.step, pos[1] = meta.epoch, pos[2] = meta.step_in_epoch;
      t->resumed_has_psgd = meta.has_psgd;
      t->resumed_psgd = meta.psgd;
      printf("resuming from %s: step %lld, epoch %lld, step %lld of the epoch\n", from,
             (long long)meta.step, (long long)meta.epoch + 1, (long long)meta.step_in_epoch);
      snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", from);
    } else if (!failed && !resumed && c->checkpoint.init[0]) {
      failed = ckpt_load(c->checkpoint.init, &t->net, NULL, NULL, msg, sizeof msg) != 0;
      if (!failed) printf("initial weights from %s\n", c->checkpoint.init);
    } else if (!failed && !resumed) {
      int paper = c->model.weight_init == CFG_INIT_PAPER ||
                  (c->model.weight_init == CFG_INIT_AUTO && strcmp(c->model.arch, "alexnet") == 0);
      if (paper)
        nn_init_paper(&t->net, c->run.seed);
      else if (c->model.weight_init == CFG_INIT_KAIMING)
        nn_init_kaiming(&t->net, c->run.seed);
      else
        nn_init_torch_default(&t->net, c->run.seed);
    }
    ckpt_meta_free(&meta);
    fflush(stdout);
  }
  if (dist_agree(failed, msg, sizeof msg) != 0) {
    int status = failed; /* only rank 0 fails here: 1, or 2 for a refused fresh start */
    dist_bcast_bytes(&status, sizeof status, 0);
    setup_exit(status, "%s", msg);
  }
  dist_set_timeout(c->dist.timeout_s);
  dist_bcast_bytes(pos, sizeof pos, 0);
  dist_bcast_bytes(t->run_id, sizeof t->run_id, 0);
  dist_bcast_floats(t->net.params, t->net.num_params, 0);
  dist_bcast_floats(t->momentum, t->net.num_params, 0);
  share_buffers(t);
  t->step = pos[0], t->epoch = pos[1], t->step_in_epoch = pos[2];
}

/* Rank 0 takes an exclusive lock on <dir>/alexnet-train.lock, held until
 * the process ends, and writes "<pid> <host>" into it: a second trainer on
 * the same directory stops at once and names the first. Returns the file
 * descriptor, or -1 with the message. */
static int lock_dir(const char *dir, char *err, size_t errlen) {
  char path[CFG_PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/alexnet-train.lock", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create the lock file %s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char holder[256] = "";
    ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
    holder[n > 0 ? n : 0] = '\0';
    holder[strcspn(holder, "\n")] = '\0';
    long pid = 0;
    char host[200] = "?";
    sscanf(holder, "%ld %199s", &pid, host);
    snprintf(err, errlen,
             "%s is in use by another alexnet-train (pid %ld on host %s, lock %s); wait for it "
             "to end, stop it, or give this run another run.dir",
             dir, pid, host, path);
    close(fd);
    return -1;
  }
  char host[200] = "?", line[256];
  gethostname(host, sizeof host - 1);
  int len = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(), host);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len) {
    /* The lock holds without its label; a second trainer then names pid 0. */
  }
  return fd;
}

/* run.dir, and a checkpoint directory that can be written: a problem fails
 * now, not at the first checkpoint after hours of training. Both are
 * locked by rank 0 for the run's duration. */
static void make_dirs(trainer *t) {
  char err[CFG_PATH_MAX * 2 + 512];
  int bad = setup_mkdirs(t->cfg->run.dir, err, sizeof err) != 0;
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(1, "%s", err);
  bad = dist_rank() == 0 && setup_mkdirs(t->ckpt_dir, err, sizeof err) != 0;
  if (!bad && dist_rank() == 0 && access(t->ckpt_dir, W_OK | X_OK) != 0) {
    snprintf(err, sizeof err, "checkpoint directory %s is not writable: %s", t->ckpt_dir,
             strerror(errno));
    bad = 1;
  }
  t->lock_fd[0] = t->lock_fd[1] = -1;
  if (!bad && dist_rank() == 0) {
    t->lock_fd[0] = lock_dir(t->cfg->run.dir, err, sizeof err);
    bad = t->lock_fd[0] < 0;
    char a[PATH_MAX], b[PATH_MAX];
    int same = realpath(t->cfg->run.dir, a) && realpath(t->ckpt_dir, b) && strcmp(a, b) == 0;
    if (!bad && !same) {
      t->lock_fd[1] = lock_dir(t->ckpt_dir, err, sizeof err);
      bad = t->lock_fd[1] < 0;
    }
  }
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(1, "%s", err);
}

/* The data, then the network sized for it, its buffers for the larger of
 * the training and evaluation batches, and the momentum. */
static void build(trainer *t) {
  cfg_config *c = t->cfg;
  char err[8192];
  if (setup_resolve(c, &t->data, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (!t->data.train_path[0])
    setup_exit(2, "%s: data: no training data (data.train or data.synthetic)", c->source);
  if (setup_open_loaders(c, &t->data, 1, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (setup_build_net(c, &t->data, &t->net, err, sizeof err) != 0) setup_exit(2, "%s", err);
  t->ranks = dist_size();
  t->local_batch = c->train.batch_size / t->ranks;
  int eval_local = setup_eval_batch(c, t->ranks) / t->ranks * (c->eval.ten_crop ? 10 : 1);
  int alloc_batch = t->local_batch > eval_local ? t->local_batch : eval_local;
  if (nn_net_alloc(&t->net, alloc_batch, 0, err, sizeof err) != 0) setup_exit(1, "%s", err);
  t->momentum = calloc(t->net.num_params, sizeof(float));
  if (!t->momentum) setup_exit(1, "out of memory for %zu momentum values", t->net.num_params);
  t->config_yaml = cfg_to_yaml(c);
  t->steps_per_epoch = data_loader_steps(t->data.train);
  if (t->steps_per_epoch <= 0)
    setup_exit(2, "%s: train.batch_size: %d is larger than the %lld training samples", c->source,
               c->train.batch_size, (long long)data_loader_size(t->data.train));
  int64_t total = t->steps_per_epoch * c->train.epochs;
  t->stop_at = c->train.max_steps > 0 && c->train.max_steps < total ? c->train.max_steps : total;
}

/* ------------------------------------------------------------------------ */
/* The reducer                                                              */

/* dist.compress: powersgd sees every weight of 2 or more dimensions as a
 * matrix (out, in/groups kh kw); biases and other vectors stay whole. */
typedef struct {
  dist_matrix *m;
  int n, cap;
} matrix_list;

static void add_matrix(void *ctx, const char *name, size_t offset, size_t count, int ndim,
                       const int *dims) {
  (void)name;
  matrix_list *l = ctx;
  if (ndim < 2 || dims[0] <= 0) return;
  if (l->m && l->n < l->cap)
    l->m[l->n] =
        (dist_matrix){.offset = offset, .rows = (size_t)dims[0], .cols = count / (size_t)dims[0]};
  l->n++;
}

/* The reducer of the config; exits 2 naming the key on a setting that
 * cannot work here (hierarchical on within one node). */
static dist_reducer *create_reducer(const cfg_config *c, const nn_net *net) {
  dist_algorithm algo = DIST_ALGO_AUTO;
  if (c->dist.hierarchical == CFG_HIER_ON) {
    if (dist_local_size() == dist_size())
      setup_exit(2,
                 "%s: dist.hierarchical: on needs ranks on more than one node, but all %d "
                 "rank%s run on this one (use auto or off)",
                 c->source, dist_size(), dist_size() > 1 ? "s" : "");
    algo = DIST_ALGO_HIER;
  } else if (c->dist.hierarchical == CFG_HIER_OFF) {
    algo = dist_local_size() < dist_size() ? DIST_ALGO_RING : DIST_ALGO_MPI;
  }
  matrix_list l = {0};
  if (c->dist.compress == DIST_COMPRESS_POWERSGD) {
    nn_visit_params(net, add_matrix, &l); /* count */
    l.cap = l.n;
    l.n = 0;
    l.m = calloc((size_t)l.cap + 1, sizeof *l.m);
    if (!l.m) setup_exit(1, "out of memory for %d weight matrices", l.cap);
    nn_visit_params(net, add_matrix, &l);
  }
  dist_reducer_opts ro = {.bucket_mb = c->dist.bucket_mb,
                          .overlap = c->dist.overlap,
                          .compress = (dist_compress)c->dist.compress,
                          .algorithm = algo,
                          .powersgd_rank = c->dist.powersgd_rank,
                          .powersgd_min_ratio = 2, /* PyTorch's min_compression_rate */
                          .powersgd_start_step = c->dist.powersgd_start_step,
                          .matrices = l.m,
                          .nmatrices = l.n};
  dist_reducer *r = dist_reducer_create(net->grads, net->num_params, &ro);
  free(l.m);
  return r;
}

/* ------------------------------------------------------------------------ */
/* PowerSGD's state in checkpoints                                          */

/* A checkpoint holds, beside the weights, each rank's error feedback and
 * the warm start Q (docs/checkpoint-format.md, "PowerSGD"). Rank 0 writes
 * and reads the file; the states travel between it and the other ranks in
 * pieces of CKPT_PSGD_CHUNK floats through one buffer allocated for the
 * checkpoint or the resume, never during a step. Q is an average over the
 * ranks, the same on every rank: stored once when every rank's hashes the
 * same (so far always: tests/mpi_dist_powersgd.c checks it),
 * else once per rank. */

static size_t psgd_chunk(const trainer *t) {
  size_t n = dist_reducer_state_floats(t->reducer);
  return n < CKPT_PSGD_CHUNK ? (n ? n : 1) : CKPT_PSGD_CHUNK;
}

/* 1 when every rank's warm start is bitwise rank 0's (FNV-1a of its floats'
 * bits, compared over the ranks); collective. */
static int psgd_warm_shared(trainer *t, float *buf, size_t chunk) {
  size_t ne = dist_reducer_error_floats(t->reducer),
         nq = dist_reducer_state_floats(t->reducer) - ne;
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t at = 0; at < nq; at += chunk) {
    size_t n = nq - at < chunk ? nq - at : chunk;
    dist_reducer_state_copy(t->reducer, buf, ne + at, n, 1);
    const unsigned char *b = (const unsigned char *)buf;
    for (size_t i = 0; i < n * sizeof *buf; i++) h = (h ^ b[i]) * 0x100000001B3ull;
  }
  uint64_t h0 = h;
  dist_bcast_bytes(&h0, sizeof h0, 0);
  int64_t differ = h != h0;
  dist_allreduce_sum_int64(&differ, 1);
  return differ == 0;
}

/* Moves floats [from, from + count) of rank k's state through buf to rank
 * 0, which appends them to the checkpoint w (NULL on the other ranks). */
static void psgd_gather(trainer *t, ckpt_writer *w, float *buf, size_t chunk, int k, size_t from,
                        size_t count) {
  for (size_t at = 0; at < count; at += chunk) {
    size_t n = count - at < chunk ? count - at : chunk;
    if (dist_rank() == k) dist_reducer_state_copy(t->reducer, buf, from + at, n, 1);
    dist_move_floats(buf, n, k, 0);
    if (dist_rank() == 0) ckpt_save_psgd_floats(w, buf, n);
  }
}

/* Collective: the state of every rank into w (rank 0's writer), in the
 * order of ckpt_psgd. */
static void psgd_save(trainer *t, ckpt_writer *w, const ckpt_psgd *ps, float *buf, size_t chunk) {
  size_t ne = (size_t)ps->error_floats, nq = (size_t)ps->warm_start_floats;
  for (int k = 0; k < ps->ranks; k++) {
    psgd_gather(t, w, buf, chunk, k, 0, ne);
    if (!ps->shared_warm_start) psgd_gather(t, w, buf, chunk, k, ne, nq);
  }
  if (ps->shared_warm_start) psgd_gather(t, w, buf, chunk, 0, ne, nq);
}

/* Rank 0 reads floats [from, from + count) of rank k's state (every rank's
 * when k < 0) from r and sends them; they land in the reducer. A failed
 * read sends zeros: the ranks go on to the agreement that ends the run. */
static void psgd_scatter(trainer *t, ckpt_psgd_reader *r, float *buf, size_t chunk, int k,
                         size_t from, size_t count) {
  for (size_t at = 0; at < count; at += chunk) {
    size_t n = count - at < chunk ? count - at : chunk;
    if (dist_rank() == 0) {
      if (r)
        ckpt_psgd_read_floats(r, buf, n);
      else
        memset(buf, 0, n * sizeof *buf);
    }
    if (k < 0)
      dist_bcast_floats(buf, n, 0);
    else
      dist_move_floats(buf, n, 0, k);
    if (k < 0 || dist_rank() == k) dist_reducer_state_copy(t->reducer, buf, from + at, n, 0);
  }
}

/* Rank 0: what the resumed checkpoint's PowerSGD state means for this run.
 * Returns 1 to restore it, 0 to start from a fresh state (with a note when
 * that departs from the uninterrupted run), -1 with the message when the
 * state cannot continue here. */
static int psgd_plan(const trainer *t, char *msg, size_t msglen) {
  const cfg_config *c = t->cfg;
  const ckpt_psgd *ps = &t->resumed_psgd;
  const char *from = t->last_ckpt;
  int on = c->dist.compress == DIST_COMPRESS_POWERSGD;
  int has_state = t->resumed_has_psgd && ps->error_floats > 0;
  const char *drop =
      "resume with --set dist.compress=none to drop the state (the run continues "
      "uncompressed; a later resume may turn powersgd on again, its error feedback from zero)";
  if (has_state && !on) {
    printf(
        "note: %s holds PowerSGD state (%d ranks, rank %d); dist.compress is %s: the state is "
        "dropped and the run continues %s\n",
        from, ps->ranks, ps->powersgd_rank, cfg_compress_name(c->dist.compress),
        c->dist.compress == DIST_COMPRESS_NONE ? "uncompressed" : "with that compression");
    return 0;
  }
  if (!has_state) {
    if (on && t->step > c->dist.powersgd_start_step)
      printf(
          "note: %s holds no PowerSGD state (%s): its error feedback starts at zero and its "
          "warm start from the seed, compressing from this step on (step %lld, "
          "dist.powersgd_start_step %lld)\n",
          from,
          t->resumed_has_psgd ? "written before its first compressed step"
                              : "written without dist.compress: powersgd",
          (long long)t->step, (long long)c->dist.powersgd_start_step);
    return 0;
  }
  size_t ne = dist_reducer_error_floats(t->reducer);
  size_t nq = dist_reducer_state_floats(t->reducer) - ne;
  if (ps->ranks != t->ranks) {
    snprintf(msg, msglen,
             "checkpoint %s: attribute /dist/powersgd ranks = %d, but this run has %d rank%s: "
             "PowerSGD's error feedback is per rank, and continues only on as many; resume on "
             "%d ranks, or %s",
             from, ps->ranks, t->ranks, t->ranks > 1 ? "s" : "", ps->ranks, drop);
    return -1;
  }
  if (ps->powersgd_rank != c->dist.powersgd_rank) {
    snprintf(msg, msglen,
             "checkpoint %s: attribute /dist/powersgd powersgd_rank = %d, but "
             "dist.powersgd_rank is %d: the warm start has that rank; resume with --set "
             "dist.powersgd_rank=%d, or %s",
             from, ps->powersgd_rank, c->dist.powersgd_rank, ps->powersgd_rank, drop);
    return -1;
  }
  if (ps->error_floats != ne || ps->warm_start_floats != nq) {
    snprintf(msg, msglen,
             "checkpoint %s: attributes /dist/powersgd error_floats = %llu and "
             "warm_start_floats = %llu, but this network's compressed matrices need %zu and %zu "
             "(another model, or another choice of matrices to compress); %s",
             from, (unsigned long long)ps->error_floats, (unsigned long long)ps->warm_start_floats,
             ne, nq, drop);
    return -1;
  }
  return 1;
}

/* After the reducer is created, on a resume: its passes and, when the
 * checkpoint holds one that this run can continue, PowerSGD's state. Exits
 * 2 (a config the checkpoint contradicts) or 1 (an unreadable state). */
static void restore_reducer(trainer *t) {
  dist_reducer_set_passes(t->reducer, t->step);
  char msg[4600] = "";
  int plan[2] = {0, 0}; /* restore; shared warm start */
  if (dist_rank() == 0 && t->last_ckpt[0]) {
    plan[0] = psgd_plan(t, msg, sizeof msg);
    plan[1] = t->resumed_psgd.shared_warm_start;
    fflush(stdout);
  }
  if (dist_agree(plan[0] < 0, msg, sizeof msg) != 0) {
    dist_reducer_free(t->reducer);
    t->reducer = NULL;
    setup_exit(2, "%s", msg);
  }
  dist_bcast_bytes(plan, sizeof plan, 0);
  if (!plan[0]) return;
  /* Rank 0 reads while the others wait: file I/O, see initialize_state. */
  dist_set_timeout(0);
  size_t chunk = psgd_chunk(t);
  float *buf = malloc(chunk * sizeof *buf);
  int failed = !buf;
  if (!buf) snprintf(msg, sizeof msg, "out of memory for a piece of PowerSGD's state");
  ckpt_psgd_reader *r = NULL;
  if (dist_agree(failed, msg, sizeof msg) != 0) {
    dist_reducer_free(t->reducer);
    t->reducer = NULL;
    setup_exit(1, "%s", msg);
  }
  if (dist_rank() == 0) {
    ckpt_psgd ps;
    r = ckpt_psgd_open(t->last_ckpt, &ps, msg, sizeof msg);
    failed = !r;
    if (r && memcmp(&ps, &t->resumed_psgd, sizeof ps) != 0) { /* changed since it was loaded */
      ckpt_psgd_close(r, msg, sizeof msg);
      r = NULL;
      failed = 1;
      snprintf(msg, sizeof msg, "checkpoint %s: /dist/powersgd changed while it was resumed",
               t->last_ckpt);
    }
  }
  size_t ne = dist_reducer_error_floats(t->reducer);
  size_t nq = dist_reducer_state_floats(t->reducer) - ne;
  for (int k = 0; k < t->ranks; k++) {
    psgd_scatter(t, r, buf, chunk, k, 0, ne);
    if (!plan[1]) psgd_scatter(t, r, buf, chunk, k, ne, nq);
  }
  if (plan[1]) psgd_scatter(t, r, buf, chunk, -1, ne, nq);
  if (r) failed = ckpt_psgd_close(r, msg, sizeof msg) != 0;
  free(buf);
  if (dist_agree(failed, msg, sizeof msg) != 0) {
    dist_reducer_free(t->reducer);
    t->reducer = NULL;
    setup_exit(1, "%s", msg);
  }
  dist_set_timeout(t->cfg->dist.timeout_s);
  t->psgd_live = 1;
  if (dist_rank() == 0) {
    printf("PowerSGD state of %d ranks restored (error feedback and warm start, rank %d)\n",
           t->ranks, t->cfg->dist.powersgd_rank);
    fflush(stdout);
  }
}

void trainer_print_reducer(const trainer *t) {
  const cfg_config *c = t->cfg;
  if (dist_rank() != 0 || (dist_size() == 1 && c->dist.compress != DIST_COMPRESS_POWERSGD)) return;
  size_t wire = dist_reducer_wire_floats(t->reducer);
  int half = c->dist.compress == DIST_COMPRESS_BF16 || c->dist.compress == DIST_COMPRESS_FP16;
  printf("dist: allreduce %s, compress %s", dist_algorithm_name(dist_reducer_algorithm(t->reducer)),
         cfg_compress_name(c->dist.compress));
  if (c->dist.compress == DIST_COMPRESS_POWERSGD)
    printf(" rank %d from step %lld (%d weight matrices compressed)", c->dist.powersgd_rank,
           (long long)c->dist.powersgd_start_step, dist_reducer_compressed_matrices(t->reducer));
  printf(": %.3f MB per rank per step into allreduces, against %.1f MB uncompressed\n",
         (double)wire * (half ? 2 : 4) / 1e6, (double)t->net.num_params * 4 / 1e6);
}

void trainer_open(trainer *t, cfg_config *c) {
  memset(t, 0, sizeof *t);
  t->cfg = c;
  char err[8192];
  int bad = cfg_check_ranks(c, dist_size(), err, sizeof err) != 0 ||
            cfg_check_paths(c, err, sizeof err) != 0;
  if (dist_agree(bad, err, sizeof err) != 0) setup_exit(2, "%s", err);
  t->threads = tool_threads(c->dist.threads_per_rank);
  dist_set_timeout(c->dist.timeout_s);
  /* cfg_validate derived checkpoint.dir from run.dir when the config left it out. */
  snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s", c->checkpoint.dir);
  make_dirs(t);
  build(t);
  initialize_state(t);
  t->reducer = create_reducer(c, &t->net);
  restore_reducer(t);
  t->grad_hook = (trainer_grad_hook){.net = &t->net, .reducer = t->reducer, .bad_layer = -1};
  t->sgd = (nn_sgd_opts){.momentum = (float)c->optimizer.momentum,
                         .weight_decay = (float)c->optimizer.weight_decay,
                         .nesterov = c->optimizer.nesterov,
                         .decay_bias = c->optimizer.decay_bias};
  t->lars = (nn_lars_opts){.momentum = t->sgd.momentum,
                           .weight_decay = t->sgd.weight_decay,
                           .eta = (float)c->optimizer.lars_eta,
                           .eps = (float)c->optimizer.lars_eps};
  if (c->model.sync_batchnorm) t->net.bn_reduce = bn_allreduce;
  t->first_step = t->step;
  t->epoch_start = t->step_in_epoch;
  t->start = util_now();
}

int trainer_running(const trainer *t) {
  return t->step < t->stop_at;
}

/* ------------------------------------------------------------------------ */
/* The step                                                                  */

/* The next batch of this rank, the epoch started first when needed.
 * Returns 1 with a batch, 0 when the loader's epoch ran out, -1 on error
 * (every rank returns the same). */
static int next_batch(trainer *t, data_batch *b, char *err, size_t errlen) {
  char msg[4096] = "";
  int got = 1;
  if (!t->epoch_open) {
    if (data_loader_start_epoch(t->data.train, t->epoch, t->epoch_start, msg, sizeof msg) != 0) {
      snprintf(err, errlen, "[rank %d] %s", dist_rank(), msg);
      setup_exit(1, "%s", err); /* a local failure: this rank cannot take part any more */
    }
    t->epoch_open = 1;
    t->epoch_start = 0;
  }
  got = data_loader_next(t->data.train, b, msg, sizeof msg);
  if (got < 0) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "rank %d: %s", dist_rank(), msg);
    snprintf(msg, sizeof msg, "%s", tmp);
  }
  if (dist_agree(got < 0, msg, sizeof msg) != 0) {
    snprintf(err, errlen, "%s; stopping at step %lld (the last checkpoint is %s)", msg,
             (long long)t->step, last_ckpt(t));
    return -1;
  }
  return got;
}

/* Moves the position to the next epoch's start. */
static void end_epoch(trainer *t, trainer_stats *s) {
  t->epoch++;
  t->step_in_epoch = 0;
  t->epoch_open = 0;
  s->epoch_done = 1;
}

int trainer_step(trainer *t, trainer_stats *s, char *err, size_t errlen) {
  cfg_config *c = t->cfg;
  memset(s, 0, sizeof *s);
  double t0 = util_now();
  data_batch b;
  int got = next_batch(t, &b, err, errlen);
  if (got < 0) return -1;
  if (got == 0) { /* the loader ran out before steps_per_epoch: treat as the end */
    end_epoch(t, s);
    return 0;
  }
  const trainer_hooks *hooks = trainer_test_hooks;
  if (hooks && hooks->on_batch) hooks->on_batch(t->step, &b);
  double t1 = util_now();
  double lr = cfg_lr_at(c, (double)t->step / (double)t->steps_per_epoch);
  t->sgd.lr = t->lars.lr = (float)lr;
  /* Dropout masks: a function of (seed, step, sample's place in the global
   * batch), so resumes and other rank counts draw the same masks. */
  t->net.training = 1;
  t->net.dropout_seed = nn_hash64(c->run.seed ^ 0xD20F0u, (uint64_t)t->step);
  t->net.sample_offset = (int64_t)dist_rank() * t->local_batch;
  nn_forward(&t->net, b.images, b.count);
  int c1 = 0, c5 = 0;
  float loss = nn_loss(&t->net, b.labels, b.count, &c1, &c5);
  if (hooks && hooks->on_loss) hooks->on_loss(t->step, &loss);
  double t2 = util_now();
  t->grad_hook.bad_layer = -1;
  dist_reducer_begin(t->reducer);
  nn_backward(&t->net, b.images, b.count, on_grad_ready, &t->grad_hook);
  double t3 = util_now();
  double comm_ms = dist_reducer_finish(t->reducer);
  double t4 = util_now();
  int bad_layer = t->grad_hook.bad_layer;
  char msg[4096] = "";
  int failed = !isfinite(loss) || bad_layer >= 0;
  if (failed)
    snprintf(msg, sizeof msg, "rank %d: non-finite %s at step %lld%s%s", dist_rank(),
             isfinite(loss) ? "gradient" : "loss", (long long)t->step,
             bad_layer >= 0 ? " in layer " : "",
             bad_layer >= 0 ? t->net.layers[bad_layer].name : "");
  if (dist_agree(failed, msg, sizeof msg) != 0) {
    snprintf(err, errlen,
             "%s; stopped before the update reached the weights (the last checkpoint is %s)", msg,
             last_ckpt(t));
    return -1;
  }
  if (c->optimizer.type == CFG_OPT_LARS)
    nn_lars_step(&t->net, t->momentum, &t->lars);
  else
    nn_sgd_step(&t->net, t->momentum, &t->sgd);
  double t5 = util_now();
  double sums[5] = {loss * b.count, b.count, c1, c5, stop_signal != 0};
  dist_allreduce_sum_doubles(sums, 5);
  t->step++;
  t->step_in_epoch++;
  s->took_step = 1;
  s->stop = sums[4] > 0;
  s->log = c->log.every_steps > 0 && (t->step % c->log.every_steps == 0 || t->step == t->stop_at);
  double elapsed = util_now() - t->start;
  s->m = (metrics_step){
      .step = t->step,
      .epoch = t->epoch,
      .step_in_epoch = t->step_in_epoch,
      .loss = sums[0] / sums[1],
      .top1 = sums[2] / sums[1],
      .top5 = sums[3] / sums[1],
      .lr = lr,
      .images_per_sec = c->train.batch_size / (t5 - t0),
      .eta_s = elapsed / (double)(t->step - t->first_step) * (double)(t->stop_at - t->step),
      .data_ms = b.wait_ms,
      .forward_ms = (t2 - t1) * 1e3,
      .backward_ms = (t3 - t2) * 1e3,
      .comm_ms = comm_ms,
      .update_ms = (t5 - t4) * 1e3,
  };
  /* The epoch's last step: the position is the next epoch's start. */
  if (t->step_in_epoch == t->steps_per_epoch) end_epoch(t, s);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Schedules                                                                 */

int trainer_checkpoint_due(const trainer *t, const trainer_stats *s) {
  const cfg_config *c = t->cfg;
  if (!s->took_step || s->stop || t->step >= t->stop_at) return 0;
  return (c->checkpoint.every_steps > 0 && t->step % c->checkpoint.every_steps == 0) ||
         (s->epoch_done && c->checkpoint.every_epochs > 0 &&
          t->epoch % c->checkpoint.every_epochs == 0);
}

int trainer_eval_due(const trainer *t, const trainer_stats *s) {
  const cfg_config *c = t->cfg;
  return s->epoch_done && t->data.val && c->eval.every_epochs > 0 &&
         t->epoch % c->eval.every_epochs == 0 && t->step < t->stop_at;
}

int trainer_checkpoint(trainer *t, char *err, size_t errlen) {
  share_buffers(t);
  int failed = 0;
  char msg[4600] = "";
  /* The other ranks wait in dist_agree while rank 0 writes: see initialize_state. */
  dist_set_timeout(0);
  const cfg_config *c = t->cfg;
  int psgd_on = c->dist.compress == DIST_COMPRESS_POWERSGD;
  int64_t passes = dist_reducer_passes(t->reducer);
  t->psgd_live = psgd_on && (t->psgd_live || passes > c->dist.powersgd_start_step);
  ckpt_psgd ps = {.ranks = t->ranks,
                  .powersgd_rank = c->dist.powersgd_rank,
                  .start_step = c->dist.powersgd_start_step,
                  .passes = passes,
                  .shared_warm_start = 1};
  size_t chunk = 0;
  float *buf = NULL;
  if (t->psgd_live) {
    ps.error_floats = dist_reducer_error_floats(t->reducer);
    ps.warm_start_floats = dist_reducer_state_floats(t->reducer) - ps.error_floats;
    chunk = psgd_chunk(t);
    buf = malloc(chunk * sizeof *buf);
    if (!buf) {
      failed = 1;
      snprintf(msg, sizeof msg, "out of memory for a piece of PowerSGD's state");
    }
    if (dist_agree(failed, msg, sizeof msg) != 0) {
      free(buf);
      dist_set_timeout(c->dist.timeout_s);
      snprintf(err, errlen, "%s", msg);
      return -1;
    }
    ps.shared_warm_start = psgd_warm_shared(t, buf, chunk);
  }
  ckpt_writer *w = NULL;
  char path[CFG_PATH_MAX + 64];
  ckpt_meta m;
  memset(&m, 0, sizeof m);
  if (dist_rank() == 0) {
    ckpt_step_path(t->ckpt_dir, t->step, path, sizeof path);
    const data_dataset *ds = data_loader_dataset(t->data.train);
    m.step = t->step;
    m.epoch = t->epoch;
    m.step_in_epoch = t->step_in_epoch;
    m.seed = t->cfg->run.seed;
    snprintf(m.arch, sizeof m.arch, "%s", t->cfg->model.arch[0] ? t->cfg->model.arch : "custom");
    m.config_yaml = t->config_yaml;
    m.num_classes = t->net.num_classes;
    memcpy(m.mean, t->data.mean, sizeof m.mean);
    memcpy(m.std, t->data.std, sizeof m.std);
    m.class_names = ds && ds->num_classes == t->net.num_classes ? ds->class_names : NULL;
    snprintf(m.run_id, sizeof m.run_id, "%s", t->run_id);
    failed = setup_mkdirs(t->ckpt_dir, msg, sizeof msg) != 0;
    /* Begun even when the directory failed (the writer then fails and says
     * so): the other ranks' states still arrive below. */
    w = ckpt_save_begin(path, &t->net, t->momentum, &m);
    if (psgd_on) ckpt_save_psgd(w, &ps);
  }
  if (t->psgd_live) psgd_save(t, w, &ps, buf, chunk);
  free(buf);
  if (dist_rank() == 0) {
    char why[4600];
    if (ckpt_save_end(w, why, sizeof why) != 0 && !failed) {
      failed = 1;
      snprintf(msg, sizeof msg, "%s", why);
    }
    if (!failed) {
      snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", path);
      ckpt_prune_run(t->ckpt_dir, t->cfg->checkpoint.keep, &t->net, t->run_id, t->step);
    }
  }
  int agreed = dist_agree(failed, msg, sizeof msg);
  dist_set_timeout(t->cfg->dist.timeout_s);
  if (agreed != 0) {
    snprintf(err, errlen, "%s", msg);
    return -1;
  }
  return 0;
}

int trainer_evaluate(trainer *t, eval_result *r, int64_t *epoch, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  /* The last step's epoch: the position moved on when it ended an epoch. */
  *epoch = t->step_in_epoch == 0 && t->epoch > 0 ? t->epoch - 1 : t->epoch;
  if (!t->data.val) return 0;
  char msg[8192];
  share_buffers(t);
  if (eval_run(&t->net, t->data.val, t->epoch, r, NULL, msg, sizeof msg) != 0) {
    snprintf(err, errlen,
             "%s; stopping in the evaluation after step %lld (the last checkpoint is %s)", msg,
             (long long)t->step, last_ckpt(t));
    return -1;
  }
  return 0;
}

void trainer_close(trainer *t) {
  for (int i = 0; i < 2; i++)
    if (t->lock_fd[i] >= 0) close(t->lock_fd[i]);
  dist_reducer_free(t->reducer);
  setup_free(&t->data);
  nn_net_free(&t->net);
  free(t->momentum);
  free(t->config_yaml);
  memset(t, 0, sizeof *t);
}
