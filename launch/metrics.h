/*
 * metrics: what a run reports, on the screen and in <run.dir>/metrics.jsonl,
 * written in one place for alexnet-train and alexnet-eval
 * (docs/config.md, "metrics.jsonl").
 *
 *   train lines  {"step", "epoch", "split":"train", "loss", "top1", "top5", "lr",
 *                 "images_per_sec", "data_ms", "forward_ms", "backward_ms",
 *                 "comm_ms", "update_ms", "run"}
 *   val lines    {"step", "epoch", "split":"val", "loss", "top1", "top5", "samples",
 *                 "images_per_sec", "run"} (eval: + "ten_crop", "ranks", "checkpoint")
 *
 * "run" is the run id of the checkpoints' lineage (trainer.h): a resumed run
 * keeps it, a fresh one in the same run.dir has another.
 *
 * "epoch" in the file is 0-based: the epoch the step (or the evaluated
 * weights' last step) belongs to. The screen shows it 1-based ("epoch 3/3").
 * Only rank 0 writes; on the other ranks every function does nothing.
 */
#ifndef LAUNCH_METRICS_H
#define LAUNCH_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "evaluate.h"

/* One training step's figures (global batch means; times of rank 0). */
typedef struct {
  int64_t step;            /* steps taken, this one included */
  int64_t epoch;           /* 0-based epoch of this step */
  int64_t step_in_epoch;   /* 1-based index of this step inside its epoch */
  double loss, top1, top5; /* top1, top5 fractions in [0, 1] */
  double lr;
  double images_per_sec;
  double eta_s; /* seconds left at the current pace (negative: unknown) */
  double data_ms, forward_ms, backward_ms, comm_ms, update_ms;
} metrics_step;

typedef struct {
  FILE *jsonl; /* NULL: no file (not rank 0, or it could not be opened) */
  int tty;     /* stderr is a terminal: one updating progress line */
  int64_t steps_per_epoch;
  int epochs;
  char run[40]; /* the run id every line ends with ("run":...) */
} metrics_log;

/* Rank 0 opens <run_dir>/metrics.jsonl for appending (on failure: a line on
 * stderr naming the file, and metrics go to the screen only). Every line
 * written ends with "run":run_id: several runs may share the file. */
void metrics_open(metrics_log *m, const char *tool, const char *run_dir, const char *run_id,
                  int64_t steps_per_epoch, int epochs);

/* A step: the progress line on a terminal; when log is set, a "train" line
 * on stdout (not on a terminal) and in the file. */
void metrics_train(metrics_log *m, const metrics_step *s, int log);

/* The trainer's evaluation of the weights after `step`, from 0-based epoch. */
void metrics_val(metrics_log *m, int64_t step, int64_t epoch, const eval_result *r);

/* Writes the shared head of a val line, without "run" and the closing
 * brace, so that callers (alexnet-eval) add their own keys:
 * {"step":..,...,"images_per_sec":..  */
void metrics_val_json(FILE *f, int64_t step, int64_t epoch, const eval_result *r);

/* Ends the progress line on a terminal (before other output). */
void metrics_newline(metrics_log *m);

void metrics_close(metrics_log *m);

/* ,"run":"<run_id>" (the id as a JSON string) */
void metrics_run_json(FILE *f, const char *run_id);

/* "1h02m" / "3m07s", or "?" when seconds is negative or absurd. */
void metrics_format_eta(double seconds, char *out, size_t len);

#endif
