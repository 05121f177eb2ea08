/*
 * nn: the AlexNet engine. Tensors are float32 in NCHW; a network is a list of
 * layers in torchvision's shape (features, optional avgpool, classifier).
 * All parameters of a network live in ONE flat buffer (net->params) and all
 * gradients in a second buffer of the same layout (net->grads); each layer's
 * weight and bias are views into them, ordered as PyTorch's state_dict.
 * The optimizer, the allreduce and the checkpoint each see one array.
 * State that is not trained (batch norm's running statistics) lives in a
 * third flat buffer, net->buffers, carved the same way and named as
 * PyTorch's state_dict names its buffers; the checkpoint saves it beside the
 * parameters, the optimizer and the gradient allreduce never see it.
 *
 * Dimension letters, used in every shape comment of nn/:
 *   N = batch size, C = channels, H, W = height, width,
 *   O = output channels / features, G = groups, KH, KW = kernel size.
 *
 * nn knows nothing of MPI, HDF5 or YAML. Errors in descriptions (a layer list
 * whose shapes do not fit, an unknown preset) are returned as messages; the
 * compute functions cannot fail once a network is allocated.
 */
#ifndef NN_NN_H
#define NN_NN_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Layer descriptions                                                       */

typedef enum {
  NN_CONV,      /* 2-D convolution, optional groups and asymmetric padding */
  NN_LINEAR,    /* fully connected, y = x W^T + b */
  NN_RELU,      /* max(x, 0) */
  NN_TANH,      /* tanh(x) */
  NN_LRN,       /* local response normalization across channels (PyTorch) */
  NN_MAXPOOL,   /* max pooling, kernel/stride/padding, floor mode */
  NN_AVGPOOL,   /* adaptive average pooling to (out_h, out_w), PyTorch bins */
  NN_FLATTEN,   /* (N, C, H, W) -> (N, C*H*W); implicit before the classifier */
  NN_DROPOUT,   /* inverted dropout with probability p; identity in eval */
  NN_BATCHNORM, /* PyTorch's BatchNorm2d after a conv, BatchNorm1d after a linear */
  NN_KIND_COUNT
} nn_kind;

/* Which torchvision Sequential a layer belongs to; gives its name prefix. */
typedef enum { NN_FEATURES, NN_AVGPOOL_SECTION, NN_CLASSIFIER } nn_section;

/* One layer as a config or a preset describes it. Unused fields are 0. */
typedef struct {
  nn_kind kind;
  nn_section section;
  int out;                          /* conv: out channels; linear: out features */
  int kernel_h, kernel_w;           /* conv, maxpool */
  int stride_h, stride_w;           /* conv, maxpool (0 = 1 for conv, = kernel for pool) */
  int pad_top, pad_bottom;          /* conv, maxpool: zeros (or -inf) before/after rows */
  int pad_left, pad_right;          /* conv, maxpool: before/after columns */
  int groups;                       /* conv: 0 or 1 = dense */
  int no_bias;                      /* conv, linear: 1 = no bias parameter */
  int lrn_size;                     /* lrn: window across channels */
  float lrn_alpha, lrn_beta, lrn_k; /* lrn: PyTorch's definition, alpha / size */
  int out_h, out_w;                 /* avgpool: output size */
  float dropout_p;                  /* dropout: probability of zeroing */
} nn_layer_spec;

/* The code path that multiplies the matrices of convolutions and linear
 * layers: float32 (OpenBLAS sgemm, the default), or bf16 operands with float32
 * accumulation (nn/bf16.c), by AVX512-BF16 instructions, AMX tiles, or
 * emulated with float32 FMAs on bf16-rounded operands (CPUs without them, and
 * tests). */
typedef enum { NN_BF16_FP32 = 0, NN_BF16_EMULATED, NN_BF16_AVX512, NN_BF16_AMX } nn_bf16_kernel;

/* A per-sample shape (C, H, W); a flat vector is (F, 1, 1). */
typedef struct {
  int c, h, w;
} nn_shape;

static inline size_t nn_shape_size(nn_shape s) {
  return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

/* A layer of a built network: its description, shapes and views. */
typedef struct nn_layer {
  nn_layer_spec spec;
  char name[32];          /* PyTorch module name, e.g. "features.3" */
  nn_shape in, out;       /* per-sample shapes */
  size_t weight_offset;   /* into net->params / net->grads, in floats */
  size_t weight_count;    /* conv: O*(C/G)*KH*KW; linear: O*C; batchnorm: C */
  size_t bias_offset;     /* into net->params / net->grads */
  size_t bias_count;      /* O, or 0 */
  float *weight, *bias;   /* views into net->params: conv (O, C/G, KH, KW); linear (O, C) */
  float *dweight, *dbias; /* views into net->grads, same layouts */
  size_t buffer_offset;   /* into net->buffers: the kind's saved state, its row's
                             state[] tensors in order (batchnorm: running_mean (C),
                             running_var (C), num_batches_tracked (1)) */
  size_t buffer_count;    /* floats of that state (batchnorm: 2C + 1); 0: none */
  float *state;           /* view into net->buffers at buffer_offset, or NULL */
  void *kind_data;        /* owned: the kind's own memory, allocated by its row's setup
                             and freed by nn_net_free (batchnorm: the statistics of the
                             last forward and its per-channel sums), or NULL */
  double flops;           /* forward multiply-adds x 2 per sample */
  /* Execution plan, set by nn_net_alloc: */
  int fused_relu;   /* a kind with fuses_relu: the following ReLU is applied here */
  int in_place;     /* output aliases input (the row's forward_in_place) */
  int needs_output; /* backward reads this layer's own output */
  int scratch;      /* the output lives in grad_a (0) or grad_b (1) during the
                       forward, or -1: own buffer or in place */
  float *buffer;    /* (N, out) own activation storage; NULL when in_place or
                       when the output lives in a scratch buffer (nothing
                       reads it after the forward: see nn_net_alloc) */
  float *output;    /* (N, out) activations of the last forward (buffer, scratch,
                       or the input when in place or an identity in evaluation) */
  uint16_t *argmax; /* a kind with saves_argmax (maxpool): (N, C, OH, OW) window
                       index of each maximum, saved by a training forward for backward */
} nn_layer;

typedef struct nn_net {
  int num_layers;
  nn_layer *layers;   /* owned */
  nn_shape input;     /* per-sample input shape */
  int num_classes;    /* out features of the last layer */
  size_t num_params;  /* floats in params and in grads */
  float *params;      /* owned, 64-byte aligned */
  float *grads;       /* owned, same layout as params */
  size_t num_buffers; /* floats in buffers */
  float *buffers;     /* owned: non-trained state (batchnorm running statistics) */
  /* Synchronized batch norm: when set, a training forward and backward pass
   * every batch norm layer's per-channel sums (n doubles) to this function,
   * which must replace them by their sum over all ranks (an allreduce; nn
   * knows no MPI). Statistics are then those of the global batch. NULL: each
   * process normalizes by its own batch. */
  void (*bn_reduce)(void *ctx, double *sums, int n);
  void *bn_reduce_ctx;
  /* Execution state, owned; see nn_net_alloc. */
  int batch;              /* batch size the buffers are sized for; 0 = none */
  int training;           /* 1: dropout active; 0: evaluation */
  int no_grad;            /* 1: forward only, nothing saved for a backward (max
                             pooling's argmax); like torch.no_grad() */
  uint64_t dropout_seed;  /* set by the caller each step for reproducible masks */
  int64_t sample_offset;  /* position of this process's first sample in the global
                             batch: dropout masks then depend on the sample, not on
                             how the batch is split over ranks */
  nn_bf16_kernel kernel;  /* set before nn_net_alloc: NN_BF16_FP32 (0, the default)
                             multiplies in float32; else convolutions and linear
                             layers (forward, input and weight gradients) multiply
                             bf16-rounded operands with float32 accumulation by this
                             kernel (nn_bf16_select). Parameters, gradients and
                             everything else stay float32. */
  int keep_outputs;       /* set before nn_net_alloc: every layer keeps its own output
                             buffer, so all activations can be read after a forward
                             (activation maps, parity checks), at a cost in memory */
  float *grad_a, *grad_b; /* ping-pong activation gradients; during a forward, the
                             outputs nothing reads later (scratch) */
  size_t grad_a_floats, grad_b_floats;
  float *workspace; /* im2col / col2im / transposes */
  size_t workspace_floats;
  float *dlogits;           /* (N, num_classes) gradient of the loss */
  double *forward_seconds;  /* (num_layers) wall time of the last forward, per layer */
  double *backward_seconds; /* (num_layers) wall time of the last backward, per layer */
} nn_net;

/* ------------------------------------------------------------------------ */
/* Layer kinds                                                               */

/* Every fact about a kind lives in its row of the kind table (nn/kinds.c):
 * its name, its parameters with their types, defaults and valid ranges, its
 * learned tensors and saved state, its validity rules (alone and after the
 * layer before), its shape rule, its kernels (forward, backward, fixed
 * initialization, set-up, workspace) and what the memory plan needs to know.
 * The config parser and writer (launch/), the summary, nn_net_build,
 * nn_net_alloc, nn_forward, nn_backward, the initializations, the optimizers
 * and the checkpoint all learn the kinds from there: a new kind is its enum
 * value below, one row, and its kernel file (see the comment at the table). */

/* Where a kind's forward writes its output (nn_net_alloc's plan). */
typedef enum {
  NN_OWN_OUTPUT,    /* its own storage (kept or scratch) */
  NN_IN_PLACE_FREE, /* over its input when nothing reads the input later (ReLU, dropout) */
  NN_VIEW           /* its output is its input, reshaped (flatten) */
} nn_forward_place;

/* How a parameter is stored in nn_layer_spec (and written in a config). */
typedef enum {
  NN_PARAM_INT,   /* int at off */
  NN_PARAM_HW,    /* two ints at off (h) and off2 (w); written n or [h, w] */
  NN_PARAM_PAD,   /* the four ints pad_top, pad_bottom, pad_left, pad_right; written n,
                     [before, after] (rows and columns alike) or [top, bottom, left, right] */
  NN_PARAM_FLOAT, /* float at off */
  NN_PARAM_BIAS   /* int at off holding NOT the value: "bias: false" is no_bias = 1 */
} nn_param_type;

/* One parameter of a kind. */
typedef struct {
  const char *name; /* as a config writes it, e.g. "kernel"; NULL ends the list */
  nn_param_type type;
  size_t off, off2;   /* offsetof(nn_layer_spec, field) of its value(s) */
  int required;       /* 1: no default; a config must give it */
  double def;         /* the default (each component of HW and PAD) */
  double lo, hi;      /* valid range of each component */
  int lo_open;        /* 1: lo itself is not valid */
  int hi_open;        /* 1: hi itself is not valid */
  const char *expect; /* the valid values, for messages: "a positive integer" */
  const char *syntax; /* what a config may write, when a type error needs other words
                         than expect (NULL: the type's, see launch/config_layers.c) */
  int quiet;          /* 1: a config written back leaves it out at its default */
} nn_param_desc;

#define NN_KIND_MAX_PARAMS 8
#define NN_KIND_MAX_TENSORS 4

/* One layer kind: a row of the table. */
typedef struct nn_kind_desc {
  const char *name; /* in configs and the summary: "conv" */
  nn_kind kind;
  nn_param_desc params[NN_KIND_MAX_PARAMS]; /* in the order a config lists them */
  const char *shorthand; /* {kind: value} sets this parameter; NULL: only a mapping */
  /* Learned tensors, in state_dict order: NULL, or "weight" and "bias" (the
   * shape rule sets weight_count and bias_count; bias_count 0 = none). */
  const char *learned[NN_KIND_MAX_TENSORS];
  /* Saved state that is not learned (no gradient, not in net->params but in
   * net->buffers; the shape rule sets buffer_count), in state_dict order
   * after the learned ones: batchnorm's "running_mean", "running_var",
   * "num_batches_tracked" (nn_visit_buffers). */
  const char *state[NN_KIND_MAX_TENSORS];
  /* Defaults that depend on other parameters, applied after a config or a
   * builder set them (maxpool: stride 0 = the kernel). NULL: none. */
  void (*complete)(nn_layer_spec *s);
  /* The rule beyond each parameter's range (maxpool: padding at most half
   * the kernel). Returns NULL, or buf holding "<param>: <problem>". NULL:
   * none. */
  const char *(*check)(const nn_layer_spec *s, char *buf, size_t len);
  /* The rule on the layer before (prev NULL: the start of the list), e.g.
   * batchnorm only after conv or linear. Returns NULL or the problem in buf.
   * NULL: any layer may come before. */
  const char *(*follows)(const nn_layer_spec *prev, const nn_layer_spec *s, char *buf, size_t len);
  /* The shape rule: sets l->out, weight_count, bias_count and flops from
   * l->in and l->spec (complete and valid), in 64 bits: returns -1 with a
   * message naming l->name when the output does not fit or is too large. */
  int (*shape)(struct nn_layer *l, char *err, size_t errlen);
  /* The dimensions of the weight in the checkpoint (conv: O, C/G, KH, KW);
   * returns their count. NULL for kinds without learned tensors. */
  int (*weight_dims)(const struct nn_layer *l, int *dims);
  /* The dimensions of saved-state tensor t (state[t]; its count is their
   * product) into dims; returns ndim, 0 for a scalar (count 1). NULL for
   * kinds without state. */
  int (*state_dims)(const struct nn_layer *l, int t, int *dims);

  /* The kernels. nn_forward and nn_backward call them for every layer of the
   * kind, having set the layer's thread count (nn_layer_threads); they live
   * in the kind's kernel file, declared in nn/layers.h. */
  /* Computes the output of n samples of x (n, in) into y (n, out): the
   * storage the memory plan gave the layer, x itself when it works in
   * place. Returns where the output is: y, or x for an identity (dropout in
   * evaluation, flatten). */
  float *(*forward)(struct nn_net *net, struct nn_layer *l, int n, const float *x, float *y);
  /* From dy (n, out), which the kernel may overwrite (a fused ReLU's mask),
   * and x (n, in): the weight gradients into l->dweight and l->dbias, and dx
   * (n, in), NULL for the first layer (nothing below needs it). dx is dy
   * itself when the row says in_place. */
  void (*backward)(struct nn_net *net, struct nn_layer *l, int n, const float *x, float *dy,
                   float *dx);
  /* A fixed start of the learned tensors that every initialization keeps
   * (batchnorm: scale 1, shift 0). NULL: the initialization's random weights
   * (nn_init_*, fan_in = weight_count / out.c) and its biases. */
  void (*init)(struct nn_layer *l);
  /* Called once by nn_net_build after the buffers are carved (l->state
   * points at the layer's saved state, zeroed): sets the state's start
   * values (batchnorm: running_var 1) and allocates l->kind_data. Returns 0,
   * or -1 when out of memory. NULL: nothing to set up. */
  int (*setup)(struct nn_net *net, struct nn_layer *l);
  /* Floats of net->workspace the kernels need for a batch of n, at most cap
   * unless one sample needs more; called by nn_net_alloc with the thread
   * pool set. NULL: none. */
  size_t (*workspace)(const struct nn_net *net, const struct nn_layer *l, int n, size_t cap);

  /* What the memory plan of nn_net_alloc needs (and the thread split): */
  int reads_input;  /* backward reads its x (weight gradients, a recomputed scale) */
  int reads_output; /* backward reads its own y (ReLU and tanh derivatives) */
  int in_place;     /* backward may write dx over dy (same shape, dy read first) */
  nn_forward_place forward_in_place; /* where the forward may write its output */
  int fuses_relu;                    /* applies a following ReLU in its own pass (conv, linear) */
  int fusable;       /* is that ReLU: a layer with fuses_relu just before applies it */
  int saves_argmax;  /* needs l->argmax, (N, out) window indices (maxpool) */
  int compute_bound; /* its flops are GEMM flops; else memory bound, see
                        nn_layer_threads */
  int lars_plain;    /* LARS updates its learned tensors with the plain learning rate
                        and no weight decay, as biases (batchnorm's scale and shift) */
} nn_kind_desc;

/* The row of a kind, or NULL for a value outside the enum. */
const nn_kind_desc *nn_kind_info(nn_kind kind);
/* The row named `name` ("conv"), or NULL. */
const nn_kind_desc *nn_kind_find(const char *name);
/* The kind's name, "?" outside the enum. */
const char *nn_kind_name(nn_kind kind);

/* A layer of `kind` in `section` with every parameter at its default (what
 * a bare kind name means in a config; required parameters are 0). */
nn_layer_spec nn_layer_defaults(nn_kind kind, nn_section section);

/* Applies the kind's derived defaults (see complete above). */
void nn_layer_complete(nn_layer_spec *s);

/* The first problem of a layer's parameters, as "<param>: expected ...,
 * got ..." or the kind's own rule, or NULL when it is valid. The same rule
 * serves the config and nn_net_build. */
const char *nn_layer_problem(const nn_layer_spec *s, char *buf, size_t len);
/* The kind's rule on the layer before it (prev NULL: the start of the list,
 * i.e. the network's input, or for a config's classifier list the flatten):
 * NULL when s may follow prev, else the problem in buf. */
const char *nn_layer_follows(const nn_layer_spec *prev, const nn_layer_spec *s, char *buf,
                             size_t len);

/* ------------------------------------------------------------------------ */
/* Building                                                                  */

/* Options for a preset; zero-initialize and set what you need. */
typedef struct {
  int num_classes; /* 0 = 1000 (alexnet, alexnet_owt) or 10 (alexnet_cifar) */
  int in_channels; /* 0 = 3 */
  int groups;      /* alexnet only: 0 = 2 (the paper's two-GPU split), or 1 */
  float dropout;   /* 0 = the default 0.5; < 0 = p 0 (the layers stay, as identities,
                      so module indices keep PyTorch's numbering) */
  int input_size;  /* 0 = the preset's (227, 224, 32) */
} nn_preset_opts;

/* Writes the layer list of preset `arch` ("alexnet", "alexnet_owt",
 * "alexnet_cifar") into *specs (malloc'd, caller frees) and its count and input
 * shape. Returns 0, or -1 with a message in err for an unknown name. */
int nn_preset(const char *arch, const nn_preset_opts *opts, nn_layer_spec **specs, int *count,
              nn_shape *input, char *err, size_t errlen);

/* Builds a network from a layer list: checks that every shape fits, names the
 * layers as PyTorch does and carves the parameter and gradient buffers (zeros).
 * Returns 0, or -1 with a message naming the layer and the shapes in err and
 * *net left empty. */
int nn_net_build(nn_net *net, const nn_layer_spec *specs, int count, nn_shape input, char *err,
                 size_t errlen);

/* Batch norm's constants, PyTorch's defaults. */
#define NN_BN_EPS 1e-5f
#define NN_BN_MOMENTUM 0.1f

/* Frees everything a network owns; the struct is left zeroed. Safe on zeroed. */
void nn_net_free(nn_net *net);

/* Initializations. All are deterministic functions of the seed, and all keep
 * the fixed start of a kind whose row has one (init: batch norm's weight 1,
 * bias 0; its running statistics, mean 0 and variance 1, are set by
 * nn_net_build through the row's setup). */
/* The 2012 paper: weights N(0, 0.01), biases 1 in conv2, conv4, conv5 and the
 * hidden fc layers, 0 elsewhere. */
void nn_init_paper(nn_net *net, uint64_t seed);
/* PyTorch's defaults for Conv2d/Linear (kaiming_uniform a=sqrt(5): U(+-1/sqrt(fan_in))
 * for weights and biases), which torchvision's AlexNet keeps. */
void nn_init_torch_default(nn_net *net, uint64_t seed);
/* He et al. 2015 for ReLU networks: conv and linear weights N(0, 2 / fan_in),
 * biases 0; the last layer (which no ReLU follows) N(0, 1 / fan_in). */
void nn_init_kaiming(nn_net *net, uint64_t seed);

/* Allocates activations, activation gradients and workspace for up to `batch`
 * samples, and plans fusions. Everything a step needs is allocated here, none
 * during forward/backward. An output that neither its own backward nor the
 * next layer's reads (an LRN's, feeding max pooling that saved its argmax)
 * gets no buffer of its own: the forward writes it into one of the two
 * activation-gradient buffers, free until backward; set net->keep_outputs
 * first to keep every output. workspace_cap_mib bounds the im2col workspace
 * (0 = 64 MiB). Returns 0, or -1 with a message on allocation failure. */
int nn_net_alloc(nn_net *net, int batch, size_t workspace_cap_mib, char *err, size_t errlen);

/* Finds a parameter by PyTorch name ("features.0.weight"); returns its view
 * into net->params and sets *count, or NULL. */
float *nn_param_by_name(nn_net *net, const char *name, size_t *count, size_t *offset);

/* Visits every parameter tensor in state_dict order: name, offset, count and
 * its shape (dims[0..ndim-1]). */
typedef void (*nn_param_visitor)(void *ctx, const char *name, size_t offset, size_t count, int ndim,
                                 const int *dims);
void nn_visit_params(const nn_net *net, nn_param_visitor fn, void *ctx);
/* Visits every buffer (batch norm's running_mean, running_var: (C);
 * num_batches_tracked: ndim 0, a scalar) in state_dict order, offsets into
 * net->buffers. */
void nn_visit_buffers(const nn_net *net, nn_param_visitor fn, void *ctx);
/* Finds a buffer by PyTorch name ("features.1.running_var"), like
 * nn_param_by_name. */
float *nn_buffer_by_name(nn_net *net, const char *name, size_t *count, size_t *offset);

/* ------------------------------------------------------------------------ */
/* Running                                                                   */

/* Forward pass of n <= net->batch samples. x: (n, input). Returns the logits
 * (n, num_classes), owned by the network, valid until the next forward. */
const float *nn_forward(nn_net *net, const float *x, int n);

/* Softmax cross-entropy, mean over the n samples of the last forward. labels
 * in [0, num_classes). Writes net->dlogits (the gradient of the mean loss) and
 * returns the loss. If correct1/correct5 are not NULL they receive the number
 * of top-1 and top-5 hits. */
float nn_loss(nn_net *net, const int *labels, int n, int *correct1, int *correct5);

/* probs (classes) = softmax(logits (classes)) in double, the maximum taken
 * out first. Cannot fail. (nn_loss computes the same fused with its
 * gradient.) */
void nn_softmax(int classes, const float *logits, double *probs);

/* Called by nn_backward when the gradients of params [offset, offset+count)
 * are final; layers finish from the last to the first, so the offsets fall. */
typedef void (*nn_grad_ready_fn)(void *ctx, size_t offset, size_t count);

/* Backward pass from net->dlogits for the last forward of n samples, x being
 * that forward's input. Overwrites (does not accumulate) net->grads. */
void nn_backward(nn_net *net, const float *x, int n, nn_grad_ready_fn ready, void *ctx);

/* Per-layer wall time of the last forward/backward, in seconds, for the bench
 * and the metrics; arrays of net->num_layers, owned by the network. */
const double *nn_layer_forward_seconds(const nn_net *net);
const double *nn_layer_backward_seconds(const nn_net *net);

/* ------------------------------------------------------------------------ */
/* Precision                                                                 */

/* The bf16 kernel for this process: AVX512-BF16 when the CPU has it, else the
 * emulation; the environment variable ALEXNET_BF16_KERNEL (auto, avx512_bf16,
 * emulated, amx) forces one (amx only when forced, until it has run on an AMX
 * CPU: docs/performance.md; forcing it asks Linux for the tile state). Returns
 * 0, or -1 with a message in err when the forced kernel cannot run here
 * (naming the missing instructions, or Linux's refusal) or is unknown. */
int nn_bf16_select(nn_bf16_kernel *kernel, char *err, size_t errlen);
/* 1 when this CPU has AVX512-BF16 (cpuid). */
int nn_bf16_cpu_has_avx512bf16(void);
/* 1 when this CPU has AMX-BF16 and AMX-TILE (cpuid), and AVX512-BF16. */
int nn_bf16_cpu_has_amx(void);
/* "fp32", "emulated", "avx512_bf16", "amx". */
const char *nn_bf16_kernel_name(nn_bf16_kernel k);

/* ------------------------------------------------------------------------ */
/* Optimizer                                                                 */

typedef struct {
  float lr, momentum, weight_decay;
  int nesterov;
  int decay_bias; /* 0: no weight decay on biases */
} nn_sgd_opts;

/* PyTorch's SGD over the flat buffers: g' = g + wd*w; v = m*v + g';
 * w -= lr * (nesterov ? g' + m*v : v). momentum has num_params floats. */
void nn_sgd_step(nn_net *net, float *momentum, const nn_sgd_opts *opts);

typedef struct {
  float lr, momentum, weight_decay;
  float eta; /* trust coefficient, e.g. 0.001 */
  float eps; /* added to the trust ratio's denominator, e.g. 1e-9 */
} nn_lars_opts;

/* LARS (You, Gitman and Ginsburg 2017), per parameter tensor w with gradient
 * g. Conv and linear weights: trust = eta ||w|| / (||g|| + wd ||w|| + eps)
 * (1 when ||w|| or ||g|| is 0); v = m v + lr trust (g + wd w); w -= v.
 * Biases and batch norm parameters: v = m v + lr g; w -= v (no trust ratio,
 * no weight decay). Norms in double; momentum has num_params floats. */
void nn_lars_step(nn_net *net, float *momentum, const nn_lars_opts *opts);

/* ------------------------------------------------------------------------ */
/* Summary and utilities                                                     */

/* Writes the per-layer table (output shape, parameters, forward MFLOPs) and
 * totals to f (a FILE *, void to keep stdio out of this header). */
void nn_summary(const nn_net *net, void *f);
double nn_total_flops(const nn_net *net); /* forward FLOPs per sample */
/* Bytes nn_net_alloc allocated for the batch: activations kept for backward,
 * the two activation-gradient (and scratch) buffers, argmaxes, workspace. */
size_t nn_activation_bytes(const nn_net *net);

/* Sets the threads used by OpenBLAS and by nn's own loops: the pool. */
void nn_set_threads(int threads);

/* How many of `pool` threads a piece of work of `flops` (float32 GEMM
 * floating-point operations, or the equivalent) is split over: one per
 * NN_MIN_FLOPS_PER_THREAD, at least 1, at most pool. Splitting less work
 * costs more (waking and joining threads, summing private gradients; a
 * scheduler slice of milliseconds on a busy machine) than it saves. */
#define NN_MIN_FLOPS_PER_THREAD 64e6
int nn_threads_for(double flops, int pool);
/* The threads layer l runs on for a batch of n (nn_forward and nn_backward
 * set them for each layer): by its forward flops (l->flops x n); the kernels
 * other than conv and linear move memory more than they compute, so their
 * work counts NN_MEMORY_BOUND_WEIGHT times per operation or element. The
 * choice depends only on the layer, n and pool, so a fixed config gives the
 * same bits run after run. */
#define NN_MEMORY_BOUND_WEIGHT 8.0
int nn_layer_threads(const nn_layer *l, int n, int pool);

/* Counter-based random numbers: the same (seed, index) gives the same value
 * whatever the thread or order; used for init, dropout and augmentation. */
/* splitmix64's finalizer over (seed, index): a statistically sound hash, so
 * element i's random value depends on nothing but (seed, i), whatever thread
 * computes it and in whatever order. Inline: dropout draws one per element
 * (6.3 million a step for alexnet_owt's classifier at batch 64), and the
 * vectorizer can only widen a loop it sees whole. */
static inline uint64_t nn_hash64(uint64_t seed, uint64_t index) {
  uint64_t z = seed ^ (index * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  /* A second round decorrelates nearby seeds (seed and seed+1 at index 0). */
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
/* [0, 1), 24 bits. */
static inline float nn_uniform(uint64_t seed, uint64_t index) {
  return (float)(nn_hash64(seed, index) >> 40) * 0x1p-24f;
}
float nn_normal(uint64_t seed, uint64_t index); /* N(0, 1) */

#endif
