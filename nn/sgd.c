/*
 * nn/sgd.c: SGD with momentum and weight decay in PyTorch's form, one pass
 * over the flat parameter, gradient and momentum buffers.
 */
#include "nn.h"

/* One contiguous run of parameters with the same decay. */
static void sgd_run(float *w, const float *g, float *v, long count, float lr, float m, float wd,
                    int nesterov) {
  if (nesterov) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < count; i++) {
      float d = g[i] + wd * w[i];
      float vi = m * v[i] + d;
      v[i] = vi;
      w[i] -= lr * (d + m * vi);
    }
  } else {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < count; i++) {
      float vi = m * v[i] + (g[i] + wd * w[i]);
      v[i] = vi;
      w[i] -= lr * vi;
    }
  }
}

void nn_sgd_step(nn_net *net, float *momentum, const nn_sgd_opts *o) {
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (!l->weight_count) continue;
    size_t wo = l->weight_offset, bo = l->bias_offset;
    sgd_run(net->params + wo, net->grads + wo, momentum + wo, (long)l->weight_count, o->lr,
            o->momentum, o->weight_decay, o->nesterov);
    if (l->bias_count)
      sgd_run(net->params + bo, net->grads + bo, momentum + bo, (long)l->bias_count, o->lr,
              o->momentum, o->decay_bias ? o->weight_decay : 0.0f, o->nesterov);
  }
}
