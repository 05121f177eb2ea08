/*
 * nn/linear.c: fully connected layer, y = x W^T + b (PyTorch's nn.Linear),
 * with an optional fused ReLU. Each product is one OpenBLAS sgemm.
 */
#include <cblas.h>
#include <string.h>

#include "layers.h"

void nn_linear_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                       int relu, float *y) {
  /* y starts as the bias rows so the GEMM adds onto it (beta = 1). */
  if (b) {
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * (size_t)out, b, sizeof(float) * (size_t)out);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
              b ? 1.0f : 0.0f, y, out);
  if (relu) {
    const size_t count = (size_t)n * (size_t)out;
    for (size_t i = 0; i < count; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
  }
}

void nn_linear_backward(int n, int in, int out, const float *x, const float *w, const float *y,
                        int relu, float *dy, float *dx, float *dw, float *db) {
  if (relu) {
    const size_t count = (size_t)n * (size_t)out;
    for (size_t i = 0; i < count; i++) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
  }
  if (db) {
    for (int o = 0; o < out; o++) db[o] = 0.0f;
    for (int i = 0; i < n; i++) {
      const float *row = dy + (size_t)i * (size_t)out;
      for (int o = 0; o < out; o++) db[o] += row[o];
    }
  }
  /* dW (out, in) = dy^T (out, n) x (n, in); dx (n, in) = dy (n, out) W (out, in). */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw,
              in);
  if (dx) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in, 0.0f,
                dx, in);
  }
}
