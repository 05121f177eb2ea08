/*
 * trainer: one data-parallel training run, a step at a time.
 *
 *   trainer_open      data, network, weights (resumed, checkpoint.init or fresh)
 *   trainer_step      one optimizer step: batch, forward, backward + allreduce, update
 *   trainer_checkpoint_due / trainer_checkpoint    the checkpoint schedule
 *   trainer_eval_due  / trainer_evaluate          the evaluation schedule
 *   trainer_close
 *
 * Every rank calls every function in the same order: they are collective, and
 * an error on any rank comes back, with that rank named, on all of them.
 * Rank 0 alone reads and writes checkpoints. The position (step, epoch,
 * step_in_epoch) is the next step's: after the last step of an epoch it is
 * already the next epoch's start.
 */
#ifndef LAUNCH_TRAINER_H
#define LAUNCH_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "evaluate.h"
#include "metrics.h"
#include "nn.h"
#include "setup.h"

/* What one trainer_step did. */
typedef struct {
  metrics_step m; /* the figures of the step, averaged over the global batch */
  int took_step;  /* 0: the loader ran out before the epoch's planned steps (no step taken) */
  int epoch_done; /* the step ended an epoch */
  int stop;       /* a rank caught SIGTERM, SIGINT or SIGHUP: checkpoint and end */
  int log;        /* log.every_steps says this step is logged */
} trainer_stats;

/* Fault injection for tests (docs/reliability.md, "test hooks"): the one
 * place a test binary can reach into a step. Production binaries leave
 * trainer_test_hooks NULL; tests/faults/hooked.c sets it. */
typedef struct {
  /* Called with the rank's batch before the forward pass. */
  void (*on_batch)(int64_t step, data_batch *b);
  /* Called with the rank's loss before it is checked. */
  void (*on_loss)(int64_t step, float *loss);
} trainer_hooks;
extern const trainer_hooks *trainer_test_hooks;

typedef struct trainer_grad_hook {
  nn_net *net;
  dist_reducer *reducer;
  int bad_layer; /* first layer (from the end) with a non-finite gradient, -1 = none */
} trainer_grad_hook;

typedef struct {
  cfg_config *cfg; /* borrowed from the caller */
  setup_data data;
  nn_net net;
  float *momentum; /* (num_params), the SGD velocity */
  dist_reducer *reducer;
  trainer_grad_hook grad_hook;
  nn_sgd_opts sgd;                    /* optimizer.type sgd */
  nn_lars_opts lars;                  /* optimizer.type lars */
  int64_t step, epoch, step_in_epoch; /* the next step's position */
  int64_t steps_per_epoch, stop_at;   /* stop_at: train.max_steps or every epoch's steps */
  int64_t first_step;                 /* where this process started (for the ETA) */
  int64_t epoch_start;                /* step_in_epoch to start the loader's epoch at */
  int epoch_open;                     /* the loader's current epoch is started */
  int ranks, local_batch, threads;
  double start;      /* monotonic seconds at trainer_open */
  char *config_yaml; /* the effective config, stored in checkpoints */
  char ckpt_dir[CFG_PATH_MAX];
  int lock_fd[2];                    /* rank 0: the locks of run.dir and checkpoint dir */
  char run_id[40];                   /* this run's lineage: in checkpoints and metrics */
  char last_ckpt[CFG_PATH_MAX + 64]; /* the newest checkpoint written or resumed, "" = none */
  /* PowerSGD: the reducer's state is worth a checkpoint (a compressed step
   * was taken, or a state restored); before, E is zero and Q its seed's. */
  int psgd_live;
  int resumed_has_psgd;   /* rank 0: the resumed checkpoint's /dist/powersgd, */
  ckpt_psgd resumed_psgd; /* for the reducer's restore after it is created */
} trainer;

/* Everything before the first step, for the validated config c (which must
 * outlive t): checks ranks and paths, makes run.dir and the checkpoint
 * directory, opens the data, builds the network, loads or initializes the
 * weights (rank 0) and broadcasts them. On any error, leaves through
 * setup_exit (status 2 for a config the data contradicts, 1 otherwise). */
void trainer_open(trainer *t, cfg_config *c);

/* 1 while steps remain (train.max_steps, train.epochs). */
int trainer_running(const trainer *t);

/* One step. Returns 0 with *s filled, or -1 with a message naming the
 * rank, the step and the last checkpoint (every rank returns the same). */
int trainer_step(trainer *t, trainer_stats *s, char *err, size_t errlen);

/* The checkpoint schedule after step s: checkpoint.every_steps and
 * every_epochs, never at the run's end or on a stop (those checkpoint once,
 * after the loop). */
int trainer_checkpoint_due(const trainer *t, const trainer_stats *s);

/* Rank 0 writes the checkpoint of the current position and prunes old ones;
 * every rank learns whether it worked. Returns 0, or -1 with the message. */
int trainer_checkpoint(trainer *t, char *err, size_t errlen);

/* The evaluation schedule after step s: eval.every_epochs at an epoch's end,
 * before the run's last step. */
int trainer_eval_due(const trainer *t, const trainer_stats *s);

/* Evaluates the validation loader (if any: returns 0 with r->samples 0 when
 * there is none). *epoch is the 0-based epoch the evaluated weights come from
 * (the last step's). Returns 0, or -1 with a message naming the step and the
 * last checkpoint. */
int trainer_evaluate(trainer *t, eval_result *r, int64_t *epoch, char *err, size_t errlen);

/* Catches SIGTERM, SIGINT and SIGHUP: the step that sees one reports stop. */
void trainer_catch_signals(void);

void trainer_close(trainer *t);

/* Rank 0: one line on the reducer (algorithm, compression) and the floats a
 * step puts into allreduces; nothing on one rank without PowerSGD. */
void trainer_print_reducer(const trainer *t);

#endif
