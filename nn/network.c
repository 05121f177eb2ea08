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
  net->params = alloc_floats(offset);
  net->grads = alloc_floats(offset);
  net->buffers = alloc_floats(buffer_offset);
  net->forward_seconds = calloc((size_t)count, sizeof(double));
  net->backward_seconds = calloc((size_t)count, sizeof(double));
  net->layers = layers;
  net->num_layers = count;
  int oom = !net->params || !net->grads || !net->buffers || !net->forward_seconds ||
            !net->backward_seconds;
  /* The views, then each kind's own set-up (its state's start, its memory). */
  for (int i = 0; i < count && !oom; i++) {
    nn_layer *l = &layers[i];
    if (l->weight_count) {
      l->weight = net->params + l->weight_offset;
      l->dweight = net->grads + l->weight_offset;
    }
    if (l->bias_count) {
      l->bias = net->params + l->bias_offset;
      l->dbias = net->grads + l->bias_offset;
    }
    if (l->buffer_count) l->state = net->buffers + l->buffer_offset;
    const nn_kind_desc *kind = nn_kind_info(l->spec.kind);
    if (kind->setup && kind->setup(net, l) != 0) oom = 1;
  }
  if (oom) {
    util_errf(err, errlen, "out of memory for %zu parameters", offset);
    nn_net_free(net);
    return -1;
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
  for (int i = 0; net->layers && i < net->num_layers; i++) free(net->layers[i].kind_data);
  free(net->layers);
  free(net->buffers);
  free(net->params);
  free(net->grads);
  free(net->forward_seconds);
  free(net->backward_seconds);
  memset(net, 0, sizeof *net);
}

/* ------------------------------------------------------------------------ */
/* Planning and allocation                                                   */

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
    const nn_kind_desc *kind = nn_kind_info(l->spec.kind);
    /* The input batch is the caller's (const): the first layer never works in place. */
    int prev_output_free = prev && !prev->needs_output;
    if (kind->fusable && prev && nn_kind_info(prev->spec.kind)->fuses_relu && !prev->fused_relu) {
      prev->fused_relu = 1; /* conv/linear apply it; its mask comes from their output */
      prev->needs_output = 1;
      l->in_place = 1;
      l->needs_output = 1;
    } else if (kind->forward_in_place == NN_VIEW && prev) {
      l->in_place = 1;
      l->needs_output = prev->needs_output;
    } else if (kind->forward_in_place == NN_IN_PLACE_FREE && prev_output_free) {
      l->in_place = 1;
    }
    if (kind->workspace) workspace = max_size(workspace, kind->workspace(net, l, batch, cap));
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
    if (nn_kind_info(l->spec.kind)->saves_argmax) {
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

/* The kind's state tensors in the order of its row, one after the other from
 * l->buffer_offset, each as long as the product of its dimensions. */
void nn_visit_buffers(const nn_net *net, nn_param_visitor fn, void *ctx) {
  char name[96];
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (!l->buffer_count) continue;
    const nn_kind_desc *kind = nn_kind_info(l->spec.kind);
    size_t offset = l->buffer_offset;
    for (int t = 0; t < NN_KIND_MAX_TENSORS && kind->state[t]; t++) {
      int dims[4];
      int ndim = kind->state_dims(l, t, dims);
      size_t count = 1;
      for (int d = 0; d < ndim; d++) count *= (size_t)dims[d];
      snprintf(name, sizeof name, "%s.%s", l->name, kind->state[t]);
      fn(ctx, name, offset, count, ndim, dims);
      offset += count;
    }
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
    /* In place: the output is the input buffer (never the caller's x: see
     * alloc). Scratch: the activation-gradient buffer alloc planned, never
     * the one the input is in. */
    float *y = l->in_place       ? (float *)in
               : l->buffer       ? l->buffer
               : l->scratch == 0 ? net->grad_a
                                 : net->grad_b;
    y = nn_kind_info(l->spec.kind)->forward(net, l, n, in, y);
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
    const float *in = i > 0 ? net->layers[i - 1].output : x;
    /* dx goes over dy, or to whichever ping-pong buffer dy is not in (the plan
     * nn_net_alloc sized them by); layer 0 needs none. */
    float *other = dy == net->grad_a ? net->grad_b : net->grad_a;
    float *dx = i == 0 ? NULL : backward_in_place(l) ? dy : other;
    nn_kind_info(l->spec.kind)->backward(net, l, n, in, dy, dx);
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
