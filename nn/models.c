/*
 * nn/models.c: the AlexNet presets as layer lists in torchvision's shape, and
 * the two initializations (the 2012 paper's, and PyTorch's defaults).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"

/* A small builder: appends specs to a fixed array. */
typedef struct {
  nn_layer_spec *specs;
  int count;
  nn_section section;
} builder;

/* A layer at its kind's defaults (nn/kinds.c). */
static nn_layer_spec *push(builder *b, nn_kind kind) {
  nn_layer_spec *s = &b->specs[b->count++];
  *s = nn_layer_defaults(kind, b->section);
  return s;
}

/* Square conv with symmetric padding. */
static void conv(builder *b, int out, int kernel, int stride, int pad, int groups) {
  nn_layer_spec *s = push(b, NN_CONV);
  s->out = out;
  s->kernel_h = s->kernel_w = kernel;
  s->stride_h = s->stride_w = stride;
  s->pad_top = s->pad_bottom = s->pad_left = s->pad_right = pad;
  s->groups = groups;
}

static void relu(builder *b) {
  push(b, NN_RELU);
}

static void maxpool(builder *b, int kernel, int stride) {
  nn_layer_spec *s = push(b, NN_MAXPOOL);
  s->kernel_h = s->kernel_w = kernel;
  s->stride_h = s->stride_w = stride;
}

/* The paper's LRN: its constants are the kind's defaults. */
static void lrn(builder *b) {
  push(b, NN_LRN);
}

static void linear(builder *b, int out) {
  push(b, NN_LINEAR)->out = out;
}

static void dropout(builder *b, float p) {
  push(b, NN_DROPOUT)->dropout_p = p;
}

static void batchnorm(builder *b) {
  push(b, NN_BATCHNORM);
}

/* torchvision's classifier: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear. */
static void classifier(builder *b, int hidden, int classes, float p) {
  b->section = NN_CLASSIFIER;
  dropout(b, p);
  linear(b, hidden);
  relu(b);
  dropout(b, p);
  linear(b, hidden);
  relu(b);
  linear(b, classes);
}

/* torchvision's features (alexnet_owt and the 32x32 variant differ only in
 * these numbers): conv c1 (k1, stride s1, pad p1), ReLU, pool; conv 192
 * (k2, pad p2), ReLU, pool; conv 384, 256, 256 (3x3, pad 1) with ReLUs; pool.
 * pool = 3: overlapping 3x3 stride 2; pool = 2: 2x2 stride 2. */
static void torchvision_features(builder *b, int c1, int k1, int s1, int p1, int c2, int k2, int p2,
                                 int pool) {
  int pool_stride = 2;
  conv(b, c1, k1, s1, p1, 1);
  relu(b);
  maxpool(b, pool, pool_stride);
  conv(b, c2, k2, 1, p2, 1);
  relu(b);
  maxpool(b, pool, pool_stride);
  conv(b, 384, 3, 1, 1, 1);
  relu(b);
  conv(b, 256, 3, 1, 1, 1);
  relu(b);
  conv(b, 256, 3, 1, 1, 1);
  relu(b);
  maxpool(b, pool, pool_stride);
}

int nn_preset(const char *arch, const nn_preset_opts *opts, nn_layer_spec **specs, int *count,
              nn_shape *input, char *err, size_t errlen) {
  nn_preset_opts o = opts ? *opts : (nn_preset_opts){0};
  float p = o.dropout == 0 ? 0.5f : (o.dropout < 0 ? 0.0f : o.dropout);
  int in_c = o.in_channels > 0 ? o.in_channels : 3;
  builder b = {calloc(32, sizeof(nn_layer_spec)), 0, NN_FEATURES};
  if (!b.specs) {
    if (err) snprintf(err, errlen, "out of memory");
    return -1;
  }
  int size;
  if (strcmp(arch, "alexnet") == 0) {
    /* The 2012 paper at 227x227 (55x55 after conv1). At 224 the seed's
     * asymmetric padding [1, 2] gives the same 55. */
    int classes = o.num_classes > 0 ? o.num_classes : 1000;
    int groups = o.groups > 0 ? o.groups : 2;
    size = o.input_size > 0 ? o.input_size : 227;
    conv(&b, 96, 11, 4, 0, 1);
    if (size == 224) {
      b.specs[0].pad_top = b.specs[0].pad_left = 1;
      b.specs[0].pad_bottom = b.specs[0].pad_right = 2;
    }
    relu(&b);
    lrn(&b);
    maxpool(&b, 3, 2);
    conv(&b, 256, 5, 1, 2, groups);
    relu(&b);
    lrn(&b);
    maxpool(&b, 3, 2);
    conv(&b, 384, 3, 1, 1, 1);
    relu(&b);
    conv(&b, 384, 3, 1, 1, groups);
    relu(&b);
    conv(&b, 256, 3, 1, 1, groups);
    relu(&b);
    maxpool(&b, 3, 2);
    classifier(&b, 4096, classes, p);
  } else if (strcmp(arch, "alexnet_bn") == 0) {
    /* AlexNet-BN of You, Gitman and Ginsburg ("Large Batch Training of
     * Convolutional Networks", arXiv:1708.03888, 2017) and You et al.
     * ("ImageNet Training in Minutes", arXiv:1709.05011): the 2012 paper's
     * AlexNet with its local response normalizations removed and a batch norm
     * after each of the five convolutions. The batch norm goes between the
     * convolution and its ReLU, as in Ioffe and Szegedy's placement (and
     * NVIDIA Caffe's alexnet_bn model those papers trained). Dense
     * convolutions unless model.groups asks for the two towers: the split
     * was a two-GPU artifact. */
    int classes = o.num_classes > 0 ? o.num_classes : 1000;
    int groups = o.groups > 0 ? o.groups : 1;
    size = o.input_size > 0 ? o.input_size : 227;
    conv(&b, 96, 11, 4, 0, 1);
    if (size == 224) {
      b.specs[0].pad_top = b.specs[0].pad_left = 1;
      b.specs[0].pad_bottom = b.specs[0].pad_right = 2;
    }
    batchnorm(&b);
    relu(&b);
    maxpool(&b, 3, 2);
    conv(&b, 256, 5, 1, 2, groups);
    batchnorm(&b);
    relu(&b);
    maxpool(&b, 3, 2);
    conv(&b, 384, 3, 1, 1, 1);
    batchnorm(&b);
    relu(&b);
    conv(&b, 384, 3, 1, 1, groups);
    batchnorm(&b);
    relu(&b);
    conv(&b, 256, 3, 1, 1, groups);
    batchnorm(&b);
    relu(&b);
    maxpool(&b, 3, 2);
    classifier(&b, 4096, classes, p);
  } else if (strcmp(arch, "alexnet_owt") == 0) {
    /* torchvision.models.alexnet ("one weird trick"), weight-compatible. */
    int classes = o.num_classes > 0 ? o.num_classes : 1000;
    size = o.input_size > 0 ? o.input_size : 224;
    torchvision_features(&b, 64, 11, 4, 2, 192, 5, 2, 3);
    b.section = NN_AVGPOOL_SECTION;
    nn_layer_spec *s = push(&b, NN_AVGPOOL);
    s->out_h = s->out_w = 6;
    classifier(&b, 4096, classes, p);
  } else if (strcmp(arch, "alexnet_cifar") == 0) {
    /* The seed's 32x32 variant: 3x3 convs, first stride 2, 2x2 pooling. */
    int classes = o.num_classes > 0 ? o.num_classes : 10;
    size = o.input_size > 0 ? o.input_size : 32;
    torchvision_features(&b, 64, 3, 2, 1, 192, 3, 1, 2);
    classifier(&b, 4096, classes, p);
  } else {
    free(b.specs);
    if (err)
      snprintf(err, errlen,
               "unknown architecture '%s' (known: alexnet, alexnet_bn, alexnet_owt, alexnet_cifar)",
               arch);
    return -1;
  }
  *specs = b.specs;
  *count = b.count;
  *input = (nn_shape){in_c, size, size};
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Initialization                                                            */

/* A kind with a fixed start (its row's init: batch norm's scale 1, shift 0)
 * gets it whatever the scheme. Returns 1 for such a layer (done), 0 for a
 * layer the caller initializes. */
static int init_fixed(nn_layer *l) {
  const nn_kind_desc *kind = nn_kind_info(l->spec.kind);
  if (!kind->init) return 0;
  kind->init(l);
  return 1;
}

void nn_init_paper(nn_net *net, uint64_t seed) {
  int conv_index = 0, linear_index = 0, linears = 0;
  for (int i = 0; i < net->num_layers; i++) linears += net->layers[i].spec.kind == NN_LINEAR;
  for (int i = 0; i < net->num_layers; i++) {
    nn_layer *l = &net->layers[i];
    if (!l->weight_count || init_fixed(l)) continue;
    int bias_one;
    if (l->spec.kind == NN_CONV) {
      conv_index++;
      bias_one = conv_index == 2 || conv_index == 4 || conv_index == 5;
    } else {
      linear_index++;
      bias_one = linear_index < linears; /* hidden fully connected layers */
    }
    uint64_t layer_seed = nn_hash64(seed, (uint64_t)i);
    float *w = l->weight;
    long count = (long)l->weight_count;
#pragma omp parallel for schedule(static)
    for (long j = 0; j < count; j++) w[j] = 0.01f * nn_normal(layer_seed, (uint64_t)j);
    for (size_t j = 0; j < l->bias_count; j++) l->bias[j] = bias_one ? 1.0f : 0.0f;
  }
}

void nn_init_torch_default(nn_net *net, uint64_t seed) {
  for (int i = 0; i < net->num_layers; i++) {
    nn_layer *l = &net->layers[i];
    if (!l->weight_count || init_fixed(l)) continue;
    size_t fan_in = l->weight_count / (size_t)l->out.c;
    float bound = 1.0f / sqrtf((float)fan_in);
    uint64_t layer_seed = nn_hash64(seed, (uint64_t)i);
    float *w = l->weight;
    long count = (long)l->weight_count;
#pragma omp parallel for schedule(static)
    for (long j = 0; j < count; j++)
      w[j] = bound * (2.0f * nn_uniform(layer_seed, (uint64_t)j) - 1.0f);
    uint64_t bias_seed = nn_hash64(layer_seed, 0xB1A5u);
    for (size_t j = 0; j < l->bias_count; j++)
      l->bias[j] = bound * (2.0f * nn_uniform(bias_seed, (uint64_t)j) - 1.0f);
  }
}

void nn_init_kaiming(nn_net *net, uint64_t seed) {
  int last = -1; /* the last conv/linear: the logits, which no ReLU follows */
  for (int i = 0; i < net->num_layers; i++)
    if (net->layers[i].weight_count && !nn_kind_info(net->layers[i].spec.kind)->init) last = i;
  for (int i = 0; i < net->num_layers; i++) {
    nn_layer *l = &net->layers[i];
    if (!l->weight_count || init_fixed(l)) continue;
    /* fan_in = C/G * KH * KW (conv) or C (linear); gain^2 2 for ReLU, 1 for
     * the output layer. */
    size_t fan_in = l->weight_count / (size_t)l->out.c;
    float std = sqrtf((i == last ? 1.0f : 2.0f) / (float)fan_in);
    uint64_t layer_seed = nn_hash64(seed, (uint64_t)i);
    float *w = l->weight;
    long count = (long)l->weight_count;
#pragma omp parallel for schedule(static)
    for (long j = 0; j < count; j++) w[j] = std * nn_normal(layer_seed, (uint64_t)j);
    for (size_t j = 0; j < l->bias_count; j++) l->bias[j] = 0.0f;
  }
}
