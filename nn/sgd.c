/*
 * nn/sgd.c: SGD with momentum and weight decay in PyTorch's form, one pass
 * over the flat parameter, gradient and momentum buffers; and LARS, the same
 * momentum update with a per-tensor learning rate from the trust ratio.
 */
#include <math.h>
#include <omp.h>

#include "nn.h"

/* One contiguous run of parameters with the same decay. */
/* Threads for an update of count floats (about 4 operations each, memory
 * bound): a small network's update is not worth waking a second thread. */
static int update_threads(long count) {
  return nn_threads_for(4.0 * NN_MEMORY_BOUND_WEIGHT * (double)count, omp_get_max_threads());
}

static void sgd_run(float *w, const float *g, float *v, long count, float lr, float m, float wd,
                    int nesterov) {
  const int threads = update_threads(count);
  if (nesterov) {
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (long i = 0; i < count; i++) {
      float d = g[i] + wd * w[i];
      float vi = m * v[i] + d;
      v[i] = vi;
      w[i] -= lr * (d + m * vi);
    }
  } else {
#pragma omp parallel for simd schedule(static) num_threads(threads)
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

/* ------------------------------------------------------------------------ */
/* LARS                                                                      */

/* Euclidean norm in double over count floats; a fixed order per thread count
 * (static schedule), the same on every rank. */
static double norm2(const float *x, long count) {
  double sum = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum) num_threads(update_threads(count))
  for (long i = 0; i < count; i++) sum += (double)x[i] * (double)x[i];
  return sqrt(sum);
}

/* v = m v + scale * (g + wd w); w -= v. */
static void lars_run(float *w, const float *g, float *v, long count, float scale, float m,
                     float wd) {
#pragma omp parallel for simd schedule(static) num_threads(update_threads(count))
  for (long i = 0; i < count; i++) {
    float vi = m * v[i] + scale * (g[i] + wd * w[i]);
    v[i] = vi;
    w[i] -= vi;
  }
}

void nn_lars_step(nn_net *net, float *momentum, const nn_lars_opts *o) {
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (!l->weight_count) continue;
    size_t wo = l->weight_offset, bo = l->bias_offset;
    float *w = net->params + wo;
    const float *g = net->grads + wo;
    if (nn_kind_info(l->spec.kind)->lars_plain) {
      lars_run(w, g, momentum + wo, (long)l->weight_count, o->lr, o->momentum, 0.0f);
    } else {
      double wn = norm2(w, (long)l->weight_count), gn = norm2(g, (long)l->weight_count);
      double trust = wn > 0 && gn > 0 ? (double)o->eta * wn /
                                            (gn + (double)o->weight_decay * wn + (double)o->eps)
                                      : 1.0;
      lars_run(w, g, momentum + wo, (long)l->weight_count, (float)((double)o->lr * trust),
               o->momentum, o->weight_decay);
    }
    if (l->bias_count)
      lars_run(net->params + bo, net->grads + bo, momentum + bo, (long)l->bias_count, o->lr,
               o->momentum, 0.0f);
  }
}
