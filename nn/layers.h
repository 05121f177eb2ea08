/*
 * nn/layers.h: the layer kernels, private to nn/ (and its tests). Each layer is
 * a pair of plain functions, *_forward and *_backward, over contiguous NCHW
 * float buffers. They never allocate: scratch memory comes from the caller's
 * workspace, sized by the matching *_workspace_floats function.
 *
 * Conventions: n = batch; shapes per the letters in nn.h. Backward functions
 * OVERWRITE dx, dweight and dbias (no accumulation); dx may be NULL when the
 * input gradient is not needed (first layer).
 */
#ifndef NN_LAYERS_H
#define NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

/* ---- bf16 matrix product (nn/bf16.c) ------------------------------------- */

/* C (M, N) = beta C + op(A) op(B), row-major, beta 0 or 1; op(A) (M, K) is A
 * (M, lda) or, when trans_a, the transpose of A (K, lda); op(B) likewise. A and
 * B are rounded to bf16, products accumulate in float32. Runs on every thread
 * outside a parallel region, on the calling thread inside one (as OpenBLAS's
 * OpenMP build does). Needs nn_bf16_reserve for the thread count first;
 * kern is NN_BF16_AVX512 or NN_BF16_AMX (only when the CPU has it, and for
 * amx after nn_bf16_select granted the tile state) or NN_BF16_EMULATED. */
void nn_bgemm(nn_bf16_kernel kern, int trans_a, int trans_b, int M, int N, int K, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* Reserves the packing buffers of nn_bgemm for `threads` threads (about 1.2 MiB
 * each, kept for the process). Returns 0, or -1 when out of memory. */
int nn_bf16_reserve(int threads);
/* f rounded to the nearest bf16 (ties to even), as a float. */
float nn_bf16_round(float f);
/* For tests: 0 makes the emulated kernel use its plain C code even where the
 * CPU has AVX2 and FMA (1, the default there); returns whether the AVX2 code
 * was in use. Both give the same bits (nn/bf16.c). */
int nn_bf16_emulated_simd(int on);

/* ---- convolution --------------------------------------------------------- */

typedef struct {
  int in_c, in_h, in_w;    /* C, H, W */
  int out_c, out_h, out_w; /* O, OH, OW */
  int kernel_h, kernel_w;
  int stride_h, stride_w;
  int pad_top, pad_left; /* bottom/right padding only shapes out_h/out_w */
  int groups;            /* G >= 1, divides C and O */
  nn_bf16_kernel kernel; /* NN_BF16_FP32 (0): OpenBLAS sgemm; else every GEMM
                            (im2col and Winograd) is nn_bgemm with this kernel */
} nn_conv_geom;

/* Floats of workspace the conv needs for a batch of n, at most cap_floats
 * unless one image needs more (the kernel splits the batch between the current
 * OpenMP threads, each folding a cache-sized chunk of images into its GEMMs, so
 * size it after setting the thread count; fewer threads fit if cap is small). */
size_t nn_conv_workspace_floats(const nn_conv_geom *g, int n, size_t cap_floats);

/* x: (n, C, H, W); w: (O, C/G, KH, KW); b: (O) or NULL; y: (n, O, OH, OW).
 * relu != 0 applies max(0, .) in the same pass as the bias. */
void nn_conv_forward(const nn_conv_geom *g, int n, const float *x, const float *w, const float *b,
                     int relu, float *y, float *ws, size_t ws_floats);

/* dy: (n, O, OH, OW), modified in place when relu != 0 (masked by y > 0, y
 * being this layer's fused output). dx: (n, C, H, W) or NULL; dw like w; db
 * (O) or NULL. */
void nn_conv_backward(const nn_conv_geom *g, int n, const float *x, const float *w, const float *y,
                      int relu, float *dy, float *dx, float *dw, float *db, float *ws,
                      size_t ws_floats);

/* Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (nn/winograd.c). The conv
 * functions above dispatch to it by themselves (the forward, and dx in the
 * backward) when nn_winograd_applies; these are public for tests and benches. */

/* 1 when g is a geometry the Winograd kernels compute: 3x3, stride 1, any
 * padding and groups; 0 otherwise. */
int nn_winograd_supports(const nn_conv_geom *g);
/* 1 when nn_conv_forward/backward use Winograd for g: supported, at least 16
 * channels per group in and out, tiles wasting little of the plane, and not
 * turned off by the environment (ALEXNET_CONV_ALGO=im2col, read once). */
int nn_winograd_applies(const nn_conv_geom *g);
/* Floats of workspace the Winograd forward and backward need for n images
 * (the larger of the two), at most cap_floats unless the transformed weights
 * and one tile column per worker need more. Same threading rule as the conv's. */
size_t nn_winograd_workspace_floats(const nn_conv_geom *g, int n, size_t cap_floats);
/* The contract of nn_conv_forward, for g with nn_winograd_supports. */
void nn_winograd_forward(const nn_conv_geom *g, int n, const float *x, const float *w,
                         const float *b, int relu, float *y, float *ws, size_t ws_floats);
/* dx (n, C, H, W), overwritten, from dy (n, O, OH, OW) (already masked by the
 * ReLU) and w (O, C/G, 3, 3), for g with nn_winograd_supports. */
void nn_winograd_backward_data(const nn_conv_geom *g, int n, const float *w, const float *dy,
                               float *dx, float *ws, size_t ws_floats);

/* ---- fully connected ----------------------------------------------------- */

/* x: (n, in); w: (out, in); b: (out) or NULL; y: (n, out). kernel as in
 * nn_conv_geom: NN_BF16_FP32 for sgemm, else nn_bgemm's. */
void nn_linear_forward(nn_bf16_kernel kernel, int n, int in, int out, const float *x,
                       const float *w, const float *b, int relu, float *y);
/* dy masked in place by y > 0 when relu; dx (n, in) or NULL; dw (out, in); db (out) or NULL. */
void nn_linear_backward(nn_bf16_kernel kernel, int n, int in, int out, const float *x,
                        const float *w, const float *y, int relu, float *dy, float *dx, float *dw,
                        float *db);

/* ---- pointwise ----------------------------------------------------------- */

/* y may equal x (in place). count = n * per-sample size. */
void nn_relu_forward(size_t count, const float *x, float *y);
/* dx = dy * (y > 0); dx may equal dy. */
void nn_relu_backward(size_t count, const float *y, const float *dy, float *dx);
void nn_tanh_forward(size_t count, const float *x, float *y);
/* dx = dy * (1 - y^2); dx may equal dy. */
void nn_tanh_backward(size_t count, const float *y, const float *dy, float *dx);

/* Inverted dropout: y = x * keep / (1 - p), keep drawn from (seed, element
 * index) so it is reproducible and needs no stored mask. y may equal x. */
void nn_dropout_forward(size_t count, float p, uint64_t seed, const float *x, float *y);
void nn_dropout_backward(size_t count, float p, uint64_t seed, const float *dy, float *dx);
/* The same with element indices starting at `first`: a rank holding samples
 * [s, s+n) of a global batch passes first = s * (per-sample size), so every
 * sample gets the mask it would get on any other rank count. */
void nn_dropout_forward_at(size_t count, float p, uint64_t seed, uint64_t first, const float *x,
                           float *y);
void nn_dropout_backward_at(size_t count, float p, uint64_t seed, uint64_t first, const float *dy,
                            float *dx);

/* ---- local response normalization ---------------------------------------- */

/* PyTorch's LocalResponseNorm: y = x / (k + alpha/size * sum_{window} x^2)^beta,
 * the window being channels [c - size/2, c + (size-1)/2] clipped to [0, C).
 * x, y: (n, C, H, W). Nothing is saved for backward. */
void nn_lrn_forward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                    const float *x, float *y);
/* Floats of workspace nn_lrn_backward needs with `threads` threads. */
size_t nn_lrn_workspace_floats(int c, int h, int w, int threads);
/* From x and dy alone (the scale is recomputed); dx may equal dy (in place).
 * ws: at least nn_lrn_workspace_floats(c, h, w, 1) floats; as many threads
 * run as ws holds. */
void nn_lrn_backward(int n, int c, int h, int w, int size, float alpha, float beta, float k,
                     const float *x, const float *dy, float *dx, float *ws, size_t ws_floats);

/* ---- pooling ------------------------------------------------------------- */

typedef struct {
  int c, in_h, in_w, out_h, out_w;
  int kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;
} nn_pool_geom;

/* Max pooling; padded cells are -inf. x: (n, C, H, W); y: (n, C, OH, OW).
 * argmax (n, C, OH, OW) or NULL: where each window's first maximum is
 * (PyTorch's tie rule), as kh * KW + kw within the window, for backward;
 * NN_POOL_NO_ARGMAX for a window with no cell inside the input. */
enum { NN_POOL_NO_ARGMAX = 0xFFFF, NN_POOL_MAX_WINDOW = 0xFFFF };
void nn_maxpool_forward(const nn_pool_geom *g, int n, const float *x, float *y, uint16_t *argmax);
/* Routes dy to the saved argmax of each window; dx is overwritten. */
void nn_maxpool_backward(const nn_pool_geom *g, int n, const uint16_t *argmax, const float *dy,
                         float *dx);

/* Adaptive average pooling with PyTorch's bins: start = floor(i*H/OH),
 * end = ceil((i+1)*H/OH). */
void nn_avgpool_forward(int n, int c, int h, int w, int out_h, int out_w, const float *x, float *y);
void nn_avgpool_backward(int n, int c, int h, int w, int out_h, int out_w, const float *dy,
                         float *dx);

/* ---- batch normalization (nn/batchnorm.c) ------------------------------- */

/* PyTorch's BatchNorm1d/2d over x (n, C, S), S = H*W (1 for 1d). Training is
 * three steps so that the sums can be added over ranks in between: */
/* sums[c] = sum of channel c's values, sums[C + c] = sum of their squares. */
void nn_bn_sums(int n, int c, int s, const float *x, double *sums);
/* mean and invstd = 1 / sqrt(biased var + eps) (C floats each) from sums over
 * count values; moves running_mean/var by momentum towards the mean and the
 * unbiased variance (count / (count - 1) times the biased; count 1: the
 * biased) unless running_mean is NULL. */
void nn_bn_finish_stats(int c, const double *sums, double count, float eps, float momentum,
                        float *mean, float *invstd, float *running_mean, float *running_var);
/* Evaluation: mean and invstd from the running estimates. */
void nn_bn_eval_stats(int c, const float *running_mean, const float *running_var, float eps,
                      float *mean, float *invstd);
/* y = gamma * (x - mean) * invstd + beta; y may equal x. */
void nn_bn_normalize(int n, int c, int s, const float *x, const float *mean, const float *invstd,
                     const float *gamma, const float *beta, float *y);
/* Backward, again in steps: sums[c] = sum dy, sums[C + c] = sum dy * xhat. */
void nn_bn_backward_sums(int n, int c, int s, const float *x, const float *dy, const float *mean,
                         const float *invstd, double *sums);
/* dbeta = sums[0..C), dgamma = sums[C..2C) (overwritten). */
void nn_bn_backward_params(int c, const double *sums, float *dgamma, float *dbeta);
/* dx = gamma * invstd * (dy - sums_dy / count - xhat * sums_dyxhat / count),
 * sums and count over the samples the statistics came from; dx may equal dy. */
void nn_bn_backward_dx(int n, int c, int s, const float *x, const float *dy, const float *mean,
                       const float *invstd, const float *gamma, const double *sums, double count,
                       float *dx);

/* ---- the kinds' layer functions ------------------------------------------ */

/* What the rows of the kind table (nn/kinds.c) point at: each kind's forward
 * and backward over a layer of a network (contracts at nn_kind_desc in nn.h),
 * calling the kernels above with the layer's shapes and parameters; each is
 * in its kind's kernel file. */
float *nn_conv_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_conv_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx);
size_t nn_conv_layer_workspace(const nn_net *net, const nn_layer *l, int n, size_t cap);
float *nn_linear_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_linear_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                              float *dx);
float *nn_relu_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_relu_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx);
float *nn_tanh_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_tanh_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx);
float *nn_dropout_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_dropout_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx);
float *nn_flatten_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_flatten_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx);
float *nn_lrn_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_lrn_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy, float *dx);
size_t nn_lrn_layer_workspace(const nn_net *net, const nn_layer *l, int n, size_t cap);
float *nn_maxpool_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_maxpool_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx);
float *nn_avgpool_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_avgpool_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                               float *dx);
float *nn_batchnorm_layer_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y);
void nn_batchnorm_layer_backward(nn_net *net, nn_layer *l, int n, const float *x, float *dy,
                                 float *dx);
void nn_batchnorm_layer_init(nn_layer *l);
int nn_batchnorm_layer_setup(nn_net *net, nn_layer *l);
int nn_batchnorm_state_dims(const nn_layer *l, int t, int *dims);

/* ---- loss ---------------------------------------------------------------- */

/* Softmax cross-entropy, mean over n. logits (n, classes); dlogits may be NULL.
 * Returns the mean loss; top-1 and top-5 hits into *c1 and *c5 when not NULL. */
float nn_softmax_xent(int n, int classes, const float *logits, const int *labels, float *dlogits,
                      int *c1, int *c5);

#endif
