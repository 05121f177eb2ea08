/*
 * The converters and alexnet-convert: the image decoders (JPEG RGB, gray,
 * CMYK and YCCK with Adobe's inverted values; PNG 8/16-bit, palette, gray,
 * 2-bit gray, alpha, interlaced) and their refusals (truncated, corrupt,
 * empty, not an image, huge); the antialiased resize against values from
 * PIL (torchvision's Resize); the round trip convert -> read for an
 * ImageFolder tree (class order, nested folders, skipped files, the val
 * split, the same output for any thread count), CIFAR-10/100, IDX (plain
 * and gzipped), the real Fashion-MNIST when installed, and the synthetic
 * set; the command line's usage errors and real runs.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
// clang-format off
#include <jpeglib.h>
// clang-format on
#include <png.h>

#include "data.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Making test images                                                        */

/* in_cs: JCS_RGB (3), JCS_GRAYSCALE (1) or JCS_CMYK (4); as_ycck: 1 = store
 * CMYK as YCCK (libjpeg's default), 2 = plain CMYK without Adobe's marker. */
static void write_jpeg(const char *path, int w, int h, J_COLOR_SPACE in_cs, int as_ycck,
                       const uint8_t *px) {
  int comps = in_cs == JCS_GRAYSCALE ? 1 : in_cs == JCS_CMYK ? 4 : 3;
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr jerr;
  c.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&c);
  FILE *f = fopen(path, "wb");
  CU_ASSERT_FATAL(f != NULL);
  jpeg_stdio_dest(&c, f);
  c.image_width = (JDIMENSION)w;
  c.image_height = (JDIMENSION)h;
  c.input_components = comps;
  c.in_color_space = in_cs;
  jpeg_set_defaults(&c);
  if (in_cs == JCS_CMYK) jpeg_set_colorspace(&c, as_ycck == 1 ? JCS_YCCK : JCS_CMYK);
  if (as_ycck == 2) c.write_Adobe_marker = FALSE; /* plain CMYK: values are ink amounts */
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * comps);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  fclose(f);
}

/* A PNG of w x h; bytes per sample = depth / 8 (or packed for depth < 8:
 * then px holds one byte per pixel, packed here). palette: 2 entries. */
static void write_png(const char *path, int w, int h, int color_type, int depth, int interlace,
                      const uint8_t *px) {
  FILE *f = fopen(path, "wb");
  CU_ASSERT_FATAL(f != NULL);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type,
               interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color pal[2] = {{0, 0, 0}, {10, 200, 30}};
    png_set_PLTE(png, info, pal, 2);
  }
  png_write_info(png, info);
  if (depth < 8) png_set_packing(png);
  int chans = color_type == PNG_COLOR_TYPE_RGB          ? 3
              : color_type == PNG_COLOR_TYPE_RGB_ALPHA  ? 4
              : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                        : 1;
  size_t rowbytes = (size_t)w * chans * (depth == 16 ? 2 : 1);
  int passes = png_set_interlace_handling(png);
  for (int p = 0; p < passes; p++)
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(px + (size_t)y * rowbytes));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  fclose(f);
}

/* A solid image of n pixels with `chans` bytes each from `v`. */
static uint8_t *solid(int n, int chans, const uint8_t *v) {
  uint8_t *p = malloc((size_t)n * chans);
  for (int i = 0; i < n; i++) memcpy(p + (size_t)i * chans, v, (size_t)chans);
  return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CU_ASSERT_FATAL(f != NULL);
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

static void path_of(char *out, size_t len, const char *dir, const char *name) {
  snprintf(out, len, "%s/%s", dir, name);
}

/* A noisy RGB JPEG (so that a cut lands inside the entropy-coded data). */
static void write_noisy_jpeg(const char *path, int w, int h) {
  uint8_t *px = malloc((size_t)w * h * 3);
  uint32_t s = 12345;
  for (int i = 0; i < w * h * 3; i++) {
    s = s * 1664525u + 1013904223u;
    px[i] = (uint8_t)(s >> 24);
  }
  write_jpeg(path, w, h, JCS_RGB, 0, px);
  free(px);
}

static long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void truncate_copy(const char *from, const char *to, long keep) {
  FILE *f = fopen(from, "rb");
  CU_ASSERT_FATAL(f != NULL);
  uint8_t *buf = malloc((size_t)keep);
  CU_ASSERT_FATAL(fread(buf, 1, (size_t)keep, f) == (size_t)keep);
  fclose(f);
  write_bytes(to, buf, (size_t)keep);
  free(buf);
}

/* ------------------------------------------------------------------------ */
/* Decoders                                                                  */

/* Every pixel of img within tol of rgb. */
static int all_near(const uint8_t *px, int n, const int rgb[3], int tol) {
  for (int i = 0; i < n; i++)
    for (int c = 0; c < 3; c++)
      if (abs((int)px[i * 3 + c] - rgb[c]) > tol) {
        fprintf(stderr, "\n  pixel %d channel %d = %d, expected %d +- %d\n", i, c, px[i * 3 + c],
                rgb[c], tol);
        return 0;
      }
  return 1;
}

static void expect_load(const char *path, int min_side, int w, int h, const int rgb[3], int tol) {
  data_image img;
  char err[1024];
  int rc = data_image_load(path, min_side, &img, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  CU_ASSERT(img.w == w && img.h == h && img.c == 3);
  CU_ASSERT(all_near(img.pixels, img.w * img.h, rgb, tol));
  data_image_free(&img);
}

static void test_decoders(void) {
  const char *dir = tu_scratch_dir("convert_decoders");
  char p[4200];
  uint8_t *px;
  path_of(p, sizeof p, dir, "rgb.jpg");
  px = solid(120 * 80, 3, (uint8_t[]){200, 30, 40});
  write_jpeg(p, 120, 80, JCS_RGB, 0, px);
  free(px);
  expect_load(p, 0, 120, 80, (int[]){200, 30, 40}, 3);
  /* DCT scaling: the smallest n/8 keeping the shorter side >= 20: 80*2/8 = 20 */
  expect_load(p, 20, 30, 20, (int[]){200, 30, 40}, 3);
  expect_load(p, 21, 45, 30, (int[]){200, 30, 40}, 3);   /* 3/8 */
  expect_load(p, 500, 120, 80, (int[]){200, 30, 40}, 3); /* never upscaled */

  path_of(p, sizeof p, dir, "gray.jpg");
  px = solid(64 * 96, 1, (uint8_t[]){77});
  write_jpeg(p, 64, 96, JCS_GRAYSCALE, 0, px);
  free(px);
  expect_load(p, 0, 64, 96, (int[]){77, 77, 77}, 1);

  /* Adobe CMYK: stored values are inverted (255 = no ink): R = C'K'/255 */
  px = solid(40 * 40, 4, (uint8_t[]){255, 128, 64, 200});
  path_of(p, sizeof p, dir, "cmyk.jpg");
  write_jpeg(p, 40, 40, JCS_CMYK, 0, px);
  expect_load(p, 0, 40, 40, (int[]){200, 100, 50}, 3);
  path_of(p, sizeof p, dir, "ycck.jpg");
  write_jpeg(p, 40, 40, JCS_CMYK, 1, px);
  expect_load(p, 0, 40, 40, (int[]){200, 100, 50}, 3);
  path_of(p, sizeof p, dir, "cmyk-no-adobe.jpg"); /* R = (255 - C)(255 - K)/255 */
  write_jpeg(p, 40, 40, JCS_CMYK, 2, px);
  expect_load(p, 0, 40, 40, (int[]){0, 27, 41}, 3);
  free(px);

  uint16_t v16[3] = {40000, 10000, 65535};
  uint8_t be16[6];
  for (int c = 0; c < 3; c++)
    be16[2 * c] = (uint8_t)(v16[c] >> 8), be16[2 * c + 1] = (uint8_t)v16[c];
  px = solid(30 * 20, 6, be16);
  path_of(p, sizeof p, dir, "rgb16.png");
  write_png(p, 30, 20, PNG_COLOR_TYPE_RGB, 16, 0, px);
  free(px);
  expect_load(p, 0, 30, 20, (int[]){156, 39, 255}, 0); /* scaled: round(v * 255 / 65535) */
  expect_load(p, 8, 30, 20, (int[]){156, 39, 255}, 0); /* no DCT scaling for PNG */

  px = solid(9 * 7, 1, (uint8_t[]){1});
  path_of(p, sizeof p, dir, "palette.png");
  write_png(p, 9, 7, PNG_COLOR_TYPE_PALETTE, 8, 0, px);
  expect_load(p, 0, 9, 7, (int[]){10, 200, 30}, 0);
  free(px);

  px = solid(9 * 7, 1, (uint8_t[]){2});
  path_of(p, sizeof p, dir, "gray2.png");
  write_png(p, 9, 7, PNG_COLOR_TYPE_GRAY, 2, 0, px);
  expect_load(p, 0, 9, 7, (int[]){170, 170, 170}, 0);
  free(px);

  px = solid(9 * 7, 2, (uint8_t[]){90, 0});
  path_of(p, sizeof p, dir, "graya.png");
  write_png(p, 9, 7, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, px);
  expect_load(p, 0, 9, 7, (int[]){90, 90, 90}, 0); /* alpha dropped, not composited */
  free(px);

  px = solid(9 * 7, 4, (uint8_t[]){1, 2, 3, 0});
  path_of(p, sizeof p, dir, "rgba.png");
  write_png(p, 9, 7, PNG_COLOR_TYPE_RGB_ALPHA, 8, 1, px); /* interlaced too */
  expect_load(p, 0, 9, 7, (int[]){1, 2, 3}, 0);
  free(px);
}

static void expect_refused(const char *path, const char *want) {
  data_image img;
  char err[1024] = "";
  CU_ASSERT(data_image_load(path, 0, &img, err, sizeof err) == -1);
  CU_ASSERT(img.pixels == NULL);
  TU_ASSERT_CONTAINS(err, path);
  TU_ASSERT_CONTAINS(err, want);
}

static void test_decoder_refusals(void) {
  const char *dir = tu_scratch_dir("convert_refusals");
  char good[4200], p[4200];
  path_of(good, sizeof good, dir, "noise.jpg");
  write_noisy_jpeg(good, 64, 48);
  long n = file_size(good);
  path_of(p, sizeof p, dir, "cut.jpg");
  truncate_copy(good, p, n / 2);
  expect_refused(p, "truncated JPEG: Premature end of JPEG file");
  truncate_copy(good, p, 3); /* the marker only */
  expect_refused(p, "corrupt JPEG");
  uint8_t junk[600];
  for (int i = 0; i < 600; i++) junk[i] = (uint8_t)(i * 97 + 13);
  junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
  path_of(p, sizeof p, dir, "junk.jpg");
  write_bytes(p, junk, sizeof junk);
  expect_refused(p, "corrupt JPEG");

  /* A PNG cut in its image data, and one whose header was damaged (bad CRC) */
  uint8_t *px = solid(50 * 40, 3, (uint8_t[]){9, 8, 7});
  for (int i = 0; i < 50 * 40 * 3; i++) px[i] = (uint8_t)(i * 31 >> 3);
  path_of(good, sizeof good, dir, "good.png");
  write_png(good, 50, 40, PNG_COLOR_TYPE_RGB, 8, 0, px);
  free(px);
  path_of(p, sizeof p, dir, "cut.png");
  truncate_copy(good, p, file_size(good) - 200);
  expect_refused(p, "corrupt PNG: unexpected end of file (truncated)");
  truncate_copy(good, p, file_size(good));
  FILE *f = fopen(p, "r+b");
  fseek(f, 20, SEEK_SET); /* inside IHDR's width/height */
  fputc(0x55, f);
  fclose(f);
  expect_refused(p, "corrupt PNG");

  path_of(p, sizeof p, dir, "empty.png");
  write_bytes(p, "", 0);
  expect_refused(p, "empty file");
  path_of(p, sizeof p, dir, "text.jpg");
  write_bytes(p, "hello, not an image\n", 20);
  expect_refused(p, "not a JPEG or PNG image");
  path_of(p, sizeof p, dir, "missing.png");
  expect_refused(p, "cannot open: No such file or directory");
  expect_refused(dir, "not a regular file");

  /* Huge dimensions: refused from the header, before any allocation. The
   * file: signature, IHDR of 30000x30000 RGB, the start of an IDAT. */
  path_of(p, sizeof p, dir, "huge.png");
  uint8_t huge[8 + 25 + 12 + 4] = {0x89, 'P', 'N',  'G',  '\r', '\n', 0x1a, '\n', 0,    0,
                                   0,    13,  'I',  'H',  'D',  'R',  0,    0,    0x75, 0x30,
                                   0,    0,   0x75, 0x30, 8,    2,    0,    0,    0};
  uint32_t crc = (uint32_t)crc32(0, huge + 12, 17);
  for (int i = 0; i < 4; i++) huge[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
  const uint8_t idat[8] = {0, 0, 0, 4, 'I', 'D', 'A', 'T'};
  memcpy(huge + 33, idat, 8);
  write_bytes(p, huge, sizeof huge);
  expect_refused(p, "30000x30000 pixels exceed the limit of 268435456");
}

static void test_png_write(void) {
  const char *dir = tu_scratch_dir("convert_png_write");
  char p[4200], err[1024];
  uint8_t rgb[5 * 4 * 3], gray[5 * 4];
  for (int i = 0; i < 60; i++) rgb[i] = (uint8_t)(i * 4);
  for (int i = 0; i < 20; i++) gray[i] = (uint8_t)(i * 12);
  path_of(p, sizeof p, dir, "rgb.png");
  CU_ASSERT_FATAL(data_png_write(p, 5, 4, 3, rgb, err, sizeof err) == 0);
  data_image img;
  CU_ASSERT_FATAL(data_image_load(p, 0, &img, err, sizeof err) == 0);
  CU_ASSERT(img.w == 5 && img.h == 4 && memcmp(img.pixels, rgb, sizeof rgb) == 0);
  data_image_free(&img);
  path_of(p, sizeof p, dir, "gray.png");
  CU_ASSERT_FATAL(data_png_write(p, 5, 4, 1, gray, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_image_load(p, 0, &img, err, sizeof err) == 0);
  int same = 1;
  for (int i = 0; i < 20; i++)
    for (int c = 0; c < 3; c++) same &= img.pixels[i * 3 + c] == gray[i];
  CU_ASSERT(same);
  data_image_free(&img);
  CU_ASSERT(data_png_write(p, 5, 4, 2, gray, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "cannot write a 5x4x2 PNG");
  path_of(p, sizeof p, dir, "no/such/dir.png");
  CU_ASSERT(data_png_write(p, 5, 4, 1, gray, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "cannot create: No such file or directory");
}

/* ------------------------------------------------------------------------ */
/* Resize against PIL                                                        */

/* Pillow 9.4's Image.resize(BILINEAR) (torchvision's Resize) of the 7x5 image
 * below to 3x4 and 11x9 (upscaling, first rows), and torchvision's
 * Resize(4) + CenterCrop(4). PIL rounds an 8-bit intermediate, we keep floats:
 * values agree within 1. */
static const uint8_t pil_3x4[] = {35,  13,  235, 114, 57,  192, 193, 142, 149, 48,  47,  220,
                                  127, 91,  177, 206, 176, 134, 60,  81,  204, 139, 125, 161,
                                  218, 157, 118, 73,  115, 189, 152, 159, 146, 163, 153, 103};
static const uint8_t pil_11x9_rows01[] = {
    0,   0,   255, 17,  2,   246, 40,  6,   233, 64,  16,  220, 87,  29,  208, 111, 45,
    195, 135, 67,  182, 158, 92,  170, 182, 121, 157, 205, 155, 144, 222, 180, 135, 4,
    10,  251, 21,  12,  242, 44,  16,  229, 68,  26,  216, 91,  39,  204, 115, 55,  191,
    139, 77,  178, 162, 102, 166, 186, 131, 153, 209, 165, 140, 226, 190, 131};
static const uint8_t tv_crop4[] = {15, 9,   245, 61, 20,  221, 114, 54,  192, 167, 107, 163,
                                   28, 43,  230, 74, 54,  206, 127, 88,  177, 180, 141, 148,
                                   40, 77,  214, 86, 88,  190, 139, 122, 161, 192, 175, 132,
                                   53, 111, 199, 99, 122, 175, 152, 156, 146, 205, 209, 117};

static int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  int m = 0;
  for (size_t i = 0; i < n; i++) m = abs(a[i] - b[i]) > m ? abs(a[i] - b[i]) : m;
  return m;
}

static void test_resize_matches_pil(void) {
  uint8_t src[5 * 7 * 3];
  for (int y = 0; y < 5; y++)
    for (int x = 0; x < 7; x++) {
      uint8_t *p = src + (y * 7 + x) * 3;
      p[0] = (uint8_t)((x * 37 + y * 11) % 256);
      p[1] = (uint8_t)((x * x * 5 + y * 29) % 256);
      p[2] = (uint8_t)((255 - x * 20 - y * 13) % 256);
    }
  data_image img = {7, 5, 3, src, 0, 0, 0};
  uint8_t out[11 * 9 * 3];
  data_image_resize(&img, 3, 4, out);
  CU_ASSERT(max_diff(out, pil_3x4, sizeof pil_3x4) <= 1);
  data_image_resize(&img, 11, 9, out);
  CU_ASSERT(max_diff(out, pil_11x9_rows01, sizeof pil_11x9_rows01) <= 1);
  data_image_resize_center_crop(&img, 4, out);
  CU_ASSERT(max_diff(out, tv_crop4, sizeof tv_crop4) <= 1);
  data_image_resize(&img, 7, 5, out); /* same size: an exact copy */
  CU_ASSERT(memcmp(out, src, sizeof src) == 0);
}

/* ------------------------------------------------------------------------ */
/* imagefolder                                                               */

typedef struct {
  const char *rel; /* under the tree */
  int rgb[3];      /* its colour after conversion; rgb[0] < 0: skipped */
} tree_entry;

/* In conversion order: sorted classes, then sorted folders, then sorted files. */
static const tree_entry tree[] = {
    {"apple/cmyk.jpg", {200, 100, 50}},      {"apple/gray.jpg", {77, 77, 77}},
    {"apple/rgb.jpg", {200, 30, 40}},        {"apple/ycck.jpg", {200, 100, 50}},
    {"apple/sub/nested.png", {5, 250, 128}}, {"banana/a16.png", {156, 39, 255}},
    {"banana/b_palette.png", {10, 200, 30}}, {"banana/c_gray.png", {90, 90, 90}},
    {"banana/d_halves.png", {-2, 0, 0}},     {"cherry/big.jpg", {10, 20, 30}},
    {"cherry/corrupt.jpg", {-1, 0, 0}},      {"cherry/empty.png", {-1, 0, 0}},
    {"cherry/photo.bmp", {-1, 0, 0}},        {"cherry/tall.png", {-3, 0, 0}},
};
#define TREE_N ((int)(sizeof tree / sizeof tree[0]))
#define TREE_GOOD 11
#define TREE_SKIPPED 3

/* Builds the tree above (classes created out of order) and returns its root. */
static const char *make_tree(const char *name) {
  static char root[4200];
  snprintf(root, sizeof root, "%s", tu_scratch_dir(name));
  char p[4400];
  const char *sub[] = {"cherry", "apple", "banana", "apple/sub", "banana/.hidden_not_a_class"};
  for (int i = 0; i < 5; i++) {
    snprintf(p, sizeof p, "%s/%s", root, sub[i]);
    mkdir(p, 0755);
  }
  uint8_t *px;
#define AT(rel) (snprintf(p, sizeof p, "%s/%s", root, rel), p)
  px = solid(40 * 40, 4, (uint8_t[]){255, 128, 64, 200});
  write_jpeg(AT("apple/cmyk.jpg"), 40, 40, JCS_CMYK, 0, px);
  write_jpeg(AT("apple/ycck.jpg"), 40, 40, JCS_CMYK, 1, px);
  free(px);
  px = solid(64 * 96, 1, (uint8_t[]){77});
  write_jpeg(AT("apple/gray.jpg"), 64, 96, JCS_GRAYSCALE, 0, px);
  free(px);
  px = solid(120 * 80, 3, (uint8_t[]){200, 30, 40});
  write_jpeg(AT("apple/rgb.jpg"), 120, 80, JCS_RGB, 0, px);
  free(px);
  px = solid(50 * 50, 3, (uint8_t[]){5, 250, 128});
  write_png(AT("apple/sub/nested.png"), 50, 50, PNG_COLOR_TYPE_RGB, 8, 0, px);
  free(px);
  px = solid(30 * 20, 6, (uint8_t[]){0x9C, 0x40, 0x27, 0x10, 0xFF, 0xFF});
  write_png(AT("banana/a16.png"), 30, 20, PNG_COLOR_TYPE_RGB, 16, 0, px);
  free(px);
  px = solid(33 * 35, 1, (uint8_t[]){1});
  write_png(AT("banana/b_palette.png"), 33, 35, PNG_COLOR_TYPE_PALETTE, 8, 0, px);
  free(px);
  px = solid(36 * 36, 1, (uint8_t[]){90});
  write_png(AT("banana/c_gray.png"), 36, 36, PNG_COLOR_TYPE_GRAY, 8, 0, px);
  free(px);
  /* 64x32: left half red, right half blue; the 32x32 centre crop keeps both */
  px = malloc(64 * 32 * 3);
  for (int i = 0; i < 64 * 32; i++) {
    int left = i % 64 < 32;
    px[i * 3] = left ? 255 : 0, px[i * 3 + 1] = 0, px[i * 3 + 2] = left ? 0 : 255;
  }
  write_png(AT("banana/d_halves.png"), 64, 32, PNG_COLOR_TYPE_RGB, 8, 0, px);
  free(px);
  write_bytes(AT("banana/notes.txt"), "not an image, ignored\n", 22);
  write_bytes(AT("banana/.hidden_not_a_class/x.txt"), "x", 1);
  px = solid(1000 * 700, 3, (uint8_t[]){10, 20, 30});
  write_jpeg(AT("cherry/big.jpg"), 1000, 700, JCS_RGB, 0, px);
  free(px);
  write_noisy_jpeg(AT("cherry/corrupt.jpg"), 64, 48);
  char full[4400];
  snprintf(full, sizeof full, "%s", p);
  truncate_copy(full, full, file_size(full) / 2);
  write_bytes(AT("cherry/empty.png"), "", 0);
  write_bytes(AT("cherry/photo.bmp"), "BM", 2);
  /* 32x64: top half green, bottom half white */
  px = malloc(32 * 64 * 3);
  for (int i = 0; i < 32 * 64; i++) {
    int top = i / 32 < 32;
    px[i * 3] = top ? 0 : 255, px[i * 3 + 1] = 255, px[i * 3 + 2] = top ? 0 : 255;
  }
  write_png(AT("cherry/tall.png"), 32, 64, PNG_COLOR_TYPE_RGB, 8, 0, px);
  free(px);
#undef AT
  return root;
}

/* The .hidden_not_a_class folder is a folder in banana/, not a class: classes
 * are the top-level folders only. */
static void check_tree_output(const char *path, int size, const uint8_t *held, int want_held) {
  data_dataset ds;
  char err[2048];
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.num_classes == 3 && ds.h == size && ds.w == size && ds.c == 3);
  CU_ASSERT_STRING_EQUAL(ds.class_names[0], "apple");
  CU_ASSERT_STRING_EQUAL(ds.class_names[1], "banana");
  CU_ASSERT_STRING_EQUAL(ds.class_names[2], "cherry");
  uint8_t *img = malloc((size_t)size * size * 3);
  int64_t k = 0, good = 0;
  for (int t = 0; t < TREE_N; t++) {
    if (tree[t].rgb[0] == -1) continue;
    if (held && held[good++] != want_held) continue;
    CU_ASSERT_FATAL(k < ds.n);
    CU_ASSERT_FATAL(data_dataset_read(&ds, k, img, err, sizeof err) == 0);
    int label = tree[t].rel[0] == 'a' ? 0 : tree[t].rel[0] == 'b' ? 1 : 2;
    CU_ASSERT(ds.labels[k] == label);
    if (tree[t].rgb[0] >= 0) {
      CU_ASSERT(all_near(img, size * size, tree[t].rgb, 3));
    } else if (tree[t].rgb[0] == -2) { /* halves: red left, blue right */
      const uint8_t *l = img + (size_t)(size / 2) * size * 3, *r = l + (size_t)(size - 1) * 3;
      CU_ASSERT(l[0] == 255 && l[2] == 0 && r[0] == 0 && r[2] == 255);
    } else { /* tall: green top, white bottom */
      const uint8_t *top = img + (size_t)(size / 2) * 3;
      const uint8_t *bot = img + ((size_t)(size - 1) * size + size / 2) * 3;
      CU_ASSERT(top[0] == 0 && top[1] == 255 && bot[0] == 255 && bot[2] == 255);
    }
    k++;
  }
  CU_ASSERT(k == ds.n);
  free(img);
  data_dataset_close(&ds);
}

static void read_all(const char *path, uint8_t **pixels, int64_t *bytes) {
  data_dataset ds;
  char err[2048];
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  size_t img = (size_t)ds.h * ds.w * ds.c;
  *bytes = (int64_t)img * ds.n;
  *pixels = malloc((size_t)*bytes);
  for (int64_t i = 0; i < ds.n; i++)
    CU_ASSERT(data_dataset_read(&ds, i, *pixels + (size_t)i * img, err, sizeof err) == 0);
  data_dataset_close(&ds);
}

static void test_imagefolder(void) {
  const char *root = make_tree("convert_tree");
  char out[4400], out4[4400], err[2048];
  snprintf(out, sizeof out, "%s.out1.h5", root);
  snprintf(out4, sizeof out4, "%s.out4.h5", root);
  data_convert_stats st;
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.size = 32;
  o.threads = 1;
  o.stats = &st;
  int rc = data_convert_imagefolder(root, out, &o, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n%s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  CU_ASSERT(st.written == TREE_GOOD && st.written_val == 0 && st.skipped == TREE_SKIPPED);
  check_tree_output(out, 32, NULL, 0);
  /* more threads than cores, small window: the same bytes */
  o.threads = 5;
  CU_ASSERT_FATAL(data_convert_imagefolder(root, out4, &o, err, sizeof err) == 0);
  uint8_t *a, *b;
  int64_t na, nb;
  read_all(out, &a, &na);
  read_all(out4, &b, &nb);
  CU_ASSERT(na == nb && memcmp(a, b, (size_t)na) == 0);
  free(a);
  free(b);
}

static void test_imagefolder_val_split(void) {
  const char *root = make_tree("convert_tree_split");
  char out[4400], val[4400], err[2048];
  snprintf(out, sizeof out, "%s.train.h5", root);
  snprintf(val, sizeof val, "%s.val.h5", root);
  data_convert_stats st;
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.size = 24;
  o.val_fraction = 0.3;
  o.val_out = val;
  o.seed = 7;
  o.stats = &st;
  CU_ASSERT_FATAL(data_convert_imagefolder(root, out, &o, err, sizeof err) == 0);
  /* The split is drawn over the listed files (corrupt ones included), by seed
   * alone: data_holdout_split says which. */
  int64_t *keep, *held, nk, nh;
  CU_ASSERT_FATAL(data_holdout_split(TREE_N - 1, 0.3, 7, &keep, &nk, &held, &nh, err, sizeof err) ==
                  0); /* photo.bmp is not listed */
  CU_ASSERT(nh == 4);
  uint8_t mask[TREE_N] = {0}, good_mask[TREE_N] = {0};
  for (int64_t i = 0; i < nh; i++) mask[held[i]] = 1;
  int listed = 0, good = 0;
  int64_t want_val = 0;
  for (int t = 0; t < TREE_N; t++) {
    if (strstr(tree[t].rel, ".bmp")) continue;
    if (tree[t].rgb[0] != -1) {
      good_mask[good++] = mask[listed];
      want_val += mask[listed];
    }
    listed++;
  }
  CU_ASSERT(st.written_val == want_val && st.written + st.written_val == TREE_GOOD);
  check_tree_output(out, 24, good_mask, 0);
  check_tree_output(val, 24, good_mask, 1);
  free(keep);
  free(held);
}

static void test_imagefolder_errors(void) {
  const char *dir = tu_scratch_dir("convert_folder_errors");
  char root[4400], out[4400], err[2048], p[4600];
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  snprintf(out, sizeof out, "%s/out.h5", dir);
  snprintf(root, sizeof root, "%s/none", dir);
  CU_ASSERT(data_convert_imagefolder(root, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "none: not a directory");
  snprintf(root, sizeof root, "%s/empty", dir);
  mkdir(root, 0755);
  CU_ASSERT(data_convert_imagefolder(root, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "empty: no class subfolders (expected DIR/<class>/<image>)");
  snprintf(p, sizeof p, "%s/cls", root);
  mkdir(p, 0755);
  CU_ASSERT(data_convert_imagefolder(root, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "no .jpg, .jpeg or .png images in its 1 class folders");
  snprintf(p, sizeof p, "%s/cls/bad.JPEG", root);
  write_bytes(p, "garbage", 7);
  CU_ASSERT(data_convert_imagefolder(root, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "none of the 1 images could be read");
  CU_ASSERT(access(out, F_OK) != 0);
  o.val_fraction = 0.2;
  CU_ASSERT(data_convert_imagefolder(root, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "--val-fraction 0.2 needs --val-out");
  o.val_fraction = 1.5;
  CU_ASSERT(data_convert_imagefolder(root, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "--val-fraction 1.5 is not in [0, 1)");
  char tmp[4500];
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  CU_ASSERT(access(tmp, F_OK) != 0); /* failures leave nothing behind */
}

/* ------------------------------------------------------------------------ */
/* CIFAR                                                                     */

/* Record r of a test CIFAR file: label, then the R, G and B planes. */
static void cifar_record(int cifar100, int r, uint8_t *rec) {
  int off = cifar100 ? 2 : 1;
  if (cifar100)
    rec[0] = (uint8_t)(r % 20), rec[1] = (uint8_t)((r * 7) % 100);
  else
    rec[0] = (uint8_t)(r % 10);
  for (int c = 0; c < 3; c++)
    for (int p = 0; p < 1024; p++) rec[off + c * 1024 + p] = (uint8_t)(p * 3 + c * 50 + r);
}

static void write_cifar_file(const char *path, int cifar100, int first, int count) {
  size_t rs = cifar100 ? 3074 : 3073;
  uint8_t *buf = malloc(rs * (size_t)count);
  for (int r = 0; r < count; r++) cifar_record(cifar100, first + r, buf + rs * (size_t)r);
  write_bytes(path, buf, rs * (size_t)count);
  free(buf);
}

static void check_cifar(const char *path, int cifar100, int first, int count) {
  data_dataset ds;
  char err[2048];
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.n == count && ds.h == 32 && ds.w == 32 && ds.c == 3);
  CU_ASSERT(ds.num_classes == (cifar100 ? 100 : 10));
  uint8_t rec[3074], img[3072];
  int ok = 1;
  for (int i = 0; i < count; i++) {
    cifar_record(cifar100, first + i, rec);
    CU_ASSERT(data_dataset_read(&ds, i, img, err, sizeof err) == 0);
    ok &= ds.labels[i] == (cifar100 ? rec[1] : rec[0]);
    for (int p = 0; p < 1024; p++)
      for (int c = 0; c < 3; c++) ok &= img[p * 3 + c] == rec[(cifar100 ? 2 : 1) + c * 1024 + p];
  }
  CU_ASSERT(ok);
  CU_ASSERT_STRING_EQUAL(ds.class_names[cifar100 ? 99 : 3], cifar100 ? "worm" : "kitty");
  data_dataset_close(&ds);
}

static void test_cifar(void) {
  const char *dir = tu_scratch_dir("convert_cifar");
  char base[4400], p[4600], out[4400], err[2048];
  /* CIFAR-10 as the tarball unpacks: DIR/cifar-10-batches-bin/ */
  snprintf(base, sizeof base, "%s/cifar-10-batches-bin", dir);
  mkdir(base, 0755);
  for (int b = 1; b <= 5; b++) {
    snprintf(p, sizeof p, "%s/data_batch_%d.bin", base, b);
    write_cifar_file(p, 0, (b - 1) * 3, 3);
  }
  snprintf(p, sizeof p, "%s/test_batch.bin", base);
  write_cifar_file(p, 0, 100, 4);
  snprintf(p, sizeof p, "%s/batches.meta.txt", base);
  const char *meta = "airplane\nautomobile\nbird\nkitty\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
  write_bytes(p, meta, strlen(meta));
  data_convert_stats st;
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.stats = &st;
  snprintf(out, sizeof out, "%s/c10.h5", dir);
  CU_ASSERT_FATAL(data_convert_cifar(dir, 0, "train", out, &o, err, sizeof err) == 0);
  CU_ASSERT(st.written == 15);
  check_cifar(out, 0, 0, 15);
  CU_ASSERT_FATAL(data_convert_cifar(base, 0, "test", out, &o, err, sizeof err) == 0);
  check_cifar(out, 0, 100, 4);

  /* CIFAR-100 in the folder itself, without a names file: the built-in names */
  snprintf(base, sizeof base, "%s/c100", dir);
  mkdir(base, 0755);
  snprintf(p, sizeof p, "%s/train.bin", base);
  write_cifar_file(p, 1, 0, 30);
  CU_ASSERT_FATAL(data_convert_cifar(base, 1, "train", out, &o, err, sizeof err) == 0);
  check_cifar(out, 1, 0, 30);

  /* refusals */
  CU_ASSERT(data_convert_cifar(base, 1, "test", out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "c100/test.bin: cannot open: No such file or directory");
  CU_ASSERT(data_convert_cifar(base, 1, "valid", out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "--split 'valid': expected train or test");
  snprintf(p, sizeof p, "%s/test.bin", base);
  write_bytes(p, "short", 5);
  CU_ASSERT(data_convert_cifar(base, 1, "test", out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(
      err,
      "test.bin: size 5 is not a positive multiple of the 3074-byte CIFAR-100 record (truncated?)");
  uint8_t rec[3073];
  cifar_record(0, 0, rec);
  rec[0] = 10;
  snprintf(p, sizeof p, "%s/cifar-10-batches-bin/test_batch.bin", dir);
  write_bytes(p, rec, 3073);
  CU_ASSERT(data_convert_cifar(dir, 0, "test", out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "test_batch.bin: record 0 has label 10, out of range [0, 10)");
  snprintf(p, sizeof p, "%s/cifar-10-batches-bin/batches.meta.txt", dir);
  write_bytes(p, "a\nb\n", 4);
  CU_ASSERT(data_convert_cifar(dir, 0, "test", out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "batches.meta.txt: 2 class names, expected 10");
  snprintf(p, sizeof p, "%s/nothing", dir);
  CU_ASSERT(data_convert_cifar(p, 0, "test", out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "nothing: not a directory");
}

/* ------------------------------------------------------------------------ */
/* IDX                                                                       */

static void write_idx(const char *path, int gz, const uint8_t *hdr, size_t hlen,
                      const uint8_t *data, size_t n) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, hdr, (unsigned)hlen);
    gzwrite(f, data, (unsigned)n);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(hdr, 1, hlen, f);
    fwrite(data, 1, n, f);
    fclose(f);
  }
}

/* n images of 5x4 (rows x cols) and their labels (i % 4). */
static void make_idx(const char *dir, const char *stem, int gz, int n, int n_labels, char *images,
                     char *labels) {
  snprintf(images, 4400, "%s/%s-images-idx3-ubyte%s", dir, stem, gz ? ".gz" : "");
  snprintf(labels, 4400, "%s/%s-labels-idx1-ubyte%s", dir, stem, gz ? ".gz" : "");
  uint8_t hi[16] = {0, 0, 8, 3, 0, 0, 0, (uint8_t)n, 0, 0, 0, 5, 0, 0, 0, 4};
  uint8_t hl[8] = {0, 0, 8, 1, 0, 0, 0, (uint8_t)n_labels};
  uint8_t px[255 * 20], lab[255];
  for (int i = 0; i < n * 20; i++) px[i] = (uint8_t)(i * 7);
  for (int i = 0; i < n_labels; i++) lab[i] = (uint8_t)(i % 4);
  write_idx(images, gz, hi, 16, px, (size_t)n * 20);
  write_idx(labels, gz, hl, 8, lab, (size_t)n_labels);
}

static void test_idx(void) {
  const char *dir = tu_scratch_dir("convert_idx");
  char images[4400], labels[4400], out[4400], err[2048], p[4600];
  snprintf(out, sizeof out, "%s/out.h5", dir);
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  for (int gz = 0; gz < 2; gz++) {
    make_idx(dir, gz ? "zipped" : "plain", gz, 9, 9, images, labels);
    CU_ASSERT_FATAL(data_convert_idx(images, labels, out, &o, err, sizeof err) == 0);
    data_dataset ds;
    CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
    CU_ASSERT(ds.n == 9 && ds.h == 5 && ds.w == 4 && ds.c == 1 && ds.num_classes == 4);
    CU_ASSERT_STRING_EQUAL(ds.class_names[3], "3");
    uint8_t img[20];
    int ok = 1;
    for (int i = 0; i < 9; i++) {
      CU_ASSERT(data_dataset_read(&ds, i, img, err, sizeof err) == 0);
      for (int k = 0; k < 20; k++) ok &= img[k] == (uint8_t)((i * 20 + k) * 7);
      ok &= ds.labels[i] == i % 4;
    }
    CU_ASSERT(ok);
    data_dataset_close(&ds);
  }
  /* class names from a file (then labels are checked against its count) */
  snprintf(p, sizeof p, "%s/names.txt", dir);
  write_bytes(p, "cat\ndog\nemu\ngnu\nyak\n", 20);
  o.class_names = p;
  CU_ASSERT_FATAL(data_convert_idx(images, labels, out, &o, err, sizeof err) == 0);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.num_classes == 5);
  CU_ASSERT_STRING_EQUAL(ds.class_names[4], "yak");
  data_dataset_close(&ds);
  write_bytes(p, "cat\ndog\n", 8);
  CU_ASSERT(data_convert_idx(images, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "labels-idx1-ubyte.gz: label[2] = 2 is out of range [0, 2)");
  o.class_names = NULL;

  /* a path naming Fashion-MNIST gets its class names */
  make_idx(dir, "fashion", 1, 4, 4, images, labels);
  CU_ASSERT_FATAL(data_convert_idx(images, labels, out, &o, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.num_classes == 10);
  CU_ASSERT_STRING_EQUAL(ds.class_names[9], "Ankle boot");
  data_dataset_close(&ds);

  /* refusals */
  make_idx(dir, "mismatch", 0, 9, 8, images, labels);
  CU_ASSERT(data_convert_idx(images, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "mismatch-images-idx3-ubyte has 9 images but");
  TU_ASSERT_CONTAINS(err, "mismatch-labels-idx1-ubyte has 8 labels");
  CU_ASSERT(data_convert_idx(labels, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "mismatch-labels-idx1-ubyte: IDX of rank 1, expected 3..4");
  snprintf(p, sizeof p, "%s/short-images", dir);
  uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 4};
  uint8_t px[60] = {0};
  write_idx(p, 0, hdr, 16, px, 60); /* 3 of 8 images */
  make_idx(dir, "eight", 0, 8, 8, images, labels);
  CU_ASSERT(data_convert_idx(p, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: truncated at image 3 of 8");
  write_bytes(p, "\x00\x00\x0d\x03", 4); /* float IDX */
  CU_ASSERT(data_convert_idx(p, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: not an unsigned-byte IDX file (magic 00000d03)");
  write_bytes(p, "\x00\x00\x08\x04\x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x00\x04\x00\x00\x00\x02",
              20); /* (8, 5, 4, 2): two channels */
  CU_ASSERT(data_convert_idx(p, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: images with 2 channels, expected 1 or 3");
  write_bytes(p, "\x00\x00\x08\x03\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x04", 16);
  CU_ASSERT(data_convert_idx(p, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: images of 0x4");
  write_bytes(p, "\x00\x00\x08\x03\x00\x00", 6);
  CU_ASSERT(data_convert_idx(p, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: truncated IDX header");
  write_bytes(p, "\x00\x00", 2);
  CU_ASSERT(data_convert_idx(p, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: not an IDX file (shorter than its header)");
  make_idx(dir, "none", 0, 0, 0, images, labels);
  CU_ASSERT(data_convert_idx(images, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "none-images-idx3-ubyte: zero images");
  make_idx(dir, "fewlabels", 0, 8, 8, images, labels);
  truncate_copy(labels, labels, 8 + 5);
  CU_ASSERT(data_convert_idx(images, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "fewlabels-labels-idx1-ubyte: truncated (fewer than 8 labels)");
  make_idx(dir, "eight", 0, 8, 8, images, labels);
  o.class_names = p;
  write_bytes(p, "\n\n", 2);
  CU_ASSERT(data_convert_idx(images, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "short-images: no class names");
  o.class_names = "/nonexistent/names.txt";
  CU_ASSERT(data_convert_idx(images, labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "/nonexistent/names.txt: cannot open: No such file or directory");
  o.class_names = NULL;
  CU_ASSERT(data_convert_idx("/nonexistent/x", labels, out, &o, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "/nonexistent/x: cannot open");
  char tmp[4500];
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  CU_ASSERT(access(tmp, F_OK) != 0);
}

/* The real Fashion-MNIST of Debian's dataset-fashion-mnist (< 1 s). */
static void test_fashion_mnist(void) {
  const char *fm = "/usr/share/datasets/fashion-mnist";
  char images[4400], labels[4400], out[4400], err[2048];
  snprintf(images, sizeof images, "%s/train-images-idx3-ubyte.gz", fm);
  snprintf(labels, sizeof labels, "%s/train-labels-idx1-ubyte.gz", fm);
  if (access(images, R_OK) != 0)
    TU_SKIP("%s is absent (apt-get install dataset-fashion-mnist)", images);
  snprintf(out, sizeof out, "%s/fm-train.h5", tu_scratch_dir("convert_fashion"));
  data_convert_stats st;
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.stats = &st;
  CU_ASSERT_FATAL(data_convert_idx(images, labels, out, &o, err, sizeof err) == 0);
  CU_ASSERT(st.written == 60000);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.n == 60000 && ds.h == 28 && ds.w == 28 && ds.c == 1 && ds.num_classes == 10);
  CU_ASSERT(ds.labels[0] == 9 && ds.labels[1] == 0); /* Ankle boot, T-shirt/top */
  int count[10] = {0};
  for (int64_t i = 0; i < ds.n; i++) count[ds.labels[i]]++;
  for (int k = 0; k < 10; k++) CU_ASSERT(count[k] == 6000);
  /* the well-known statistics of Fashion-MNIST's training set */
  CU_ASSERT(fabsf(ds.mean[0] - 0.2860f) < 1e-4f && fabsf(ds.std[0] - 0.3530f) < 1e-4f);
  data_dataset_close(&ds);
}

/* ------------------------------------------------------------------------ */
/* Synthetic                                                                 */

static void test_synthetic(void) {
  const char *dir = tu_scratch_dir("convert_synthetic");
  char a[4400], b[4400], c[4400], err[2048];
  snprintf(a, sizeof a, "%s/a.h5", dir);
  snprintf(b, sizeof b, "%s/b.h5", dir);
  snprintf(c, sizeof c, "%s/c.h5", dir);
  CU_ASSERT_FATAL(data_write_synthetic(a, 200, 24, 3, 10, 1, err, sizeof err) == 0);
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.seed = 1;
  o.threads = 3;
  CU_ASSERT_FATAL(data_convert_synthetic(b, 200, 24, 3, 10, &o, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_write_synthetic(c, 200, 24, 3, 10, 2, err, sizeof err) == 0);
  uint8_t *pa, *pb, *pc;
  int64_t na, nb, nc;
  read_all(a, &pa, &na);
  read_all(b, &pb, &nb);
  read_all(c, &pc, &nc);
  CU_ASSERT(na == nb && memcmp(pa, pb, (size_t)na) == 0); /* seed alone decides */
  CU_ASSERT(na == nc && memcmp(pa, pc, (size_t)na) != 0);
  /* Learnable: the hue of a sample tells its class among 10. A nearest-class-
   * mean classifier on the mean colour less its grey level (the brightness
   * varies per sample), fitted on seed 1, classifies the seed-2 set. */
  double cm[10][3] = {{0}};
  size_t img = 24 * 24 * 3;
  for (int64_t i = 0; i < 200; i++) {
    double m[3] = {0};
    for (size_t p = 0; p < img; p++) m[p % 3] += pa[(size_t)i * img + p] / 576.0;
    for (int ch = 0; ch < 3; ch++) cm[i % 10][ch] += (m[ch] - (m[0] + m[1] + m[2]) / 3) / 20;
  }
  int correct = 0;
  for (int64_t i = 0; i < 200; i++) {
    double m[3] = {0};
    for (size_t p = 0; p < img; p++) m[p % 3] += pc[(size_t)i * img + p] / 576.0;
    double grey = (m[0] + m[1] + m[2]) / 3;
    for (int ch = 0; ch < 3; ch++) m[ch] -= grey;
    int best = 0;
    double bd = 1e30;
    for (int k = 0; k < 10; k++) {
      double d = 0;
      for (int ch = 0; ch < 3; ch++) d += (m[ch] - cm[k][ch]) * (m[ch] - cm[k][ch]);
      if (d < bd) bd = d, best = k;
    }
    correct += best == i % 10;
  }
  if (correct < 190) fprintf(stderr, "\n  nearest class mean: %d of 200 correct\n", correct);
  CU_ASSERT(correct >= 190);
  free(pa);
  free(pb);
  free(pc);
  data_dataset ds;
  CU_ASSERT_FATAL(data_write_synthetic(a, 5, 16, 1, 1000, 3, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_dataset_open(a, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.n == 5 && ds.c == 1 && ds.num_classes == 1000 && ds.labels[4] == 4);
  CU_ASSERT_STRING_EQUAL(ds.class_names[999], "class_999");
  data_dataset_close(&ds);
  CU_ASSERT(data_write_synthetic(a, 0, 16, 3, 10, 1, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "synthetic: --n 0 must be > 0");
  CU_ASSERT(data_write_synthetic(a, 4, 16, 2, 10, 1, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "synthetic: --channels 2, expected 1 or 3");
  CU_ASSERT(data_write_synthetic(a, 4, 0, 3, 10, 1, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "synthetic: --size 0 is not in 1..65535");
  CU_ASSERT(data_write_synthetic(a, 4, 16, 3, 0, 1, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "synthetic: --classes 0 must be > 0");
}

/* ------------------------------------------------------------------------ */
/* The command line                                                          */

/* Runs alexnet-convert ARGS once; checks the exit status and that the output
 * contains each of the NULL-terminated strings that follow. */
static void expect_cli(const char *args, int want_rc, ...) {
  char cmd[8192], out[16384];
  snprintf(cmd, sizeof cmd, "%s %s", tu_bin("alexnet-convert"), args);
  int rc = tu_run_cmd(cmd, out, sizeof out);
  if (rc != want_rc) fprintf(stderr, "\n  %s -> %d:\n%s\n", cmd, rc, out);
  CU_ASSERT(rc == want_rc);
  va_list ap;
  va_start(ap, want_rc);
  for (const char *want; (want = va_arg(ap, const char *)) != NULL;) TU_ASSERT_CONTAINS(out, want);
  va_end(ap);
}

static void test_cli_usage(void) {
  expect_cli("", 2, "alexnet-convert: missing command", "usage:", NULL);
  expect_cli("--help", 0, "alexnet-convert imagefolder DIR -o OUT.h5", NULL);
  expect_cli("tfrecord x -o y.h5", 2, "unknown command 'tfrecord'", NULL);
  expect_cli("imagefolder -o y.h5", 2, "missing DIR", NULL);
  expect_cli("imagefolder dir", 2, "missing -o OUT.h5", NULL);
  expect_cli("imagefolder dir -o", 2, "option -o needs a value", NULL);
  expect_cli("imagefolder dir -o y.h5 --split test", 2, "unknown option '--split' for this command",
             NULL);
  expect_cli("imagefolder dir -o y.h5 --size big", 2,
             "--size must be an integer in [1, 65535], not 'big'", NULL);
  expect_cli("imagefolder dir -o y.h5 --val-fraction 0.1", 2, "--val-fraction needs --val-out",
             NULL);
  expect_cli("imagefolder dir -o y.h5 --val-out v.h5", 2, "--val-out needs --val-fraction > 0",
             NULL);
  expect_cli("imagefolder dir -o y.h5 --val-fraction 2 --val-out v.h5", 2,
             "--val-fraction must be a number in [0, 1), not '2'", NULL);
  expect_cli("imagefolder dir extra -o y.h5", 2, "unexpected argument 'extra'", NULL);
  expect_cli("cifar10 dir -o y.h5 --split val", 2, "--split must be train or test, not 'val'",
             NULL);
  expect_cli("idx images.gz -o y.h5", 2, "idx needs IMAGES and LABELS files", NULL);
  expect_cli("synthetic --n 10 --size 32 -o y.h5", 2, "synthetic needs --n, --size and --classes",
             NULL);
  expect_cli("synthetic --n 10 --size 32 --classes 2 --channels 2 -o y.h5", 2,
             "--channels must be 1 or 3", NULL);
  expect_cli("synthetic --n 10 --size 32 --classes 2 --compress 10 -o y.h5", 2,
             "--compress must be an integer in [0, 9], not '10'", NULL);
}

static void test_cli_runs(void) {
  const char *root = make_tree("convert_cli_tree");
  char args[8192], out[4400], val[4400];
  snprintf(out, sizeof out, "%s.h5", root);
  snprintf(val, sizeof val, "%s.val.h5", root);
  snprintf(args, sizeof args, "imagefolder '%s' -o '%s' --size 32 --threads 2", root, out);
  expect_cli(args, 0, "alexnet-convert: wrote 11 images to", ", skipped 3, ", "images/s",
             "skipped 3 unreadable image(s):",
             "cherry/corrupt.jpg: truncated JPEG: Premature end of JPEG file",
             "cherry/empty.png: empty file",
             "cherry/photo.bmp: unsupported image format (JPEG and PNG only)",
             "imagefolder: 13/13 images (100.0%)", /* plain progress off a terminal */
             NULL);
  snprintf(args, sizeof args,
           "imagefolder '%s' -o '%s' --size 16 --val-fraction 0.25 --val-out '%s' --seed 3 "
           "--compress 1",
           root, out, val);
  /* the held-out files are drawn over the 13 listed ones, good or not */
  char err[2048], want[64];
  int64_t *keep, *held, nk, nh, good_held = 0;
  CU_ASSERT_FATAL(data_holdout_split(13, 0.25, 3, &keep, &nk, &held, &nh, err, sizeof err) == 0);
  for (int64_t i = 0; i < nh; i++) {
    int listed = -1, t = 0;
    for (; t < TREE_N && listed < held[i]; t++) listed += strstr(tree[t].rel, ".bmp") == NULL;
    good_held += tree[t - 1].rgb[0] != -1;
  }
  free(keep);
  free(held);
  snprintf(want, sizeof want, " and %lld to ", (long long)good_held);
  expect_cli(args, 0, want, NULL);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(val, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.h == 16 && ds.n == good_held);
  data_dataset_close(&ds);
  snprintf(args, sizeof args, "synthetic --n 20 --size 8 --classes 4 --channels 1 -o '%s'", out);
  expect_cli(args, 0, "alexnet-convert: wrote 20 images to", NULL);
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.n == 20 && ds.h == 8 && ds.c == 1 && ds.num_classes == 4);
  data_dataset_close(&ds);
  /* failures: exit 1, the reason, no output left */
  snprintf(args, sizeof args, "imagefolder '%s/missing' -o '%s.x.h5'", root, root);
  expect_cli(args, 1, "missing: not a directory", NULL);
  snprintf(args, sizeof args, "%s.x.h5", root);
  CU_ASSERT(access(args, F_OK) != 0);
  /* interrupted: exit 128 + SIGTERM, the temporary file removed. The signal
   * is sent once the temporary file exists (the handler is in place by then),
   * so the test sees the removal, not an early default death. */
  char cmd[8192], outbuf[4096];
  snprintf(cmd, sizeof cmd,
           "%s synthetic --n 1000000 --size 64 --classes 10 -o '%s.int.h5' & p=$!; "
           "for i in $(seq 3000); do [ -e '%s.int.h5.tmp' ] && break; sleep 0.1; done; "
           "[ -e '%s.int.h5.tmp' ] && echo started; "
           "kill -TERM $p; wait $p; echo status=$?; ls '%s'.int.h5* 2>&1; true",
           tu_bin("alexnet-convert"), root, root, root, root);
  CU_ASSERT(tu_run_cmd(cmd, outbuf, sizeof outbuf) == 0);
  TU_ASSERT_CONTAINS(outbuf, "started\n");
  TU_ASSERT_CONTAINS(outbuf, "status=143");
  TU_ASSERT_CONTAINS(outbuf, "No such file or directory");
  snprintf(args, sizeof args, "cifar100 '%s' -o '%s.x.h5'", root, root);
  expect_cli(args, 1, "train.bin: cannot open: No such file or directory", NULL);
}

int main(void) {
  tu_add_suite("data_convert", (tu_test[]){{"decoders", test_decoders},
                                           {"decoder refusals", test_decoder_refusals},
                                           {"png write", test_png_write},
                                           {"resize matches PIL", test_resize_matches_pil},
                                           {"imagefolder", test_imagefolder},
                                           {"imagefolder val split", test_imagefolder_val_split},
                                           {"imagefolder errors", test_imagefolder_errors},
                                           {"cifar", test_cifar},
                                           {"idx", test_idx},
                                           {"fashion-mnist", test_fashion_mnist},
                                           {"synthetic", test_synthetic},
                                           {"cli usage", test_cli_usage},
                                           {"cli runs", test_cli_runs},
                                           {NULL, NULL}});
  return tu_run_all();
}
