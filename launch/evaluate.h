/*
 * evaluate: loss, top-1 and top-5 of a network over a whole evaluation
 * loader, each sample counted once whatever the rank count (the loader shards
 * it; the sums are reduced over the ranks by dist).
 */
#ifndef LAUNCH_EVALUATE_H
#define LAUNCH_EVALUATE_H

#include <stdint.h>

#include "data.h"
#include "nn.h"

typedef struct {
  double loss;           /* mean cross-entropy */
  double top1, top5;     /* fractions in [0, 1] */
  int64_t samples;       /* counted over all ranks */
  double seconds;        /* wall time */
  double images_per_sec; /* samples (not views) per second over all ranks */
} eval_result;

/* Per-class counts (optional): hits[c] and totals[c] for class c, summed over
 * the ranks; confusion (optional) is (classes, classes), row = true label. */
typedef struct {
  int64_t *hits, *totals;
  int64_t *confusion;
} eval_detail;

/* Evaluates epoch `epoch` of the loader (every sample once). With ten-crop
 * batches the softmax outputs of the views are averaged. net must be
 * allocated for count * views samples of the loader's batches. Puts the net
 * in evaluation mode and restores its training flag. Returns 0, or -1 with
 * "rank R: " and the loader's message of the lowest failing rank R in err
 * (collective: every rank returns the same). */
int eval_run(nn_net *net, data_loader *ld, int64_t epoch, eval_result *r, eval_detail *d, char *err,
             size_t errlen);

/* The 0-based rank of `label` among `classes` scores (probabilities): how
 * many other classes score at least as high. A tie counts against the label
 * and a NaN score anywhere makes it a miss (rank = classes), so that a
 * network whose outputs are all equal, underflowed to 0 or not finite is
 * never credited with a top-1 or top-5 hit. Top-k hit: rank < k. */
int eval_label_rank(const double *scores, int classes, int label);

#endif
