/*
 * The user's own command, exercised as written: mpirun -n 8 alexnet-train
 * configs/imagenet.yaml (the paper's network, 227 crops, global batch 128 on 8
 * ranks), pointed by --set at a small synthetic 256x256, 1000-class file, for
 * 2 steps. Slow (8 ranks on 2 cores, 61M parameters each): labelled "slow"
 * and left out of the sanitizer pass.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char out[1 << 16];

static void test_imagenet_8_ranks(void) {
  const char *dir = tu_scratch_dir("train_imagenet");
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "%s synthetic --n 256 --size 256 --classes 1000 --seed 1 -o %s/train.h5",
           tu_bin("alexnet-convert"), dir);
  CU_ASSERT_FATAL(tu_run_cmd(cmd, out, sizeof out) == 0);
  snprintf(cmd, sizeof cmd,
           "mpirun -n 8 --oversubscribe %s %s/configs/imagenet.yaml --set data.train=%s/train.h5 "
           "--set data.val= --set run.dir=%s --set checkpoint.dir=%s/checkpoints "
           "--set train.max_steps=2 --set log.every_steps=1",
           tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, dir, dir, dir);
  int rc = tu_run_cmd(cmd, out, sizeof out);
  if (rc != 0) fprintf(stderr, "\n$ %s\n%s\n", cmd, out);
  CU_ASSERT(rc == 0);
  TU_ASSERT_CONTAINS(out, "8 ranks x 1 thread, global batch 128 (16 per rank)");
  TU_ASSERT_CONTAINS(out, "60965224 parameters");
  TU_ASSERT_CONTAINS(out, "done: 2 steps");
  char ck[4200];
  snprintf(ck, sizeof ck, "%s/checkpoints/step-00000002.h5", dir);
  CU_ASSERT(access(ck, R_OK) == 0);
}

int main(void) {
  tu_add_suite("imagenet.yaml on 8 ranks",
               (tu_test[]){{"2 steps", test_imagenet_8_ranks}, {NULL, NULL}});
  return tu_run_all();
}
