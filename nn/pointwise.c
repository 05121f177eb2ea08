/*
 * nn/pointwise.c: element-wise layers: ReLU, tanh and inverted dropout. Plain
 * loops over contiguous memory, split across threads when the count is large
 * enough to pay for it.
 */
#include <math.h>

#include "layers.h"
#include "nn.h"

/* Below this many elements a loop stays on one thread. */
#define PAR_MIN 65536

void nn_relu_forward(size_t count, const float *x, float *y) {
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
  for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void nn_relu_backward(size_t count, const float *y, const float *dy, float *dx) {
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
  for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void nn_tanh_forward(size_t count, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (count >= PAR_MIN / 8)
  for (size_t i = 0; i < count; i++) y[i] = tanhf(x[i]);
}

void nn_tanh_backward(size_t count, const float *y, const float *dy, float *dx) {
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
  for (size_t i = 0; i < count; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

/* out[i] = in[i] / (1 - p) where element i is kept (nn_uniform(seed, first + i)
 * >= p), else 0: the same mask for forward and backward, whatever the thread
 * count, and whatever slice of a global batch this process holds. */
static void dropout_apply(size_t count, float p, uint64_t seed, uint64_t first, const float *in,
                          float *out) {
  const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
#pragma omp parallel for schedule(static) if (count >= PAR_MIN / 8)
  for (size_t i = 0; i < count; i++)
    out[i] = nn_uniform(seed, first + i) >= p ? in[i] * scale : 0.0f;
}

void nn_dropout_forward(size_t count, float p, uint64_t seed, const float *x, float *y) {
  dropout_apply(count, p, seed, 0, x, y);
}

void nn_dropout_backward(size_t count, float p, uint64_t seed, const float *dy, float *dx) {
  dropout_apply(count, p, seed, 0, dy, dx);
}

void nn_dropout_forward_at(size_t count, float p, uint64_t seed, uint64_t first, const float *x,
                           float *y) {
  dropout_apply(count, p, seed, first, x, y);
}

void nn_dropout_backward_at(size_t count, float p, uint64_t seed, uint64_t first, const float *dy,
                            float *dx) {
  dropout_apply(count, p, seed, first, dy, dx);
}

/* ------------------------------------------------------------------------ */
/* The relu, tanh, dropout and flatten layers (their rows in nn/kinds.c)     */

/* A ReLU that the conv or linear layer before applies (nn_net_alloc's plan:
 * that layer's fused_relu, this one in place) has nothing left to do. */
static int relu_fused(const nn_net *net, const nn_layer *l) {
  return l > net->layers && l[-1].fused_relu && l->in_place;
}

float *nn_relu_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  if (!relu_fused(net, l)) nn_relu_forward(nn_shape_size(l->in) * (size_t)n, x, y);
  return y;
}

/* Fused: dx stays dy, and the conv/linear below masks it itself. */
void nn_relu_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx) {
  (void)x;
  if (dx && !relu_fused(net, l))
    nn_relu_backward(nn_shape_size(l->in) * (size_t)n, l->output, dy, dx);
}

float *nn_tanh_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  (void)net;
  nn_tanh_forward(nn_shape_size(l->in) * (size_t)n, x, y);
  return y;
}

void nn_tanh_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx) {
  (void)net, (void)x;
  if (dx) nn_tanh_backward(nn_shape_size(l->in) * (size_t)n, l->output, dy, dx);
}

/* Each dropout layer draws from its own stream of the step's seed; element
 * indices start at this process's first sample (nn_dropout_forward_at). */
static uint64_t dropout_seed(const nn_net *net, const nn_layer *l) {
  return nn_hash64(net->dropout_seed, 0xD50u + (uint64_t)(l - net->layers));
}

/* The identity in evaluation or with p 0: the output is the input, no copy. */
float *nn_dropout_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  if (!net->training || l->spec.dropout_p <= 0) return (float *)x;
  nn_dropout_forward_at(nn_shape_size(l->in) * (size_t)n, l->spec.dropout_p, dropout_seed(net, l),
                        (uint64_t)net->sample_offset * nn_shape_size(l->in), x, y);
  return y;
}

/* The identity in evaluation: dx is dy already. */
void nn_dropout_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx) {
  (void)x;
  if (dx && net->training && l->spec.dropout_p > 0)
    nn_dropout_backward_at(nn_shape_size(l->in) * (size_t)n, l->spec.dropout_p,
                           dropout_seed(net, l),
                           (uint64_t)net->sample_offset * nn_shape_size(l->in), dy, dx);
}

/* (N, C, H, W) read as (N, C*H*W): the same memory. */
float *nn_flatten_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  (void)net, (void)l, (void)n, (void)y;
  return (float *)x;
}

/* dx is dy (the row says in_place). */
void nn_flatten_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx) {
  (void)net, (void)l, (void)n, (void)x, (void)dy, (void)dx;
}
