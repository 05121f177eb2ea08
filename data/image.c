/*
 * data/image.c: JPEG and PNG decoding to 8-bit RGB, the antialiased resize
 * (PIL's bilinear filter, widened when shrinking) with torchvision's
 * Resize(size) + CenterCrop(size) on top, and PNG writing.
 *
 * libjpeg and libpng report errors by calling a function that must not
 * return; both error handlers here longjmp back to the decoder, which frees
 * what it allocated and returns -1 with the library's message. Nothing in
 * this file exits on bad input.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <png.h>

#include "data.h"
#include "internal.h"
#include "util.h"

#define MAX_PIXELS (1ll << 28)     /* decoded pixels: 768 MiB of RGB at most */
#define MAX_FILE_BYTES (1ll << 30) /* an image file larger than this is refused */

void data_image_free(data_image *img) {
  if (!img) return;
  free(img->pixels);
  img->pixels = NULL;
  img->w = img->h = img->c = 0;
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                      */

typedef struct {
  struct jpeg_error_mgr pub; /* first: libjpeg casts cinfo->err to this */
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  int truncated; /* libjpeg only warns on a premature end; we refuse such files */
} jpeg_errmgr;

static void jpeg_on_error(j_common_ptr c) {
  jpeg_errmgr *e = (jpeg_errmgr *)c->err;
  (*c->err->format_message)(c, e->msg);
  longjmp(e->jb, 1);
}

/* Silences libjpeg's warnings; a premature end of file is remembered. */
static void jpeg_on_message(j_common_ptr c, int level) {
  jpeg_errmgr *e = (jpeg_errmgr *)c->err;
  if (level < 0) {
    if (c->err->msg_code == JWRN_JPEG_EOF && !e->truncated) {
      e->truncated = 1;
      (*c->err->format_message)(c, e->msg);
    }
    c->err->num_warnings++;
  }
}

/* Everything the decoder allocates, so the longjmp path can free it. */
typedef struct {
  uint8_t *pixels;
  uint8_t *row;
} jpeg_state;

/* scale_num in 1..8 (of 8); 0: from min_short (the smallest that keeps the
 * shorter side >= min_short; min_short <= 0 = full size). */
static int decode_jpeg(const uint8_t *buf, size_t len, const char *name, int min_short,
                       int scale_num, data_image *img, char *err, size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  jpeg_errmgr jerr;
  jpeg_state st = {NULL, NULL};
  jpeg_state *volatile stp = &st;
  memset(&jerr, 0, sizeof jerr);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = jpeg_on_error;
  jerr.pub.emit_message = jpeg_on_message;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_decompress(&cinfo);
    free(stp->pixels);
    free(stp->row);
    return util_errf(err, errlen, "%s: corrupt JPEG: %s", name, jerr.msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);

  int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  if (scale_num >= 1 && scale_num <= 8) {
    cinfo.scale_num = (unsigned)scale_num;
    cinfo.scale_denom = 8;
  } else if (min_short > 0) {
    /* libjpeg's scaled size is ceil(dim * num / 8): take the smallest num
     * that keeps the shorter side >= min_short (8 = full size). */
    unsigned long s =
        cinfo.image_width < cinfo.image_height ? cinfo.image_width : cinfo.image_height;
    unsigned num = 1;
    while (num < 8 && (s * num + 7) / 8 < (unsigned long)min_short) num++;
    cinfo.scale_num = num;
    cinfo.scale_denom = 8;
  }
  jpeg_calc_output_dimensions(&cinfo);
  long long w = cinfo.output_width, h = cinfo.output_height;
  if (w <= 0 || h <= 0 || w * h > MAX_PIXELS) {
    jpeg_destroy_decompress(&cinfo);
    return util_errf(err, errlen, "%s: JPEG of %lldx%lld pixels exceeds the limit of %lld", name, w,
                     h, MAX_PIXELS);
  }
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_components != (cmyk ? 4 : 3)) {
    jpeg_destroy_decompress(&cinfo);
    return util_errf(err, errlen, "%s: JPEG decodes to %d components, expected %d", name,
                     cinfo.output_components, cmyk ? 4 : 3);
  }
  st.pixels = util_xmalloc((size_t)(w * h * 3));
  if (cmyk) st.row = util_xmalloc((size_t)w * 4);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t *dst = st.pixels + (size_t)cinfo.output_scanline * (size_t)w * 3;
    JSAMPROW row = cmyk ? st.row : dst;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) {
      /* Adobe's CMYK JPEGs store inverted values (255 = no ink): R = C'K'/255.
       * Without the Adobe marker the values are ink amounts. */
      int inv = cinfo.saw_Adobe_marker;
      for (long long x = 0; x < w; x++) {
        int k = st.row[4 * x + 3];
        if (!inv) k = 255 - k;
        for (int ch = 0; ch < 3; ch++) {
          int v = st.row[4 * x + ch];
          if (!inv) v = 255 - v;
          dst[3 * x + ch] = (uint8_t)((v * k + 127) / 255);
        }
      }
    }
  }
  int full_w = (int)cinfo.image_width, full_h = (int)cinfo.image_height;
  double scale = cinfo.scale_num / (double)cinfo.scale_denom;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  free(st.row);
  if (jerr.truncated) {
    free(st.pixels);
    return util_errf(err, errlen, "%s: truncated JPEG: %s", name, jerr.msg);
  }
  img->w = (int)w;
  img->h = (int)h;
  img->c = 3;
  img->pixels = st.pixels;
  img->full_w = full_w;
  img->full_h = full_h;
  img->scale = scale;
  return 0;
}

int data_jpeg_decode_scaled(const uint8_t *buf, size_t len, const char *name, int scale_num,
                            data_image *img, char *err, size_t errlen) {
  memset(img, 0, sizeof *img);
  if (len < 3 || buf[0] != 0xFF || buf[1] != 0xD8 || buf[2] != 0xFF)
    return util_errf(err, errlen, "%s: not a JPEG (bad first bytes)", name);
  return decode_jpeg(buf, len, name, 0,
                     scale_num < 1   ? 8
                     : scale_num > 8 ? 8
                                     : scale_num,
                     img, err, errlen);
}

int data_jpeg_scale_for(double bw, double bh, int need_w, int need_h) {
  int num = 1;
  while (num < 8 && (bw * num / 8 < need_w || bh * num / 8 < need_h)) num++;
  return num;
}

/* Where libjpeg's compressor writes: a growing malloc'd buffer. */
typedef struct {
  uint8_t *out;
  unsigned long len;
} jpeg_enc_state;

int data_jpeg_encode(const uint8_t *pixels, int w, int h, int c, int quality, const char *name,
                     uint8_t **out, size_t *len, char *err, size_t errlen) {
  *out = NULL;
  *len = 0;
  if (w < 1 || h < 1 || w > 65535 || h > 65535 || (c != 1 && c != 3) || quality < 1 ||
      quality > 100)
    return util_errf(err, errlen, "%s: cannot encode a %dx%dx%d image at quality %d", name, w, h, c,
                     quality);
  struct jpeg_compress_struct cinfo;
  jpeg_errmgr jerr;
  jpeg_enc_state st = {NULL, 0};
  jpeg_enc_state *volatile stp = &st;
  memset(&jerr, 0, sizeof jerr);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = jpeg_on_error;
  jerr.pub.emit_message = jpeg_on_message;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_compress(&cinfo);
    free(stp->out);
    return util_errf(err, errlen, "%s: JPEG encoding failed: %s", name, jerr.msg);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &st.out, &st.len);
  cinfo.image_width = (JDIMENSION)w;
  cinfo.image_height = (JDIMENSION)h;
  cinfo.input_components = c;
  cinfo.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * (size_t)w * (size_t)c);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  *out = st.out;
  *len = (size_t)st.len;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                       */

typedef struct {
  const uint8_t *buf;
  size_t len, pos;
  char msg[256];
  uint8_t *pixels;
  png_bytep *rows;
} png_state;

static void png_on_error(png_structp png, png_const_charp msg) {
  png_state *st = png_get_error_ptr(png);
  snprintf(st->msg, sizeof st->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png, (void)msg; /* e.g. "iCCP: known incorrect sRGB profile": harmless */
}

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  png_state *st = png_get_io_ptr(png);
  if (n > st->len - st->pos) png_error(png, "unexpected end of file (truncated)");
  memcpy(out, st->buf + st->pos, n);
  st->pos += n;
}

static int decode_png(const uint8_t *buf, size_t len, const char *name, data_image *img, char *err,
                      size_t errlen) {
  png_state st;
  memset(&st, 0, sizeof st);
  st.buf = buf;
  st.len = len;
  png_state *volatile stp = &st;
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
  if (!png) return util_errf(err, errlen, "%s: cannot create a PNG reader", name);
  png_infop info = png_create_info_struct(png);
  png_structp volatile pngv = png;
  png_infop volatile infov = info;
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    return util_errf(err, errlen, "%s: cannot create a PNG reader", name);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_structp p = pngv;
    png_infop i = infov;
    png_destroy_read_struct(&p, &i, NULL);
    free(stp->pixels);
    free(stp->rows);
    return util_errf(err, errlen, "%s: corrupt PNG: %s", name, stp->msg);
  }
  png_set_read_fn(png, &st, png_read_mem);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if ((long long)w * h > MAX_PIXELS) {
    snprintf(st.msg, sizeof st.msg, "%ux%u pixels exceed the limit of %lld", (unsigned)w,
             (unsigned)h, MAX_PIXELS);
    png_longjmp(png, 1);
  }
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_scale_16(png);
  png_set_strip_alpha(png); /* as PIL's convert("RGB"): alpha is dropped, not composited */
  if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
      png_get_rowbytes(png, info) != (size_t)w * 3) {
    snprintf(st.msg, sizeof st.msg, "unsupported PNG layout (color type %d, depth %d)", type,
             depth);
    png_longjmp(png, 1);
  }
  st.pixels = util_xmalloc((size_t)w * h * 3);
  st.rows = util_xmalloc((size_t)h * sizeof *st.rows);
  for (png_uint_32 y = 0; y < h; y++) st.rows[y] = st.pixels + (size_t)y * w * 3;
  png_read_image(png, st.rows);
  png_destroy_read_struct(&png, &info, NULL);
  free(st.rows);
  img->w = img->full_w = (int)w;
  img->h = img->full_h = (int)h;
  img->c = 3;
  img->pixels = st.pixels;
  img->scale = 1.0;
  return 0;
}

int data_image_decode(const uint8_t *buf, size_t len, const char *name, int min_short_side,
                      data_image *img, char *err, size_t errlen) {
  memset(img, 0, sizeof *img);
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (len == 0) return util_errf(err, errlen, "%s: empty file", name);
  if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
    return decode_jpeg(buf, len, name, min_short_side, 0, img, err, errlen);
  if (len >= 8 && memcmp(buf, png_sig, 8) == 0) return decode_png(buf, len, name, img, err, errlen);
  return util_errf(err, errlen, "%s: not a JPEG or PNG image", name);
}

int data_image_load(const char *path, int min_short_side, data_image *img, char *err,
                    size_t errlen) {
  memset(img, 0, sizeof *img);
  FILE *f = fopen(path, "rb");
  if (!f) return util_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return util_errf(err, errlen, "%s: not a regular file", path);
  }
  if (sb.st_size > MAX_FILE_BYTES) {
    fclose(f);
    return util_errf(err, errlen, "%s: file of %lld bytes exceeds the limit of %lld", path,
                     (long long)sb.st_size, MAX_FILE_BYTES);
  }
  size_t len = (size_t)sb.st_size;
  uint8_t *buf = util_xmalloc(len);
  size_t got = len ? fread(buf, 1, len, f) : 0;
  int rerr = ferror(f);
  fclose(f);
  if (got != len || rerr) {
    free(buf);
    return util_errf(err, errlen, "%s: read error", path);
  }
  int rc = data_image_decode(buf, len, path, min_short_side, img, err, errlen);
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Resize                                                                    */

/* One axis of the separable filter, as PIL's precompute_coeffs with the
 * bilinear (triangle) filter: output o (o0 <= o < o0 + n of a full output of
 * out_size) averages input [start[o], start[o] + count[o]) with weights
 * w[o * kmax + k]. Shrinking widens the triangle by in/out (antialiasing).
 * The picture spans `extent` input pixels (<= in_size, see data_image).
 * Weights are PIL's fixed point (normalize_coeffs_8bpc), and each pass
 * rounds to 8 bits as PIL does, so results equal Image.resize's bytes. */
#define RESAMPLE_BITS 22 /* PIL's PRECISION_BITS */
typedef struct {
  int *start, *count;
  int32_t *w; /* weight * 2^RESAMPLE_BITS, rounded half away from zero */
  int kmax;
} axis_coeffs;

/* A fixed-point sum (started at half a unit) to a byte, as PIL's clip8. */
static inline uint8_t resample_clip8(int32_t acc) {
  acc >>= RESAMPLE_BITS;
  return (uint8_t)(acc < 0 ? 0 : acc > 255 ? 255 : acc);
}

static void axis_make_gen(axis_coeffs *a, int lo_clip, int hi_clip, double in0, double scale,
                          int o0, int n);

static void axis_make(axis_coeffs *a, int in_size, double extent, int out_size, int o0, int n) {
  axis_make_gen(a, 0, in_size, 0.0, extent / out_size, o0, n);
}

/* Outputs o0 .. o0 + n - 1 of a resize whose output pixel o is centred at
 * in0 + (o + 0.5) * scale input pixels, reading only inputs in [lo_clip,
 * hi_clip) (PIL's precompute_coeffs on an image cropped to that range). */
static void axis_make_gen(axis_coeffs *a, int lo_clip, int hi_clip, double in0, double scale,
                          int o0, int n) {
  double fscale = scale > 1 ? scale : 1;
  double support = 1.0 * fscale;
  a->kmax = (int)ceil(support) * 2 + 1;
  a->start = util_xmalloc((size_t)n * sizeof(int));
  a->count = util_xmalloc((size_t)n * sizeof(int));
  a->w = util_xmalloc((size_t)n * (size_t)a->kmax * sizeof(int32_t));
  for (int i = 0; i < n; i++) {
    double center = in0 + (o0 + i + 0.5) * scale;
    int lo = (int)(center - support + 0.5);
    int hi = (int)(center + support + 0.5);
    if (lo < lo_clip) lo = lo_clip;
    if (hi > hi_clip) hi = hi_clip;
    if (hi <= lo) hi = lo + 1 <= hi_clip ? lo + 1 : hi_clip, lo = hi - 1; /* never empty */
    if (hi - lo > a->kmax) hi = lo + a->kmax;
    double ww[64 + 1], total = 0;
    double *wp = a->kmax <= 64 ? ww : util_xmalloc((size_t)a->kmax * sizeof(double));
    for (int k = 0; k < hi - lo; k++) {
      double x = (lo + k - center + 0.5) * (1.0 / fscale);
      double t = 1.0 - fabs(x);
      wp[k] = t > 0 ? t : 0;
      total += wp[k];
    }
    a->start[i] = lo;
    a->count[i] = hi - lo;
    for (int k = 0; k < a->kmax; k++) {
      double v = (k < hi - lo && total > 0) ? wp[k] / total : 0.0;
      v *= (double)(1 << RESAMPLE_BITS);
      a->w[(size_t)i * a->kmax + k] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
    }
    if (wp != ww) free(wp);
  }
}

static void axis_free(axis_coeffs *a) {
  free(a->start);
  free(a->count);
  free(a->w);
}

/* The picture's extent in decoded pixels (see data_image). */
static void image_extent(const data_image *im, double *ex, double *ey, int *fw, int *fh) {
  int full = im->full_w > 0 && im->full_h > 0 && im->scale > 0;
  *fw = full ? im->full_w : im->w;
  *fh = full ? im->full_h : im->h;
  *ex = full ? im->full_w * im->scale : im->w;
  *ey = full ? im->full_h * im->scale : im->h;
  if (*ex > im->w) *ex = im->w;
  if (*ey > im->h) *ey = im->h;
}

static void resample_axes(const data_image *im, axis_coeffs ax, axis_coeffs ay, int out_w,
                          int out_h, uint8_t *dst);

/* Resizes src to sw x sh and writes the window of out_w x out_h at (x0, y0)
 * of that result to dst. */
static void resample(const data_image *im, int sw, int sh, int x0, int y0, int out_w, int out_h,
                     uint8_t *dst) {
  int fw, fh;
  double ex, ey;
  image_extent(im, &ex, &ey, &fw, &fh);
  axis_coeffs ax, ay;
  axis_make(&ax, im->w, ex, sw, x0, out_w);
  axis_make(&ay, im->h, ey, sh, y0, out_h);
  resample_axes(im, ax, ay, out_w, out_h, dst);
}

void data_image_resize_box(const data_image *src, double bx, double by, double bw, double bh,
                           int out_w, int out_h, uint8_t *dst) {
  int full = src->full_w > 0 && src->full_h > 0 && src->scale > 0;
  double s = full ? src->scale : 1.0;
  double x0 = bx * s, y0 = by * s, x1 = (bx + bw) * s, y1 = (by + bh) * s;
  /* the pixels the box covers (a whole-pixel box at scale 1: exactly it) */
  int lx = (int)floor(x0 + 1e-9), ly = (int)floor(y0 + 1e-9);
  int hx = (int)ceil(x1 - 1e-9), hy = (int)ceil(y1 - 1e-9);
  if (lx < 0) lx = 0;
  if (ly < 0) ly = 0;
  if (hx > src->w) hx = src->w;
  if (hy > src->h) hy = src->h;
  if (hx <= lx) hx = lx + 1;
  if (hy <= ly) hy = ly + 1;
  axis_coeffs ax, ay;
  axis_make_gen(&ax, lx, hx, x0, (x1 - x0) / out_w, 0, out_w);
  axis_make_gen(&ay, ly, hy, y0, (y1 - y0) / out_h, 0, out_h);
  resample_axes(src, ax, ay, out_w, out_h, dst);
}

void data_resize_shape(int w, int h, int resize, int *out_w, int *out_h) {
  if (w <= h) {
    *out_w = resize;
    *out_h = (int)((long long)resize * h / w);
  } else {
    *out_h = resize;
    *out_w = (int)((long long)resize * w / h);
  }
}

void data_image_resize_crop(const data_image *src, int resize, int crop, uint8_t *dst) {
  int sw, sh, fw, fh;
  double ex, ey;
  image_extent(src, &ex, &ey, &fw, &fh); /* the aspect ratio is the original picture's */
  data_resize_shape(fw, fh, resize, &sw, &sh);
  /* torchvision's CenterCrop: int(round((dim - crop) / 2)), round half to even */
  int x0 = (int)nearbyint((sw - crop) / 2.0);
  int y0 = (int)nearbyint((sh - crop) / 2.0);
  resample(src, sw, sh, x0, y0, crop, crop, dst);
}

/* The two passes with prepared coefficients (which it frees). */
static void resample_axes(const data_image *im, axis_coeffs ax, axis_coeffs ay, int out_w,
                          int out_h, uint8_t *dst) {
  const uint8_t *src = im->pixels;
  int in_w = im->w, c = im->c;
  int r0 = ay.start[0], r1 = 0;
  for (int i = 0; i < out_h; i++) {
    if (ay.start[i] < r0) r0 = ay.start[i];
    if (ay.start[i] + ay.count[i] > r1) r1 = ay.start[i] + ay.count[i];
  }
  size_t rowlen = (size_t)out_w * c;
  uint8_t *tmp = util_xmalloc((size_t)(r1 - r0) * rowlen);
  int32_t *acc = util_xmalloc(rowlen * sizeof(int32_t)); /* one output row */
  const int32_t half = 1 << (RESAMPLE_BITS - 1);
  for (int y = r0; y < r1; y++) { /* horizontal pass over the rows the window needs */
    const uint8_t *s = src + (size_t)y * in_w * c;
    uint8_t *t = tmp + (size_t)(y - r0) * rowlen;
    for (int o = 0; o < out_w; o++) {
      const int32_t *w = ax.w + (size_t)o * ax.kmax;
      const uint8_t *p = s + (size_t)ax.start[o] * c;
      int n = ax.count[o];
      if (c == 3) { /* the common case, three sums at once */
        int32_t a0 = half, a1 = half, a2 = half;
        for (int k = 0; k < n; k++, p += 3) a0 += w[k] * p[0], a1 += w[k] * p[1], a2 += w[k] * p[2];
        t[o * 3] = resample_clip8(a0), t[o * 3 + 1] = resample_clip8(a1);
        t[o * 3 + 2] = resample_clip8(a2);
      } else {
        for (int ch = 0; ch < c; ch++) {
          int32_t a = half;
          for (int k = 0; k < n; k++) a += w[k] * p[k * c + ch];
          t[o * c + ch] = resample_clip8(a);
        }
      }
    }
  }
  for (int o = 0; o < out_h; o++) { /* vertical pass: whole rows, vectorizable */
    const int32_t *w = ay.w + (size_t)o * ay.kmax;
    const uint8_t *base = tmp + (size_t)(ay.start[o] - r0) * rowlen;
    for (size_t x = 0; x < rowlen; x++) acc[x] = half + w[0] * base[x];
    for (int k = 1; k < ay.count[o]; k++) {
      const uint8_t *row = base + (size_t)k * rowlen;
      for (size_t x = 0; x < rowlen; x++) acc[x] += w[k] * row[x];
    }
    uint8_t *d = dst + (size_t)o * rowlen;
    for (size_t x = 0; x < rowlen; x++) d[x] = resample_clip8(acc[x]);
  }
  free(acc);
  free(tmp);
  axis_free(&ax);
  axis_free(&ay);
}

void data_image_resize(const data_image *src, int out_w, int out_h, uint8_t *dst) {
  resample(src, out_w, out_h, 0, 0, out_w, out_h, dst);
}

void data_image_resize_center_crop(const data_image *src, int size, uint8_t *dst) {
  data_image_resize_crop(src, size, size, dst);
}

/* ------------------------------------------------------------------------ */
/* RandomResizedCrop's box                                                   */

void data_rrc_box(int width, int height, const double *area, const double *aspect,
                  const double *pos, int *x, int *y, int *w, int *h) {
  double total = (double)width * height;
  for (int t = 0; t < DATA_RRC_TRIES; t++) {
    double target = total * area[t];
    /* Python's int(round(.)): half to even */
    int cw = (int)nearbyint(sqrt(target * aspect[t]));
    int ch = (int)nearbyint(sqrt(target / aspect[t]));
    if (cw > 0 && cw <= width && ch > 0 && ch <= height) {
      int ny = height - ch + 1, nx = width - cw + 1;
      int i = (int)(pos[2 * t] * ny), j = (int)(pos[2 * t + 1] * nx);
      *y = i < ny ? i : ny - 1;
      *x = j < nx ? j : nx - 1;
      *w = cw, *h = ch;
      return;
    }
  }
  /* the centre fallback, clamping the aspect ratio to [3/4, 4/3] */
  double in_ratio = (double)width / height;
  int cw = width, ch = height;
  if (in_ratio < 3.0 / 4.0)
    ch = (int)nearbyint(cw / (3.0 / 4.0));
  else if (in_ratio > 4.0 / 3.0)
    cw = (int)nearbyint(ch * (4.0 / 3.0));
  *w = cw, *h = ch;
  *y = (height - ch) / 2;
  *x = (width - cw) / 2;
}

/* ------------------------------------------------------------------------ */
/* PNG writing                                                               */

int data_png_write(const char *path, int w, int h, int c, const uint8_t *pixels, char *err,
                   size_t errlen) {
  if (w <= 0 || h <= 0 || (c != 1 && c != 3))
    return util_errf(err, errlen, "%s: cannot write a %dx%dx%d PNG", path, w, h, c);
  FILE *f = fopen(path, "wb");
  if (!f) return util_errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
  png_state st;
  memset(&st, 0, sizeof st);
  png_state *volatile stp = &st;
  FILE *volatile fv = f;
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  png_structp volatile pngv = png;
  png_infop volatile infov = info;
  if (!png || !info) {
    png_destroy_write_struct(&png, NULL);
    fclose(f);
    return util_errf(err, errlen, "%s: cannot create a PNG writer", path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_structp p = pngv;
    png_infop i = infov;
    png_destroy_write_struct(&p, &i);
    fclose(fv);
    free(stp->rows);
    return util_errf(err, errlen, "%s: cannot write PNG: %s", path, stp->msg);
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
               c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  st.rows = util_xmalloc((size_t)h * sizeof *st.rows);
  for (int y = 0; y < h; y++) st.rows[y] = (png_bytep)(pixels + (size_t)y * w * c);
  png_set_rows(png, info, st.rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
  png_destroy_write_struct(&png, &info);
  free(st.rows);
  if (fclose(f) != 0) return util_errf(err, errlen, "%s: write error: %s", path, strerror(errno));
  return 0;
}
