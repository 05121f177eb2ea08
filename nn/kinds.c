/*
 * nn/kinds.c: the layer kinds, one row each (see nn_kind_desc in nn.h): name,
 * parameters with types, defaults and ranges, learned tensors, validity and
 * shape rules, kernels, memory-plan facts. nn_net_build, nn_net_alloc,
 * nn_forward, nn_backward, the initializations, LARS, the checkpoint, the
 * summary and the config (launch/config_layers.c) all read this table;
 * nothing else lists kinds.
 *
 * Shapes are computed in 64 bits and refused when a per-sample tensor or a
 * parameter tensor would hold more than NN_MAX_ELEMENTS values: the kernels
 * index with int, and a padding of 2^31 - 1 must not wrap into a small net.
 */
#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "layers.h"
#include "nn.h"
#include "util.h"

#define NN_MAX_ELEMENTS INT_MAX /* values of one sample's activation or one tensor */

#define SPEC(field) offsetof(nn_layer_spec, field)

/* Parameter rows for the common cases. */
#define POSITIVE(n, f, req, d)                                                           \
  {                                                                                      \
    .name = n, .type = NN_PARAM_INT, .off = SPEC(f), .required = req, .def = d, .lo = 1, \
    .hi = INT_MAX, .expect = "a positive integer"                                        \
  }
#define HW(n, f1, f2, req, d)                                                                     \
  {                                                                                               \
    .name = n, .type = NN_PARAM_HW, .off = SPEC(f1), .off2 = SPEC(f2), .required = req, .def = d, \
    .lo = 1, .hi = INT_MAX, .expect = "a positive integer or [h, w]"                              \
  }
#define PADDING                                                                            \
  {                                                                                        \
    .name = "padding", .type = NN_PARAM_PAD, .off = SPEC(pad_top), .lo = 0, .hi = INT_MAX, \
    .expect = "integers >= 0"                                                              \
  }
#define BIAS \
  { .name = "bias", .type = NN_PARAM_BIAS, .off = SPEC(no_bias), .def = 1, .quiet = 1 }

/* ------------------------------------------------------------------------ */
/* Shape rules                                                               */

/* Sets l->out to (c, h, w) unless a dimension is < 1 or the sample has more
 * than NN_MAX_ELEMENTS values; -1 with a message otherwise. */
static int set_out(nn_layer *l, int64_t c, int64_t h, int64_t w, char *err, size_t errlen) {
  if (c < 1 || h < 1 || w < 1)
    return util_errf(err, errlen, "%s (%s): output %lldx%lldx%lld is empty", l->name,
                     nn_kind_name(l->spec.kind), (long long)c, (long long)h, (long long)w);
  if (c > NN_MAX_ELEMENTS / h / w)
    return util_errf(err, errlen,
                     "%s (%s): output %lldx%lldx%lld is too large (at most %d values per sample)",
                     l->name, nn_kind_name(l->spec.kind), (long long)c, (long long)h, (long long)w,
                     NN_MAX_ELEMENTS);
  l->out = (nn_shape){(int)c, (int)h, (int)w};
  return 0;
}

/* Sets l->weight_count = a * b * c * d unless it exceeds NN_MAX_ELEMENTS. */
static int set_weights(nn_layer *l, int64_t a, int64_t b, int64_t c, int64_t d, char *err,
                       size_t errlen) {
  if (a > NN_MAX_ELEMENTS / b / c / d)
    return util_errf(err, errlen, "%s (%s): weight %lldx%lldx%lldx%lld has more than %d values",
                     l->name, nn_kind_name(l->spec.kind), (long long)a, (long long)b, (long long)c,
                     (long long)d, NN_MAX_ELEMENTS);
  l->weight_count = (size_t)(a * b * c * d);
  return 0;
}

static int conv_shape(nn_layer *l, char *err, size_t errlen) {
  const nn_layer_spec *s = &l->spec;
  nn_shape in = l->in;
  if (in.c % s->groups || s->out % s->groups)
    return util_errf(err, errlen,
                     "%s (conv): groups %d must divide in channels %d and out channels %d", l->name,
                     s->groups, in.c, s->out);
  int64_t ph = (int64_t)in.h + s->pad_top + s->pad_bottom;
  int64_t pw = (int64_t)in.w + s->pad_left + s->pad_right;
  if (ph < s->kernel_h || pw < s->kernel_w)
    return util_errf(
        err, errlen, "%s (conv): kernel %dx%d does not fit input %dx%dx%d (padded %lldx%lld)",
        l->name, s->kernel_h, s->kernel_w, in.c, in.h, in.w, (long long)ph, (long long)pw);
  if (set_out(l, s->out, (ph - s->kernel_h) / s->stride_h + 1, (pw - s->kernel_w) / s->stride_w + 1,
              err, errlen) ||
      set_weights(l, s->out, in.c / s->groups, s->kernel_h, s->kernel_w, err, errlen))
    return -1;
  l->bias_count = s->no_bias ? 0 : (size_t)s->out;
  l->flops = 2.0 * (double)l->weight_count * l->out.h * l->out.w;
  return 0;
}

static int linear_shape(nn_layer *l, char *err, size_t errlen) {
  const nn_layer_spec *s = &l->spec;
  if (set_out(l, s->out, 1, 1, err, errlen) ||
      set_weights(l, s->out, (int64_t)nn_shape_size(l->in), 1, 1, err, errlen))
    return -1;
  l->bias_count = s->no_bias ? 0 : (size_t)s->out;
  l->flops = 2.0 * (double)l->weight_count;
  return 0;
}

/* ReLU, tanh, dropout: the shape of the input, one operation per value. */
static int pointwise_shape(nn_layer *l, char *err, size_t errlen) {
  (void)err, (void)errlen;
  l->out = l->in;
  l->flops = l->spec.kind == NN_DROPOUT ? 0 : (double)nn_shape_size(l->in);
  return 0;
}

static int flatten_shape(nn_layer *l, char *err, size_t errlen) {
  (void)err, (void)errlen;
  l->out = (nn_shape){(int)nn_shape_size(l->in), 1, 1}; /* the input's size fits an int */
  l->flops = (double)nn_shape_size(l->in);
  return 0;
}

static int lrn_shape(nn_layer *l, char *err, size_t errlen) {
  (void)err, (void)errlen;
  l->out = l->in;
  l->flops = (double)nn_shape_size(l->in) * (2.0 * l->spec.lrn_size + 6);
  return 0;
}

static int maxpool_shape(nn_layer *l, char *err, size_t errlen) {
  const nn_layer_spec *s = &l->spec;
  nn_shape in = l->in;
  int kh = s->kernel_h, kw = s->kernel_w;
  if ((int64_t)kh * kw >= NN_POOL_MAX_WINDOW) /* the argmax is a 16-bit window index */
    return util_errf(err, errlen, "%s (maxpool): window %dx%d has more than %d cells", l->name, kh,
                     kw, NN_POOL_MAX_WINDOW - 1);
  int64_t ph = (int64_t)in.h + s->pad_top + s->pad_bottom;
  int64_t pw = (int64_t)in.w + s->pad_left + s->pad_right;
  if (ph < kh || pw < kw)
    return util_errf(err, errlen, "%s (maxpool): window %dx%d does not fit input %dx%dx%d", l->name,
                     kh, kw, in.c, in.h, in.w);
  if (set_out(l, in.c, (ph - kh) / s->stride_h + 1, (pw - kw) / s->stride_w + 1, err, errlen))
    return -1;
  l->flops = (double)nn_shape_size(l->out) * kh * kw;
  return 0;
}

static int avgpool_shape(nn_layer *l, char *err, size_t errlen) {
  if (set_out(l, l->in.c, l->spec.out_h, l->spec.out_w, err, errlen)) return -1;
  l->flops = (double)nn_shape_size(l->in);
  return 0;
}

/* Per channel: BatchNorm2d over (N, C, H, W), BatchNorm1d over (N, F). Its
 * state in net->buffers: running_mean (C), running_var (C),
 * num_batches_tracked (1). */
static int batchnorm_shape(nn_layer *l, char *err, size_t errlen) {
  (void)err, (void)errlen;
  l->out = l->in;
  l->weight_count = l->bias_count = (size_t)l->in.c;
  l->buffer_count = 2 * (size_t)l->in.c + 1;
  l->flops = 4.0 * (double)nn_shape_size(l->in);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Derived defaults, validity rules, checkpoint dimensions                   */

static void conv_complete(nn_layer_spec *s) {
  if (s->stride_h == 0) s->stride_h = 1;
  if (s->stride_w == 0) s->stride_w = 1;
  if (s->groups == 0) s->groups = 1;
}

/* A window moves by its own size unless told otherwise (PyTorch's rule). */
static void maxpool_complete(nn_layer_spec *s) {
  if (s->stride_h == 0) s->stride_h = s->kernel_h;
  if (s->stride_w == 0) s->stride_w = s->kernel_w;
}

/* A conv reads an image: not the flat vector a linear layer gives. */
static const char *conv_follows(const nn_layer_spec *prev, const nn_layer_spec *s, char *buf,
                                size_t len) {
  (void)s;
  if (prev && prev->kind == NN_LINEAR)
    return snprintf(buf, len, "must not follow a linear layer (its output is flat)"), buf;
  return NULL;
}

/* BatchNorm2d after a conv, BatchNorm1d after a linear: anywhere else it
 * would normalize what the layer before already fixed (a ReLU's half-zero
 * output, a pooling's maxima) and its kind would be ambiguous. */
static const char *batchnorm_follows(const nn_layer_spec *prev, const nn_layer_spec *s, char *buf,
                                     size_t len) {
  (void)s;
  if (!prev || (prev->kind != NN_CONV && prev->kind != NN_LINEAR))
    return snprintf(buf, len,
                    "must directly follow a conv (BatchNorm2d) or a linear layer (BatchNorm1d), "
                    "not %s",
                    prev ? nn_kind_name(prev->kind) : "the start of the list"),
           buf;
  return NULL;
}

/* A window padded by more than half its size would have rows of padding only
 * (PyTorch refuses them too). */
static const char *maxpool_check(const nn_layer_spec *s, char *buf, size_t len) {
  if (s->pad_top > s->kernel_h / 2 || s->pad_bottom > s->kernel_h / 2 ||
      s->pad_left > s->kernel_w / 2 || s->pad_right > s->kernel_w / 2)
    return snprintf(buf, len,
                    "padding: expected at most half the kernel %dx%d, got [%d, %d, %d, %d]",
                    s->kernel_h, s->kernel_w, s->pad_top, s->pad_bottom, s->pad_left, s->pad_right),
           buf;
  return NULL;
}

static int conv_weight_dims(const nn_layer *l, int *dims) {
  dims[0] = l->out.c;
  dims[1] = l->in.c / l->spec.groups;
  dims[2] = l->spec.kernel_h;
  dims[3] = l->spec.kernel_w;
  return 4;
}

static int batchnorm_weight_dims(const nn_layer *l, int *dims) {
  dims[0] = l->in.c;
  return 1;
}

/* batchnorm's state_dims is with its kernels (nn/batchnorm.c), beside the
 * layout of its state. */

static int linear_weight_dims(const nn_layer *l, int *dims) {
  dims[0] = l->out.c;
  dims[1] = (int)nn_shape_size(l->in);
  return 2;
}

/* ------------------------------------------------------------------------ */
/* The table                                                                 */

/* Adding a layer kind takes exactly:
 *  1. its value in the nn_kind enum (nn/nn.h), before NN_KIND_COUNT: the
 *     index of its row, and the name builders (nn/models.c) use;
 *  2. its row below: name, parameters (defaults, ranges), learned tensors
 *     and saved state with their dimension functions, the rules (complete,
 *     check, follows), the shape rule (set out, weight_count, bias_count,
 *     buffer_count, flops), the kernels (forward and backward; init, setup
 *     and workspace when it needs them) and the plan's flags;
 *  3. its kernel file, nn/<kind>.c, with the kernels and the layer functions
 *     the row points at (declared in nn/layers.h);
 *  4. tests: the kernels against finite differences and PyTorch
 *     (tests/test_nn_layers.c, tests/test_parity.c), the row's rules
 *     (tests/test_nn_kinds.c).
 * Nothing else changes: the config learns the kind's name, parameters and
 * rules from the row (launch/config_layers.c), the checkpoint its tensors
 * (nn_visit_params, nn_visit_buffers), the network its plan and kernels.
 * docs/config.md lists the kinds for config writers. */

static const nn_kind_desc kinds[NN_KIND_COUNT] = {
    [NN_CONV] = {.name = "conv",
                 .kind = NN_CONV,
                 .params = {POSITIVE("out", out, 1, 0), HW("kernel", kernel_h, kernel_w, 1, 0),
                            HW("stride", stride_h, stride_w, 0, 1), PADDING,
                            POSITIVE("groups", groups, 0, 1), BIAS},
                 .learned = {"weight", "bias"},
                 .complete = conv_complete,
                 .follows = conv_follows,
                 .shape = conv_shape,
                 .weight_dims = conv_weight_dims,
                 .forward = nn_conv_layer_forward,
                 .backward = nn_conv_layer_backward,
                 .workspace = nn_conv_layer_workspace,
                 .reads_input = 1,
                 .fuses_relu = 1,
                 .compute_bound = 1},
    [NN_LINEAR] = {.name = "linear",
                   .kind = NN_LINEAR,
                   .params = {POSITIVE("out", out, 1, 0), BIAS},
                   .shorthand = "out",
                   .learned = {"weight", "bias"},
                   .shape = linear_shape,
                   .weight_dims = linear_weight_dims,
                   .forward = nn_linear_layer_forward,
                   .backward = nn_linear_layer_backward,
                   .reads_input = 1,
                   .fuses_relu = 1,
                   .compute_bound = 1},
    [NN_RELU] = {.name = "relu",
                 .kind = NN_RELU,
                 .shape = pointwise_shape,
                 .forward = nn_relu_layer_forward,
                 .backward = nn_relu_layer_backward,
                 .reads_output = 1,
                 .in_place = 1,
                 .forward_in_place = NN_IN_PLACE_FREE,
                 .fusable = 1},
    [NN_TANH] = {.name = "tanh",
                 .kind = NN_TANH,
                 .shape = pointwise_shape,
                 .forward = nn_tanh_layer_forward,
                 .backward = nn_tanh_layer_backward,
                 .reads_output = 1,
                 .in_place = 1},
    /* The defaults are the 2012 paper's constants (PyTorch's alpha: per size). */
    [NN_LRN] = {.name = "lrn",
                .kind = NN_LRN,
                .params = {POSITIVE("size", lrn_size, 0, 5),
                           {.name = "alpha",
                            .type = NN_PARAM_FLOAT,
                            .off = SPEC(lrn_alpha),
                            .def = 1e-4,
                            .lo = 0,
                            .hi = FLT_MAX,
                            .expect = "a number >= 0"},
                           {.name = "beta",
                            .type = NN_PARAM_FLOAT,
                            .off = SPEC(lrn_beta),
                            .def = 0.75,
                            .lo = 0,
                            .hi = FLT_MAX,
                            .expect = "a number >= 0"},
                           /* k = 0 divides by zero where a window is all zeros */
                           {.name = "k",
                            .type = NN_PARAM_FLOAT,
                            .off = SPEC(lrn_k),
                            .def = 2,
                            .lo = 0,
                            .lo_open = 1,
                            .hi = FLT_MAX,
                            .expect = "a positive number"}},
                .shorthand = "size",
                .shape = lrn_shape,
                .forward = nn_lrn_layer_forward,
                .backward = nn_lrn_layer_backward,
                .workspace = nn_lrn_layer_workspace,
                .reads_input = 1,
                .in_place = 1},
    [NN_MAXPOOL] = {.name = "maxpool",
                    .kind = NN_MAXPOOL,
                    .params = {HW("kernel", kernel_h, kernel_w, 1, 0),
                               /* 0 = the kernel (maxpool_complete) */
                               HW("stride", stride_h, stride_w, 0, 0), PADDING},
                    .shorthand = "kernel",
                    .complete = maxpool_complete,
                    .check = maxpool_check,
                    .shape = maxpool_shape,
                    .forward = nn_maxpool_layer_forward,
                    .backward = nn_maxpool_layer_backward,
                    .saves_argmax = 1},
    [NN_AVGPOOL] = {.name = "avgpool",
                    .kind = NN_AVGPOOL,
                    .params = {HW("out", out_h, out_w, 1, 0)},
                    .shorthand = "out",
                    .shape = avgpool_shape,
                    .forward = nn_avgpool_layer_forward,
                    .backward = nn_avgpool_layer_backward},
    [NN_FLATTEN] = {.name = "flatten",
                    .kind = NN_FLATTEN,
                    .shape = flatten_shape,
                    .forward = nn_flatten_layer_forward,
                    .backward = nn_flatten_layer_backward,
                    .in_place = 1,
                    .forward_in_place = NN_VIEW},
    [NN_BATCHNORM] = {.name = "batchnorm",
                      .kind = NN_BATCHNORM,
                      .learned = {"weight", "bias"},
                      .state = {"running_mean", "running_var", "num_batches_tracked"},
                      .follows = batchnorm_follows,
                      .shape = batchnorm_shape,
                      .weight_dims = batchnorm_weight_dims,
                      .state_dims = nn_batchnorm_state_dims,
                      .forward = nn_batchnorm_layer_forward,
                      .backward = nn_batchnorm_layer_backward,
                      .init = nn_batchnorm_layer_init,
                      .setup = nn_batchnorm_layer_setup,
                      .reads_input = 1,
                      .in_place = 1,
                      .lars_plain = 1},
    [NN_DROPOUT] = {.name = "dropout",
                    .kind = NN_DROPOUT,
                    .params = {{.name = "p",
                                .type = NN_PARAM_FLOAT,
                                .off = SPEC(dropout_p),
                                .def = 0.5,
                                .lo = 0,
                                .hi = 1,
                                .hi_open = 1,
                                .expect = "a number in [0, 1)",
                                .syntax = "a number in [0, 1)"}},
                    .shorthand = "p",
                    .shape = pointwise_shape,
                    .forward = nn_dropout_layer_forward,
                    .backward = nn_dropout_layer_backward,
                    .in_place = 1,
                    .forward_in_place = NN_IN_PLACE_FREE},
};

/* ------------------------------------------------------------------------ */
/* Looking up and checking                                                   */

const nn_kind_desc *nn_kind_info(nn_kind kind) {
  return (unsigned)kind < NN_KIND_COUNT ? &kinds[kind] : NULL;
}

const nn_kind_desc *nn_kind_find(const char *name) {
  for (int i = 0; i < NN_KIND_COUNT; i++)
    if (!strcmp(kinds[i].name, name)) return &kinds[i];
  return NULL;
}

const char *nn_kind_name(nn_kind kind) {
  const nn_kind_desc *k = nn_kind_info(kind);
  return k ? k->name : "?";
}

static int *int_at(nn_layer_spec *s, size_t off) {
  return (int *)((char *)s + off);
}
static const int *cint_at(const nn_layer_spec *s, size_t off) {
  return (const int *)((const char *)s + off);
}

nn_layer_spec nn_layer_defaults(nn_kind kind, nn_section section) {
  nn_layer_spec s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  s.section = section;
  const nn_kind_desc *k = nn_kind_info(kind);
  for (const nn_param_desc *p = k ? k->params : NULL; p && p->name; p++) {
    switch (p->type) {
      case NN_PARAM_INT:
        *int_at(&s, p->off) = (int)p->def;
        break;
      case NN_PARAM_HW:
        *int_at(&s, p->off) = *int_at(&s, p->off2) = (int)p->def;
        break;
      case NN_PARAM_PAD:
        s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = (int)p->def;
        break;
      case NN_PARAM_FLOAT:
        *(float *)((char *)&s + p->off) = (float)p->def;
        break;
      case NN_PARAM_BIAS:
        *int_at(&s, p->off) = !p->def;
        break;
    }
  }
  return s;
}

void nn_layer_complete(nn_layer_spec *s) {
  const nn_kind_desc *k = nn_kind_info(s->kind);
  if (k && k->complete) k->complete(s);
}

static int in_range(const nn_param_desc *p, double v) {
  return (p->lo_open ? v > p->lo : v >= p->lo) && (p->hi_open ? v < p->hi : v <= p->hi);
}

const char *nn_layer_problem(const nn_layer_spec *s, char *buf, size_t len) {
  const nn_kind_desc *k = nn_kind_info(s->kind);
  if (!k) return snprintf(buf, len, "unknown layer kind %d", (int)s->kind), buf;
  for (const nn_param_desc *p = k->params; p->name; p++) {
    const int *v = cint_at(s, p->off);
    switch (p->type) {
      case NN_PARAM_INT:
        if (!in_range(p, v[0]))
          return snprintf(buf, len, "%s: expected %s, got %d", p->name, p->expect, v[0]), buf;
        break;
      case NN_PARAM_HW: {
        int w = *cint_at(s, p->off2);
        if (!in_range(p, v[0]) || !in_range(p, w))
          return snprintf(buf, len, "%s: expected %s, got [%d, %d]", p->name, p->expect, v[0], w),
                 buf;
        break;
      }
      case NN_PARAM_PAD:
        if (!in_range(p, s->pad_top) || !in_range(p, s->pad_bottom) || !in_range(p, s->pad_left) ||
            !in_range(p, s->pad_right))
          return snprintf(buf, len, "%s: expected %s, got [%d, %d, %d, %d]", p->name, p->expect,
                          s->pad_top, s->pad_bottom, s->pad_left, s->pad_right),
                 buf;
        break;
      case NN_PARAM_FLOAT: {
        float f = *(const float *)((const char *)s + p->off);
        if (!in_range(p, f))
          return snprintf(buf, len, "%s: expected %s, got %g", p->name, p->expect, f), buf;
        break;
      }
      case NN_PARAM_BIAS:
        break;
    }
  }
  return k->check ? k->check(s, buf, len) : NULL;
}

const char *nn_layer_follows(const nn_layer_spec *prev, const nn_layer_spec *s, char *buf,
                             size_t len) {
  const nn_kind_desc *k = nn_kind_info(s->kind);
  return k && k->follows ? k->follows(prev, s, buf, len) : NULL;
}
