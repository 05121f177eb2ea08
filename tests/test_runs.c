/*
 * Runs sharing a directory, signals, locks and command lines (issue 17,
 * items 1, 2, 8, 11, 12): checkpoint pruning counts only the run's own
 * checkpoints that verify and deletes nothing else; a fresh run refuses a
 * directory holding another run's checkpoints; every metrics line names its
 * run and plot-run draws one; epochs agree between the trainer and eval;
 * SIGHUP checkpoints like SIGTERM; a second trainer on a run directory
 * stops and names the first; the tools bound --threads and name bad options.
 * Every case runs configs/debug.yaml for a few steps (tests/faults/trainrun.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "testutil.h"
#include "trainrun.h"

/* A few steps with a checkpoint every 2; tr_train adds run.dir. */
#define QUICK \
  "--set dist.threads_per_rank=1 --set checkpoint.every_steps=2 --set log.every_steps=1 "

static int exists(const char *path) {
  return access(path, F_OK) == 0;
}

static int ckpt_exists(const char *dir, int64_t step) {
  char p[4300];
  tr_ckpt(dir, step, p, sizeof p);
  return exists(p);
}

static int ckpt_valid(const char *dir, int64_t step) {
  char p[4300], err[4600];
  tr_ckpt(dir, step, p, sizeof p);
  int ok = tr_ckpt_valid(p, err, sizeof err) == 0;
  if (!ok) fprintf(stderr, "\n  %s\n", err);
  return ok;
}

/* (a): a finished run, then a fresh one (resume never) in the same
 * directory: refused with what to do, nothing deleted; auto-resume then
 * continues the newest run. */
static void test_fresh_run_refused(void) {
  const char *dir = tu_scratch_dir("runs_fresh");
  CU_ASSERT_FATAL(tr_train("", dir, QUICK "--set train.max_steps=6 --set checkpoint.keep=5") == 0);
  CU_ASSERT(
      tr_train_status("", dir, QUICK "--set checkpoint.resume=never --set train.max_steps=4") == 2);
  TU_ASSERT_CONTAINS(tr_out, "holds checkpoints of another run");
  TU_ASSERT_CONTAINS(tr_out, "step-00000006.h5");
  TU_ASSERT_CONTAINS(tr_out, "checkpoint.resume=auto");
  TU_ASSERT_CONTAINS(tr_out, "--set run.dir=DIR");
  for (int s = 2; s <= 6; s += 2) CU_ASSERT(ckpt_valid(dir, s));
  CU_ASSERT(tr_train("", dir, QUICK "--set train.max_steps=8 --set checkpoint.keep=5") == 0);
  TU_ASSERT_CONTAINS(tr_out, "resuming from");
  TU_ASSERT_CONTAINS(tr_out, "step-00000006.h5: step 6");
  CU_ASSERT(ckpt_valid(dir, 8));
}

/* (b): keep 1 and a newer corrupt checkpoint (step 10, its checksum wrong):
 * the resumed run keeps its own newest good one, the final it names exists,
 * and the corrupt file (not this run's to count) is left alone. */
static void test_prune_skips_corrupt(void) {
  const char *dir = tu_scratch_dir("runs_corrupt");
  CU_ASSERT_FATAL(tr_train("", dir, QUICK "--set train.max_steps=4 --set checkpoint.keep=5") == 0);
  char four[4300], ten[4300];
  tr_ckpt(dir, 4, four, sizeof four);
  tr_ckpt(dir, 10, ten, sizeof ten);
  CU_ASSERT_FATAL(tr_run("cp %s %s && /usr/bin/python3 -c \"import h5py, sys\n"
                         "f = h5py.File(sys.argv[1], 'r+')\n"
                         "d = f['model'][sorted(f['model'])[0]]\n"
                         "d[(0,) * d.ndim] += 1\" %s",
                         four, ten, ten) == 0);
  CU_ASSERT(tr_train("", dir, QUICK "--set train.max_steps=8 --set checkpoint.keep=1") == 0);
  TU_ASSERT_CONTAINS(tr_out, "checksum mismatch");
  TU_ASSERT_CONTAINS(tr_out, "final checkpoint");
  TU_ASSERT_CONTAINS(tr_out, "step-00000008.h5");
  CU_ASSERT(ckpt_valid(dir, 8));
  CU_ASSERT(!ckpt_exists(dir, 6) && !ckpt_exists(dir, 4) && !ckpt_exists(dir, 2));
  CU_ASSERT(exists(ten));
}

/* (c): an empty step-99999999.h5 is neither a checkpoint to count nor
 * deleted; the run's own checkpoints stay. */
static void test_prune_ignores_junk(void) {
  const char *dir = tu_scratch_dir("runs_junk");
  char junk[4300];
  tr_run("mkdir -p %s/checkpoints", dir);
  tr_ckpt(dir, 99999999, junk, sizeof junk);
  CU_ASSERT_FATAL(tr_run("touch %s", junk) == 0);
  CU_ASSERT(tr_train("", dir, QUICK "--set train.max_steps=6 --set checkpoint.keep=2") == 0);
  CU_ASSERT(ckpt_valid(dir, 6) && ckpt_valid(dir, 4));
  CU_ASSERT(!ckpt_exists(dir, 2));
  CU_ASSERT(exists(junk));
}

/* Reads the "run" value of a metrics line. */
static void line_run(const char *line, char *run, size_t len) {
  const char *p = strstr(line, "\"run\":\"");
  run[0] = '\0';
  if (!p) return;
  p += 7;
  size_t n = strcspn(p, "\"");
  snprintf(run, len, "%.*s", (int)(n < len ? n : len - 1), p);
}

/* Item 2: a run, its resume, eval, and another run sharing run.dir (its own
 * checkpoint.dir): every line names its run, the resume keeps the id, eval
 * takes its checkpoint's, plot-run draws one run; the trainer's val line and
 * eval number the epoch alike. */
static void test_metrics_name_their_run(void) {
  const char *dir = tu_scratch_dir("runs_metrics");
  CU_ASSERT_FATAL(tr_train("", dir, QUICK "--set train.max_steps=14") == 0); /* one epoch */
  CU_ASSERT_FATAL(tr_train("", dir, QUICK "--set train.max_steps=16") == 0);
  char ck[4300];
  tr_ckpt(dir, 14, ck, sizeof ck);
  CU_ASSERT(tr_run("%s %s/configs/debug.yaml --set run.dir=%s --checkpoint %s",
                   tu_bin("alexnet-eval"), ALEXNET_SOURCE_DIR, dir, ck) == 0);
  TU_ASSERT_CONTAINS(tr_out, "(step 14, epoch 1)");
  char extra[4600];
  snprintf(extra, sizeof extra, QUICK "--set train.max_steps=3 --set checkpoint.dir=%s/other", dir);
  CU_ASSERT_FATAL(tr_train("", dir, extra) == 0);

  char path[4300], line[4096], first[64] = "", run[64];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  CU_ASSERT_FATAL(f != NULL);
  int lines = 0, first_run = 0, other_run = 0, unnamed = 0;
  int64_t trainer_val_epoch = -1, eval_epoch = -2;
  while (fgets(line, sizeof line, f)) {
    lines++;
    line_run(line, run, sizeof run);
    if (!run[0]) unnamed++;
    if (!first[0]) snprintf(first, sizeof first, "%s", run);
    if (strcmp(run, first) == 0)
      first_run++;
    else
      other_run++;
    const char *e = strstr(line, "\"epoch\":");
    int val14 = strstr(line, "\"step\":14,") && strstr(line, "\"split\":\"val\"");
    if (val14 && e && strstr(line, "\"checkpoint\":"))
      eval_epoch = atoll(e + 8);
    else if (val14 && e)
      trainer_val_epoch = atoll(e + 8);
  }
  fclose(f);
  CU_ASSERT(unnamed == 0);
  CU_ASSERT(strlen(first) == 16);
  /* 14 + 2 train lines, the val line after epoch 1, the final val of the
   * resumed run, eval's line: one run; the other run's 3 + 1 val. */
  CU_ASSERT_EQUAL(first_run, 14 + 1 + 2 + 1 + 1);
  CU_ASSERT_EQUAL(other_run, 3 + 1);
  CU_ASSERT_EQUAL(trainer_val_epoch, 0);
  CU_ASSERT_EQUAL(eval_epoch, trainer_val_epoch);
  /* plot-run draws the newest run, or the one asked for. */
  if (tr_run("command -v gnuplot") == 0) {
    CU_ASSERT(tr_run("%s/launch/plot-run %s", ALEXNET_SOURCE_DIR, dir) == 0);
    TU_ASSERT_CONTAINS(tr_out, ": 3 train steps, 1 val)");
    CU_ASSERT(tr_run("%s/launch/plot-run %s --run %s", ALEXNET_SOURCE_DIR, dir, first) == 0);
    TU_ASSERT_CONTAINS(tr_out, ": 16 train steps, 2 val)");
  }
  CU_ASSERT(tr_run("%s/launch/plot-run --help", ALEXNET_SOURCE_DIR) == 0);
  TU_ASSERT_CONTAINS(tr_out, "usage: launch/plot-run RUN_DIR [--run ID]");
}

/* Item 11: SIGHUP (a closed terminal) checkpoints and ends like SIGTERM; a
 * second trainer on the same run directory stops and names the first. */
static void test_sighup_and_lock(void) {
  const char *dir = tu_scratch_dir("runs_sighup");
  tr_train_bg("", dir, QUICK "--set train.epochs=200 --set checkpoint.every_steps=0");
  int logged = tr_wait_step(dir, 3, 300);
  CU_ASSERT(logged);
  int pid = tr_find_rank(dir, -1);
  CU_ASSERT_FATAL(pid > 0);
  char second[4600];
  int rc = tr_train_status("", dir, QUICK "--set train.max_steps=2");
  snprintf(second, sizeof second, "%s", tr_out);
  kill(pid, logged ? SIGHUP : SIGKILL);
  int status = tr_wait(dir, 300);
  CU_ASSERT(status == 0);
  TU_ASSERT_CONTAINS(tr_out, "stopped by a signal at step");
  const char *p = strstr(tr_out, "stopped by a signal at step ");
  CU_ASSERT(p && ckpt_valid(dir, atoll(p + strlen("stopped by a signal at step "))));
  CU_ASSERT(rc == 1);
  char want[128];
  snprintf(want, sizeof want, "is in use by another alexnet-train (pid %d on host ", pid);
  TU_ASSERT_CONTAINS(second, want);
}

/* Item 12: the banner names the run directory, and counts epochs in English. */
static void test_banner(void) {
  const char *dir = tu_scratch_dir("runs_banner");
  CU_ASSERT(tr_train("", dir, QUICK "--set train.epochs=1 --set train.max_steps=1") == 0);
  TU_ASSERT_CONTAINS(tr_out, " 1 epoch, ");
  char want[4400];
  snprintf(want, sizeof want, "run directory %s (metrics.jsonl), checkpoints in %s/checkpoints",
           dir, dir);
  TU_ASSERT_CONTAINS(tr_out, want);
}

/* Item 8 and 12: command lines. */
static void expect(int want_rc, const char *want, const char *fmt, const char *arg) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, fmt, arg);
  int rc = tr_run("%s 2>&1", cmd);
  if (rc != want_rc) fprintf(stderr, "\n  %s -> %d:\n%s\n", cmd, rc, tr_out);
  CU_ASSERT(rc == want_rc);
  TU_ASSERT_CONTAINS(tr_out, want);
}

static void test_command_lines(void) {
  const char *dir = tu_scratch_dir("runs_cli");
  char predict[4300], train[4300], convert[4300], img[4400], err[256];
  snprintf(predict, sizeof predict, "%s", tu_bin("alexnet-predict"));
  snprintf(train, sizeof train, "%s", tu_bin("alexnet-train"));
  snprintf(convert, sizeof convert, "%s", tu_bin("alexnet-convert"));
  expect(2, "alexnet-predict: --threads 100000: expected an integer >= 1 and <= 1024",
         "%s --checkpoint x.h5 --threads 100000 y.png", predict);
  expect(2, "alexnet-predict: --top 99999999999: expected an integer >= 1 and <= 1000000",
         "%s --checkpoint x.h5 --top 99999999999 y.png", predict);
  expect(2, "alexnet-train: unknown option --bogus", "%s configs/debug.yaml --bogus", train);
  expect(2, "alexnet-train: unknown option --version", "%s --version", train);
  expect(2, "alexnet-bench: --threads 5000: expected an integer >= 1 and <= 1024",
         "%s --threads 5000", tu_bin("alexnet-bench"));
  expect(2, "--val-out v.h5 is the same file as -o",
         "%s imagefolder . -o v.h5 --val-fraction 0.5 --val-out v.h5", convert);
  /* predict takes a run directory or a checkpoint directory as eval does. */
  CU_ASSERT_FATAL(tr_train("", dir, QUICK "--set train.max_steps=2") == 0);
  snprintf(img, sizeof img, "%s/gray.png", dir);
  uint8_t pixels[40 * 40 * 3];
  for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (uint8_t)(i * 7);
  CU_ASSERT_FATAL(data_png_write(img, 40, 40, 3, pixels, err, sizeof err) == 0);
  char args[9000];
  snprintf(args, sizeof args, "%s --checkpoint %s %s", predict, dir, img);
  expect(0, "%", "%s", args);
  snprintf(args, sizeof args, "%s --checkpoint %s/checkpoints --top 1 %s", predict, dir, img);
  expect(0, "%", "%s", args);
}

int main(void) {
  tu_add_suite("runs",
               (tu_test[]){{"a fresh run refuses another run's directory", test_fresh_run_refused},
                           {"pruning skips a corrupt checkpoint", test_prune_skips_corrupt},
                           {"pruning ignores a junk file", test_prune_ignores_junk},
                           {"metrics lines name their run", test_metrics_name_their_run},
                           {"SIGHUP checkpoints; a run dir is locked", test_sighup_and_lock},
                           {"the banner", test_banner},
                           {"command lines", test_command_lines},
                           {NULL, NULL}});
  return tu_run_all();
}
