/*
 * launch/predict_core.c: the model from a checkpoint alone, class names,
 * preprocessing, top-k and activation-map overlays for alexnet-predict.
 */
#include "predict_core.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "util.h"

/* ------------------------------------------------------------------------ */
/* The model                                                                 */

/* The layer list from the stored config, or from the arch attribute. */
static int build_from_meta(const char *path, const ckpt_meta *m, nn_net *net, char *err,
                           size_t errlen) {
  char msg[4096];
  if (m->config_yaml && m->config_yaml[strspn(m->config_yaml, " \t\r\n")]) {
    cfg_config c;
    char name[4200];
    snprintf(name, sizeof name, "%s (stored config)", path);
    if (cfg_load_string(m->config_yaml, name, &c, msg, sizeof msg) != 0) {
      cfg_free(&c);
      return util_errf(err, errlen, "checkpoint %s: its stored config does not load: %s", path,
                       msg);
    }
    if (c.model.num_classes == 0) c.model.num_classes = m->num_classes;
    int rc = cfg_build_net(&c, net, msg, sizeof msg);
    cfg_free(&c);
    if (rc != 0) return util_errf(err, errlen, "checkpoint %s: %s", path, msg);
    return 0;
  }
  if (strcmp(m->arch, "custom") == 0 || !m->arch[0])
    return util_errf(err, errlen,
                     "checkpoint %s: no stored config and arch '%s': the network cannot be rebuilt",
                     path, m->arch);
  if (m->input.h != m->input.w || m->input.h <= 0 || m->input.c <= 0)
    return util_errf(err, errlen, "checkpoint %s: input %dx%dx%d does not fit preset '%s' (square)",
                     path, m->input.c, m->input.h, m->input.w, m->arch);
  nn_preset_opts o = {
      .num_classes = m->num_classes, .in_channels = m->input.c, .input_size = m->input.h};
  nn_layer_spec *specs = NULL;
  int count = 0;
  nn_shape input;
  if (nn_preset(m->arch, &o, &specs, &count, &input, msg, sizeof msg) != 0)
    return util_errf(err, errlen, "checkpoint %s: arch: %s", path, msg);
  int rc = nn_net_build(net, specs, count, input, msg, sizeof msg);
  free(specs);
  if (rc != 0) return util_errf(err, errlen, "checkpoint %s: arch '%s': %s", path, m->arch, msg);
  return 0;
}

int predict_load_model(const char *path, nn_net *net, ckpt_meta *meta, char *err, size_t errlen) {
  memset(net, 0, sizeof *net);
  if (ckpt_read_meta(path, meta, err, errlen) != 0) {
    memset(meta, 0, sizeof *meta);
    return -1;
  }
  int rc = 0;
  if (!(meta->std[0] > 0 && meta->std[1] > 0 && meta->std[2] > 0))
    rc = util_errf(err, errlen, "checkpoint %s: attribute std [%g, %g, %g] must be > 0", path,
                   (double)meta->std[0], (double)meta->std[1], (double)meta->std[2]);
  if (rc == 0) rc = build_from_meta(path, meta, net, err, errlen);
  if (rc == 0 && (net->input.c != meta->input.c || net->input.h != meta->input.h ||
                  net->input.w != meta->input.w)) {
    rc = util_errf(err, errlen,
                   "checkpoint %s: the rebuilt network takes %dx%dx%d inputs, the checkpoint says "
                   "%dx%dx%d",
                   path, net->input.c, net->input.h, net->input.w, meta->input.c, meta->input.h,
                   meta->input.w);
  }
  if (rc == 0) rc = ckpt_load(path, net, NULL, NULL, err, errlen);
  if (rc != 0) {
    nn_net_free(net);
    ckpt_meta_free(meta);
    memset(meta, 0, sizeof *meta);
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Class names                                                               */

void predict_free_names(char **names, int n) {
  if (!names) return;
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* Reads the whole of path into a NUL-terminated buffer; NULL with a message. */
static char *read_text(const char *path, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    util_errf(err, errlen, "labels %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, used = 0;
  char *buf = util_xmalloc(cap);
  size_t got;
  while ((got = fread(buf + used, 1, cap - used - 1, f)) > 0) {
    used += got;
    if (cap - used - 1 == 0) {
      if (cap > ((size_t)1 << 30)) {
        fclose(f);
        free(buf);
        util_errf(err, errlen, "labels %s: larger than 1 GiB", path);
        return NULL;
      }
      cap *= 2;
      char *grown = realloc(buf, cap);
      if (!grown) {
        free(buf);
        fclose(f);
        util_errf(err, errlen, "labels %s: out of memory", path);
        return NULL;
      }
      buf = grown;
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    util_errf(err, errlen, "labels %s: read error", path);
    return NULL;
  }
  buf[used] = '\0';
  *len = used;
  return buf;
}

char **predict_class_names(const char *labels_path, const ckpt_meta *meta, int n, char *err,
                           size_t errlen) {
  char **names = calloc((size_t)n, sizeof(char *));
  if (!names) {
    util_errf(err, errlen, "out of memory for %d class names", n);
    return NULL;
  }
  if (labels_path) {
    size_t len = 0;
    char *text = read_text(labels_path, &len, err, errlen);
    if (!text) {
      free(names);
      return NULL;
    }
    if (memchr(text, '\0', len)) {
      free(text);
      free(names);
      util_errf(err, errlen, "labels %s: not a text file (it holds NUL bytes)", labels_path);
      return NULL;
    }
    int lines = 0;
    for (char *p = text; *p;) {
      char *end = strchr(p, '\n');
      size_t l = end ? (size_t)(end - p) : strlen(p);
      if (lines < n) {
        size_t k = l > 0 && p[l - 1] == '\r' ? l - 1 : l;
        names[lines] = util_xmalloc(k + 1);
        memcpy(names[lines], p, k);
        names[lines][k] = '\0';
      }
      lines++;
      p = end ? end + 1 : p + l;
    }
    free(text);
    if (lines != n) {
      predict_free_names(names, n);
      util_errf(err, errlen,
                "labels %s: %d line%s, but the model has %d classes (one name per line)",
                labels_path, lines, lines == 1 ? "" : "s", n);
      return NULL;
    }
    return names;
  }
  for (int i = 0; i < n; i++) {
    if (meta && meta->class_names && meta->num_classes == n) {
      names[i] = strdup(meta->class_names[i]);
    } else {
      names[i] = util_xmalloc(16);
      snprintf(names[i], 16, "%d", i);
    }
    if (!names[i]) {
      fprintf(stderr, "out of memory\n");
      exit(1);
    }
  }
  return names;
}

/* ------------------------------------------------------------------------ */
/* Preprocessing and scores                                                  */

void predict_preprocess(const data_image *img, nn_shape input, const float mean[3],
                        const float std[3], uint8_t *rgb, float *x) {
  int W = input.w, H = input.h;
  data_image_resize(img, W, H, rgb);
  size_t plane = (size_t)W * H;
  if (input.c == 1) {
    float scale = 1.0f / (255.0f * std[0]), bias = -mean[0] / std[0];
    for (size_t i = 0; i < plane; i++) {
      const uint8_t *p = rgb + 3 * i;
      unsigned l = (p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16;
      x[i] = (float)l * scale + bias;
    }
    return;
  }
  for (int c = 0; c < input.c && c < 3; c++) {
    float scale = 1.0f / (255.0f * std[c]), bias = -mean[c] / std[c];
    float *d = x + (size_t)c * plane;
    for (size_t i = 0; i < plane; i++) d[i] = (float)rgb[3 * i + c] * scale + bias;
  }
}

void predict_top_k(const double *p, int n, int k, int *idx) {
  /* k passes of selection: k is small (5) next to n (1000). */
  for (int j = 0; j < k; j++) {
    int best = -1;
    for (int i = 0; i < n; i++) {
      int taken = 0;
      for (int t = 0; t < j && !taken; t++) taken = idx[t] == i;
      if (!taken && (best < 0 || p[i] > p[best])) best = i;
    }
    idx[j] = best;
  }
}

/* ------------------------------------------------------------------------ */
/* Activation maps                                                           */

/* OpenCV builds COLORMAP_JET (GNU Octave's jet) by interpolating 256 float
 * breakpoints r(x) = clip(1.5 - |4x - 3|), g with 2, b with 1, at
 * x = linspace(0, 1, 256), in float, then converts x 255 with rounding half
 * to even. The breakpoints fall on halves, so the float steps decide the
 * bytes: they are repeated here as OpenCV performs them (interp1 at its own
 * breakpoints, low = i - 1), each result stored as a float (volatile: no
 * fused multiply-add, no wider intermediate). */
static void jet_table(uint8_t lut[256][3]) {
  float step = 1.0f / 255.0f;
  float xs[256], ys[256];
  for (int i = 0; i < 256; i++) xs[i] = 0.0f + (float)i * step;
  for (int ch = 0; ch < 3; ch++) {
    double off = 3 - ch; /* red, green, blue */
    for (int i = 0; i < 256; i++) {
      double v = 1.5 - fabs(4.0 * i / 255.0 - off);
      ys[i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
    }
    for (int i = 0; i < 256; i++) {
      volatile float y = ys[0];
      if (i > 0) {
        volatile float dx = xs[i] - xs[i - 1];
        volatile float prod = dx * (ys[i] - ys[i - 1]);
        volatile float q = prod / dx;
        y = ys[i - 1] + q;
      }
      volatile float scaled = y * 255.0f;
      long r = lrintf(scaled); /* the default rounding mode: half to even */
      lut[i][ch] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    }
  }
}

void predict_jet(uint8_t v, uint8_t rgb[3]) {
  static uint8_t lut[256][3]; /* built on the first call (alexnet-predict has one thread) */
  static int ready = 0;
  if (!ready) {
    jet_table(lut);
    ready = 1;
  }
  memcpy(rgb, lut[v], 3);
}

void predict_bilinear(const float *src, int h, int w, float *dst, int oh, int ow) {
  float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
  for (int y = 0; y < oh; y++) {
    float fy = ((float)y + 0.5f) * sy - 0.5f;
    if (fy < 0) fy = 0;
    int y0 = (int)fy;
    int y1 = y0 + (y0 < h - 1);
    float ly = fy - (float)y0;
    for (int x = 0; x < ow; x++) {
      float fx = ((float)x + 0.5f) * sx - 0.5f;
      if (fx < 0) fx = 0;
      int x0 = (int)fx;
      int x1 = x0 + (x0 < w - 1);
      float lx = fx - (float)x0;
      dst[(size_t)y * ow + x] =
          (1 - ly) * ((1 - lx) * src[(size_t)y0 * w + x0] + lx * src[(size_t)y0 * w + x1]) +
          ly * ((1 - lx) * src[(size_t)y1 * w + x0] + lx * src[(size_t)y1 * w + x1]);
    }
  }
}

void predict_activation_overlay(const float *act, nn_shape shape, const uint8_t *rgb, int w, int h,
                                uint8_t *out) {
  size_t plane = (size_t)shape.h * shape.w;
  float *mean = util_xmalloc(plane * sizeof(float));
  float *big = util_xmalloc((size_t)w * h * sizeof(float));
  for (size_t i = 0; i < plane; i++) mean[i] = 0;
  for (int c = 0; c < shape.c; c++)
    for (size_t i = 0; i < plane; i++) mean[i] += act[(size_t)c * plane + i];
  for (size_t i = 0; i < plane; i++) mean[i] /= (float)shape.c;
  predict_bilinear(mean, shape.h, shape.w, big, h, w);
  size_t n = (size_t)w * h;
  float lo = big[0], hi = big[0];
  for (size_t i = 1; i < n; i++) {
    lo = big[i] < lo ? big[i] : lo;
    hi = big[i] > hi ? big[i] : hi;
  }
  float range = hi - lo;
  for (size_t i = 0; i < n; i++) {
    float v = range > 0 ? (big[i] - lo) / range : 0.0f;
    float b = 255.0f * v;
    uint8_t color[3];
    predict_jet((uint8_t)(b >= 255.0f ? 255 : b > 0 ? (int)b : 0), color);
    for (int c = 0; c < 3; c++) {
      float mix = 0.6f * (float)rgb[3 * i + c] / 255.0f + 0.4f * (float)color[c] / 255.0f;
      long q = lrintf(mix * 255.0f);
      out[3 * i + c] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
  }
  free(mean);
  free(big);
}

int predict_conv_outputs(const nn_net *net, int *layers, int max) {
  int count = 0;
  for (int i = 0; i < net->num_layers; i++) {
    const nn_layer *l = &net->layers[i];
    if (l->spec.kind != NN_CONV || l->spec.section != NN_FEATURES) continue;
    int at = i;
    if (i + 1 < net->num_layers && net->layers[i + 1].spec.kind == NN_RELU) at = i + 1;
    if (count < max) layers[count] = at;
    count++;
  }
  return count;
}

int predict_load_any(const char *path, nn_net *net, ckpt_meta *meta, char *used, size_t usedlen,
                     char *err, size_t errlen) {
  struct stat st;
  snprintf(used, usedlen, "%s", path);
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return predict_load_model(path, net, meta, err, errlen);
  char dir[4200];
  if (cfg_default_checkpoint_dir(path, dir, sizeof dir) != 0 || stat(dir, &st) != 0 ||
      !S_ISDIR(st.st_mode))
    snprintf(dir, sizeof dir, "%s", path);
  int64_t *steps;
  int count = ckpt_list_steps(dir, &steps);
  if (count < 0) {
    snprintf(err, errlen, "checkpoint directory %s: %s", dir, strerror(errno));
    return -1;
  }
  for (int i = 0; i < count; i++) {
    char why[4600];
    ckpt_step_path(dir, steps[i], used, usedlen);
    if (predict_load_model(used, net, meta, why, sizeof why) == 0) {
      free(steps);
      return 0;
    }
    fprintf(stderr, "alexnet-predict: skipping %s\n", why);
  }
  free(steps);
  snprintf(err, errlen, "checkpoint directory %s: no valid checkpoint (step-<N>.h5)", dir);
  return -1;
}
