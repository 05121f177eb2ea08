/*
 * alexnet-train end to end, through the binary as users run it: the debug
 * config learns; config errors stop it with status 2 and a message; the same
 * steps on 1 and 2 ranks give the same weights; a resumed run equals an
 * uninterrupted one (bitwise on the same rank count, within 1e-5 onto another);
 * SIGTERM leaves a checkpoint and exits 0; a NaN on one rank ends the job
 * naming the rank before the update.
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static char out[1 << 16];

/* The debug config with its run and checkpoints under a scratch dir. */
static int train(const char *launcher, const char *dir, const char *extra) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s %s %s/configs/debug.yaml --set run.dir=%s %s", launcher,
           tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, dir, extra ? extra : "");
  int rc = tu_run_cmd(cmd, out, sizeof out);
  if (rc != 0) fprintf(stderr, "\n$ %s\n-> %d\n%s\n", cmd, rc, out);
  return rc;
}

static const char *MPI2 = "mpiexec -n 2 --oversubscribe";

/* Every float32 dataset under `group` of two files; max |a-b| / max(|b|, 1e-3). */
typedef struct {
  hid_t other;
  const char *group;
  double worst;
  int missing;
  int bitwise;
} cmp_ctx;

static herr_t cmp_one(hid_t g, const char *name, const H5L_info_t *info, void *vctx) {
  (void)info;
  cmp_ctx *c = vctx;
  char path[512];
  snprintf(path, sizeof path, "%s/%s", c->group, name);
  hid_t da = H5Dopen2(g, name, H5P_DEFAULT);
  hid_t db = H5Dopen2(c->other, path, H5P_DEFAULT);
  if (da < 0 || db < 0) {
    c->missing++;
  } else {
    hid_t sp = H5Dget_space(da);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    H5Dread(da, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a);
    H5Dread(db, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    double e = tu_max_rel_err(a, b, (size_t)n, 1e-3, NULL);
    if (e > c->worst) c->worst = e;
    if (memcmp(a, b, (size_t)n * sizeof(float)) != 0) c->bitwise = 0;
    free(a);
    free(b);
  }
  if (da >= 0) H5Dclose(da);
  if (db >= 0) H5Dclose(db);
  return 0;
}

/* Compares /model (and /optimizer/momentum when momentum) of two checkpoints. */
static double compare_ckpt(const char *pa, const char *pb, int momentum, int *bitwise) {
  hid_t fa = H5Fopen(pa, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t fb = H5Fopen(pb, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(fa >= 0 && fb >= 0);
  cmp_ctx c = {.other = fb, .worst = 0, .bitwise = 1};
  const char *groups[2] = {"model", "optimizer/momentum"};
  for (int k = 0; k < 1 + momentum; k++) {
    c.group = groups[k];
    hid_t g = H5Gopen2(fa, groups[k], H5P_DEFAULT);
    CU_ASSERT_FATAL(g >= 0);
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, cmp_one, &c);
    H5Gclose(g);
  }
  H5Fclose(fa);
  H5Fclose(fb);
  CU_ASSERT(c.missing == 0);
  if (bitwise) *bitwise = c.bitwise;
  return c.worst;
}

static void ckpt(const char *dir, int step, char *path, size_t len) {
  snprintf(path, len, "%s/checkpoints/step-%08d.h5", dir, step);
}

/* Reads "loss" of the train lines of metrics.jsonl: first and last. */
static int train_losses(const char *dir, double *first, double *last, int *val_lines) {
  char path[4200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[4096];
  int n = 0;
  *val_lines = 0;
  while (fgets(line, sizeof line, f)) {
    const char *p = strstr(line, "\"loss\":");
    if (strstr(line, "\"split\":\"val\"")) {
      (*val_lines)++;
      continue;
    }
    if (!p) continue;
    double v = atof(p + 7);
    if (n++ == 0) *first = v;
    *last = v;
  }
  fclose(f);
  return n;
}

static void test_debug_learns(void) {
  const char *dir = tu_scratch_dir("train_debug");
  CU_ASSERT_FATAL(train("", dir, "") == 0);
  TU_ASSERT_CONTAINS(out, "done: ");
  double first = 0, last = 0;
  int val = 0;
  int n = train_losses(dir, &first, &last, &val);
  CU_ASSERT(n >= 5);
  CU_ASSERT(val >= 3); /* every epoch and at the end */
  CU_ASSERT(first > 1.2);           /* about ln 4 at the start */
  CU_ASSERT(last < 0.6 * first);    /* and learning */
  char path[4200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  char line[4096] = "";
  CU_ASSERT_FATAL(f != NULL && fgets(line, sizeof line, f) != NULL);
  fclose(f);
  const char *keys[] = {"\"step\":", "\"epoch\":", "\"split\":\"train\"", "\"loss\":", "\"lr\":",
                        "\"images_per_sec\":", "\"data_ms\":", "\"forward_ms\":",
                        "\"backward_ms\":", "\"comm_ms\":", "\"update_ms\":"};
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) TU_ASSERT_CONTAINS(line, keys[k]);
}

static void test_config_errors(void) {
  char cmd[8192];
  /* A bad value: status 2, the key's full path named. */
  const char *dir = tu_scratch_dir("train_config_errors");
  CU_ASSERT(train("", dir, "--set optimizer.lr=fast") == 2);
  TU_ASSERT_CONTAINS(out, "optimizer.lr");
  CU_ASSERT(train("", dir, "--set train.nonsense=1") == 2);
  TU_ASSERT_CONTAINS(out, "train.nonsense");
  /* The global batch must split evenly over the ranks. */
  CU_ASSERT(train("mpiexec -n 2 --oversubscribe", dir, "--set train.batch_size=33") == 2);
  TU_ASSERT_CONTAINS(out, "33");
  TU_ASSERT_CONTAINS(out, "divisible");
  /* A config that does not exist, and usage errors. */
  snprintf(cmd, sizeof cmd, "%s /nonexistent/x.yaml", tu_bin("alexnet-train"));
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 2);
  TU_ASSERT_CONTAINS(out, "/nonexistent/x.yaml");
  snprintf(cmd, sizeof cmd, "%s", tu_bin("alexnet-train"));
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 2);
  TU_ASSERT_CONTAINS(out, "usage: alexnet-train CONFIG");
  /* A training file that does not exist. */
  CU_ASSERT(train("", dir, "--set data.synthetic.n=0 --set data.train=/nonexistent/t.h5") == 2);
  TU_ASSERT_CONTAINS(out, "/nonexistent/t.h5");
  /* --print-config and --summary start nothing. */
  CU_ASSERT(train("", dir, "--print-config --set optimizer.lr=0.125") == 0);
  TU_ASSERT_CONTAINS(out, "lr: 0.125");
  CU_ASSERT(train("", dir, "--summary") == 0);
  TU_ASSERT_CONTAINS(out, "total: ");
  TU_ASSERT_CONTAINS(out, "classifier.3");
}

/* 3 steps, dropout off: 1 rank and 2 ranks see the same global batches. */
static void test_ranks_agree(void) {
  char a_dir[4200], b_dir[4200], pa[4300], pb[4300];
  snprintf(a_dir, sizeof a_dir, "%s", tu_scratch_dir("train_ranks_1"));
  snprintf(b_dir, sizeof b_dir, "%s", tu_scratch_dir("train_ranks_2"));
  const char *set = "--set model.dropout=0 --set train.max_steps=3";
  CU_ASSERT_FATAL(train("", a_dir, set) == 0);
  CU_ASSERT_FATAL(train(MPI2, b_dir, set) == 0);
  ckpt(a_dir, 3, pa, sizeof pa);
  ckpt(b_dir, 3, pb, sizeof pb);
  double e = compare_ckpt(pa, pb, 1, NULL);
  fprintf(stderr, " [1 vs 2 ranks: max rel diff %.3g] ", e);
  CU_ASSERT(e < 1e-5);
}

/* Interrupted at step 3 and resumed = never interrupted. */
static void test_resume_exact(void) {
  char full[4200], part[4200], cross[4200], pa[4300], pb[4300];
  snprintf(full, sizeof full, "%s", tu_scratch_dir("train_resume_full"));
  snprintf(part, sizeof part, "%s", tu_scratch_dir("train_resume_part"));
  snprintf(cross, sizeof cross, "%s", tu_scratch_dir("train_resume_cross"));
  /* 14 steps per epoch: 9 stops mid-epoch, 20 crosses into the second. */
  CU_ASSERT_FATAL(train("", full, "--set train.max_steps=20") == 0);
  CU_ASSERT_FATAL(train("", part, "--set train.max_steps=9") == 0);
  CU_ASSERT_FATAL(train("", part, "--set train.max_steps=20") == 0);
  TU_ASSERT_CONTAINS(out, "resuming from");
  ckpt(full, 20, pa, sizeof pa);
  ckpt(part, 20, pb, sizeof pb);
  int bitwise = 0;
  compare_ckpt(pa, pb, 1, &bitwise);
  CU_ASSERT(bitwise);
  /* Onto another rank count: 9 steps on 2 ranks, the rest on 1. */
  CU_ASSERT_FATAL(train(MPI2, cross, "--set train.max_steps=9") == 0);
  CU_ASSERT_FATAL(train("", cross, "--set train.max_steps=20") == 0);
  ckpt(cross, 20, pb, sizeof pb);
  double e = compare_ckpt(pa, pb, 0, NULL);
  fprintf(stderr, " [resumed onto 1 rank: max rel diff %.3g] ", e);
  CU_ASSERT(e < 1e-4);
}

/* Batch norm and LARS (issue 13): the debug net with a batch norm after each
 * conv and the hidden linear layer, kaiming init, LARS with the debug
 * config's warmup and cosine schedule. */
#define BN_LARS                                                                                \
  "--set 'model.features=[{conv: {out: 16, kernel: 5, padding: 2}}, batchnorm, relu, "         \
  "{maxpool: 2}, {conv: {out: 32, kernel: 3, padding: 1}}, batchnorm, relu, {maxpool: 2}]' "   \
  "--set 'model.classifier=[{dropout: 0.25}, {linear: 64}, batchnorm, relu, {linear: 4}]' "    \
  "--set model.weight_init=kaiming --set optimizer.type=lars --set optimizer.lr=1 "

/* Interrupted and resumed = never interrupted, running statistics and LARS
 * momentum included; and it learns. */
static void test_bn_lars_resume_exact(void) {
  char full[4200], part[4200], pa[4300], pb[4300];
  snprintf(full, sizeof full, "%s", tu_scratch_dir("train_bn_lars_full"));
  snprintf(part, sizeof part, "%s", tu_scratch_dir("train_bn_lars_part"));
  CU_ASSERT_FATAL(train("", full, BN_LARS "--set train.max_steps=20") == 0);
  CU_ASSERT_FATAL(train("", part, BN_LARS "--set train.max_steps=9") == 0);
  CU_ASSERT_FATAL(train("", part, BN_LARS "--set train.max_steps=20") == 0);
  TU_ASSERT_CONTAINS(out, "resuming from");
  ckpt(full, 20, pa, sizeof pa);
  ckpt(part, 20, pb, sizeof pb);
  int bitwise = 0;
  compare_ckpt(pa, pb, 1, &bitwise);
  CU_ASSERT(bitwise);
  hid_t f = H5Fopen(pa, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  float tracked = 0;
  hid_t d = H5Dopen2(f, "model/features.1.num_batches_tracked", H5P_DEFAULT);
  CU_ASSERT(d >= 0 && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &tracked) >= 0);
  CU_ASSERT_EQUAL(tracked, 20.0f); /* one per training step, none for the evaluations */
  if (d >= 0) H5Dclose(d);
  H5Fclose(f);
  double first = 0, last = 0;
  int val = 0;
  CU_ASSERT(train_losses(full, &first, &last, &val) >= 3);
  CU_ASSERT(last < 0.6 * first);
}

/* Synchronized batch norm on 2 ranks = 1 rank; per-rank statistics differ. */
static void test_sync_bn_ranks_agree(void) {
  char a_dir[4200], b_dir[4200], c_dir[4200], pa[4300], pb[4300];
  snprintf(a_dir, sizeof a_dir, "%s", tu_scratch_dir("train_syncbn_1"));
  snprintf(b_dir, sizeof b_dir, "%s", tu_scratch_dir("train_syncbn_2"));
  snprintf(c_dir, sizeof c_dir, "%s", tu_scratch_dir("train_syncbn_2_local"));
  const char *set = BN_LARS "--set model.dropout=0 --set train.max_steps=3";
  char sync[4096];
  snprintf(sync, sizeof sync, "%s --set model.sync_batchnorm=true", set);
  CU_ASSERT_FATAL(train("", a_dir, set) == 0);
  CU_ASSERT_FATAL(train(MPI2, b_dir, sync) == 0);
  CU_ASSERT_FATAL(train(MPI2, c_dir, set) == 0);
  ckpt(a_dir, 3, pa, sizeof pa);
  ckpt(b_dir, 3, pb, sizeof pb);
  double e = compare_ckpt(pa, pb, 1, NULL);
  ckpt(c_dir, 3, pb, sizeof pb);
  double local = compare_ckpt(pa, pb, 1, NULL);
  fprintf(stderr, " [1 rank vs 2 synchronized: %.3g; vs 2 per-rank: %.3g] ", e, local);
  CU_ASSERT(e < 1e-5);
  CU_ASSERT(local > 1e-3);
  /* One rank has nothing to synchronize: a config error. */
  CU_ASSERT(train("", a_dir, sync) == 2);
  TU_ASSERT_CONTAINS(out, "model.sync_batchnorm: true with one rank");
}

/* The PIDs of this test's alexnet-train ranks (comm name + our run dir). */
static void signal_ranks(const char *dir, const char *sig) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "for p in $(pgrep -x alexnet-train); do grep -qa '%s' /proc/$p/cmdline && "
           "kill -%s $p; done; true",
           dir, sig);
  tu_run_cmd(cmd, out, sizeof out);
}

static void test_sigterm(void) {
  const char *base = tu_scratch_dir("train_sigterm");
  char dir[4200], cmd[9000], log[4300], ck[4300];
  snprintf(dir, sizeof dir, "%s", base);
  snprintf(log, sizeof log, "%s/log.txt", dir);
  /* Long enough to be interrupted: 200 epochs. */
  snprintf(cmd, sizeof cmd,
           "%s %s %s/configs/debug.yaml --set run.dir=%s --set train.epochs=200 "
           "--set checkpoint.every_epochs=0 > %s 2>&1; echo $? > %s/status.tmp; "
           "mv %s/status.tmp %s/status",
           MPI2, tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, dir, log, dir, dir, dir);
  char bg[9200];
  snprintf(bg, sizeof bg, "( %s ) &", cmd);
  CU_ASSERT_FATAL(system(bg) == 0);
  /* Wait for a few logged steps (both ranks are then past installing their
   * handlers), then preempt every rank. The bounds only end a hung run: on a
   * loaded machine the start alone can take many seconds. The status is
   * written under a temporary name, so it is never read half-written. */
  char status_path[4300];
  snprintf(status_path, sizeof status_path, "%s/status", dir);
  int logged = 0;
  for (int i = 0; i < 3000 && logged < 3 && access(status_path, F_OK) != 0; i++) {
    double first = 0, last = 0;
    int val = 0;
    logged = train_losses(dir, &first, &last, &val);
    if (logged < 3) usleep(100000);
  }
  if (logged < 3) {
    signal_ranks(dir, "KILL");
    snprintf(cmd, sizeof cmd, "cat %s", log);
    tu_run_cmd(cmd, out, sizeof out);
    fprintf(stderr, "\n  no 3 logged steps after 300 s:\n%s\n", out);
  }
  CU_ASSERT_FATAL(logged >= 3);
  signal_ranks(dir, "TERM");
  int waited = 0;
  while (access(status_path, F_OK) != 0 && waited++ < 3000) usleep(100000);
  CU_ASSERT_FATAL(access(status_path, F_OK) == 0);
  FILE *f = fopen(status_path, "r");
  int status = -1;
  CU_ASSERT(f && fscanf(f, "%d", &status) == 1);
  if (f) fclose(f);
  CU_ASSERT(status == 0);
  snprintf(cmd, sizeof cmd, "cat %s; ls %s/checkpoints", log, dir);
  tu_run_cmd(cmd, out, sizeof out);
  TU_ASSERT_CONTAINS(out, "stopped by a signal at step");
  /* The checkpoint it names loads, and a resume continues from it. */
  const char *p = strstr(out, "stopped by a signal at step ");
  int step = p ? atoi(p + strlen("stopped by a signal at step ")) : -1;
  CU_ASSERT(step > 0);
  ckpt(dir, step, ck, sizeof ck);
  CU_ASSERT(access(ck, R_OK) == 0);
  char extra[64];
  snprintf(extra, sizeof extra, "--set train.max_steps=%d", step + 2);
  CU_ASSERT(train("", dir, extra) == 0);
  TU_ASSERT_CONTAINS(out, "resuming from");
}

static void test_nan_stops(void) {
  const char *dir = tu_scratch_dir("train_nan");
  time_t t0 = time(NULL);
  int rc = train("ALEXNET_TEST_NAN_AT_STEP=2 ALEXNET_TEST_NAN_RANK=1 mpiexec -n 2 --oversubscribe",
                 dir, "--set checkpoint.every_steps=1");
  CU_ASSERT(rc != 0);
  CU_ASSERT(time(NULL) - t0 < 60);
  TU_ASSERT_CONTAINS(out, "rank 1: non-finite");
  TU_ASSERT_CONTAINS(out, "at step 2");
  TU_ASSERT_CONTAINS(out, "before the update reached the weights");
  /* The last checkpoint is step 2's, from before the bad step, and valid. */
  TU_ASSERT_CONTAINS(out, "step-00000002.h5");
}

int main(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  tu_add_suite("alexnet-train", (tu_test[]){{"debug config learns", test_debug_learns},
                                            {"config errors", test_config_errors},
                                            {"1 and 2 ranks agree", test_ranks_agree},
                                            {"resume is exact", test_resume_exact},
                                            {"batch norm + LARS: resume is exact",
                                             test_bn_lars_resume_exact},
                                            {"sync batch norm: 1 and 2 ranks agree",
                                             test_sync_bn_ranks_agree},
                                            {"SIGTERM checkpoints", test_sigterm},
                                            {"NaN stops the job", test_nan_stops},
                                            {NULL, NULL}});
  return tu_run_all();
}
