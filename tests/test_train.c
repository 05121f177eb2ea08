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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "trainrun.h"

/* The run's harness is tests/faults/trainrun.h: runs of configs/debug.yaml
 * under a scratch run dir, output in tr_out. */
#define train tr_train
#define out tr_out
static const char *MPI2 = TR_MPI2;

/* Reads "loss" of the train lines of metrics.jsonl: first and last;
 * returns how many train lines, *val_lines the val lines. */
static int train_losses(const char *dir, double *first, double *last, int *val_lines) {
  static tr_metric rows[4096];
  int total = tr_metrics(dir, rows, 4096), n = 0;
  *val_lines = 0;
  for (int i = 0; i < total; i++) {
    if (rows[i].val) {
      (*val_lines)++;
      continue;
    }
    if (n++ == 0) *first = rows[i].loss;
    *last = rows[i].loss;
  }
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
  CU_ASSERT(val >= 3);           /* every epoch and at the end */
  CU_ASSERT(first > 1.2);        /* about ln 4 at the start */
  CU_ASSERT(last < 0.6 * first); /* and learning */
  char path[4200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  char line[4096] = "";
  CU_ASSERT_FATAL(f != NULL && fgets(line, sizeof line, f) != NULL);
  fclose(f);
  const char *keys[] = {"\"step\":",    "\"epoch\":",      "\"split\":\"train\"",
                        "\"loss\":",    "\"lr\":",         "\"images_per_sec\":",
                        "\"data_ms\":", "\"forward_ms\":", "\"backward_ms\":",
                        "\"comm_ms\":", "\"update_ms\":"};
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
  tr_ckpt(a_dir, 3, pa, sizeof pa);
  tr_ckpt(b_dir, 3, pb, sizeof pb);
  double e = tr_ckpt_diff(pa, pb, NULL);
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
  tr_ckpt(full, 20, pa, sizeof pa);
  tr_ckpt(part, 20, pb, sizeof pb);
  CU_ASSERT(tr_ckpt_same(pa, pb));
  /* Onto another rank count: 9 steps on 2 ranks, the rest on 1. */
  CU_ASSERT_FATAL(train(MPI2, cross, "--set train.max_steps=9") == 0);
  CU_ASSERT_FATAL(train("", cross, "--set train.max_steps=20") == 0);
  tr_ckpt(cross, 20, pb, sizeof pb);
  double e = tr_ckpt_diff(pa, pb, NULL);
  fprintf(stderr, " [resumed onto 1 rank: max rel diff %.3g] ", e);
  CU_ASSERT(e < 1e-4);
}

/* Batch norm and LARS (issue 13): the debug net with a batch norm after each
 * conv and the hidden linear layer, kaiming init, LARS with the debug
 * config's warmup and cosine schedule. */
#define BN_LARS                                                                              \
  "--set 'model.features=[{conv: {out: 16, kernel: 5, padding: 2}}, batchnorm, relu, "       \
  "{maxpool: 2}, {conv: {out: 32, kernel: 3, padding: 1}}, batchnorm, relu, {maxpool: 2}]' " \
  "--set 'model.classifier=[{dropout: 0.25}, {linear: 64}, batchnorm, relu, {linear: 4}]' "  \
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
  tr_ckpt(full, 20, pa, sizeof pa);
  tr_ckpt(part, 20, pb, sizeof pb);
  CU_ASSERT(tr_ckpt_same(pa, pb));
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

/* train.precision: bf16 learns the debug task, and a run stopped at step 9
 * and resumed equals the uninterrupted one bitwise (weights, momentum and the
 * checkpoint stay float32; the bf16 products are deterministic). */
static void test_bf16_learns_and_resumes(void) {
  char learn[4200], full[4200], part[4200], pa[4300], pb[4300];
  snprintf(learn, sizeof learn, "%s", tu_scratch_dir("train_bf16_learn"));
  snprintf(full, sizeof full, "%s", tu_scratch_dir("train_bf16_full"));
  snprintf(part, sizeof part, "%s", tu_scratch_dir("train_bf16_part"));
  CU_ASSERT_FATAL(train("", learn, "--set train.precision=bf16") == 0);
  TU_ASSERT_CONTAINS(out, "bf16 products (kernel ");
  double first = 0, last = 0;
  int val = 0;
  CU_ASSERT(train_losses(learn, &first, &last, &val) >= 5);
  fprintf(stderr, " [bf16 loss %.3f -> %.3f] ", first, last);
  CU_ASSERT(first > 1.2);
  CU_ASSERT(last < 0.6 * first);
  CU_ASSERT_FATAL(train("", full, "--set train.precision=bf16 --set train.max_steps=20") == 0);
  CU_ASSERT_FATAL(train("", part, "--set train.precision=bf16 --set train.max_steps=9") == 0);
  CU_ASSERT_FATAL(train("", part, "--set train.precision=bf16 --set train.max_steps=20") == 0);
  TU_ASSERT_CONTAINS(out, "resuming from");
  tr_ckpt(full, 20, pa, sizeof pa);
  tr_ckpt(part, 20, pb, sizeof pb);
  CU_ASSERT(tr_ckpt_same(pa, pb));
}

/* model.weight_init reaches the trainer: after one step at a negligible lr,
 * conv1's weights (16 x 3 x 5 x 5, fan_in 75) have kaiming's std sqrt(2/75)
 * = 0.163, not torch's 1/sqrt(3 x 75) = 0.067. */
static void test_kaiming_init_applied(void) {
  char dir[4200], path[4300];
  snprintf(dir, sizeof dir, "%s", tu_scratch_dir("train_kaiming"));
  CU_ASSERT_FATAL(train("", dir, BN_LARS "--set optimizer.lr=1e-12 --set train.max_steps=1") == 0);
  snprintf(path, sizeof path, "%s/checkpoints/step-00000001.h5", dir);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  static float w[16 * 3 * 5 * 5];
  hid_t d = H5Dopen2(f, "model/features.0.weight", H5P_DEFAULT);
  CU_ASSERT_FATAL(d >= 0);
  CU_ASSERT(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0);
  H5Dclose(d);
  H5Fclose(f);
  double sq = 0;
  for (int i = 0; i < 1200; i++) sq += (double)w[i] * w[i];
  double sd = sqrt(sq / 1200), want = sqrt(2.0 / 75);
  fprintf(stderr, " [conv1 std %.4f, kaiming %.4f] ", sd, want);
  CU_ASSERT(fabs(sd / want - 1) < 0.1);
}

/* Synchronized batch norm on 2 ranks = 1 rank; per-rank statistics differ.
 * Compared relative to max(|w|, 1e-2), not 1e-3: a conv bias followed by
 * batch norm has a gradient of exactly 0 in exact arithmetic, so it holds
 * only rounding noise (about 1e-8 after 3 LARS steps at lr 1, from sums in
 * another order), and so do the smallest batch-norm shifts; against a floor
 * of 1e-3 that noise alone reads as 1.3e-5 (measured on an AMD EPYC Zen 3),
 * while every weight, scale and running statistic agrees to 1.2e-7. */
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
  tr_ckpt(a_dir, 3, pa, sizeof pa);
  tr_ckpt(b_dir, 3, pb, sizeof pb);
  double e = tr_ckpt_diff_floor(pa, pb, 1e-2, NULL);
  tr_ckpt(c_dir, 3, pb, sizeof pb);
  double local = tr_ckpt_diff_floor(pa, pb, 1e-2, NULL);
  fprintf(stderr, " [1 rank vs 2 synchronized: %.3g; vs 2 per-rank: %.3g] ", e, local);
  CU_ASSERT(e < 1e-5);
  CU_ASSERT(local > 1e-3);
  /* One rank has nothing to synchronize: a config error. */
  CU_ASSERT(train("", a_dir, sync) == 2);
  TU_ASSERT_CONTAINS(out, "model.sync_batchnorm: true with one rank");
}

static void test_sigterm(void) {
  const char *dir = tu_scratch_dir("train_sigterm");
  /* Long enough to be interrupted: 200 epochs. Wait for a few logged steps
   * (both ranks are then past installing their handlers), then preempt every
   * rank. The bounds only end a hung run: on a loaded machine the start alone
   * can take many seconds. */
  tr_train_bg(MPI2, dir, "--set train.epochs=200 --set checkpoint.every_epochs=0");
  int logged = tr_wait_step(dir, 3, 300);
  for (int rank = 0; rank < 2; rank++) {
    int pid = tr_find_rank(dir, rank);
    CU_ASSERT(pid > 0);
    if (pid > 0) kill(pid, logged ? SIGTERM : SIGKILL);
  }
  int status = tr_wait(dir, 300);
  if (!logged) fprintf(stderr, "\n  no 3 logged steps after 300 s:\n%s\n", out);
  CU_ASSERT_FATAL(logged);
  CU_ASSERT(status == 0);
  TU_ASSERT_CONTAINS(out, "stopped by a signal at step");
  /* The checkpoint it names loads, and a resume continues from it. */
  const char *p = strstr(out, "stopped by a signal at step ");
  int step = p ? atoi(p + strlen("stopped by a signal at step ")) : -1;
  CU_ASSERT(step > 0);
  char ck[4300], err[4600];
  tr_ckpt(dir, step, ck, sizeof ck);
  CU_ASSERT(tr_ckpt_valid(ck, err, sizeof err) == 0);
  char extra[64];
  snprintf(extra, sizeof extra, "--set train.max_steps=%d", step + 2);
  CU_ASSERT(train("", dir, extra) == 0);
  TU_ASSERT_CONTAINS(out, "resuming from");
}

static void test_nan_stops(void) {
  const char *dir = tu_scratch_dir("train_nan");
  time_t t0 = time(NULL);
  int rc = tr_train_status("ALEXNET_TEST_NAN_AT_STEP=2 ALEXNET_TEST_NAN_RANK=1 " TR_MPI2, dir,
                           "--set checkpoint.every_steps=1");
  CU_ASSERT(rc != 0);
  CU_ASSERT(time(NULL) - t0 < 60);
  TU_ASSERT_CONTAINS(out, "rank 1: non-finite");
  TU_ASSERT_CONTAINS(out, "at step 2");
  TU_ASSERT_CONTAINS(out, "before the update reached the weights");
  /* The last checkpoint is step 2's, from before the bad step, and valid. */
  TU_ASSERT_CONTAINS(out, "step-00000002.h5");
}

int main(void) {
  tu_add_suite("alexnet-train",
               (tu_test[]){{"debug config learns", test_debug_learns},
                           {"config errors", test_config_errors},
                           {"1 and 2 ranks agree", test_ranks_agree},
                           {"resume is exact", test_resume_exact},
                           {"bf16 learns and resumes exactly", test_bf16_learns_and_resumes},
                           {"batch norm + LARS: resume is exact", test_bn_lars_resume_exact},
                           {"weight_init kaiming reaches the trainer", test_kaiming_init_applied},
                           {"sync batch norm: 1 and 2 ranks agree", test_sync_bn_ranks_agree},
                           {"SIGTERM checkpoints", test_sigterm},
                           {"NaN stops the job", test_nan_stops},
                           {NULL, NULL}});
  return tu_run_all();
}
