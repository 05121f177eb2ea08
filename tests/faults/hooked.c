/*
 * alexnet-train-hooked: alexnet-train (launch/alexnet_train.c, linked in
 * unchanged) with the fault injections the tests ask for through the
 * environment (docs/reliability.md, "test hooks"). The production binary
 * reads none of these variables: the hooks live here, set through
 * trainer_test_hooks and ckpt_test_on_tensor before main runs.
 *
 *   ALEXNET_TEST_NAN_AT_STEP=S, ALEXNET_TEST_NAN_RANK=R   at global step S, rank R
 *       sets the first pixel of its batch to NaN (ALEXNET_TEST_NAN_IN=loss: its loss)
 *   ALEXNET_TEST_SLEEP_AT_STEP=S   at step S, rank ALEXNET_TEST_NAN_RANK sleeps an hour
 *   ALEXNET_TEST_CKPT_KILL_AFTER=K  the checkpoint writer SIGKILLs its process once
 *       K + 1 tensors are written
 */
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "dist.h"
#include "trainer.h"

static int64_t nan_step = -1, sleep_step = -1;
static int nan_rank = 0, nan_loss = 0;
static long kill_after = -1;

static int64_t env_int(const char *name, int64_t fallback) {
  const char *v = getenv(name);
  return v && *v ? atoll(v) : fallback;
}

static void poison_batch(int64_t step, data_batch *b) {
  if (step == nan_step && dist_rank() == nan_rank && !nan_loss) b->images[0] = NAN;
  if (step == sleep_step && dist_rank() == nan_rank) sleep(3600);
}

static void poison_loss(int64_t step, float *loss) {
  if (step == nan_step && dist_rank() == nan_rank && nan_loss) *loss = NAN;
}

static void kill_in_checkpoint(int64_t file, long written) {
  if (kill_after < 0 || written <= kill_after) return;
  H5Fflush((hid_t)file, H5F_SCOPE_GLOBAL);
  kill(getpid(), SIGKILL);
}

static const trainer_hooks hooks = {.on_batch = poison_batch, .on_loss = poison_loss};

__attribute__((constructor)) static void install_hooks(void) {
  nan_step = env_int("ALEXNET_TEST_NAN_AT_STEP", -1);
  nan_rank = (int)env_int("ALEXNET_TEST_NAN_RANK", 0);
  const char *in = getenv("ALEXNET_TEST_NAN_IN");
  nan_loss = in && strcmp(in, "loss") == 0;
  sleep_step = env_int("ALEXNET_TEST_SLEEP_AT_STEP", -1);
  kill_after = (long)env_int("ALEXNET_TEST_CKPT_KILL_AFTER", -1);
  trainer_test_hooks = &hooks;
  ckpt_test_on_tensor = kill_in_checkpoint;
}
