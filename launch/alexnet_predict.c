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

  /* Everything below is released at `done`, whatever the exit path. */
  char err[8192];
  nn_net net;
  ckpt_meta meta;
  char **names = NULL, *dirs = NULL;
  float *x = NULL;
  uint8_t *rgb = NULL;
  double *probs = NULL;
  int *best = NULL, *which = NULL;
  int status = 0, classes = 0;
  const size_t dirlen = 4200;
  memset(&meta, 0, sizeof meta);
  char used[4200];
  if (predict_load_any(ckpt, &net, &meta, used, sizeof used, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-predict: %s\n", err);
    status = 1;
    goto done;
  }
  classes = net.num_classes;
  if (top == 0) top = classes < 5 ? classes : 5;
  if (top > classes) {
    fprintf(stderr, "alexnet-predict: --top %d: the model has only %d classes\n", top, classes);
    status = 2;
    goto done;
  }
  names = predict_class_names(labels, &meta, classes, err, sizeof err);
  if (!names) {
    fprintf(stderr, "alexnet-predict: %s\n", err);
    status = 1;
    goto done;
  }
  int batch = nimages < batch_max ? nimages : batch_max;
  net.keep_outputs = 1; /* the activation maps read conv outputs after the forward */
  if (bf16 && nn_bf16_select(&net.kernel, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-predict: --precision bf16: %s\n", err);
    status = 1;
    goto done;
  }
  if (nn_net_alloc(&net, batch, 0, err, sizeof err) != 0) {
    fprintf(stderr, "alexnet-predict: %s\n", err);
    status = 1;
    goto done;
  }
  net.training = 0;
  net.no_grad = 1;
  int conv_layers[MAX_CONVS];
  int nconv = predict_conv_outputs(&net, conv_layers, MAX_CONVS);
  if (nconv > MAX_CONVS) nconv = MAX_CONVS;
  if (maps && nconv == 0) {
    fprintf(stderr, "alexnet-predict: --activation-maps: the model has no convolution\n");
    status = 2;
    goto done;
  }

  nn_shape in = net.input;
  size_t in_floats = nn_shape_size(in);
  size_t rgb_bytes = (size_t)in.w * in.h * 3;
  x = malloc((size_t)batch * in_floats * sizeof(float));
  rgb = malloc((size_t)batch * rgb_bytes);
  probs = malloc((size_t)classes * sizeof(double));
  best = malloc((size_t)top * sizeof(int));
  which = malloc((size_t)batch * sizeof(int));
  dirs = maps ? calloc((size_t)nimages, dirlen) : NULL;
  if (!x || !rgb || !probs || !best || !which || (maps && !dirs)) {
    fprintf(stderr, "alexnet-predict: out of memory for a batch of %d\n", batch);
    status = 1;
    goto done;
  }
  if (maps) map_dirs(maps, images, nimages, dirs, dirlen);

  for (int start = 0; start < nimages; start += batch) {
    int end = start + batch < nimages ? start + batch : nimages;
    int filled = load_batch(images, start, end, in, &meta, rgb, x, which, &status);
    if (filled == 0) continue;
    const float *logits = nn_forward(&net, x, filled);
    for (int j = 0; j < filled; j++) {
      nn_softmax(classes, logits + (size_t)j * classes, probs);
      predict_top_k(probs, classes, top, best);
      if (nimages > 1) printf("%s:\n", images[which[j]]);
      for (int t = 0; t < top; t++) printf("%s: %.4f%%\n", names[best[t]], 100.0 * probs[best[t]]);
      if (maps) {
        const char *dir = dirs + (size_t)which[j] * dirlen;
        if (write_maps(&net, conv_layers, nconv, j, rgb + (size_t)j * rgb_bytes, dir, err,
                       sizeof err) != 0) {
          fprintf(stderr, "alexnet-predict: %s\n", err);
          status = 1;
        }
      }
    }
    fflush(stdout);
  }
  if (maps && !status)
    fprintf(stderr, "alexnet-predict: activation maps of conv1..conv%d written to %s\n", nconv,
            maps);
done:
  free(x);
  free(rgb);
  free(probs);
  free(best);
  free(which);
  free(dirs);
  tool_list_free(&args);
  predict_free_names(names, classes);
  ckpt_meta_free(&meta);
  nn_net_free(&net);
  return status;
}
