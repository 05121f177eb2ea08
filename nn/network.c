/*
 * nn/network.c: a network is a list of layers over one flat parameter buffer
 * and one flat gradient buffer. Building checks every shape and carves the
 * buffers in PyTorch's state_dict order; allocating sizes activations and
 * workspace for a batch once, so forward and backward never allocate.
 */
#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers.h"
#include "nn.h"
#include "util.h"

/* 64-byte aligned, zeroed; NULL on failure or overflow. */
static float *alloc_floats(size_t count) {
  if (count == 0) count = 1;
  if (count > SIZE_MAX / sizeof(float) - 64) return NULL;
  size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
  float *p = aligned_alloc(64, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

static size_t max_size(size_t a, size_t b) {
  return a > b ? a : b;
}

static const char *section_prefix(nn_section s) {
  switch (s) {
    case NN_FEATURES:
      return "features";
    case NN_AVGPOOL_SECTION:
      return "avgpool";
    case NN_CLASSIFIER:
      return "classifier";
  }
  return "?";
}

/* ------------------------------------------------------------------------ */
/* Building                                                                  */

int nn_net_build(nn_net *net, const nn_layer_spec *specs, int count, nn_shape input, char *err,
                 size_t errlen) {
  memset(net, 0, sizeof *net);
  if (count <= 0) {
    util_errf(err, errlen, "the network has no layers");
    return -1;
  }
  if (input.c <= 0 || input.h <= 0 || input.w <= 0 ||
      (int64_t)input.c * input.h * input.w > INT_MAX) {
    util_errf(err, errlen, "input shape %dx%dx%d must be positive and at most %d values", input.c,
              input.h, input.w, INT_MAX);
    return -1;
  }
  nn_layer *layers = calloc((size_t)count, sizeof *layers);
  if (!layers) {
    util_errf(err, errlen, "out of memory for %d layers", count);
    return -1;
  }
  int index_in_section[3] = {0, 0, 0};
  nn_shape shape = input;
  size_t offset = 0, buffer_offset = 0;
  nn_section prev_section = NN_FEATURES;
  for (int i = 0; i < count; i++) {
    nn_layer *l = &layers[i];
    l->spec = specs[i];
    nn_section sec = specs[i].section;
    if ((int)sec < 0 || (int)sec > 2 || sec < prev_section) {
      util_errf(err, errlen,
                "layer %d: sections must come in the order features, avgpool, "
                "classifier",
                i);
      free(layers);
      return -1;
    }
    prev_section = sec;
    if (sec == NN_AVGPOOL_SECTION) {
      if (index_in_section[sec]++ > 0 || specs[i].kind != NN_AVGPOOL) {
        util_errf(err, errlen, "layer %d: the avgpool section holds exactly one avgpool layer", i);
        free(layers);
        return -1;
      }
      snprintf(l->name, sizeof l->name, "avgpool");
    } else {
      snprintf(l->name, sizeof l->name, "%s.%d", section_prefix(sec), index_in_section[sec]++);
    }
    nn_layer_complete(&l->spec);
    l->in = shape;
    char why[256];
    const nn_kind_desc *kind = nn_kind_info(l->spec.kind);
    const char *problem = nn_layer_problem(&l->spec, why, sizeof why);
    if (!problem)
      problem = nn_layer_follows(i > 0 ? &layers[i - 1].spec : NULL, &l->spec, why, sizeof why);
    if (problem) {
      util_errf(err, errlen, "%s (%s): %s; input shape %dx%dx%d", l->name,
                nn_kind_name(l->spec.kind), problem, shape.c, shape.h, shape.w);
      free(layers);
      return -1;
    }
    if (kind->shape(l, why, sizeof why) != 0) {
      util_errf(err, errlen, "%s; input shape %dx%dx%d", why, shape.c, shape.h, shape.w);
      free(layers);
      return -1;
    }
    l->weight_offset = offset;
    offset += l->weight_count;
    l->bias_offset = offset;
    offset += l->bias_count;
    l->buffer_offset = buffer_offset;
    buffer_offset += l->buffer_count;
    shape = l->out;
  }
  if (shape.h != 1 || shape.w != 1) {
    util_errf(err, errlen, "the last layer %s must give a flat output (classes), not %dx%dx%d",
              layers[count - 1].name, shape.c, shape.h, shape.w);
    free(layers);
    return -1;
  }
  size_t max_channels = 0;
  for (int i = 0; i < count; i++)
    if (layers[i].buffer_count) max_channels = max_size(max_channels, (size_t)layers[i].in.c);
  net->params = alloc_floats(offset);
  net->grads = alloc_floats(offset);
  net->buffers = alloc_floats(buffer_offset);
  net->bn_sums = calloc(2 * max_channels + 1, sizeof(double));
  net->forward_seconds = calloc((size_t)count, sizeof(double));
  net->backward_seconds = calloc((size_t)count, sizeof(double));
  net->layers = layers;
  net->num_layers = count;
  int oom = !net->params || !net->grads || !net->buffers || !net->bn_sums ||
            !net->forward_seconds || !net->backward_seconds;
  for (int i = 0; i < count && !oom; i++) {
    nn_layer *l = &layers[i];
    if (!l->buffer_count) continue;
    l->bn_mean = alloc_floats(2 * (size_t)l->in.c);
    if (!l->bn_mean)
      oom = 1;
    else
      l->bn_invstd = l->bn_mean + l->in.c;
  }
  if (oom) {
    util_errf(err, errlen, "out of memory for %zu parameters", offset);
    nn_net_free(net);
    return -1;
  }
  for (int i = 0; i < count; i++) {
    nn_layer *l = &layers[i];
    if (!l->buffer_count) continue;
    l->running_mean = net->buffers + l->buffer_offset;
    l->running_var = l->running_mean + l->in.c;
    l->num_batches = l->running_var + l->in.c;
    for (int c = 0; c < l->in.c; c++) l->running_var[c] = 1.0f; /* PyTorch's start */
  }
  for (int i = 0; i < count; i++) {
    nn_layer *l = &layers[i];
    if (!l->weight_count) continue;
    l->weight = net->params + l->weight_offset;
    l->dweight = net->grads + l->weight_offset;
    if (l->bias_count) {
      l->bias = net->params + l->bias_offset;
      l->dbias = net->grads + l->bias_offset;
    }
  }
  net->input = input;
  net->num_classes = shape.c;
  net->num_params = offset;
  net->num_buffers = buffer_offset;
  net->training = 1;
  return 0;
}

static void free_activations(nn_net *net) {
  for (int i = 0; i < net->num_layers; i++) {
    free(net->layers[i].buffer);
    free(net->layers[i].argmax);
    net->layers[i].buffer = net->layers[i].output = NULL;
    net->layers[i].argmax = NULL;
  }
  free(net->grad_a);
  free(net->grad_b);
  free(net->workspace);
  free(net->dlogits);
  net->grad_a = net->grad_b = net->workspace = net->dlogits = NULL;
  net->grad_a_floats = net->grad_b_floats = 0;
  net->workspace_floats = 0;
  net->batch = 0;
}

void nn_net_free(nn_net *net) {
  if (!net) return;
  if (net->layers) free_activations(net);
  for (int i = 0; net->layers && i < net->num_layers; i++) free(net->layers[i].bn_mean);
  free(net->layers);
  free(net->buffers);
  free(net->bn_sums);
  free(net->params);
  free(net->grads);
  free(net->forward_seconds);
  free(net->backward_seconds);
  memset(net, 0, sizeof *net);
}

/* ------------------------------------------------------------------------ */
/* Planning and allocation                                                   */

static nn_conv_geom conv_geom(const nn_net *net, const nn_layer *l) {
  nn_conv_geom g = {
      .in_c = l->in.c,
      .in_h = l->in.h,
      .in_w = l->in.w,
      .out_c = l->out.c,
      .out_h = l->out.h,
      .out_w = l->out.w,
      .kernel_h = l->spec.kernel_h,
      .kernel_w = l->spec.kernel_w,
      .stride_h = l->spec.stride_h,
      .stride_w = l->spec.stride_w,
      .pad_top = l->spec.pad_top,
      .pad_left = l->spec.pad_left,
      .groups = l->spec.groups,
      .kernel = net->kernel,
  };
  return g;
}

static nn_pool_geom pool_geom(const nn_layer *l) {
  nn_pool_geom g = {
      .c = l->in.c,
      .in_h = l->in.h,
      .in_w = l->in.w,
      .out_h = l->out.h,
      .out_w = l->out.w,
      .kernel_h = l->spec.kernel_h,
      .kernel_w = l->spec.kernel_w,
      .stride_h = l->spec.stride_h,
      .stride_w = l->spec.stride_w,
      .pad_top = l->spec.pad_top,
      .pad_left = l->spec.pad_left,
  };
  return g;
}

/* What a layer's backward reads and where it writes, from its kind's row
 * (conv and linear read their output only for a fused ReLU, set when
 * planning). */
static int backward_reads_output(const nn_layer *l) {
  return nn_kind_info(l->spec.kind)->reads_output;
}
static int backward_reads_input(const nn_layer *l) {
  return nn_kind_info(l->spec.kind)->reads_input;
}
static int backward_in_place(const nn_layer *l) {
  return nn_kind_info(l->spec.kind)->in_place;
}

int nn_net_alloc(nn_net *net, int batch, size_t workspace_cap_mib, char *err, size_t errlen) {
  if (batch <= 0) {
    util_errf(err, errlen, "batch size %d must be > 0", batch);
    return -1;
  }
  free_activations(net);
  const int L = net->num_layers;
  size_t cap = (workspace_cap_mib ? workspace_cap_mib : 64) * (1024 * 1024 / sizeof(float));
  size_t workspace = 0;
  /* Fusions, in-place layers and the workspace. */
  for (int i = 0; i < L; i++) {
    nn_layer *l = &net->layers[i];
    nn_layer *prev = i > 0 ? &net->layers[i - 1] : NULL;
    l->fused_relu = 0;
    l->in_place = 0;
    l->needs_output = backward_reads_output(l);
    l->scratch = -1;
    nn_kind k = l->spec.kind;
    /* The input batch is the caller's (const): the first layer never works in place. */
    int prev_output_free = prev && !prev->needs_output;
    if (k == NN_RELU && prev && (prev->spec.kind == NN_CONV || prev->spec.kind == NN_LINEAR) &&
        !prev->fused_relu) {
      prev->fused_relu = 1; /* conv/linear apply it; its mask comes from their output */
      prev->needs_output = 1;
      l->in_place = 1;
      l->needs_output = 1;
    } else if (k == NN_FLATTEN && prev) {
      l->in_place = 1;
      l->needs_output = prev->needs_output;
    } else if ((k == NN_RELU || k == NN_DROPOUT) && prev_output_free) {
      l->in_place = 1;
    }
    if (k == NN_CONV) {
      nn_conv_geom g = conv_geom(net, l);
      workspace = max_size(workspace, nn_conv_workspace_floats(&g, batch, cap));
    } else if (k == NN_LRN) {
      workspace = max_size(
          workspace, nn_lrn_workspace_floats(l->in.c, l->in.h, l->in.w, omp_get_max_threads()));
    }
  }
  /* The backward's ping-pong: dx goes to the buffer dy is not in, unless the
   * layer writes it over dy; the first layer computes none. */
  size_t need[2] = {0, 0};
  int dy_slot = -1; /* dlogits */
  for (int i = L - 1; i > 0; i--) {
    nn_layer *l = &net->layers[i];
    if (backward_in_place(l)) continue;
    dy_slot = dy_slot == 0 ? 1 : 0;
    need[dy_slot] = max_size(need[dy_slot], nn_shape_size(l->in) * (size_t)batch);
  }
  /* Which outputs must survive until backward. A run of in-place layers shares
   * its first layer's storage, which must survive if any of them needs its
   * output, if the layer after the run reads its input, or if it holds the
   * logits. The others go to a scratch buffer the input is not in, the one
   * that grows least. */
  int owner = 0, owner_slot = -1; /* storage of the previous layer's output */
  for (int i = 0; i < L; i++) {
    nn_layer *l = &net->layers[i];
    size_t floats = nn_shape_size(l->out) * (size_t)batch;
    int keep = 0;
    if (!l->in_place) {
      owner = i;
      int end = i; /* the last in-place layer sharing this storage */
      keep = net->keep_outputs || l->needs_output;
      while (end + 1 < L && net->layers[end + 1].in_place) keep |= net->layers[++end].needs_output;
      keep |= end == L - 1 || backward_reads_input(&net->layers[end + 1]);
    }
    if (l->in_place) {
      l->scratch = net->layers[owner].scratch;
    } else if (keep) {
      l->buffer = alloc_floats(floats);
      if (!l->buffer) goto oom;
    } else {
      size_t grow[2];
      for (int k = 0; k < 2; k++) grow[k] = floats > need[k] ? floats - need[k] : 0;
      int slot = owner_slot >= 0 ? 1 - owner_slot : grow[1] < grow[0];
      l->scratch = slot;
      need[slot] = max_size(need[slot], floats);
    }
    owner_slot = l->scratch;
    if (l->spec.kind == NN_MAXPOOL) {
      l->argmax = malloc(floats * sizeof(uint16_t));
      if (!l->argmax) goto oom;
    }
  }
  if (net->kernel && nn_bf16_reserve(omp_get_max_threads()) != 0) goto oom;
  net->grad_a = alloc_floats(need[0]);
  net->grad_b = alloc_floats(need[1]);
  net->workspace = alloc_floats(workspace);
  net->dlogits = alloc_floats((size_t)batch * (size_t)net->num_classes);
  if (!net->grad_a || !net->grad_b || !net->workspace || !net->dlogits) goto oom;
  net->grad_a_floats = need[0];
  net->grad_b_floats = need[1];
  net->workspace_floats = workspace;
  net->batch = batch;
  return 0;
oom:
  util_errf(err, errlen, "out of memory allocating activations for batch %d", batch);
  free_activations(net);
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Parameters by name                                                        */

float *nn_param_by_name(nn_net *net, const char *name, size_t *count, size_t *offset) {
  for (int i = 0; i < net->num_layers; i++) {
    nn_layer *l = &net->layers[i];
    if (!l->weight_count) continue;
    size_t len = strlen(l->name);
    if (strncmp(name, l->name, len) != 0 || name[len] != '.') continue;
    const char *what = name + len + 1;
    if (strcmp(what, "weight") == 0) {
      if (count) *count = l->weight_count;
      if (offset) *offset = l->weight_offset;
      return l->weight;
    }
    if (strcmp(what, "bias") == 0 && l->bias_count) {
      if (count) *count = l->bias_count;
      if (offset) *offset = l->bias_offset;
      return l->bias;
    }
  }
  return NULL;
}

void nn_visit_params(const nn_net *net, nn_param_visitor fn, void *ctx) {
  char name[64];
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (!l->weight_count) continue;
    int dims[4];
    int ndim = nn_kind_info(l->spec.kind)->weight_dims(l, dims);
    snprintf(name, sizeof name, "%s.weight", l->name);
    fn(ctx, name, l->weight_offset, l->weight_count, ndim, dims);
    if (l->bias_count) {
      snprintf(name, sizeof name, "%s.bias", l->name);
      int bdim = l->out.c;
      fn(ctx, name, l->bias_offset, l->bias_count, 1, &bdim);
    }
  }
}

void nn_visit_buffers(const nn_net *net, nn_param_visitor fn, void *ctx) {
  char name[64];
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (!l->buffer_count) continue;
    int c = l->in.c;
    snprintf(name, sizeof name, "%s.running_mean", l->name);
    fn(ctx, name, l->buffer_offset, (size_t)c, 1, &c);
    snprintf(name, sizeof name, "%s.running_var", l->name);
    fn(ctx, name, l->buffer_offset + (size_t)c, (size_t)c, 1, &c);
    snprintf(name, sizeof name, "%s.num_batches_tracked", l->name);
    fn(ctx, name, l->buffer_offset + 2 * (size_t)c, 1, 0, &c);
  }
}

typedef struct {
  const char *want;
  size_t count, offset;
  int found;
} find_ctx;

static void find_buffer(void *vctx, const char *name, size_t offset, size_t count, int ndim,
                        const int *dims) {
  (void)ndim, (void)dims;
  find_ctx *f = vctx;
  if (f->found || strcmp(name, f->want) != 0) return;
  f->found = 1;
  f->count = count;
  f->offset = offset;
}

float *nn_buffer_by_name(nn_net *net, const char *name, size_t *count, size_t *offset) {
  find_ctx f = {.want = name};
  nn_visit_buffers(net, find_buffer, &f);
  if (!f.found) return NULL;
  if (count) *count = f.count;
  if (offset) *offset = f.offset;
  return net->buffers + f.offset;
}

/* ------------------------------------------------------------------------ */
/* Forward and backward                                                      */

/* Batch norm's forward: batch statistics in training (over every rank's
 * batch when net->bn_reduce is set), the running ones in evaluation. */
static void batchnorm_forward(nn_net *net, nn_layer *l, int n, const float *x, float *y) {
  int c = l->in.c, s = l->in.h * l->in.w;
  if (net->training) {
    double *sums = net->bn_sums;
    nn_bn_sums(n, c, s, x, sums);
    sums[2 * c] = (double)n * s;
    if (net->bn_reduce) net->bn_reduce(net->bn_reduce_ctx, sums, 2 * c + 1);
    nn_bn_finish_stats(c, sums, sums[2 * c], NN_BN_EPS, NN_BN_MOMENTUM, l->bn_mean, l->bn_invstd,
                       l->running_mean, l->running_var);
    *l->num_batches += 1.0f;
  } else {
    nn_bn_eval_stats(c, l->running_mean, l->running_var, NN_BN_EPS, l->bn_mean, l->bn_invstd);
  }
  nn_bn_normalize(n, c, s, x, l->bn_mean, l->bn_invstd, l->weight, l->bias, y);
}

/* dgamma, dbeta from this process's samples (the gradient allreduce sums
 * them); dx from the sums over the samples the statistics came from. In
 * evaluation mode the statistics are constants: dx = gamma * invstd * dy. */
static void batchnorm_backward(nn_net *net, nn_layer *l, int n, const float *x, const float *dy,
                               float *dx) {
  int c = l->in.c, s = l->in.h * l->in.w;
  double *sums = net->bn_sums;
  nn_bn_backward_sums(n, c, s, x, dy, l->bn_mean, l->bn_invstd, sums);
  nn_bn_backward_params(c, sums, l->dweight, l->dbias);
  if (!dx) return;
  if (!net->training) {
    for (int k = 0; k < 2 * c; k++) sums[k] = 0;
    nn_bn_backward_dx(n, c, s, x, dy, l->bn_mean, l->bn_invstd, l->weight, sums, 1.0, dx);
    return;
  }
  sums[2 * c] = (double)n * s;
  if (net->bn_reduce) net->bn_reduce(net->bn_reduce_ctx, sums, 2 * c + 1);
  nn_bn_backward_dx(n, c, s, x, dy, l->bn_mean, l->bn_invstd, l->weight, sums, sums[2 * c], dx);
}

/* Each dropout layer draws from its own stream of the step's seed. */
static uint64_t dropout_seed(const nn_net *net, int layer) {
  return nn_hash64(net->dropout_seed, 0xD50u + (uint64_t)layer);
}

const float *nn_forward(nn_net *net, const float *x, int n) {
  const float *in = x;
  /* Each layer runs on as many of the pool's threads as its work is worth
   * (nn_layer_threads; OpenBLAS follows OpenMP's count); the pool is restored
   * at the end. */
  const int pool = omp_get_max_threads();
  for (int i = 0; i < net->num_layers; i++) {
    nn_layer *l = &net->layers[i];
    double t0 = util_now();
    omp_set_num_threads(nn_layer_threads(l, n, pool));
    const nn_layer_spec *s = &l->spec;
    size_t in_count = nn_shape_size(l->in) * (size_t)n;
    /* In place: the output is the input buffer (never the caller's x: see
     * alloc). Scratch: the activation-gradient buffer alloc planned, never
     * the one the input is in. */
    float *y = l->in_place       ? (float *)in
               : l->buffer       ? l->buffer
               : l->scratch == 0 ? net->grad_a
                                 : net->grad_b;
    switch (s->kind) {
      case NN_CONV: {
        nn_conv_geom g = conv_geom(net, l);
        nn_conv_forward(&g, n, in, l->weight, l->bias, l->fused_relu, y, net->workspace,
                        net->workspace_floats);
        break;
      }
      case NN_LINEAR:
        nn_linear_forward(net->kernel, n, (int)nn_shape_size(l->in), l->out.c, in, l->weight,
                          l->bias, l->fused_relu, y);
        break;
      case NN_RELU:
        /* Fused into the previous conv/linear: already applied. */
        if (!(i > 0 && net->layers[i - 1].fused_relu && l->in_place))
          nn_relu_forward(in_count, in, y);
        break;
      case NN_TANH:
        nn_tanh_forward(in_count, in, y);
        break;
      case NN_DROPOUT:
        if (net->training && s->dropout_p > 0) {
          nn_dropout_forward_at(in_count, s->dropout_p, dropout_seed(net, i),
                                (uint64_t)net->sample_offset * nn_shape_size(l->in), in, y);
        } else {
          y = (float *)in; /* identity: no copy */
        }
        break;
      case NN_FLATTEN:
        y = (float *)in;
        break;
      case NN_LRN:
        nn_lrn_forward(n, l->in.c, l->in.h, l->in.w, s->lrn_size, s->lrn_alpha, s->lrn_beta,
                       s->lrn_k, in, y);
        break;
      case NN_MAXPOOL: {
        nn_pool_geom g = pool_geom(l);
        nn_maxpool_forward(&g, n, in, y, net->no_grad ? NULL : l->argmax);
        break;
      }
      case NN_AVGPOOL:
        nn_avgpool_forward(n, l->in.c, l->in.h, l->in.w, l->out.h, l->out.w, in, y);
        break;
      case NN_BATCHNORM:
        batchnorm_forward(net, l, n, in, y);
        break;
      case NN_KIND_COUNT:
        break;
    }
    l->output = y;
    in = y;
    net->forward_seconds[i] = util_now() - t0;
  }
  omp_set_num_threads(pool);
  return in;
}

float nn_loss(nn_net *net, const int *labels, int n, int *correct1, int *correct5) {
  const float *logits = net->layers[net->num_layers - 1].output;
  return nn_softmax_xent(n, net->num_classes, logits, labels, net->dlogits, correct1, correct5);
}

void nn_backward(nn_net *net, const float *x, int n, nn_grad_ready_fn ready, void *ctx) {
  float *dy = net->dlogits;
  const int pool = omp_get_max_threads(); /* per layer as in nn_forward */
  for (int i = net->num_layers - 1; i >= 0; i--) {
    nn_layer *l = &net->layers[i];
    double t0 = util_now();
    omp_set_num_threads(nn_layer_threads(l, n, pool));
    const nn_layer_spec *s = &l->spec;
    const float *in = i > 0 ? net->layers[i - 1].output : x;
    size_t in_count = nn_shape_size(l->in) * (size_t)n;
    /* dx goes over dy, or to whichever ping-pong buffer dy is not in (the plan
     * nn_net_alloc sized them by); layer 0 needs none. */
    float *other = dy == net->grad_a ? net->grad_b : net->grad_a;
    float *dx = i == 0 ? NULL : backward_in_place(l) ? dy : other;
    switch (s->kind) {
      case NN_CONV: {
        nn_conv_geom g = conv_geom(net, l);
        nn_conv_backward(&g, n, in, l->weight, l->output, l->fused_relu, dy, dx, l->dweight,
                         l->dbias, net->workspace, net->workspace_floats);
        break;
      }
      case NN_LINEAR:
        nn_linear_backward(net->kernel, n, (int)nn_shape_size(l->in), l->out.c, in, l->weight,
                           l->output, l->fused_relu, dy, dx, l->dweight, l->dbias);
        break;
      case NN_RELU:
        /* Fused: dx stays dy, and the conv/linear below masks it itself. */
        if (dx && !(net->layers[i - 1].fused_relu && l->in_place))
          nn_relu_backward(in_count, l->output, dy, dx);
        break;
      case NN_TANH:
        if (dx) nn_tanh_backward(in_count, l->output, dy, dx);
        break;
      case NN_DROPOUT: /* the identity in evaluation: dx is dy already */
        if (dx && net->training && s->dropout_p > 0)
          nn_dropout_backward_at(in_count, s->dropout_p, dropout_seed(net, i),
                                 (uint64_t)net->sample_offset * nn_shape_size(l->in), dy, dx);
        break;
      case NN_FLATTEN:
        break; /* dx is dy */
      case NN_LRN:
        if (dx)
          nn_lrn_backward(n, l->in.c, l->in.h, l->in.w, s->lrn_size, s->lrn_alpha, s->lrn_beta,
                          s->lrn_k, in, dy, dx, net->workspace, net->workspace_floats);
        break;
      case NN_MAXPOOL:
        if (dx) {
          nn_pool_geom g = pool_geom(l);
          nn_maxpool_backward(&g, n, l->argmax, dy, dx);
        }
        break;
      case NN_AVGPOOL:
        if (dx) nn_avgpool_backward(n, l->in.c, l->in.h, l->in.w, l->out.h, l->out.w, dy, dx);
        break;
      case NN_BATCHNORM:
        batchnorm_backward(net, l, n, in, dy, dx);
        break;
      case NN_KIND_COUNT:
        break;
    }
    net->backward_seconds[i] = util_now() - t0;
    if (l->weight_count && ready) ready(ctx, l->weight_offset, l->weight_count + l->bias_count);
    dy = dx;
  }
  omp_set_num_threads(pool);
}

const double *nn_layer_forward_seconds(const nn_net *net) {
  return net->forward_seconds;
}
const double *nn_layer_backward_seconds(const nn_net *net) {
  return net->backward_seconds;
}
