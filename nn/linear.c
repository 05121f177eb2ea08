/*
 * nn/linear.c: fully connected layer, y = x W^T + b (PyTorch's nn.Linear),
 * with an optional fused ReLU. Each product is one OpenBLAS sgemm, or in bf16
 * one nn_bgemm (nn/bf16.c) of the same shape.
 */
#include <cblas.h>
#include <string.h>

#include "layers.h"

void nn_linear_forward(nn_bf16_kernel kernel, int n, int in, int out, const float *x,
                       const float *w, const float *b, int relu, float *y) {
  /* y starts as the bias rows so the GEMM adds onto it (beta = 1). */
  if (b) {
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * (size_t)out, b, sizeof(float) * (size_t)out);
  }
  if (kernel)
    nn_bgemm(kernel, 0, 1, n, out, in, x, in, w, in, b ? 1.0f : 0.0f, y, out);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
                b ? 1.0f : 0.0f, y, out);
  if (relu) {
    const size_t count = (size_t)n * (size_t)out;
    for (size_t i = 0; i < count; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
  }
}

void nn_linear_backward(nn_bf16_kernel kernel, int n, int in, int out, const float *x,
                        const float *w, const float *y, int relu, float *dy, float *dx, float *dw,
                        float *db) {
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
  if (kernel) {
    nn_bgemm(kernel, 1, 0, out, in, n, dy, out, x, in, 0.0f, dw, in);
    if (dx) nn_bgemm(kernel, 0, 0, n, in, out, dy, out, w, in, 0.0f, dx, in);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw,
              in);
  if (dx) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in, 0.0f,
                dx, in);
  }
}

/* ------------------------------------------------------------------------ */
/* The linear layer (its row in nn/kinds.c)                                  */

float *nn_linear_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  nn_linear_forward(net->kernel, n, (int)nn_shape_size(l->in), l->out.c, x, l->weight, l->bias,
                    l->fused_relu, y);
  return y;
}

void nn_linear_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                              float *dx) {
  nn_linear_backward(net->kernel, n, (int)nn_shape_size(l->in), l->out.c, x, l->weight, l->output,
                     l->fused_relu, dy, dx, l->dweight, l->dbias);
}
