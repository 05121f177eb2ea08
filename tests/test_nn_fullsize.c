/*
 * test_nn_fullsize: the real networks at their real sizes, so the suite always
 * runs them: alexnet_owt at 224 (PyTorch's default initialization) and the
 * 2012 paper's alexnet at 227 (the paper's initialization), built from
 * nn_preset, forward and backward on a batch of 2 in training mode (dropout
 * on). Checks: parameter counts (torchvision's 61,100,840; the paper's network
 * with groups 2: 60,965,224), layer output shapes, finite logits and
 * gradients, a gradient reaching every parameter tensor, the loss near
 * ln(1000) at initialization, forward FLOPs, and nn_summary's totals.
 * Parity of the values themselves is test_parity's job.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "testutil.h"

typedef struct {
  const char *name;
  int c, h, w;
} layer_shape;

typedef struct {
  const char *arch;
  int paper_init;              /* 1: nn_init_paper, 0: nn_init_torch_default */
  size_t params;               /* expected parameter count */
  double loss_tol;             /* |loss - ln 1000| must be below this */
  double gflops_lo, gflops_hi; /* forward GFLOPs per sample */
  const layer_shape *shapes;   /* NULL-name terminated */
} fullsize_case;

/* Every parameter tensor's gradient: finite, and not all zero. */
typedef struct {
  const float *grads;
  int tensors, nonfinite, zero;
} grad_check;

static void check_grad(void *ctx, const char *name, size_t offset, size_t count, int ndim,
                       const int *dims) {
  (void)ndim;
  (void)dims;
  grad_check *g = ctx;
  double big = 0;
  size_t bad = 0;
  for (size_t i = 0; i < count; i++) {
    float v = g->grads[offset + i];
    if (!isfinite(v))
      bad++;
    else if (fabs(v) > big)
      big = fabs(v);
  }
  if (bad) fprintf(stderr, "\n  %s: %zu non-finite gradients\n", name, bad);
  if (big == 0) fprintf(stderr, "\n  %s: gradient is all zero\n", name);
  g->tensors++;
  g->nonfinite += bad > 0;
  g->zero += big == 0;
}

static void run_fullsize(const fullsize_case *fc) {
  nn_layer_spec *specs = NULL;
  int count = 0;
  nn_shape input;
  char err[256];
  CU_ASSERT_FATAL(nn_preset(fc->arch, NULL, &specs, &count, &input, err, sizeof err) == 0);
  nn_net net;
  int rc = nn_net_build(&net, specs, count, input, err, sizeof err);
  free(specs);
  if (rc) fprintf(stderr, "\n  nn_net_build(%s): %s\n", fc->arch, err);
  CU_ASSERT_FATAL(rc == 0);
  printf("\n%s: %zu parameters, input %dx%dx%d\n", fc->arch, net.num_params, input.c, input.h,
         input.w);
  CU_ASSERT_EQUAL(net.num_params, fc->params);
  CU_ASSERT_EQUAL(net.num_classes, 1000);

  for (const layer_shape *s = fc->shapes; s->name; s++) {
    int found = 0;
    for (int i = 0; i < net.num_layers; i++) {
      const nn_layer *l = &net.layers[i];
      if (strcmp(l->name, s->name) != 0) continue;
      found = 1;
      if (l->out.c != s->c || l->out.h != s->h || l->out.w != s->w)
        fprintf(stderr, "\n  %s %s: output %dx%dx%d, expected %dx%dx%d\n", fc->arch, s->name,
                l->out.c, l->out.h, l->out.w, s->c, s->h, s->w);
      CU_ASSERT(l->out.c == s->c && l->out.h == s->h && l->out.w == s->w);
    }
    if (!found) fprintf(stderr, "\n  %s: no layer %s\n", fc->arch, s->name);
    CU_ASSERT(found);
  }
  double gflops = nn_total_flops(&net) / 1e9;
  printf("%s: %.3f GFLOPs forward per sample\n", fc->arch, gflops);
  CU_ASSERT(gflops > fc->gflops_lo && gflops < fc->gflops_hi);

  if (fc->paper_init)
    nn_init_paper(&net, 7);
  else
    nn_init_torch_default(&net, 7);

  const int n = 2;
  rc = nn_net_alloc(&net, n, 0, err, sizeof err);
  if (rc) fprintf(stderr, "\n  nn_net_alloc(%s): %s\n", fc->arch, err);
  CU_ASSERT_FATAL(rc == 0);
  size_t in_count = (size_t)n * nn_shape_size(input);
  float *x = malloc(sizeof(float) * in_count);
  CU_ASSERT_FATAL(x != NULL);
  for (size_t i = 0; i < in_count; i++) x[i] = nn_normal(11, i); /* like normalized pixels */
  int labels[2] = {3, 997};

  net.training = 1;
  net.dropout_seed = 5;
  const float *logits = nn_forward(&net, x, n);
  size_t bad = 0;
  for (int i = 0; i < n * net.num_classes; i++) bad += !isfinite(logits[i]);
  CU_ASSERT_EQUAL(bad, 0);
  float loss = nn_loss(&net, labels, n, NULL, NULL);
  printf("%s: loss at initialization %.4f (ln 1000 = %.4f)\n", fc->arch, loss, log(1000.0));
  CU_ASSERT(isfinite(loss) && fabs(loss - log(1000.0)) < fc->loss_tol);

  nn_backward(&net, x, n, NULL, NULL);
  grad_check g = {net.grads, 0, 0, 0};
  nn_visit_params(&net, check_grad, &g);
  CU_ASSERT_EQUAL(g.tensors, 16);
  CU_ASSERT_EQUAL(g.nonfinite, 0);
  CU_ASSERT_EQUAL(g.zero, 0);

  /* nn_summary: every layer and the totals. */
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  CU_ASSERT_FATAL(mem != NULL);
  nn_summary(&net, mem);
  fclose(mem);
  char total[32];
  snprintf(total, sizeof total, "%zu", fc->params);
  TU_ASSERT_CONTAINS(text, total);
  TU_ASSERT_CONTAINS(text, "total");
  TU_ASSERT_CONTAINS(text, "features.0");
  TU_ASSERT_CONTAINS(text, "classifier.6");
  fputs(text, stdout);
  free(text);

  free(x);
  nn_net_free(&net);
}

static void test_alexnet_owt_224(void) {
  static const layer_shape shapes[] = {{"features.0", 64, 55, 55},
                                       {"features.2", 64, 27, 27},
                                       {"features.3", 192, 27, 27},
                                       {"features.5", 192, 13, 13},
                                       {"features.6", 384, 13, 13},
                                       {"features.8", 256, 13, 13},
                                       {"features.10", 256, 13, 13},
                                       {"features.12", 256, 6, 6},
                                       {"avgpool", 256, 6, 6},
                                       {"classifier.1", 4096, 1, 1},
                                       {"classifier.4", 4096, 1, 1},
                                       {"classifier.6", 1000, 1, 1},
                                       {NULL, 0, 0, 0}};
  /* torchvision.models.alexnet(): sum(p.numel() for p in m.parameters()). */
  const fullsize_case fc = {"alexnet_owt", 0, 61100840, 0.1, 1.42, 1.50, shapes};
  run_fullsize(&fc);
}

static void test_alexnet_227(void) {
  static const layer_shape shapes[] = {{"features.0", 96, 55, 55},
                                       {"features.2", 96, 55, 55},
                                       {"features.3", 96, 27, 27},
                                       {"features.4", 256, 27, 27},
                                       {"features.7", 256, 13, 13},
                                       {"features.8", 384, 13, 13},
                                       {"features.10", 384, 13, 13},
                                       {"features.12", 256, 13, 13},
                                       {"features.14", 256, 6, 6},
                                       {"classifier.1", 4096, 1, 1},
                                       {"classifier.4", 4096, 1, 1},
                                       {"classifier.6", 1000, 1, 1},
                                       {NULL, 0, 0, 0}};
  /* conv 96x3x11x11, 256x48x5x5, 384x256x3x3, 384x192x3x3, 256x192x3x3 (groups 2),
   * fc 9216->4096->4096->1000, with biases: 60,965,224. */
  const fullsize_case fc = {"alexnet", 1, 60965224, 0.5, 1.44, 1.52, shapes};
  run_fullsize(&fc);
}

int main(void) {
  static const tu_test tests[] = {
      {"alexnet_owt at 224, batch 2, PyTorch init", test_alexnet_owt_224},
      {"alexnet (paper, groups 2) at 227, batch 2, paper init", test_alexnet_227},
      {NULL, NULL},
  };
  tu_add_suite("full-size networks", tests);
  return tu_run_all();
}
