/*
 * alexnet-train: data-parallel training from a YAML experiment.
 *
 *   mpirun -n 8 alexnet-train configs/imagenet.yaml     (one rank per process)
 *   alexnet-train configs/debug.yaml                     (one process)
 *   alexnet-train CONFIG [--set key.path=value]... [--print-config] [--summary]
 *
 * Each rank reads its shard of the global batch, runs forward and backward,
 * and hands each layer's finished gradients to dist's bucketed reducer, which
 * averages them over the ranks while backward goes on; then every rank applies
 * the same SGD update to its copy of the flat parameter buffer. Rank 0 writes
 * metrics and checkpoints. Errors on any rank end the whole job with a message
 * naming the rank; SIGTERM/SIGINT end it cleanly with a checkpoint.
 *
 * Exit status: 0 done (or stopped by a signal after a checkpoint), 1 a failure
 * while running, 2 a bad command line or config (nothing started).
 */
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "dist.h"
#include "metrics.h"
#include "nn.h"
#include "setup.h"
#include "tool.h"
#include "trainer.h"

static const char usage[] =
    "usage: alexnet-train CONFIG [--set key.path=value]... [--print-config] [--summary]\n"
    "  CONFIG          a YAML experiment (see docs/config.md), e.g. configs/debug.yaml\n"
    "  --set K=V       override any key, e.g. --set optimizer.lr=0.1 (repeatable)\n"
    "  --print-config  print the effective config and exit\n"
    "  --summary       print the model summary (shapes, parameters, FLOPs) and exit\n";

/* --print-config and --summary: describe the run instead of training. */
static void describe(cfg_config *c, int print_config) {
  char err[8192];
  if (print_config) {
    char *yaml = cfg_to_yaml(c);
    if (dist_rank() == 0 && yaml) fputs(yaml, stdout);
    free(yaml);
    setup_exit(0, NULL);
  }
  nn_net net;
  if (cfg_build_net(c, &net, err, sizeof err) != 0) setup_exit(2, "%s", err);
  if (dist_rank() == 0) nn_summary(&net, stdout);
  nn_net_free(&net);
  setup_exit(0, NULL);
}

/* What runs where: the first lines a user sees. */
static void banner(const trainer *t) {
  const cfg_config *c = t->cfg;
  if (dist_rank() != 0) return;
  printf(
      "alexnet-train: %s, %d rank%s x %d thread%s, global batch %d (%d per rank), "
      "%lld steps per epoch, %d epoch%s, %zu parameters, %s products (kernel %s)\n",
      c->run.name, t->ranks, t->ranks > 1 ? "s" : "", t->threads, t->threads > 1 ? "s" : "",
      c->train.batch_size, t->local_batch, (long long)t->steps_per_epoch, c->train.epochs,
      c->train.epochs == 1 ? "" : "s", t->net.num_params, t->net.kernel ? "bf16" : "fp32",
      nn_bf16_kernel_name(t->net.kernel));
  printf("run directory %s (metrics.jsonl), checkpoints in %s, run %s\n", c->run.dir, t->ckpt_dir,
         t->run_id);
  trainer_print_reducer(t);
  fflush(stdout);
}

int main(int argc, char **argv) {
  dist_init(&argc, &argv);
  tool_list args = {0}, sets = {0};
  int print_config = 0, summary = 0;
  const tool_opt opts[] = {TOOL_OPT_LIST("--set", &sets),
                           TOOL_OPT_FLAG("--print-config", &print_config),
                           TOOL_OPT_FLAG("--summary", &summary), TOOL_OPT_END};
  const tool_spec spec = {"alexnet-train", usage, opts, &args};
  tool_parse(&spec, argc, argv);
  if (args.count != 1) tool_usage(&spec, args.count ? "more than one CONFIG" : "no CONFIG given");
  cfg_config c;
  setup_load_config(args.items[0], sets.items, sets.count, &c);
  tool_list_free(&args);
  tool_list_free(&sets);
  if (print_config || summary) describe(&c, print_config);

  trainer t;
  trainer_open(&t, &c);
  metrics_log log;
  metrics_open(&log, "alexnet-train", c.run.dir, t.run_id, t.steps_per_epoch, c.train.epochs);
  banner(&t);
  trainer_catch_signals();

  /* The loop: a step, its metrics, then what the schedule asks for. */
  char err[8192];
  trainer_stats s = {0};
  eval_result r;
  int64_t epoch;
  while (trainer_running(&t)) {
    if (trainer_step(&t, &s, err, sizeof err) != 0) setup_exit(1, "%s", err);
    if (s.took_step) metrics_train(&log, &s.m, s.log);
    if (trainer_checkpoint_due(&t, &s) && trainer_checkpoint(&t, err, sizeof err) != 0)
      setup_exit(1, "%s", err);
    if (trainer_eval_due(&t, &s)) {
      metrics_newline(&log);
      if (trainer_evaluate(&t, &r, &epoch, err, sizeof err) != 0) setup_exit(1, "%s", err);
      metrics_val(&log, t.step, epoch, &r);
    }
    if (s.stop) break;
  }
  metrics_newline(&log);

  /* The end, or a stop by a signal: one checkpoint; at the end an evaluation. */
  if (trainer_checkpoint(&t, err, sizeof err) != 0) setup_exit(1, "%s", err);
  if (s.stop) {
    if (dist_rank() == 0)
      printf(
          "stopped by a signal at step %lld; checkpoint %s written; resume with the same "
          "command\n",
          (long long)t.step, t.last_ckpt);
  } else {
    if (t.data.val) {
      if (trainer_evaluate(&t, &r, &epoch, err, sizeof err) != 0) setup_exit(1, "%s", err);
      metrics_val(&log, t.step, epoch, &r);
    }
    if (dist_rank() == 0)
      printf("done: %lld steps; final checkpoint %s\n", (long long)t.step, t.last_ckpt);
  }
  fflush(stdout);
  metrics_close(&log);
  trainer_close(&t);
  cfg_free(&c);
  dist_finalize();
  return 0;
}
