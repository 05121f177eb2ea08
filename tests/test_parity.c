/*
 * test_parity: nn against PyTorch. tests/reference/make_reference.py (run by
 * hand with Debian's torch; see tests/reference/README.md) wrote, per network,
 * the layer list, the input batch and labels, and what torch computed in
 * float64: every module's output (sample 0), the logits, the mean
 * cross-entropy loss, every parameter's gradient, and the weights after
 * torch.optim.SGD steps. Here the same network is built from that layer list
 * with nn_net_build, given the same weights (regenerated from the file's
 * seeds, bit for bit), and run; each tensor is compared and printed as
 * "OK <what> <tensor> maxdiff=..." (or "FAIL ...").
 *
 * Tolerances: logits, loss and gradients 1e-4, the optimizer 1e-5, relative
 * to max(|want|, FLOOR x max|want| over the tensor): elements near a tensor's
 * largest are held to a relative error, elements that cancel to almost
 * nothing to an absolute one of 1e-6 of the largest (float32 rounding in a
 * different summation order; torch's own float32 result passes with 3.5e-5).
 *
 * bf16: the same weights and input with nn's bf16 products against PyTorch's
 * logits under torch.autocast bf16 (autocast_bf16.h5), within 1e-2.
 */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "nn.h"
#include "testutil.h"

#define REF_DIR ALEXNET_SOURCE_DIR "/tests/reference/"
#define FLOOR 1e-2
#define TOL_FORWARD 1e-4
#define TOL_GRAD 1e-4
#define TOL_STEP 1e-5

/* ---- reading the reference files ------------------------------------------ */

/* One row of /layers, as make_reference.py's LAYER_DTYPE (read by field name). */
typedef struct {
  char name[40], kind[16], section[16];
  int out, kernel_h, kernel_w, stride_h, stride_w;
  int pad_top, pad_bottom, pad_left, pad_right, groups, lrn_size;
  float lrn_alpha, lrn_beta, lrn_k;
  int out_h, out_w;
  float dropout_p;
  int shape_c, shape_h, shape_w;
} ref_layer;

/* One row of /param_gen. */
typedef struct {
  char name[72];
  unsigned seed;
  int exponent;
  long long count;
  int ndim;
  int dims[4];
} ref_param;

static hid_t str_type(size_t size) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, size);
  return t;
}

/* The whole of a 1-D compound dataset into a malloc'd array of `mem` rows. */
static void *read_table(hid_t f, const char *path, hid_t mem, size_t row, size_t *rows) {
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
  if (d < 0) return NULL;
  hid_t s = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  void *buf = calloc(n > 0 ? (size_t)n : 1, row);
  if (n <= 0 || H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    free(buf);
    buf = NULL;
  }
  H5Sclose(s);
  H5Dclose(d);
  *rows = n > 0 ? (size_t)n : 0;
  return buf;
}

static ref_layer *read_layers(hid_t f, size_t *rows) {
  hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(ref_layer));
  hid_t s40 = str_type(40), s16 = str_type(16);
  H5Tinsert(t, "name", HOFFSET(ref_layer, name), s40);
  H5Tinsert(t, "kind", HOFFSET(ref_layer, kind), s16);
  H5Tinsert(t, "section", HOFFSET(ref_layer, section), s16);
#define INT_FIELD(fld) H5Tinsert(t, #fld, HOFFSET(ref_layer, fld), H5T_NATIVE_INT)
#define FLOAT_FIELD(fld) H5Tinsert(t, #fld, HOFFSET(ref_layer, fld), H5T_NATIVE_FLOAT)
  INT_FIELD(out);
  INT_FIELD(kernel_h);
  INT_FIELD(kernel_w);
  INT_FIELD(stride_h);
  INT_FIELD(stride_w);
  INT_FIELD(pad_top);
  INT_FIELD(pad_bottom);
  INT_FIELD(pad_left);
  INT_FIELD(pad_right);
  INT_FIELD(groups);
  INT_FIELD(lrn_size);
  FLOAT_FIELD(lrn_alpha);
  FLOAT_FIELD(lrn_beta);
  FLOAT_FIELD(lrn_k);
  INT_FIELD(out_h);
  INT_FIELD(out_w);
  FLOAT_FIELD(dropout_p);
  INT_FIELD(shape_c);
  INT_FIELD(shape_h);
  INT_FIELD(shape_w);
#undef INT_FIELD
#undef FLOAT_FIELD
  ref_layer *rl = read_table(f, "layers", t, sizeof(ref_layer), rows);
  H5Tclose(s40);
  H5Tclose(s16);
  H5Tclose(t);
  return rl;
}

static ref_param *read_param_gen(hid_t f, size_t *rows) {
  hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(ref_param));
  hid_t s72 = str_type(72);
  hsize_t four = 4;
  hid_t dims = H5Tarray_create2(H5T_NATIVE_INT, 1, &four);
  H5Tinsert(t, "name", HOFFSET(ref_param, name), s72);
  H5Tinsert(t, "seed", HOFFSET(ref_param, seed), H5T_NATIVE_UINT);
  H5Tinsert(t, "exponent", HOFFSET(ref_param, exponent), H5T_NATIVE_INT);
  H5Tinsert(t, "count", HOFFSET(ref_param, count), H5T_NATIVE_LLONG);
  H5Tinsert(t, "ndim", HOFFSET(ref_param, ndim), H5T_NATIVE_INT);
  H5Tinsert(t, "dims", HOFFSET(ref_param, dims), dims);
  ref_param *rp = read_table(f, "param_gen", t, sizeof(ref_param), rows);
  H5Tclose(dims);
  H5Tclose(s72);
  H5Tclose(t);
  return rp;
}

/* Whether "group/name" exists (the group first: H5Lexists needs the parents). */
static int has_path(hid_t f, const char *group, const char *name) {
  if (H5Lexists(f, group, H5P_DEFAULT) <= 0) return 0;
  if (!name) return 1;
  char path[256];
  snprintf(path, sizeof path, "%s/%s", group, name);
  return H5Lexists(f, path, H5P_DEFAULT) > 0;
}

/* A float dataset, its element count and its "stride" attribute (1 if none):
 * a stride s > 1 means it holds elements 0, s, 2s, ... of the tensor. NULL if
 * it is missing. */
static float *read_floats(hid_t f, const char *path, size_t *count, int *stride) {
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
  if (d < 0) {
    fprintf(stderr, "\n  reference dataset %s is missing\n", path);
    return NULL;
  }
  hid_t s = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  float *buf = malloc(sizeof(float) * (n > 0 ? (size_t)n : 1));
  if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    fprintf(stderr, "\n  cannot read %s\n", path);
    free(buf);
    buf = NULL;
  }
  if (stride) {
    *stride = 1;
    if (H5Aexists(d, "stride") > 0) {
      hid_t a = H5Aopen(d, "stride", H5P_DEFAULT);
      H5Aread(a, H5T_NATIVE_INT, stride);
      H5Aclose(a);
    }
  }
  H5Sclose(s);
  H5Dclose(d);
  *count = n > 0 ? (size_t)n : 0;
  return buf;
}

static double attr_of(hid_t obj, const char *name) {
  double v = NAN;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a >= 0) {
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
  }
  return v;
}

/* make_reference.py's gen_param: element i = (2 * (lowbias32 >> 24) - 255) *
 * 2^(exponent - 8), exact in float32. */
static uint32_t hash32(uint32_t seed, uint32_t i) {
  uint32_t x = i * 0x9E3779B1u + seed * 0x85EBCA77u;
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

static void gen_param(uint32_t seed, int exponent, float *w, size_t count) {
  float scale = ldexpf(1.0f, exponent - 8);
  for (size_t i = 0; i < count; i++)
    w[i] = (float)(2 * (int)(hash32(seed, (uint32_t)i) >> 24) - 255) * scale;
}

/* ---- comparing ------------------------------------------------------------ */

/* Whether n elements taken every `stride` are exactly a tensor of `count`. */
static int fits(size_t n, int stride, size_t count) {
  return stride >= 1 && n == (count + (size_t)stride - 1) / (size_t)stride;
}

/* Compares got[i * stride] with want[i] for i < n (see the tolerances at the
 * top), prints one OK/FAIL line and returns whether it passed. */
static int compare(const char *what, const char *name, const float *got, size_t stride,
                   const float *want, size_t n, double tol) {
  float *g = calloc(n ? n : 1, sizeof(float));
  double big = 0, maxdiff = 0;
  for (size_t i = 0; i < n; i++) {
    g[i] = got[i * stride];
    big = fmax(big, fabs((double)want[i]));
    double d = fabs((double)g[i] - (double)want[i]);
    if (!(d <= maxdiff)) maxdiff = isnan(d) ? INFINITY : d;
  }
  size_t at = 0;
  double rel = tu_max_rel_err(g, want, n, big > 0 ? FLOOR * big : 1e-30, &at);
  int ok = rel <= tol;
  printf("%s %-9s %-26s maxdiff=%.3g maxrel=%.3g", ok ? "OK  " : "FAIL", what, name, maxdiff, rel);
  if (stride > 1) printf(" (every %zuth)", stride);
  if (!ok && n)
    printf("  worst at %zu: got %.8g want %.8g", at * stride, (double)g[at], (double)want[at]);
  printf("\n");
  free(g);
  return ok;
}

/* ---- building the reference's network ------------------------------------- */

static int kind_of(const char *s, nn_kind *k) {
  static const struct {
    const char *name;
    nn_kind kind;
  } kinds[] = {{"conv", NN_CONV},       {"linear", NN_LINEAR},   {"relu", NN_RELU},
               {"tanh", NN_TANH},       {"lrn", NN_LRN},         {"maxpool", NN_MAXPOOL},
               {"avgpool", NN_AVGPOOL}, {"dropout", NN_DROPOUT}, {"flatten", NN_FLATTEN}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strcmp(s, kinds[i].name) == 0) {
      *k = kinds[i].kind;
      return 0;
    }
  return -1;
}

static int section_of(const char *s, nn_section *sec) {
  if (strcmp(s, "features") == 0)
    *sec = NN_FEATURES;
  else if (strcmp(s, "avgpool") == 0)
    *sec = NN_AVGPOOL_SECTION;
  else if (strcmp(s, "classifier") == 0)
    *sec = NN_CLASSIFIER;
  else
    return -1;
  return 0;
}

/* The nn_layer_spec list the reference's /layers describes; NULL (and a
 * message) on a row this test does not know. */
static nn_layer_spec *specs_of(const ref_layer *rl, size_t rows) {
  nn_layer_spec *specs = calloc(rows, sizeof *specs);
  for (size_t i = 0; i < rows; i++) {
    const ref_layer *r = &rl[i];
    nn_layer_spec *s = &specs[i];
    if (kind_of(r->kind, &s->kind) || section_of(r->section, &s->section)) {
      fprintf(stderr, "\n  layer %s: unknown kind '%s' or section '%s'\n", r->name, r->kind,
              r->section);
      free(specs);
      return NULL;
    }
    s->out = r->out;
    s->kernel_h = r->kernel_h;
    s->kernel_w = r->kernel_w;
    s->stride_h = r->stride_h;
    s->stride_w = r->stride_w;
    s->pad_top = r->pad_top;
    s->pad_bottom = r->pad_bottom;
    s->pad_left = r->pad_left;
    s->pad_right = r->pad_right;
    s->groups = r->groups;
    s->lrn_size = r->lrn_size;
    s->lrn_alpha = r->lrn_alpha;
    s->lrn_beta = r->lrn_beta;
    s->lrn_k = r->lrn_k;
    s->out_h = r->out_h;
    s->out_w = r->out_w;
    s->dropout_p = r->dropout_p;
  }
  return specs;
}

/* nn_visit_params into a list, to check names, order and shapes. */
typedef struct {
  int n;
  char name[64][64];
  size_t offset[64], count[64];
  int ndim[64], dims[64][4];
} param_list;

static void collect_param(void *ctx, const char *name, size_t offset, size_t count, int ndim,
                          const int *dims) {
  param_list *p = ctx;
  if (p->n >= 64) return;
  snprintf(p->name[p->n], sizeof p->name[0], "%s", name);
  p->offset[p->n] = offset;
  p->count[p->n] = count;
  p->ndim[p->n] = ndim;
  for (int d = 0; d < ndim && d < 4; d++) p->dims[p->n][d] = dims[d];
  p->n++;
}

/* nn_backward's grad-ready calls: ranges must fall and tile the buffer. */
typedef struct {
  size_t next_end; /* the next range must end here */
  int calls, bad;
} ready_log;

static void on_ready(void *ctx, size_t offset, size_t count) {
  ready_log *r = ctx;
  if (offset + count != r->next_end) r->bad++;
  r->next_end = offset;
  r->calls++;
}

/* ---- one reference file ----------------------------------------------------- */

/* Diagnostics after a failure: each layer's output (sample 0) against torch's
 * module output. A layer whose buffer a later in-place layer reused (fused
 * ReLU, dropout in eval) holds that later module's output; outputs planned
 * into scratch are not shown. */
static void print_activations(hid_t f, const nn_net *net) {
  printf("diagnostics: module outputs, sample 0\n");
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (l->scratch >= 0) continue; /* overwritten later in the forward: see nn_net_alloc */
    int j = i;
    while (j + 1 < net->num_layers && net->layers[j + 1].output == l->output) j++;
    const char *tname = net->layers[j].name;
    if (!has_path(f, "activations", tname)) continue;
    char path[96];
    snprintf(path, sizeof path, "activations/%s", tname);
    size_t n;
    float *want = read_floats(f, path, &n, NULL);
    if (want && n == nn_shape_size(l->out)) {
      char label[96];
      snprintf(label, sizeof label, "%s (%s)", l->name, tname);
      compare("act", label, l->output, 1, want, n, TOL_FORWARD);
    }
    free(want);
  }
}

/* /<group>/<name of tensor t>, checked to cover the tensor (every `stride`);
 * NULL (and a message) if missing or of another size. */
static float *read_tensor(hid_t f, const char *group, const param_list *pl, int t, size_t *n,
                          int *stride) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", group, pl->name[t]);
  float *a = read_floats(f, path, n, stride);
  if (a && !fits(*n, *stride, pl->count[t])) {
    fprintf(stderr, "\n  %s: %zu elements every %d do not make %zu\n", path, *n, *stride,
            pl->count[t]);
    free(a);
    a = NULL;
  }
  return a;
}

/* Loads /<group>/<name> into the network's gradient buffer for every param;
 * -1 if one is missing or subsampled. */
static int load_grads(hid_t f, nn_net *net, const param_list *pl, const char *group) {
  for (int t = 0; t < pl->n; t++) {
    size_t n;
    int stride;
    float *g = read_tensor(f, group, pl, t, &n, &stride);
    if (!g || stride != 1) {
      free(g);
      return -1;
    }
    memcpy(net->grads + pl->offset[t], g, sizeof(float) * n);
    free(g);
  }
  return 0;
}

/* Compares buf (net->params or net->grads) with /<group>/<name> for every
 * parameter tensor; returns whether all passed. */
static int compare_tensors(hid_t f, const char *group, const float *buf, const param_list *pl,
                           double tol) {
  int ok = 1;
  for (int t = 0; t < pl->n; t++) {
    size_t n;
    int stride;
    float *want = read_tensor(f, group, pl, t, &n, &stride);
    ok &= want && compare(group, pl->name[t], buf + pl->offset[t], (size_t)stride, want, n, tol);
    free(want);
  }
  return ok;
}

/* The optimizer fed torch's gradients, for each variant under /optimizer
 * (its attributes say lr, momentum, ...): from the initial weights with zero
 * momentum, step 1 fed /grads, then step 2 (if stored) fed /grads2. */
static void check_optimizer(hid_t f, nn_net *net, const param_list *pl, const float *init) {
  hid_t g = H5Gopen2(f, "optimizer", H5P_DEFAULT);
  CU_ASSERT_FATAL(g >= 0);
  H5G_info_t info;
  H5Gget_info(g, &info);
  CU_ASSERT(info.nlinks >= 1);
  float *momentum = malloc(sizeof(float) * net->num_params);
  for (hsize_t v = 0; v < info.nlinks; v++) {
    char name[64], group[128];
    H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, v, name, sizeof name, H5P_DEFAULT);
    hid_t vg = H5Gopen2(g, name, H5P_DEFAULT);
    nn_sgd_opts o = {(float)attr_of(vg, "lr"), (float)attr_of(vg, "momentum"),
                     (float)attr_of(vg, "weight_decay"), (int)attr_of(vg, "nesterov"),
                     (int)attr_of(vg, "decay_bias")};
    printf("optimizer %s: lr %g momentum %g weight_decay %g nesterov %d decay_bias %d\n", name,
           o.lr, o.momentum, o.weight_decay, o.nesterov, o.decay_bias);
    CU_ASSERT(o.lr > 0 && o.momentum > 0 && o.weight_decay > 0);
    memcpy(net->params, init, sizeof(float) * net->num_params);
    memset(momentum, 0, sizeof(float) * net->num_params);
    for (int step = 1; step <= 2; step++) {
      snprintf(group, sizeof group, "optimizer/%s/step%d", name, step);
      if (step == 2 && H5Lexists(vg, "step2", H5P_DEFAULT) <= 0) break;
      CU_ASSERT_FATAL(load_grads(f, net, pl, step == 1 ? "grads" : "grads2") == 0);
      nn_sgd_step(net, momentum, &o);
      CU_ASSERT(compare_tensors(f, group, net->params, pl, TOL_STEP));
    }
    H5Gclose(vg);
  }
  free(momentum);
  H5Gclose(g);
}

/* Everything for one reference file. */
/* The same weights and input in bf16 (each kernel this CPU runs) against
 * PyTorch's logits under torch.autocast bf16 (autocast_bf16.h5, written by
 * make_bf16_reference.py): relative error ||ours - torch|| / ||torch|| <= 1e-2,
 * the bound tests/bf16_kernels.c justifies from bf16's 8-bit significand (both
 * sides round to bf16, in different places; measured 1e-3 to 5e-3). */
static void check_bf16_logits(const char *file, nn_net *net, const float *x, int batch) {
  char path[512], name[256];
  snprintf(path, sizeof path, REF_DIR "autocast_bf16.h5");
  snprintf(name, sizeof name, "%.*s/logits", (int)(strlen(file) - 3), file);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  size_t n = 0;
  float *want = read_floats(f, name, &n, NULL);
  H5Fclose(f);
  CU_ASSERT_FATAL(want && n == (size_t)batch * (size_t)net->num_classes);
  CU_ASSERT_FATAL(nn_bf16_reserve(4) == 0);
  const nn_bf16_kernel kernels[] = {NN_BF16_EMULATED, NN_BF16_AVX512, NN_BF16_AMX};
  for (int k = 0; k < 3; k++) {
    if (kernels[k] == NN_BF16_AVX512 && !nn_bf16_cpu_has_avx512bf16()) {
      printf("  bf16 %s: not run, this CPU lacks AVX512-BF16\n", nn_bf16_kernel_name(kernels[k]));
      continue;
    }
    if (kernels[k] == NN_BF16_AMX) {
      /* amx needs the tile state granted first, as nn_bf16_select does. */
      char err[256];
      nn_bf16_kernel got;
      setenv("ALEXNET_BF16_KERNEL", "amx", 1);
      const int ok = nn_bf16_cpu_has_amx() && nn_bf16_select(&got, err, sizeof err) == 0;
      unsetenv("ALEXNET_BF16_KERNEL");
      if (!ok) {
        printf("  bf16 amx: not run, this CPU lacks AMX or Linux refused its tile state\n");
        continue;
      }
    }
    net->kernel = kernels[k];
    const float *got = nn_forward(net, x, batch);
    double e = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
      e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
      w += (double)want[i] * want[i];
    }
    const double rel = sqrt(e / w);
    printf("  %s bf16 %s logits vs torch.autocast bf16: relative error %.2e\n",
           rel <= 1e-2 ? "OK" : "FAIL", nn_bf16_kernel_name(kernels[k]), rel);
    CU_ASSERT(rel <= 1e-2);
  }
  /* The float32 forward again: the checks after this one read its outputs. */
  net->kernel = NN_BF16_FP32;
  nn_forward(net, x, batch);
  free(want);
}

static void run_reference(const char *file) {
  char path[512];
  snprintf(path, sizeof path, REF_DIR "%s", file);
  printf("\n== %s\n", path);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) fprintf(stderr, "\n  cannot open %s (regenerate: tests/reference/README.md)\n", path);
  CU_ASSERT_FATAL(f >= 0);

  size_t rows = 0, nparams = 0, n;
  ref_layer *rl = read_layers(f, &rows);
  ref_param *rp = read_param_gen(f, &nparams);
  CU_ASSERT_FATAL(rl != NULL && rp != NULL && rows > 0 && nparams > 0);
  nn_layer_spec *specs = specs_of(rl, rows);
  CU_ASSERT_FATAL(specs != NULL);

  /* The input fixes the batch and the per-sample shape. */
  hid_t d = H5Dopen2(f, "input", H5P_DEFAULT);
  hid_t s = H5Dget_space(d);
  hsize_t dims[4] = {0, 0, 0, 0};
  int rank = H5Sget_simple_extent_ndims(s);
  H5Sget_simple_extent_dims(s, dims, NULL);
  H5Sclose(s);
  H5Dclose(d);
  CU_ASSERT_FATAL(rank == 4);
  int batch = (int)dims[0];
  nn_shape input = {(int)dims[1], (int)dims[2], (int)dims[3]};
  float *x = read_floats(f, "input", &n, NULL);
  CU_ASSERT_FATAL(x && n == (size_t)batch * nn_shape_size(input));
  CU_ASSERT_EQUAL((int)attr_of(f, "batch"), batch);

  nn_net net;
  char err[512] = "";
  int rc = nn_net_build(&net, specs, (int)rows, input, err, sizeof err);
  if (rc) fprintf(stderr, "\n  nn_net_build: %s\n", err);
  CU_ASSERT_FATAL(rc == 0);

  /* Names and shapes, layer by layer, as torch numbers its modules. */
  CU_ASSERT_EQUAL_FATAL(net.num_layers, (int)rows);
  for (size_t i = 0; i < rows; i++) {
    const nn_layer *l = &net.layers[i];
    nn_shape t = {rl[i].shape_c, rl[i].shape_h, rl[i].shape_w};
    /* torch flattens before the classifier; nn keeps (C, H, W) up to the first linear. */
    int flat = t.h == 1 && t.w == 1 && nn_shape_size(l->out) == (size_t)t.c;
    int same = strcmp(l->name, rl[i].name) == 0 &&
               ((l->out.c == t.c && l->out.h == t.h && l->out.w == t.w) || flat);
    if (!same)
      fprintf(stderr, "\n  layer %zu: nn %s %dx%dx%d, torch %s %dx%dx%d\n", i, l->name, l->out.c,
              l->out.h, l->out.w, rl[i].name, rl[i].shape_c, rl[i].shape_h, rl[i].shape_w);
    CU_ASSERT(same);
  }
  CU_ASSERT_EQUAL(net.num_classes, (int)attr_of(f, "num_classes"));

  /* Parameters: state_dict order, shapes, contiguous; then the weights. */
  param_list *pl = calloc(1, sizeof *pl);
  nn_visit_params(&net, collect_param, pl);
  CU_ASSERT_EQUAL_FATAL(pl->n, (int)nparams);
  size_t expect_offset = 0;
  for (int t = 0; t < pl->n; t++) {
    const ref_param *r = &rp[t];
    int same = strcmp(pl->name[t], r->name) == 0 && pl->ndim[t] == r->ndim &&
               pl->count[t] == (size_t)r->count && pl->offset[t] == expect_offset;
    for (int k = 0; k < r->ndim && k < 4; k++) same &= pl->dims[t][k] == r->dims[k];
    if (!same)
      fprintf(stderr, "\n  param %d: nn %s (%zu at %zu), torch %s (%lld)\n", t, pl->name[t],
              pl->count[t], pl->offset[t], r->name, r->count);
    CU_ASSERT_FATAL(same);
    expect_offset += pl->count[t];
    size_t count = 0, offset = 0;
    float *w = nn_param_by_name(&net, r->name, &count, &offset);
    CU_ASSERT_FATAL(w != NULL && count == (size_t)r->count && offset == pl->offset[t]);
    gen_param(r->seed, r->exponent, w, count);
  }
  CU_ASSERT_EQUAL(expect_offset, net.num_params);
  float *init = malloc(sizeof(float) * net.num_params);
  memcpy(init, net.params, sizeof(float) * net.num_params);

  rc = nn_net_alloc(&net, batch, 0, err, sizeof err);
  if (rc) fprintf(stderr, "\n  nn_net_alloc: %s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  net.training = 0; /* torch ran in eval mode: dropout is the identity */

  int ok = 1;
  const float *logits = nn_forward(&net, x, batch);
  float *want = read_floats(f, "logits", &n, NULL);
  CU_ASSERT_FATAL(want && n == (size_t)batch * (size_t)net.num_classes);
  ok &= compare("forward", "logits", logits, 1, want, n, TOL_FORWARD);
  free(want);
  check_bf16_logits(file, &net, x, batch);

  int *labels = malloc(sizeof(int) * (size_t)batch);
  hid_t dl = H5Dopen2(f, "labels", H5P_DEFAULT);
  CU_ASSERT_FATAL(dl >= 0 &&
                  H5Dread(dl, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels) >= 0);
  H5Dclose(dl);
  float loss = nn_loss(&net, labels, batch, NULL, NULL);
  want = read_floats(f, "loss", &n, NULL);
  CU_ASSERT_FATAL(want && n == 1);
  ok &= compare("loss", "cross_entropy", &loss, 1, want, 1, TOL_FORWARD);
  free(want);

  ready_log rlog = {net.num_params, 0, 0};
  nn_backward(&net, x, batch, on_ready, &rlog);
  int weighted = 0;
  for (int i = 0; i < net.num_layers; i++) weighted += net.layers[i].weight_count > 0;
  CU_ASSERT(rlog.bad == 0 && rlog.next_end == 0 && rlog.calls == weighted);
  ok &= compare_tensors(f, "grads", net.grads, pl, TOL_GRAD);
  if (!ok) print_activations(f, &net);
  CU_ASSERT(ok);

  if (attr_of(f, "has_optimizer") == 1) check_optimizer(f, &net, pl, init);

  free(labels);
  free(init);
  free(pl);
  free(x);
  nn_net_free(&net);
  free(specs);
  free(rp);
  free(rl);
  H5Fclose(f);
}

static void test_alexnet_cifar(void) {
  run_reference("alexnet_cifar.h5");
}
static void test_alexnet_small(void) {
  run_reference("alexnet_small.h5");
}
static void test_alexnet_owt_small(void) {
  run_reference("alexnet_owt_small.h5");
}

/* ---- the presets describe the same networks --------------------------------- */

/* The reference's layer list against a preset's, field by field, except the
 * widths it shrank: the hidden fc width, and with `any_width` every conv and
 * linear width (channels, classes). */
static void check_preset_matches(const char *file, const char *arch, nn_preset_opts opts,
                                 int any_width) {
  char path[512];
  snprintf(path, sizeof path, REF_DIR "%s", file);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  size_t rows = 0;
  ref_layer *rl = read_layers(f, &rows);
  CU_ASSERT_FATAL(rl != NULL);
  nn_layer_spec *ref = specs_of(rl, rows);
  CU_ASSERT_FATAL(ref != NULL);
  nn_layer_spec *specs = NULL;
  int count = 0;
  nn_shape input;
  char err[256];
  CU_ASSERT_FATAL(nn_preset(arch, &opts, &specs, &count, &input, err, sizeof err) == 0);
  CU_ASSERT_EQUAL_FATAL(count, (int)rows);
  for (int i = 0; i < count; i++) {
    nn_layer_spec a = specs[i], b = ref[i];
    int last = i == count - 1;
    if (a.kind == NN_LINEAR && (!last || any_width)) a.out = b.out = 0;
    if (a.kind == NN_CONV && any_width) a.out = b.out = 0;
    /* Unset strides mean 1 (conv) or the kernel (maxpool) to nn_net_build. */
    if (a.kind == NN_MAXPOOL && a.stride_h == 0) a.stride_h = a.kernel_h;
    if (a.kind == NN_MAXPOOL && a.stride_w == 0) a.stride_w = a.kernel_w;
    if (a.kind == NN_CONV && a.groups == 0) a.groups = 1;
    int same = a.kind == b.kind && a.section == b.section && a.out == b.out &&
               a.kernel_h == b.kernel_h && a.kernel_w == b.kernel_w && a.stride_h == b.stride_h &&
               a.stride_w == b.stride_w && a.pad_top == b.pad_top && a.pad_bottom == b.pad_bottom &&
               a.pad_left == b.pad_left && a.pad_right == b.pad_right &&
               (a.kind != NN_CONV || a.groups == b.groups) && a.lrn_size == b.lrn_size &&
               a.lrn_alpha == b.lrn_alpha && a.lrn_beta == b.lrn_beta && a.lrn_k == b.lrn_k &&
               a.out_h == b.out_h && a.out_w == b.out_w && a.dropout_p == b.dropout_p;
    if (!same)
      fprintf(stderr, "\n  %s layer %d (%s): preset %s and reference %s differ\n", arch, i,
              rl[i].name, nn_kind_name(specs[i].kind), rl[i].kind);
    CU_ASSERT(same);
  }
  free(specs);
  free(ref);
  free(rl);
  H5Fclose(f);
}

/* alexnet_cifar.h5 is the seed's network but for the 256-wide hidden fc layers
 * (4096 would make the file 90 MB), so the preset's weights cannot be loaded
 * from it; its layer list must still be the preset's. */
static void test_preset_alexnet_cifar(void) {
  check_preset_matches("alexnet_cifar.h5", "alexnet_cifar", (nn_preset_opts){0}, 0);
}

/* alexnet_small.h5 is the paper's network with fewer channels, after the
 * seed's padding [1, 2]: the preset at 224 (the seed's input size). */
static void test_preset_alexnet(void) {
  check_preset_matches("alexnet_small.h5", "alexnet", (nn_preset_opts){.input_size = 224}, 1);
}

int main(void) {
  static const tu_test tests[] = {
      {"alexnet_cifar (seed's 32x32 net, fc 256)", test_alexnet_cifar},
      {"alexnet_small (paper: LRN, groups 2, padding [1,2])", test_alexnet_small},
      {"alexnet_owt_small (adaptive avgpool 3x5->6x6, tanh)", test_alexnet_owt_small},
      {"preset alexnet_cifar = reference layer list", test_preset_alexnet_cifar},
      {"preset alexnet (224) = reference layer list", test_preset_alexnet},
      {NULL, NULL},
  };
  tu_add_suite("parity with PyTorch", tests);
  return tu_run_all();
}
