/*
 * imagefolder and symbolic links (issue 17, item 9): links that lead back up
 * the tree (one link to "."; two links to ".", which made 2^32 paths; a link
 * to the class folder's parent's class) are walked once per real directory:
 * the converter ends, bounded in time, with every image exactly once; a link
 * to a directory outside the class folder is still followed (torchvision's
 * ImageFolder follows links).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data.h"
#include "testutil.h"

static void png(const char *dir, const char *name, uint8_t v) {
  char path[4400], err[512];
  uint8_t px[8 * 8 * 3];
  memset(px, v, sizeof px);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  CU_ASSERT_FATAL(data_png_write(path, 8, 8, 3, px, err, sizeof err) == 0);
}

static void link_to(const char *target, const char *dir, const char *name) {
  char path[4400];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  CU_ASSERT_FATAL(symlink(target, path) == 0);
}

/* Converts root in a child limited to 30 s; returns the images written, or
 * -1 (failed), -2 (killed: it ran on). */
static long long convert(const char *root, const char *out) {
  int fds[2];
  CU_ASSERT_FATAL(pipe(fds) == 0);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(30);
    data_convert_stats st = {0};
    data_convert_opts o = {.size = 8, .threads = 1, .stats = &st};
    char err[2048];
    long long n = data_convert_imagefolder(root, out, &o, err, sizeof err) == 0 ? st.written : -1;
    if (n < 0) fprintf(stderr, "\n  %s\n", err);
    if (write(fds[1], &n, sizeof n) != (ssize_t)sizeof n) _exit(3);
    _exit(0);
  }
  close(fds[1]);
  long long n = -2;
  if (read(fds[0], &n, sizeof n) != (ssize_t)sizeof n) n = -2;
  close(fds[0]);
  int status;
  waitpid(pid, &status, 0);
  return n;
}

static void test_cycles(void) {
  char root[4200], a[4300], b[4300], bsub[4400], out[4300];
  snprintf(root, sizeof root, "%s", tu_scratch_dir("data_symlinks"));
  snprintf(a, sizeof a, "%s/a", root);
  snprintf(b, sizeof b, "%s/b", root);
  snprintf(bsub, sizeof bsub, "%s/b/sub", root);
  mkdir(a, 0777);
  mkdir(b, 0777);
  mkdir(bsub, 0777);
  png(a, "0.png", 10);
  png(b, "1.png", 20);
  png(bsub, "2.png", 30);
  snprintf(out, sizeof out, "%s/out.h5", tu_scratch_dir("data_symlinks_out"));

  link_to(".", a, "loop1"); /* one link to ".": 33 copies of 0.png before */
  long long n = convert(root, out);
  fprintf(stderr, " [one link: %lld images] ", n);
  CU_ASSERT(n == 3);

  link_to(".", a, "loop2");  /* two: 2^32 paths, for ever before */
  link_to("..", bsub, "up"); /* b/sub/up -> b */
  n = convert(root, out);
  fprintf(stderr, " [two links and one up: %lld images] ", n);
  CU_ASSERT(n == 3);

  /* A link out of the class folder to a directory of its own is followed. */
  char extra[4300];
  snprintf(extra, sizeof extra, "%s", tu_scratch_dir("data_symlinks_extra"));
  png(extra, "3.png", 40);
  link_to(extra, a, "more");
  n = convert(root, out);
  CU_ASSERT(n == 4);
  data_dataset ds;
  char err[2048];
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  int a_count = 0;
  for (int64_t i = 0; i < ds.n; i++) a_count += ds.labels[i] == 0;
  CU_ASSERT(a_count == 2); /* 0.png and more/3.png */
  data_dataset_close(&ds);
}

int main(void) {
  tu_add_suite("data_symlinks", (tu_test[]){{"link cycles", test_cycles}, {NULL, NULL}});
  return tu_run_all();
}
