/*
 * A full disk at every point of a write (issue 17, item 3): a checkpoint
 * (ckpt_save) and a dataset file (data_writer, through the synthetic
 * converter) are written onto a private tmpfs of each size from almost
 * nothing to enough, 4 KiB apart, so that the disk fills in every phase: the
 * first tensors or images, the last ones, the attributes, and the final
 * flush inside H5Fclose. Each size runs in its own process (fork, a private
 * mount namespace, the mount, the write, exit), and every one must end by a
 * normal exit: before the fix, a failed H5Fclose left HDF5 a dangling file
 * id that crashed its clean-up at exit (SIGSEGV, exit 139).
 *
 * Checked in each process: the write returns -1 with "No space left on
 * device" and the file's name, leaves no "<path>.tmp", and the file written
 * before it at the same path is untouched (it still loads and equals its
 * copy); or the write succeeds and the result loads.
 *
 * Needs a private mount namespace (root or CAP_SYS_ADMIN): skipped (exit 77)
 * otherwise.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "data.h"
#include "nn.h"
#include "testutil.h"

/* What a case process reports by its exit status. */
enum { DONE_WRITTEN = 10, DONE_FAILED_IN_DATA = 11, DONE_FAILED_AT_END = 12, CHECK_FAILED = 20 };

/* In a new process: a private mount namespace with a tmpfs of kib KiB on dir. */
static int mount_small_disk(const char *dir, int kib) {
  char opts[64];
  snprintf(opts, sizeof opts, "size=%dk", kib);
  if (unshare(CLONE_NEWNS) != 0) return -1;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
  return mount("none", dir, "tmpfs", 0, opts);
}

/* Runs fn(dir, arg) in a child on a kib-KiB disk; returns its exit status,
 * or 128 + the signal that killed it. */
static int run_on_small_disk(const char *dir, int kib, int (*fn)(const char *, int), int arg) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    if (mount_small_disk(dir, kib) != 0) _exit(77);
    exit(fn(dir, arg)); /* exit, not _exit: HDF5's clean-up at exit is what crashed */
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int fail(const char *what, const char *detail) {
  fprintf(stderr, "\n  %s: %s\n", what, detail);
  return CHECK_FAILED;
}

/* ------------------------------------------------------------------------ */
/* Checkpoints                                                               */

/* 3x8x8 -> conv 8 (3x3) -> relu -> linear 40: 20744 parameters, a checkpoint
 * of about 170 KB with momentum; the linear weight (80 KiB) is larger than
 * HDF5's sieve buffer (64 KiB), so that its write goes to the disk at once. */
static void build_small(nn_net *net) {
  nn_layer_spec s[3];
  memset(s, 0, sizeof s);
  s[0] = (nn_layer_spec){.kind = NN_CONV,
                         .section = NN_FEATURES,
                         .out = 8,
                         .kernel_h = 3,
                         .kernel_w = 3,
                         .pad_top = 1,
                         .pad_bottom = 1,
                         .pad_left = 1,
                         .pad_right = 1};
  s[1] = (nn_layer_spec){.kind = NN_RELU, .section = NN_FEATURES};
  s[2] = (nn_layer_spec){.kind = NN_LINEAR, .section = NN_CLASSIFIER, .out = 40};
  char err[512];
  CU_ASSERT_FATAL(nn_net_build(net, s, 3, (nn_shape){3, 8, 8}, err, sizeof err) == 0);
}

static ckpt_meta small_meta(int64_t step) {
  ckpt_meta m;
  memset(&m, 0, sizeof m);
  m.step = step;
  m.epoch = 0;
  m.step_in_epoch = step;
  snprintf(m.arch, sizeof m.arch, "custom");
  m.num_classes = 40;
  for (int c = 0; c < 3; c++) m.mean[c] = 0.5f, m.std[c] = 0.25f;
  return m;
}

/* Step 1's checkpoint (when it fits), then step 2's over a kept copy of
 * step 1 at "latest.h5" semantics: both write the same path. Returns the
 * case's exit status; net and mom stay the caller's. */
static int checkpoint_steps(const char *dir, nn_net *net, float *mom) {
  char path[4200], tmp[4300], err[8192] = "";
  snprintf(path, sizeof path, "%s/ckpt.h5", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  ckpt_meta m = small_meta(1);
  int have_first = ckpt_save(path, net, mom, &m, err, sizeof err) == 0;
  if (!have_first && access(tmp, F_OK) == 0) return fail("left a .tmp (first file)", err);
  for (size_t i = 0; i < net->num_params; i++) mom[i] = 0.5f, net->params[i] += 1.0f;
  m = small_meta(2);
  int rc = ckpt_save(path, net, mom, &m, err, sizeof err);
  ckpt_meta got;
  memset(&got, 0, sizeof got);
  if (rc == 0) {
    if (ckpt_load(path, net, mom, &got, err, sizeof err) != 0) return fail("reload", err);
    int64_t step = got.step;
    ckpt_meta_free(&got);
    return step == 2 ? DONE_WRITTEN : fail("reload", "not step 2");
  }
  if (!strstr(err, "No space left on device") || !strstr(err, "ckpt.h5") ||
      !strstr(err, "the previous checkpoint is kept"))
    return fail("message", err);
  if (access(tmp, F_OK) == 0) return fail("left a .tmp", tmp);
  if (have_first) {
    char why[8192];
    if (ckpt_load(path, net, mom, &got, why, sizeof why) != 0) return fail("step 1 lost", why);
    int64_t step = got.step;
    ckpt_meta_free(&got);
    if (step != 1) return fail("step 1 lost", "another step");
  }
  return strstr(err, "failed at tensor") ? DONE_FAILED_IN_DATA : DONE_FAILED_AT_END;
}

/* Case process: frees what it built on every outcome, so that the sanitizer
 * pass's leak check at exit sees only what HDF5 keeps. */
static int checkpoint_case(const char *dir, int unused) {
  (void)unused;
  nn_net net;
  build_small(&net);
  nn_init_torch_default(&net, 1);
  float *mom = calloc(net.num_params, sizeof(float));
  int st = mom ? checkpoint_steps(dir, &net, mom) : fail("calloc", "out of memory");
  free(mom);
  nn_net_free(&net);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Dataset files                                                             */

/* Case process: a 1-image file at out.h5 (25 KB), then 96 images of 64x64x3
 * (1.2 MB: more than HDF5's chunk cache of 1 MiB, so that images reach the
 * disk before the end) to the same path. */
static int dataset_case(const char *dir, int unused) {
  (void)unused;
  char path[4200], tmp[4300], err[8192] = "";
  snprintf(path, sizeof path, "%s/out.h5", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int have_first = data_write_synthetic(path, 1, 64, 3, 4, 1, err, sizeof err) == 0;
  if (!have_first && access(tmp, F_OK) == 0) return fail("left a .tmp (first file)", err);
  int rc = data_write_synthetic(path, 96, 64, 3, 4, 1, err, sizeof err);
  data_dataset ds;
  char why[8192];
  if (rc == 0) {
    if (data_dataset_open(path, &ds, why, sizeof why) != 0) return fail("reopen", why);
    int n = (int)ds.n;
    data_dataset_close(&ds);
    return n == 96 ? DONE_WRITTEN : fail("reopen", "not 96 images");
  }
  if (!strstr(err, "No space left on device") || !strstr(err, "out.h5.tmp"))
    return fail("message", err);
  if (access(tmp, F_OK) == 0) return fail("left a .tmp", tmp);
  if (have_first) {
    if (data_dataset_open(path, &ds, why, sizeof why) != 0) return fail("first file lost", why);
    int n = (int)ds.n;
    data_dataset_close(&ds);
    if (n != 1) return fail("first file lost", "not 1 image");
  }
  return strstr(err, "cannot write images") ? DONE_FAILED_IN_DATA : DONE_FAILED_AT_END;
}

/* ------------------------------------------------------------------------ */

/* Disks of lo to hi KiB, 4 KiB apart from `fine` on (64 below): each case
 * ends by a normal exit with its outcome; the disk must have filled in the
 * data, after it (the attributes, the flush inside the close), and not at all. */
static void sweep(const char *name, int (*fn)(const char *, int), int lo, int fine, int hi) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", tu_scratch_dir(name));
  int counts[4] = {0, 0, 0, 0}, bad = 0;
  int cases = 0;
  for (int kib = lo; kib <= hi; kib += kib < fine ? 64 : 4, cases++) {
    int st = run_on_small_disk(dir, kib, fn, 0);
    if (st >= DONE_WRITTEN && st <= DONE_FAILED_AT_END) {
      counts[st - DONE_WRITTEN]++;
    } else {
      fprintf(stderr, "\n  %s on a %d KiB disk: %s %d\n", name, kib,
              st > 128 ? "killed by signal" : "exit status", st > 128 ? st - 128 : st);
      bad++;
    }
  }
  fprintf(stderr, " [%d sizes: written %d, full in the data %d, full at the end %d] ", cases,
          counts[0], counts[1], counts[2]);
  CU_ASSERT(bad == 0);
  CU_ASSERT(counts[0] > 0 && counts[1] > 0 && counts[2] > 0);
}

static void test_checkpoint(void) {
  sweep("full_disk_ckpt", checkpoint_case, 4, 150, 420);
}

static void test_dataset(void) {
  sweep("full_disk_data", dataset_case, 4, 1000, 1300);
}

/* Through the binaries: the data set alexnet-train generates for the debug
 * config (rank 0 writes it, under mpiexec -n 2) and alexnet-convert writing
 * the same set, on a disk of 80% of its size (the disk fills at the end of
 * the write, where the old code crashed in HDF5's clean-up: exit 139, rank 0
 * killed by signal 11). Exit 1 with the reason, nothing left behind. */
static void test_binaries(void) {
  char dir[4200], ref[4300], out[1 << 14];
  snprintf(dir, sizeof dir, "%s", tu_scratch_dir("full_disk_bin"));
  snprintf(ref, sizeof ref, "%s/ref.h5", tu_scratch_dir("full_disk_bin_ref"));
  const char *set = "--n 512 --size 40 --classes 4 --channels 3 --seed 1";
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s synthetic %s -o %s", tu_bin("alexnet-convert"), set, ref);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  struct stat sb;
  CU_ASSERT_FATAL(stat(ref, &sb) == 0);
  long kib = (long)(sb.st_size * 8 / 10 / 1024);

  snprintf(cmd, sizeof cmd,
           "unshare -m sh -c 'mount -t tmpfs -o size=%ldk none %s && "
           "%s synthetic %s -o %s/out.h5; echo status=$?; ls %s'",
           kib, dir, tu_bin("alexnet-convert"), set, dir, dir);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  TU_ASSERT_CONTAINS(out, "status=1\n");
  TU_ASSERT_CONTAINS(out, "out.h5.tmp: cannot ");
  TU_ASSERT_CONTAINS(out, "(No space left on device)");
  CU_ASSERT(strstr(out, "out.h5.tmp\n") == NULL && strstr(out, "\nout.h5\n") == NULL);

  snprintf(cmd, sizeof cmd,
           "unshare -m sh -c 'mount -t tmpfs -o size=%ldk none %s && "
           "mpiexec -n 2 --oversubscribe %s %s/configs/debug.yaml --set run.dir=%s/run "
           "--set dist.threads_per_rank=1; echo status=$?; ls %s/run'",
           kib, dir, tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, dir, dir);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  TU_ASSERT_CONTAINS(out, "status=1\n");
  TU_ASSERT_CONTAINS(out, ".h5.tmp: cannot ");
  TU_ASSERT_CONTAINS(out, "(No space left on device)");
  CU_ASSERT(strstr(out, "signal") == NULL);
  CU_ASSERT(strstr(out, ".h5.tmp\n") == NULL);
}

int main(void) {
  /* A private mount namespace, or skip. */
  const char *dir = tu_scratch_dir("full_disk_probe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(mount_small_disk(dir, 64) == 0 ? 0 : 1);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    printf(
        "SKIPPED: no private mount namespace here (needs root or CAP_SYS_ADMIN for "
        "unshare(CLONE_NEWNS) and a tmpfs mount)\n");
    return 77;
  }
  tu_add_suite("full_disk", (tu_test[]){{"checkpoint writes", test_checkpoint},
                                        {"dataset writes", test_dataset},
                                        {"through the binaries", test_binaries},
                                        {NULL, NULL}});
  return tu_run_all();
}
