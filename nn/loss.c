/*
 * nn/loss.c: softmax cross-entropy over the classes, mean over the batch, with
 * its gradient and the top-1/top-5 hit counts.
 */
#include <math.h>

#include "layers.h"
#include "nn.h"

/* The softmax's denominator with the maximum taken out: sum_j exp(z_j - max)
 * in double, max into *zmax. The one copy behind the loss (training) and
 * nn_softmax (evaluation, prediction). */
static double shifted_exp_sum(int classes, const float *z, float *zmax) {
  float m = z[0];
  for (int j = 1; j < classes; j++) m = z[j] > m ? z[j] : m;
  double sum = 0.0;
  for (int j = 0; j < classes; j++) sum += exp((double)z[j] - (double)m);
  *zmax = m;
  return sum;
}

float nn_softmax_xent(int n, int classes, const float *logits, const int *labels, float *dlogits,
                      int *c1, int *c5) {
  double total = 0.0;
  int hits1 = 0, hits5 = 0;
  if (c1) *c1 = 0;
  if (c5) *c5 = 0;
  if (n <= 0) return 0.0f;
  const double inv_n = 1.0 / n;
  for (int i = 0; i < n; i++) {
    const float *z = logits + (size_t)i * (size_t)classes;
    const int label = labels[i];
    float zmax;
    const double sum = shifted_exp_sum(classes, z, &zmax);
    /* loss_i = log(sum_j exp(z_j)) - z_label, with the max taken out. */
    total += log(sum) - ((double)z[label] - (double)zmax);
    /* rank = classes strictly above the label: a tie counts as a hit. */
    int rank = 0;
    for (int j = 0; j < classes; j++) rank += z[j] > z[label];
    hits1 += rank < 1;
    hits5 += rank < 5;
    if (dlogits) {
      float *d = dlogits + (size_t)i * (size_t)classes;
      const double inv_sum = 1.0 / sum;
      for (int j = 0; j < classes; j++)
        d[j] = (float)((exp((double)z[j] - (double)zmax) * inv_sum - (j == label)) * inv_n);
    }
  }
  if (c1) *c1 = hits1;
  if (c5) *c5 = hits5;
  return (float)(total / n);
}

void nn_softmax(int classes, const float *logits, double *probs) {
  float zmax;
  const double sum = shifted_exp_sum(classes, logits, &zmax);
  for (int k = 0; k < classes; k++) probs[k] = exp((double)logits[k] - (double)zmax) / sum;
}
