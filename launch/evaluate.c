/*
 * launch/evaluate.c: evaluation over all ranks; ten-crop averages the softmax
 * outputs of the ten views, as the paper does.
 */
#include "evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "util.h"

/* Averages the softmax of `views` consecutive rows of logits into probs
 * (classes), in double for a stable sum. */
static void mean_softmax(const float *logits, int views, int classes, double *probs) {
  double *one = util_xmalloc((size_t)classes * sizeof *one);
  for (int k = 0; k < classes; k++) probs[k] = 0;
  for (int v = 0; v < views; v++) {
    nn_softmax(classes, logits + (size_t)v * classes, one);
    for (int k = 0; k < classes; k++) probs[k] += one[k] / views;
  }
  free(one);
}

int eval_label_rank(const double *scores, int classes, int label) {
  const double p = scores[label];
  if (isnan(p)) return classes;
  int rank = 0;
  for (int k = 0; k < classes; k++) {
    if (k == label) continue;
    if (isnan(scores[k])) return classes;
    if (scores[k] >= p) rank++;
  }
  return rank;
}

int eval_run(nn_net *net, data_loader *ld, int64_t epoch, eval_result *r, eval_detail *d, char *err,
             size_t errlen) {
  int classes = net->num_classes;
  int was_training = net->training, was_no_grad = net->no_grad;
  net->training = 0;
  net->no_grad = 1;
  double *probs = malloc((size_t)classes * sizeof(double));
  double t0 = util_now();
  /* sums: loss, top-1 hits, top-5 hits, samples */
  double sums[4] = {0, 0, 0, 0};
  int failed = 0;
  char msg[1024] = "";
  if (!probs || data_loader_start_epoch(ld, epoch, 0, msg, sizeof msg) != 0) {
    if (!probs) snprintf(msg, sizeof msg, "out of memory");
    failed = 1;
  }
  data_batch b;
  while (!failed) {
    int got = data_loader_next(ld, &b, msg, sizeof msg);
    if (got < 0) failed = 1;
    if (got <= 0) break;
    if (b.count == 0) continue;
    const float *logits = nn_forward(net, b.images, b.count * b.views);
    for (int i = 0; i < b.count; i++) {
      mean_softmax(logits + (size_t)i * b.views * classes, b.views, classes, probs);
      int label = b.labels[i];
      double p = probs[label];
      int rank = eval_label_rank(probs, classes, label);
      int predicted = 0;
      for (int k = 1; k < classes; k++)
        if (probs[k] > probs[predicted]) predicted = k;
      sums[0] += -log(p > 1e-30 ? p : 1e-30);
      sums[1] += rank < 1;
      sums[2] += rank < 5;
      sums[3] += 1;
      if (d && d->hits) d->hits[label] += rank < 1;
      if (d && d->totals) d->totals[label] += 1;
      if (d && d->confusion) d->confusion[(size_t)label * classes + predicted] += 1;
    }
  }
  free(probs);
  net->training = was_training;
  net->no_grad = was_no_grad;
  int who = dist_agree(failed, msg, sizeof msg);
  if (who != 0) {
    snprintf(err, errlen, "rank %d: %s", who - 1, msg);
    return -1;
  }
  dist_allreduce_sum_doubles(sums, 4);
  if (d && d->hits) dist_allreduce_sum_int64(d->hits, classes);
  if (d && d->totals) dist_allreduce_sum_int64(d->totals, classes);
  if (d && d->confusion) dist_allreduce_sum_int64(d->confusion, classes * classes);
  memset(r, 0, sizeof *r);
  r->samples = (int64_t)sums[3];
  if (sums[3] > 0) {
    r->loss = sums[0] / sums[3];
    r->top1 = sums[1] / sums[3];
    r->top5 = sums[2] / sums[3];
  }
  r->seconds = util_now() - t0;
  r->images_per_sec = r->seconds > 0 ? sums[3] / r->seconds : 0;
  return 0;
}
