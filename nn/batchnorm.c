/*
 * nn/batchnorm.c: batch normalization with PyTorch's semantics (Ioffe and
 * Szegedy 2015; torch.nn.BatchNorm1d/2d): in training, each channel is
 * normalized by the mean and the BIASED variance of the batch, and the
 * running estimates move by momentum towards the mean and the UNBIASED
 * variance; in evaluation the running estimates are used. The per-channel
 * sums are accumulated in double and split into a "sums" step and a "finish"
 * step so that a caller can add the sums of other ranks in between
 * (synchronized batch norm) without this file knowing how.
 *
 * Shapes: x, y, dy, dx are (n, C, S), S = H*W for BatchNorm2d and 1 for
 * BatchNorm1d over (n, C). Every loop runs over channels in parallel, each
 * channel's sums in one fixed order: results do not depend on the threads.
 */
#include <math.h>
#include <stdlib.h>

#include "layers.h"

void nn_bn_sums(int n, int c, int s, const float *x, double *sums) {
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ch++) {
    double sum = 0, sumsq = 0;
    for (int i = 0; i < n; i++) {
      const float *p = x + ((size_t)i * c + ch) * (size_t)s;
      double ps = 0, pq = 0;
#pragma omp simd reduction(+ : ps, pq)
      for (int j = 0; j < s; j++) {
        double v = p[j];
        ps += v;
        pq += v * v;
      }
      sum += ps;
      sumsq += pq;
    }
    sums[ch] = sum;
    sums[c + ch] = sumsq;
  }
}

void nn_bn_finish_stats(int c, const double *sums, double count, float eps, float momentum,
                        float *mean, float *invstd, float *running_mean, float *running_var) {
  for (int ch = 0; ch < c; ch++) {
    double m = sums[ch] / count;
    double var = sums[c + ch] / count - m * m; /* biased: what normalizes */
    if (var < 0) var = 0;                      /* rounding of a constant channel */
    mean[ch] = (float)m;
    invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
    if (running_mean) {
      /* The running variance is unbiased (PyTorch); one value has none. */
      double unbiased = count > 1 ? var * count / (count - 1) : var;
      running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * m);
      running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
  }
}

void nn_bn_normalize(int n, int c, int s, const float *x, const float *mean, const float *invstd,
                     const float *gamma, const float *beta, float *y) {
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ch++) {
    float scale = gamma[ch] * invstd[ch];
    float shift = beta[ch] - mean[ch] * scale;
    for (int i = 0; i < n; i++) {
      size_t base = ((size_t)i * c + ch) * (size_t)s;
#pragma omp simd
      for (int j = 0; j < s; j++) y[base + j] = x[base + j] * scale + shift;
    }
  }
}

void nn_bn_eval_stats(int c, const float *running_mean, const float *running_var, float eps,
                      float *mean, float *invstd) {
  for (int ch = 0; ch < c; ch++) {
    mean[ch] = running_mean[ch];
    invstd[ch] = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));
  }
}

void nn_bn_backward_sums(int n, int c, int s, const float *x, const float *dy, const float *mean,
                         const float *invstd, double *sums) {
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ch++) {
    double sdy = 0, sdyx = 0;
    double mu = mean[ch];
    for (int i = 0; i < n; i++) {
      size_t base = ((size_t)i * c + ch) * (size_t)s;
      double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
      for (int j = 0; j < s; j++) {
        double g = dy[base + j];
        a += g;
        b += g * ((double)x[base + j] - mu);
      }
      sdy += a;
      sdyx += b;
    }
    sums[ch] = sdy;
    sums[c + ch] = sdyx * invstd[ch]; /* sum dy * xhat */
  }
}

void nn_bn_backward_params(int c, const double *sums, float *dgamma, float *dbeta) {
  for (int ch = 0; ch < c; ch++) {
    dbeta[ch] = (float)sums[ch];
    dgamma[ch] = (float)sums[c + ch];
  }
}

void nn_bn_backward_dx(int n, int c, int s, const float *x, const float *dy, const float *mean,
                       const float *invstd, const float *gamma, const double *sums, double count,
                       float *dx) {
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ch++) {
    /* dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) */
    float k = gamma[ch] * invstd[ch];
    float mdy = (float)(sums[ch] / count);
    float mdyx = (float)(sums[c + ch] / count);
    float mu = mean[ch], is = invstd[ch];
    for (int i = 0; i < n; i++) {
      size_t base = ((size_t)i * c + ch) * (size_t)s;
#pragma omp simd
      for (int j = 0; j < s; j++) {
        float xhat = (x[base + j] - mu) * is;
        dx[base + j] = k * (dy[base + j] - mdy - xhat * mdyx);
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* The batchnorm layer (its row in nn/kinds.c)                               */

/* Its saved state (l->state, in net->buffers): running_mean (C), running_var
 * (C), num_batches_tracked (1, PyTorch's count of training forwards, as a
 * float: exact up to 2^24). Its kind_data: */
typedef struct {
  float *mean, *invstd; /* (C) each: the statistics of the last forward (batch or
                           running), read by the backward */
  double *sums;         /* (2C + 1): per-channel sums, then the count of values they
                           are over; what net->bn_reduce adds over ranks */
} bn_data;

int nn_batchnorm_state_dims(const nn_layer *l, int t, int *dims) {
  dims[0] = l->in.c;
  return t < 2 ? 1 : 0; /* running_mean, running_var; num_batches_tracked a scalar */
}

/* PyTorch's start: running variance 1 (the mean and the count stay 0). */
int nn_batchnorm_layer_setup(nn_net *net, nn_layer *l) {
  (void)net;
  size_t c = (size_t)l->in.c;
  bn_data *d = calloc(1, sizeof *d + (2 * c + 1) * sizeof(double) + 2 * c * sizeof(float));
  if (!d) return -1;
  d->sums = (double *)(d + 1);
  d->mean = (float *)(d->sums + 2 * c + 1);
  d->invstd = d->mean + c;
  l->kind_data = d;
  for (size_t k = 0; k < c; k++) l->state[c + k] = 1.0f;
  return 0;
}

/* PyTorch's start, whatever the initialization: scale 1, shift 0. */
void nn_batchnorm_layer_init(nn_layer *l) {
  for (size_t j = 0; j < l->weight_count; j++) l->weight[j] = 1.0f;
  for (size_t j = 0; j < l->bias_count; j++) l->bias[j] = 0.0f;
}

/* Batch statistics in training (over every rank's batch when net->bn_reduce
 * is set), the running ones in evaluation. */
float *nn_batchnorm_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  int c = l->in.c, s = l->in.h * l->in.w;
  bn_data *d = l->kind_data;
  float *running_mean = l->state, *running_var = l->state + c, *num_batches = l->state + 2 * c;
  if (net->training) {
    double *sums = d->sums;
    nn_bn_sums(n, c, s, x, sums);
    sums[2 * c] = (double)n * s;
    if (net->bn_reduce) net->bn_reduce(net->bn_reduce_ctx, sums, 2 * c + 1);
    nn_bn_finish_stats(c, sums, sums[2 * c], NN_BN_EPS, NN_BN_MOMENTUM, d->mean, d->invstd,
                       running_mean, running_var);
    *num_batches += 1.0f;
  } else {
    nn_bn_eval_stats(c, running_mean, running_var, NN_BN_EPS, d->mean, d->invstd);
  }
  nn_bn_normalize(n, c, s, x, d->mean, d->invstd, l->weight, l->bias, y);
  return y;
}

/* dgamma, dbeta from this process's samples (the gradient allreduce sums
 * them); dx from the sums over the samples the statistics came from. In
 * evaluation mode the statistics are constants: dx = gamma * invstd * dy. */
void nn_batchnorm_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                                 float *dx) {
  int c = l->in.c, s = l->in.h * l->in.w;
  bn_data *d = l->kind_data;
  double *sums = d->sums;
  nn_bn_backward_sums(n, c, s, x, dy, d->mean, d->invstd, sums);
  nn_bn_backward_params(c, sums, l->dweight, l->dbias);
  if (!dx) return;
  if (!net->training) {
    for (int k = 0; k < 2 * c; k++) sums[k] = 0;
    nn_bn_backward_dx(n, c, s, x, dy, d->mean, d->invstd, l->weight, sums, 1.0, dx);
    return;
  }
  sums[2 * c] = (double)n * s;
  if (net->bn_reduce) net->bn_reduce(net->bn_reduce_ctx, sums, 2 * c + 1);
  nn_bn_backward_dx(n, c, s, x, dy, d->mean, d->invstd, l->weight, sums, sums[2 * c], dx);
}
