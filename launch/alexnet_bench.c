/*
 * alexnet-bench: where the time of a training step goes. Builds a preset,
 * runs warm-up steps, then times forward, backward and the SGD update per
 * layer; prints images/s for training and inference, GFLOP/s per layer beside
 * the sgemm GFLOP/s of the same GEMM shape on this machine, and the process's
 * peak RSS. A benchmark prints figures; it asserts nothing.
 *
 *   alexnet-bench [--arch alexnet] [--batch 64] [--threads 2] [--steps 5]
 *                 [--warmup 2] [--classes N] [--workspace-mib 64] [--precision fp32|bf16]
 *                 [--json]
 * In bf16, convolutions and linear layers multiply bf16 operands with float32
 * accumulation (nn/bf16.c); the kernel that ran is printed ("kernel").
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nn.h"
#include "tool.h"
#include "util.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0;
}

/* GFLOP/s of C(M,N) = A(M,K) B(K,N), best of a few runs. */
static double sgemm_gflops(int m, int n, int k) {
  float *a = calloc((size_t)m * k, sizeof(float));
  float *b = calloc((size_t)k * n, sizeof(float));
  float *c = calloc((size_t)m * n, sizeof(float));
  if (!a || !b || !c) {
    free(a), free(b), free(c);
    return 0;
  }
  for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
  for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)(i % 5) * 0.1f;
  double best = 1e30;
  int reps = 0;
  double start = util_now();
  while (reps < 3 || (reps < 20 && util_now() - start < 0.3)) {
    double t0 = util_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    double t = util_now() - t0;
    if (t < best) best = t;
    reps++;
  }
  free(a), free(b), free(c);
  return 2.0 * m * n * (double)k / best / 1e9;
}

/* Per layer: the median forward and backward times of the timed steps
 * (fwd, bwd: (layers, steps)), their GFLOP/s, and the sgemm GFLOP/s of the
 * same GEMM shape; printed unless json. Returns the layers as a JSON array
 * body (malloc'd). */
static char *layer_table(const nn_net *net, double *fwd, double *bwd, int steps, int batch,
                         int json) {
  int L = net->num_layers;
  char *layers_json = calloc((size_t)L, 256);
  size_t jlen = 0;
  for (int l = 0; l < L; l++) {
    const nn_layer *ly = &net->layers[l];
    double f = median(fwd + l * steps, steps), b = median(bwd + l * steps, steps);
    double lf = ly->flops * batch;
    double roof = 0;
    if (ly->spec.kind == NN_CONV) {
      int g = ly->spec.groups;
      int k = ly->in.c / g * ly->spec.kernel_h * ly->spec.kernel_w;
      roof = sgemm_gflops(ly->out.c / g, ly->out.h * ly->out.w * (batch < 8 ? batch : 8), k);
    } else if (ly->spec.kind == NN_LINEAR) {
      roof = sgemm_gflops(batch, ly->out.c, (int)nn_shape_size(ly->in));
    }
    if (!json) {
      printf("%-14s %-8s %10.2f %10.2f %10.1f %10.1f", ly->name, nn_kind_name(ly->spec.kind),
             f * 1e3, b * 1e3, ly->weight_count ? lf / f / 1e9 : 0.0,
             ly->weight_count ? 2 * lf / b / 1e9 : 0.0);
      if (roof > 0) printf(" %12.1f", roof);
      printf("\n");
    }
    jlen += (size_t)snprintf(layers_json + jlen, 256,
                             "%s{\"name\":\"%s\",\"kind\":\"%s\","
                             "\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"sgemm_gflops\":%.1f}",
                             l ? "," : "", ly->name, nn_kind_name(ly->spec.kind), f * 1e3, b * 1e3,
                             roof);
  }
  return layers_json;
}

static const char usage[] =
    "usage: alexnet-bench [--arch alexnet|alexnet_owt|alexnet_cifar] [--batch N]\n"
    "                     [--threads N] [--steps N] [--warmup N] [--classes N]\n"
    "                     [--workspace-mib N] [--precision fp32|bf16] [--json]\n";

/* The timed steps' figures, in seconds: per layer (fwd, bwd: (layers, steps))
 * and per step (the whole step, its three phases, one inference forward). */
typedef struct {
  int steps;
  double *fwd, *bwd;
  double *step, *forward, *backward, *update, *inference;
} timings;

static int timings_alloc(timings *t, int layers, int steps) {
  t->steps = steps;
  t->fwd = calloc((size_t)(layers * steps), sizeof(double));
  t->bwd = calloc((size_t)(layers * steps), sizeof(double));
  t->step = calloc((size_t)steps, sizeof(double));
  t->forward = calloc((size_t)steps, sizeof(double));
  t->backward = calloc((size_t)steps, sizeof(double));
  t->update = calloc((size_t)steps, sizeof(double));
  t->inference = calloc((size_t)steps, sizeof(double));
  return t->fwd && t->bwd && t->step && t->forward && t->backward && t->update && t->inference ? 0
                                                                                               : -1;
}

static void timings_free(timings *t) {
  free(t->fwd), free(t->bwd), free(t->step), free(t->forward), free(t->backward);
  free(t->update), free(t->inference);
}

/* The network of the preset `arch` for batches of `batch`, initialized as
 * PyTorch does; 0, or 1 after printing why not. */
static int build_net(nn_net *net, const char *arch, int classes, int batch, int workspace_mib,
                     int bf16) {
  char err[512];
  nn_layer_spec *specs;
  int count;
  nn_shape input;
  nn_preset_opts opts = {.num_classes = classes};
  nn_bf16_kernel kernel = NN_BF16_FP32;
  if (bf16 && nn_bf16_select(&kernel, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-bench: --precision bf16: %s\n", err);
    return 1;
  }
  if (nn_preset(arch, &opts, &specs, &count, &input, err, sizeof err) != 0 ||
      nn_net_build(net, specs, count, input, err, sizeof err) != 0 ||
      (net->kernel = kernel, nn_net_alloc(net, batch, (size_t)workspace_mib, err, sizeof err)) !=
          0) {
    fprintf(stderr, "alexnet-bench: %s\n", err);
    return 1;
  }
  free(specs);
  nn_init_torch_default(net, 1);
  return 0;
}

/* Runs warmup untimed and t->steps timed training steps (forward, loss,
 * backward, SGD update) on x and labels, then one untimed and t->steps timed
 * inference forwards, filling t. */
static void time_steps(nn_net *net, const float *x, const int *labels, int batch, int warmup,
                       float *momentum, timings *t) {
  const int L = net->num_layers, steps = t->steps;
  nn_sgd_opts sgd = {.lr = 0.001f, .momentum = 0.9f, .weight_decay = 5e-4f};
  net->training = 1;
  for (int s = -warmup; s < steps; s++) {
    net->dropout_seed = (uint64_t)(s + warmup);
    double t0 = util_now();
    nn_forward(net, x, batch);
    nn_loss(net, labels, batch, NULL, NULL);
    double t1 = util_now();
    nn_backward(net, x, batch, NULL, NULL);
    double t2 = util_now();
    nn_sgd_step(net, momentum, &sgd);
    double t3 = util_now();
    if (s < 0) continue;
    t->step[s] = t3 - t0, t->forward[s] = t1 - t0, t->backward[s] = t2 - t1;
    t->update[s] = t3 - t2;
    for (int l = 0; l < L; l++) {
      t->fwd[l * steps + s] = net->forward_seconds[l];
      t->bwd[l * steps + s] = net->backward_seconds[l];
    }
  }
  /* Inference (evaluation mode). */
  net->training = 0;
  net->no_grad = 1;
  for (int s = -1; s < steps; s++) {
    double t0 = util_now();
    nn_forward(net, x, batch);
    if (s >= 0) t->inference[s] = util_now() - t0;
  }
}

/* What the report prints besides the timings. */
typedef struct {
  const char *arch;
  int batch, threads, bf16, json;
  size_t in_count; /* floats of the input batch */
} run_desc;

/* Prints the report of t: the layer table and three summary lines, or one
 * JSON object. */
static void report(const nn_net *net, const run_desc *r, timings *t) {
  const int steps = t->steps, batch = r->batch;
  double step = median(t->step, steps), inf = median(t->inference, steps);
  double train_ips = batch / step, fwd_ips = batch / inf;
  double flops = nn_total_flops(net);
  /* The training process's peak, read before the roof measurements below
   * allocate their own matrices (up to 151 MB for classifier.1's shape). */
  double rss_mib = peak_rss_mib();
  const double mib = 1024.0 * 1024.0;
  double params_mib = 3.0 * (double)net->num_params * sizeof(float) / mib;
  double act_mib = (double)nn_activation_bytes(net) / mib;
  double input_mib = (double)r->in_count * sizeof(float) / mib;
  double big = sgemm_gflops(2048, 2048, 2048);
  const char *precision = r->bf16 ? "bf16" : "fp32", *kernel = nn_bf16_kernel_name(net->kernel);

  if (!r->json) {
    printf(
        "alexnet-bench: %s, batch %d, %d threads, %zu parameters, %.2f GFLOPs/sample forward, "
        "%s (kernel %s)\n",
        r->arch, batch, r->threads, net->num_params, flops / 1e9, precision, kernel);
    printf("%-14s %-8s %10s %10s %10s %10s %12s\n", "layer", "kind", "fwd ms", "bwd ms", "fwd GF/s",
           "bwd GF/s", "sgemm GF/s");
  }
  char *layers_json = layer_table(net, t->fwd, t->bwd, steps, batch, r->json);
  double train_gflops = 3 * flops * batch / step / 1e9;
  double fwd_ms = median(t->forward, steps) * 1e3, bwd_ms = median(t->backward, steps) * 1e3;
  double upd_ms = median(t->update, steps) * 1e3;
  if (!r->json) {
    printf("step: forward %.1f ms, backward %.1f ms, update %.1f ms, total %.1f ms\n", fwd_ms,
           bwd_ms, upd_ms, step * 1e3);
    printf(
        "train: %.1f images/s (%.1f GFLOP/s achieved); inference: %.1f images/s "
        "(%.1f GFLOP/s); sgemm 2048^3: %.1f GFLOP/s; peak RSS %.0f MiB\n",
        train_ips, train_gflops, fwd_ips, flops * batch / inf / 1e9, big, rss_mib);
    printf(
        "memory: parameters + gradients + momentum %.0f MiB, activations and workspace "
        "%.0f MiB, input batch %.0f MiB\n",
        params_mib, act_mib, input_mib);
  } else {
    printf(
        "{\"arch\":\"%s\",\"batch\":%d,\"threads\":%d,\"precision\":\"%s\",\"kernel\":\"%s\","
        "\"train_images_per_sec\":%.2f,"
        "\"forward_images_per_sec\":%.2f,\"step_ms\":%.2f,\"forward_ms\":%.2f,"
        "\"backward_ms\":%.2f,\"update_ms\":%.2f,\"train_gflops\":%.1f,"
        "\"sgemm_2048_gflops\":%.1f,\"peak_rss_mib\":%.0f,\"state_mib\":%.0f,"
        "\"activation_mib\":%.0f,\"layers\":[%s]}\n",
        r->arch, batch, r->threads, precision, kernel, train_ips, fwd_ips, step * 1e3, fwd_ms,
        bwd_ms, upd_ms, train_gflops, big, rss_mib, params_mib, act_mib, layers_json);
  }
  free(layers_json);
}

int main(int argc, char **argv) {
  const char *arch = "alexnet", *precision = NULL;
  int batch = 64, threads = 2, steps = 5, warmup = 2, classes = 0, json = 0, workspace_mib = 0;
  const tool_opt options[] = {TOOL_OPT_STRING("--arch", &arch),
                              TOOL_OPT_INT("--batch", &batch, 1, 1 << 20),
                              TOOL_OPT_INT("--threads", &threads, 1, TOOL_MAX_THREADS),
                              TOOL_OPT_INT("--steps", &steps, 1, 1 << 20),
                              TOOL_OPT_INT("--warmup", &warmup, 0, 1 << 20),
                              TOOL_OPT_INT("--classes", &classes, 0, 1 << 24),
                              TOOL_OPT_INT("--workspace-mib", &workspace_mib, 0, 1 << 20),
                              TOOL_OPT_STRING("--precision", &precision),
                              TOOL_OPT_FLAG("--json", &json),
                              TOOL_OPT_END};
  const tool_spec spec = {"alexnet-bench", usage, options, NULL};
  tool_parse(&spec, argc, argv);
  tool_threads(threads);
  const int bf16 = tool_precision(&spec, precision);

  nn_net net;
  if (build_net(&net, arch, classes, batch, workspace_mib, bf16) != 0) return 1;
  size_t in_count = nn_shape_size(net.input) * (size_t)batch;
  float *x = malloc(in_count * sizeof(float));
  int *labels = malloc((size_t)batch * sizeof(int));
  float *momentum = calloc(net.num_params, sizeof(float));
  timings t;
  if (!x || !labels || !momentum || timings_alloc(&t, net.num_layers, steps) != 0) {
    fprintf(stderr, "alexnet-bench: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < in_count; i++) x[i] = nn_normal(7, i);
  for (int i = 0; i < batch; i++) labels[i] = i % net.num_classes;

  time_steps(&net, x, labels, batch, warmup, momentum, &t);
  const run_desc r = {arch, batch, threads, bf16, json, in_count};
  report(&net, &r, &t);

  timings_free(&t);
  free(x), free(labels), free(momentum);
  nn_net_free(&net);
  return 0;
}
