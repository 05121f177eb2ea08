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
