/*
 * alexnet-predict: the top-k classes of images under a checkpoint, and the
 * activation maps of its convolutions laid over each image.
 *
 *   alexnet-predict --checkpoint PATH [--labels class_names.txt] [--top 5]
 *                   [--activation-maps OUT_DIR] [--batch N] [--threads N]
 *                   [--precision fp32|bf16] IMAGE...
 *
 * The network comes from the checkpoint alone (its stored config, or its
 * arch attribute for imported torchvision weights). Each JPEG or PNG is
 * resized to the model's input as torchvision's Resize((H, W)) does (PIL's
 * antialiased bilinear), normalized with the checkpoint's mean and std, and
 * run in batches; the top-k classes print in the seed's form, one per line:
 *   giant panda: 97.1234%
 * With several images each block is headed by "<image>:". docs/predict.md
 * has examples.
 *
 * Exit status: 0 all images predicted, 1 a file could not be used (the
 * checkpoint, the labels, or an image: the others are still predicted),
 * 2 a bad command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "data.h"
#include "nn.h"
#include "predict_core.h"
#include "setup.h"
#include "tool.h"

#define MAX_CONVS 64

static const char usage[] =
    "usage: alexnet-predict --checkpoint PATH [--labels FILE] [--top K]\n"
    "                       [--activation-maps OUT_DIR] [--batch N] [--threads N]\n"
    "                       [--precision fp32|bf16] IMAGE...\n"
    "  --checkpoint PATH       a checkpoint of alexnet-train or import-torchvision.py, or a\n"
    "                          checkpoint or run directory (its newest valid checkpoint)\n"
    "  --labels FILE           class names, one per line (default: the checkpoint's)\n"
    "  --top K                 classes printed per image (default 5)\n"
    "  --activation-maps DIR   write conv<k>_activation_map.png and activation_maps.png\n"
    "                          (several images: one subfolder per image, see docs/predict.md)\n"
    "  --batch N               images per forward pass (default 16)\n"
    "  --threads N             compute threads (default: all cores)\n"
    "  --precision P           fp32 (default) or bf16 products in convolutions and linear\n"
    "                          layers (docs/performance.md, bf16)\n";

/* The image's file name without directories and extension. */
static void stem_of(const char *path, char *out, size_t len) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  snprintf(out, len, "%s", base);
  char *dot = strrchr(out, '.');
  if (dot && dot != out) *dot = '\0';
  if (!out[0]) snprintf(out, len, "image");
}

/* Per-image output folders: OUT_DIR itself for one image, else
 * OUT_DIR/<stem>, with "-<n>" added (n = the image's 1-based position) when
 * an earlier image has the same stem. dirs: (n) strings of dirlen bytes. */
static void map_dirs(const char *out_dir, char **images, int n, char *dirs, size_t dirlen) {
  for (int i = 0; i < n; i++) {
    char *d = dirs + (size_t)i * dirlen;
    if (n == 1) {
      snprintf(d, dirlen, "%s", out_dir);
      continue;
    }
    char stem[1024], other[1024];
    stem_of(images[i], stem, sizeof stem);
    int clash = 0;
    for (int j = 0; j < i && !clash; j++) {
      stem_of(images[j], other, sizeof other);
      clash = strcmp(stem, other) == 0;
    }
    if (clash)
      snprintf(d, dirlen, "%s/%s-%d", out_dir, stem, i + 1);
    else
      snprintf(d, dirlen, "%s/%s", out_dir, stem);
  }
}

/* Writes conv<k>_activation_map.png for each conv and activation_maps.png
 * (all side by side) into dir for sample j of the last forward. */
static int write_maps(const nn_net *net, const int *conv_layers, int nconv, int j,
                      const uint8_t *rgb, const char *dir, char *err, size_t errlen) {
  int W = net->input.w, H = net->input.h;
  if (setup_mkdirs(dir, err, errlen) != 0) return -1;
  size_t one = (size_t)W * H * 3;
  uint8_t *panel = malloc(one * (size_t)nconv);
  uint8_t *map = malloc(one);
  if (!panel || !map) {
    free(panel);
    free(map);
    snprintf(err, errlen, "out of memory for activation maps");
    return -1;
  }
  int rc = 0;
  for (int k = 0; k < nconv && rc == 0; k++) {
    const nn_layer *l = &net->layers[conv_layers[k]];
    const float *act = l->output + (size_t)j * nn_shape_size(l->out);
    predict_activation_overlay(act, l->out, rgb, W, H, map);
    char path[4400];
    snprintf(path, sizeof path, "%s/conv%d_activation_map.png", dir, k + 1);
    rc = data_png_write(path, W, H, 3, map, err, errlen);
    for (int y = 0; y < H; y++)
      memcpy(panel + ((size_t)y * nconv * W + (size_t)k * W) * 3, map + (size_t)y * W * 3,
             (size_t)W * 3);
  }
  if (rc == 0) {
    char path[4400];
    snprintf(path, sizeof path, "%s/activation_maps.png", dir);
    rc = data_png_write(path, W * nconv, H, 3, panel, err, errlen);
  }
  free(panel);
  free(map);
  return rc;
}

/* Loads images[start, end) that can be read into the batch: x (n, C, H, W)
 * normalized, rgb (n, H, W, 3) as resized; which[j] = the image of row j.
 * Returns the rows filled; an unreadable image prints its message and sets
 * *status to 1. */
static int load_batch(char **images, int start, int end, nn_shape in, const ckpt_meta *meta,
                      uint8_t *rgb, float *x, int *which, int *status) {
  size_t in_floats = nn_shape_size(in), rgb_bytes = (size_t)in.w * in.h * 3;
  int filled = 0;
  for (int i = start; i < end; i++) {
    data_image img;
    char err[4400];
    if (data_image_load(images[i], 0, &img, err, sizeof err) != 0) {
      fprintf(stderr, "alexnet-predict: %s\n", err);
      *status = 1;
      continue;
    }
    predict_preprocess(&img, in, meta->mean, meta->std, rgb + (size_t)filled * rgb_bytes,
                       x + (size_t)filled * in_floats);
    data_image_free(&img);
    which[filled++] = i;
  }
  return filled;
}

/* What main holds between its steps; everything is released by
 * predictor_free, whatever the exit path. */
typedef struct {
  nn_net net;
  ckpt_meta meta;
  char **names; /* (classes) class names */
  int classes, top, batch;
  int conv_layers[MAX_CONVS], nconv; /* the convolutions whose maps are drawn */
  float *x;                          /* (batch, C, H, W) normalized input */
  uint8_t *rgb;                      /* (batch, H, W, 3) the images as resized */
  double *probs;                     /* (classes) */
  int *best;                         /* (top) */
  int *which;                        /* (batch) the image of each row */
  char *dirs;                        /* (images, DIRLEN) activation map folders, or NULL */
} predictor;

#define DIRLEN 4200

static void predictor_free(predictor *p) {
  free(p->x);
  free(p->rgb);
  free(p->probs);
  free(p->best);
  free(p->which);
  free(p->dirs);
  predict_free_names(p->names, p->classes);
  ckpt_meta_free(&p->meta);
  nn_net_free(&p->net);
}

/* Loads the network and class names of ckpt (labels: a file overriding the
 * checkpoint's names) for batches of up to batch_max of nimages images, and
 * allocates the batch buffers. top 0 becomes the default (5, or the class
 * count). Returns 0, or the exit status after printing why not. */
static int predictor_open(predictor *p, const char *ckpt, const char *labels, int top,
                          int batch_max, int bf16, const char *maps, char **images, int nimages) {
  char err[8192], used[4200];
  if (predict_load_any(ckpt, &p->net, &p->meta, used, sizeof used, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-predict: %s\n", err);
    return 1;
  }
  const int classes = p->classes = p->net.num_classes;
  if (top == 0) top = classes < 5 ? classes : 5;
  if (top > classes) {
    fprintf(stderr, "alexnet-predict: --top %d: the model has only %d classes\n", top, classes);
    return 2;
  }
  p->top = top;
  p->names = predict_class_names(labels, &p->meta, classes, err, sizeof err);
  if (!p->names) {
    fprintf(stderr, "alexnet-predict: %s\n", err);
    return 1;
  }
  const int batch = p->batch = nimages < batch_max ? nimages : batch_max;
  p->net.keep_outputs = 1; /* the activation maps read conv outputs after the forward */
  if (bf16 && nn_bf16_select(&p->net.kernel, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-predict: --precision bf16: %s\n", err);
    return 1;
  }
  if (nn_net_alloc(&p->net, batch, 0, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-predict: %s\n", err);
    return 1;
  }
  p->net.training = 0;
  p->net.no_grad = 1;
  p->nconv = predict_conv_outputs(&p->net, p->conv_layers, MAX_CONVS);
  if (p->nconv > MAX_CONVS) p->nconv = MAX_CONVS;
  if (maps && p->nconv == 0) {
    fprintf(stderr, "alexnet-predict: --activation-maps: the model has no convolution\n");
    return 2;
  }
  nn_shape in = p->net.input;
  p->x = malloc((size_t)batch * nn_shape_size(in) * sizeof(float));
  p->rgb = malloc((size_t)batch * in.w * in.h * 3);
  p->probs = malloc((size_t)classes * sizeof(double));
  p->best = malloc((size_t)top * sizeof(int));
  p->which = malloc((size_t)batch * sizeof(int));
  p->dirs = maps ? calloc((size_t)nimages, DIRLEN) : NULL;
  if (!p->x || !p->rgb || !p->probs || !p->best || !p->which || (maps && !p->dirs)) {
    fprintf(stderr, "alexnet-predict: out of memory for a batch of %d\n", batch);
    return 1;
  }
  if (maps) map_dirs(maps, images, nimages, p->dirs, DIRLEN);
  return 0;
}

/* Prints the top classes of every image (headed by its name when there are
 * several) and writes its activation maps when p->dirs is set. Returns 0, or
 * 1 when an image could not be read or its maps written (the others are
 * still done). */
static int predict_images(predictor *p, char **images, int nimages) {
  const size_t rgb_bytes = (size_t)p->net.input.w * p->net.input.h * 3;
  const int classes = p->classes;
  int status = 0;
  for (int start = 0; start < nimages; start += p->batch) {
    int end = start + p->batch < nimages ? start + p->batch : nimages;
    int filled =
        load_batch(images, start, end, p->net.input, &p->meta, p->rgb, p->x, p->which, &status);
    if (filled == 0) continue;
    const float *logits = nn_forward(&p->net, p->x, filled);
    for (int j = 0; j < filled; j++) {
      nn_softmax(classes, logits + (size_t)j * classes, p->probs);
      predict_top_k(p->probs, classes, p->top, p->best);
      if (nimages > 1) printf("%s:\n", images[p->which[j]]);
      for (int t = 0; t < p->top; t++)
        printf("%s: %.4f%%\n", p->names[p->best[t]], 100.0 * p->probs[p->best[t]]);
      if (p->dirs) {
        char err[8192];
        const char *dir = p->dirs + (size_t)p->which[j] * DIRLEN;
        if (write_maps(&p->net, p->conv_layers, p->nconv, j, p->rgb + (size_t)j * rgb_bytes, dir,
                       err, sizeof err) != 0) {
          fprintf(stderr, "alexnet-predict: %s\n", err);
          status = 1;
        }
      }
    }
    fflush(stdout);
  }
  return status;
}

int main(int argc, char **argv) {
  const char *ckpt = NULL, *labels = NULL, *maps = NULL, *precision = NULL;
  int top = 0, batch_max = 16, threads = 0; /* top 0: the default, 5 or the class count */
  tool_list args = {0};
  const tool_opt opts[] = {TOOL_OPT_STRING("--checkpoint", &ckpt),
                           TOOL_OPT_STRING("--labels", &labels),
                           TOOL_OPT_STRING("--activation-maps", &maps),
                           TOOL_OPT_INT("--top", &top, 1, 1000000),
                           TOOL_OPT_INT("--batch", &batch_max, 1, 1000000),
                           TOOL_OPT_INT("--threads", &threads, 1, TOOL_MAX_THREADS),
                           TOOL_OPT_STRING("--precision", &precision),
                           TOOL_OPT_END};
  const tool_spec spec = {"alexnet-predict", usage, opts, &args};
  tool_parse(&spec, argc, argv);
  if (!ckpt) tool_usage(&spec, "--checkpoint is required");
  if (args.count == 0) tool_usage(&spec, "no image given");
  const int bf16 = tool_precision(&spec, precision);
  char **images = (char **)args.items;
  int nimages = args.count;
  tool_threads(threads);

  predictor p;
  memset(&p, 0, sizeof p);
  int status = predictor_open(&p, ckpt, labels, top, batch_max, bf16, maps, images, nimages);
  if (status == 0) {
    status = predict_images(&p, images, nimages);
    if (maps && !status)
      fprintf(stderr, "alexnet-predict: activation maps of conv1..conv%d written to %s\n", p.nconv,
              maps);
  }
  predictor_free(&p);
  tool_list_free(&args);
  return status;
}
