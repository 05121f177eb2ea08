/*
 * trainrun.c: see trainrun.h.
 */
#include "trainrun.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "nn.h"
#include "predict_core.h"
#include "testutil.h"
#include "util.h"

char tr_out[1 << 16];

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void train_cmd(const char *launcher, const char *dir, const char *extra, char *cmd,
                      size_t len) {
  const char *bin =
      launcher && strstr(launcher, "ALEXNET_TEST_") ? "alexnet-train-hooked" : "alexnet-train";
  snprintf(cmd, len, "%s %s %s/configs/debug.yaml --set run.dir=%s %s", launcher ? launcher : "",
           tu_bin(bin), ALEXNET_SOURCE_DIR, dir, extra ? extra : "");
}

int tr_train_status(const char *launcher, const char *dir, const char *extra) {
  char cmd[8192];
  train_cmd(launcher, dir, extra, cmd, sizeof cmd);
  return tu_run_cmd(cmd, tr_out, sizeof tr_out);
}

int tr_train(const char *launcher, const char *dir, const char *extra) {
  int rc = tr_train_status(launcher, dir, extra);
  if (rc != 0) {
    char cmd[8192];
    train_cmd(launcher, dir, extra, cmd, sizeof cmd);
    fprintf(stderr, "\n$ %s\n-> %d\n%s\n", cmd, rc, tr_out);
  }
  return rc;
}

int tr_run(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return tu_run_cmd(cmd, tr_out, sizeof tr_out);
}

void tr_train_bg(const char *launcher, const char *dir, const char *extra) {
  char cmd[8192], bg[9000];
  train_cmd(launcher, dir, extra, cmd, sizeof cmd);
  /* The status goes to a temporary name first, so a reader never sees it empty. */
  snprintf(bg, sizeof bg,
           "( %s > %s/log.txt 2>&1; echo $? > %s/status.tmp; mv %s/status.tmp %s/status ) &", cmd,
           dir, dir, dir, dir);
  if (system(bg) != 0) fprintf(stderr, "\ncannot start: %s\n", bg);
}

int tr_wait(const char *dir, double max_s) {
  char status[4200];
  snprintf(status, sizeof status, "%s/status", dir);
  int ended = tr_wait_file(status, max_s);
  tr_run("cat %s/log.txt", dir);
  if (!ended) return -1;
  FILE *f = fopen(status, "r");
  int rc = -1;
  if (f) {
    if (fscanf(f, "%d", &rc) != 1) rc = -1;
    fclose(f);
  }
  return rc;
}

int tr_wait_file(const char *path, double max_s) {
  double end = util_now() + max_s;
  while (access(path, F_OK) != 0) {
    if (util_now() > end) return 0;
    nap_ms(10);
  }
  return 1;
}

int tr_wait_step(const char *dir, int64_t step, double max_s) {
  double end = util_now() + max_s;
  tr_metric rows[512];
  for (;;) {
    int n = tr_metrics(dir, rows, 512);
    for (int i = 0; i < n; i++)
      if (!rows[i].val && rows[i].step >= step) return 1;
    if (util_now() > end) return 0;
    nap_ms(10);
  }
}

/* ------------------------------------------------------------------------ */
/* Processes                                                                 */

/* Reads /proc/<pid>/<what> into buf with NULs turned into spaces; returns its length. */
static size_t read_proc(int pid, const char *what, char *buf, size_t len) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  for (size_t i = 0; i < n; i++)
    if (buf[i] == '\0') buf[i] = ' ';
  buf[n] = '\0';
  return n;
}

/* The process's state letter (R, S, Z, ...), or 0 if it is gone. */
static char proc_state(int pid) {
  char stat[512];
  if (!read_proc(pid, "stat", stat, sizeof stat)) return 0;
  const char *p = strrchr(stat, ')'); /* after "pid (comm)" */
  return p && p[1] == ' ' ? p[2] : 0;
}

/* Calls fn for every live process whose comm is one of ours and whose command
 * line contains tag; stops when fn returns non-zero and returns that value. */
static int each_process(const char *tag, int (*fn)(int pid, void *ctx), void *ctx) {
  DIR *d = opendir("/proc");
  if (!d) return 0;
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(d))) {
    int pid = atoi(e->d_name);
    if (pid <= 0 || pid == getpid()) continue;
    char comm[64], cmdline[8192];
    if (!read_proc(pid, "comm", comm, sizeof comm)) continue;
    comm[strcspn(comm, "\n")] = '\0';
    if (strncmp(comm, "alexnet-train", 13) != 0 && strcmp(comm, "mpiexec") != 0 &&
        strcmp(comm, "orterun") != 0 && strcmp(comm, "mpirun") != 0)
      continue;
    if (!read_proc(pid, "cmdline", cmdline, sizeof cmdline) || !strstr(cmdline, tag)) continue;
    char state = proc_state(pid);
    if (state == 0 || state == 'Z' || state == 'X') continue;
    found = fn(pid, ctx);
  }
  closedir(d);
  return found;
}

typedef struct {
  int rank;
} rank_query;

static int match_rank(int pid, void *vctx) {
  rank_query *q = vctx;
  char comm[64], env[1 << 15], want[64];
  read_proc(pid, "comm", comm, sizeof comm);
  if (strncmp(comm, "alexnet-train", 13) != 0) return 0;
  if (q->rank < 0) return pid;
  snprintf(want, sizeof want, " OMPI_COMM_WORLD_RANK=%d ", q->rank);
  /* environ is NUL-separated (now spaces); a leading space matches the first too */
  env[0] = ' ';
  size_t n = read_proc(pid, "environ", env + 1, sizeof env - 2);
  env[n + 1] = ' ';
  env[n + 2] = '\0';
  return strstr(env, want) ? pid : 0;
}

int tr_find_rank(const char *tag, int rank) {
  rank_query q = {.rank = rank};
  return each_process(tag, match_rank, &q);
}

static int count_one(int pid, void *vctx) {
  (void)pid;
  (*(int *)vctx)++;
  return 0;
}

int tr_leftover(const char *tag, double max_s) {
  double end = util_now() + max_s;
  for (;;) {
    int n = 0;
    each_process(tag, count_one, &n);
    if (n == 0 || util_now() > end) {
      if (n) tr_run("ps -eo pid,stat,etime,args | grep -F '%s' | grep -v grep", tag);
      if (n) fprintf(stderr, "\n  %d processes left:\n%s\n", n, tr_out);
      return n;
    }
    nap_ms(50);
  }
}

/* ------------------------------------------------------------------------ */
/* Checkpoints                                                               */

void tr_ckpt(const char *dir, int64_t step, char *path, size_t len) {
  char ckdir[4200];
  snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
  ckpt_step_path(ckdir, step, path, len);
}

int64_t tr_newest_step(const char *ckpt_dir) {
  DIR *d = opendir(ckpt_dir);
  if (!d) return -1;
  struct dirent *e;
  int64_t best = -1;
  while ((e = readdir(d))) {
    long long step;
    char tail[8];
    if (sscanf(e->d_name, "step-%lld.%7s", &step, tail) == 2 && strcmp(tail, "h5") == 0 &&
        step > best)
      best = step;
  }
  closedir(d);
  return best;
}

/* Loads path's network, weights and momentum; *momentum is malloc'd. */
static int load_full(const char *path, nn_net *net, float **momentum, char *err, size_t errlen) {
  ckpt_meta meta;
  *momentum = NULL;
  if (predict_load_model(path, net, &meta, err, errlen) != 0) return -1;
  ckpt_meta_free(&meta);
  *momentum = calloc(net->num_params, sizeof(float));
  if (!*momentum || ckpt_load(path, net, *momentum, NULL, err, errlen) != 0) {
    free(*momentum);
    *momentum = NULL;
    nn_net_free(net);
    return -1;
  }
  return 0;
}

int tr_ckpt_valid(const char *path, char *err, size_t errlen) {
  nn_net net;
  float *momentum;
  if (load_full(path, &net, &momentum, err, errlen) != 0) return -1;
  free(momentum);
  nn_net_free(&net);
  return 0;
}

double tr_ckpt_diff(const char *a, const char *b, int *bitwise) {
  return tr_ckpt_diff_floor(a, b, 1e-3, bitwise);
}

double tr_ckpt_diff_floor(const char *a, const char *b, double floor, int *bitwise) {
  nn_net na, nb;
  float *ma, *mb;
  char err[4600];
  if (bitwise) *bitwise = 0;
  if (load_full(a, &na, &ma, err, sizeof err) != 0) {
    fprintf(stderr, "\n  %s\n", err);
    return INFINITY;
  }
  if (load_full(b, &nb, &mb, err, sizeof err) != 0) {
    fprintf(stderr, "\n  %s\n", err);
    free(ma);
    nn_net_free(&na);
    return INFINITY;
  }
  double worst = INFINITY;
  if (na.num_params == nb.num_params) {
    size_t n = na.num_params;
    double ew = tu_max_rel_err(na.params, nb.params, n, floor, NULL);
    double em = tu_max_rel_err(ma, mb, n, floor, NULL);
    worst = ew > em ? ew : em;
    if (bitwise)
      *bitwise = memcmp(na.params, nb.params, n * sizeof(float)) == 0 &&
                 memcmp(ma, mb, n * sizeof(float)) == 0;
    /* Batch norm's running statistics are part of the model too. */
    size_t nbuf = na.num_buffers;
    if (nbuf && nbuf == nb.num_buffers) {
      double eb = tu_max_rel_err(na.buffers, nb.buffers, nbuf, floor, NULL);
      if (eb > worst) worst = eb;
      if (bitwise && memcmp(na.buffers, nb.buffers, nbuf * sizeof(float)) != 0) *bitwise = 0;
    } else if (nbuf != nb.num_buffers) {
      worst = INFINITY;
    }
  } else {
    fprintf(stderr, "\n  %s and %s hold different networks\n", a, b);
  }
  free(ma);
  free(mb);
  nn_net_free(&na);
  nn_net_free(&nb);
  return worst;
}

int tr_ckpt_same(const char *a, const char *b) {
  int bitwise = 0;
  double e = tr_ckpt_diff(a, b, &bitwise);
  if (!bitwise) fprintf(stderr, "\n  %s and %s differ (max rel %.3g)\n", a, b, e);
  return bitwise;
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

static double json_num(const char *line, const char *key, double fallback) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(line, pat);
  return p ? strtod(p + strlen(pat), NULL) : fallback;
}

int tr_metrics(const char *dir, tr_metric *rows, int max) {
  char path[4200], line[4096];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int n = 0;
  while (n < max && fgets(line, sizeof line, f)) {
    if (!strchr(line, '\n')) break; /* a line still being written */
    tr_metric *m = &rows[n++];
    m->step = (int64_t)json_num(line, "step", -1);
    m->epoch = (int64_t)json_num(line, "epoch", -1);
    m->val = strstr(line, "\"split\":\"val\"") != NULL;
    m->loss = json_num(line, "loss", -1);
    m->top1 = json_num(line, "top1", -1);
    m->top5 = json_num(line, "top5", -1);
    m->lr = json_num(line, "lr", -1);
  }
  fclose(f);
  return n;
}

int tr_metric_lines(const char *dir) {
  tr_metric rows[1024];
  return tr_metrics(dir, rows, 1024);
}
