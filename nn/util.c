/*
 * nn/util.c: counter-based random numbers, thread settings and the model
 * summary.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>

#include "nn.h"

/* OpenBLAS's own thread control; declared in its cblas.h, repeated here so
 * that a reference CBLAS header would still compile (and fail to link, loudly). */
void openblas_set_num_threads(int num_threads);

/* Box-Muller on two 32-bit halves of one hash; u1 is kept away from 0. */
float nn_normal(uint64_t seed, uint64_t index) {
  uint64_t h = nn_hash64(seed, index);
  double u1 = ((double)(h >> 32) + 0.5) * 0x1p-32;
  double u2 = (double)(h & 0xffffffffu) * 0x1p-32;
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void nn_set_threads(int threads) {
  if (threads < 1) threads = 1;
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
}

int nn_threads_for(double flops, int pool) {
  double t = flops / NN_MIN_FLOPS_PER_THREAD;
  if (pool < 1 || !(t >= 2)) return 1; /* also NaN */
  return t >= pool ? pool : (int)t;
}

int nn_layer_threads(const nn_layer *l, int n, int pool) {
  double per_sample = l->flops;
  if (!nn_kind_info(l->spec.kind)->compute_bound) {
    double elements = (double)nn_shape_size(l->in);
    if (per_sample < elements) per_sample = elements; /* dropout, flatten: no flops */
    per_sample *= NN_MEMORY_BOUND_WEIGHT;
  }
  return nn_threads_for(per_sample * (n > 0 ? n : 1), pool);
}

double nn_total_flops(const nn_net *net) {
  double total = 0;
  for (int i = 0; i < net->num_layers; i++) total += net->layers[i].flops;
  return total;
}

size_t nn_activation_bytes(const nn_net *net) {
  size_t floats = net->grad_a_floats + net->grad_b_floats + net->workspace_floats;
  size_t bytes = 0;
  if (!net->batch) return 0;
  floats += (size_t)net->batch * (size_t)net->num_classes; /* dlogits */
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    size_t out = nn_shape_size(l->out) * (size_t)net->batch;
    if (l->buffer) floats += out;
    if (l->argmax) bytes += out * sizeof(uint16_t);
  }
  return bytes + floats * sizeof(float);
}

void nn_summary(const nn_net *net, void *out) {
  FILE *f = out;
  fprintf(f, "%-16s %-8s %-18s %14s %12s\n", "layer", "kind", "output (C,H,W)", "parameters",
          "MFLOPs");
  fprintf(f, "%-16s %-8s %4d x %4d x %4d\n", "input", "", net->input.c, net->input.h, net->input.w);
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    char shape[32];
    snprintf(shape, sizeof shape, "%4d x %4d x %4d", l->out.c, l->out.h, l->out.w);
    fprintf(f, "%-16s %-8s %-18s %14zu %12.1f\n", l->name, nn_kind_name(l->spec.kind), shape,
            l->weight_count + l->bias_count, l->flops / 1e6);
  }
  double flops = nn_total_flops(net);
  fprintf(f, "total: %zu parameters (%.1f MiB float32), %.3f GFLOPs forward per sample\n",
          net->num_params, (double)net->num_params * 4 / (1024.0 * 1024.0), flops / 1e9);
}
