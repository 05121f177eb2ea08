/*
 * test_data_jpeg: JPEG-encoded dataset files, shards read as one dataset,
 * parallel conversion, --labels, RandomResizedCrop and the evaluation resize.
 *
 * References: libjpeg's own decode of the stored bytes (this file's
 * decode_ref, independent of data/image.c) must equal what data/ delivers;
 * PIL's decode and torchvision's RandomResizedCrop are in
 * tests/reference/data_reference.h5 (written by make_data_reference.py).
 */
#include <hdf5.h>
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
// clang-format off
#include <jpeglib.h>
// clang-format on

#include "data.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* libjpeg-turbo's full-size RGB decode of buf (malloc'd, *w x *h), or NULL. */
typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
} ref_err;

static void ref_on_error(j_common_ptr c) {
  longjmp(((ref_err *)c->err)->jb, 1);
}

static uint8_t *decode_ref(const uint8_t *buf, size_t len, int *w, int *h) {
  struct jpeg_decompress_struct ci;
  ref_err e;
  uint8_t *volatile out = NULL;
  ci.err = jpeg_std_error(&e.pub);
  e.pub.error_exit = ref_on_error;
  if (setjmp(e.jb)) {
    jpeg_destroy_decompress(&ci);
    free(out);
    return NULL;
  }
  jpeg_create_decompress(&ci);
  jpeg_mem_src(&ci, buf, (unsigned long)len);
  jpeg_read_header(&ci, TRUE);
  ci.out_color_space = JCS_RGB;
  jpeg_start_decompress(&ci);
  *w = (int)ci.output_width, *h = (int)ci.output_height;
  out = malloc((size_t)*w * *h * 3);
  while (ci.output_scanline < ci.output_height) {
    JSAMPROW row = out + (size_t)ci.output_scanline * *w * 3;
    jpeg_read_scanlines(&ci, &row, 1);
  }
  jpeg_finish_decompress(&ci);
  jpeg_destroy_decompress(&ci);
  return out;
}

/* A smooth test picture with edges and a per-image tint. */
static void picture(uint8_t *px, int w, int h, int k) {
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *p = px + ((size_t)y * w + x) * 3;
      p[0] = (uint8_t)(128 + 100 * sin(x / (5.0 + k)) * cos(y / 7.0));
      p[1] = (uint8_t)((x * 255) / (w > 1 ? w - 1 : 1));
      p[2] = (uint8_t)((((x / 6) + (y / 6) + k) % 2) ? 40 + 10 * k : 210);
    }
}

/* DIR/<class>/img<k>.png for `per` images in each of 3 classes, of varied
 * sizes (some wider, some taller, one smaller than `size`). Returns DIR. */
static const char *make_tree(const char *name, int per) {
  static char root[4096];
  snprintf(root, sizeof root, "%s/tree", tu_scratch_dir(name));
  mkdir(root, 0777);
  const char *cls[3] = {"cat", "dog", "eel"};
  char err[1024], path[4400];
  for (int c = 0; c < 3; c++) {
    snprintf(path, sizeof path, "%s/%s", root, cls[c]);
    mkdir(path, 0777);
    for (int k = 0; k < per; k++) {
      int w = 40 + 13 * ((k + c) % 4), h = 36 + 9 * ((k * 3 + c) % 5);
      if (k == 1 && c == 2) w = 20, h = 30; /* smaller than --size: upscaled */
      uint8_t *px = malloc((size_t)w * h * 3);
      picture(px, w, h, k + c);
      snprintf(path, sizeof path, "%s/%s/img%02d.png", root, cls[c], k);
      CU_ASSERT_FATAL(data_png_write(path, w, h, 3, px, err, sizeof err) == 0);
      free(px);
    }
  }
  return root;
}

static int file_exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

/* Whole-file byte equality. */
static int same_bytes(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  int same = fa && fb;
  while (same) {
    int x = fgetc(fa), y = fgetc(fb);
    if (x != y) same = 0;
    if (x == EOF || y == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

/* All batches of `epochs` epochs (from step first of epoch 0) concatenated:
 * images (floats) and indices; returns the float count. */
static size_t run_loader(const data_loader_opts *o, int epochs, int64_t first, float **imgs,
                         int64_t **idx, size_t *nidx) {
  data_loader *ld;
  char err[2048];
  int rc = data_loader_open(o, &ld, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n%s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  size_t n = 0, cap = 0, ni = 0;
  *imgs = NULL;
  *idx = malloc(sizeof(int64_t) * 4096);
  for (int e = 0; e < epochs; e++) {
    CU_ASSERT_FATAL(data_loader_start_epoch(ld, e, e == 0 ? first : 0, err, sizeof err) == 0);
    data_batch b;
    while ((rc = data_loader_next(ld, &b, err, sizeof err)) == 1) {
      size_t k =
          (size_t)b.count * b.views * (o->out_channels ? o->out_channels : 3) * o->crop * o->crop;
      if (n + k > cap) {
        cap = 2 * (n + k);
        *imgs = realloc(*imgs, cap * sizeof(float));
      }
      memcpy(*imgs + n, b.images, k * sizeof(float));
      n += k;
      for (int i = 0; i < b.count && ni < 4096; i++) (*idx)[ni++] = b.indices[i];
    }
    if (rc != 0) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT(rc == 0);
  }
  data_loader_close(ld);
  *nidx = ni;
  return n;
}

/* Reads a reference dataset (any type) as `type` into a malloc'd buffer. */
static void *ref_read(hid_t f, const char *name, hid_t type, size_t elem, hsize_t *dims) {
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  CU_ASSERT_FATAL(d >= 0);
  hid_t sp = H5Dget_space(d);
  int r = H5Sget_simple_extent_dims(sp, dims, NULL);
  hsize_t n = 1;
  for (int i = 0; i < r; i++) n *= dims[i];
  void *buf = malloc((size_t)n * elem);
  CU_ASSERT_FATAL(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
  H5Sclose(sp);
  H5Dclose(d);
  return buf;
}

static hid_t open_reference(void) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/reference/data_reference.h5", ALEXNET_SOURCE_DIR);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  return f;
}

/* ------------------------------------------------------------------------ */
/* RandomResizedCrop against torchvision                                     */

static void test_random_resized_crop(void) {
  hid_t f = open_reference();
  hsize_t d_img[4], d_thin[4], d_area[4], d_box[4], d_out[4], d_n[4];
  uint8_t *image = ref_read(f, "/image", H5T_NATIVE_UINT8, 1, d_img);
  uint8_t *thin = ref_read(f, "/thin", H5T_NATIVE_UINT8, 1, d_thin);
  double *area = ref_read(f, "/rrc_area", H5T_NATIVE_DOUBLE, 8, d_area);
  double *aspect = ref_read(f, "/rrc_aspect", H5T_NATIVE_DOUBLE, 8, d_area);
  int32_t *tries = ref_read(f, "/rrc_tries", H5T_NATIVE_INT32, 4, d_n);
  int32_t *src = ref_read(f, "/rrc_src", H5T_NATIVE_INT32, 4, d_n);
  int32_t *box = ref_read(f, "/rrc_box", H5T_NATIVE_INT32, 4, d_box);
  uint8_t *out = ref_read(f, "/rrc_out", H5T_NATIVE_UINT8, 1, d_out);
  H5Fclose(f);
  int cases = (int)d_n[0], S = (int)d_out[1], maxdiff = 0, fallbacks = 0;
  uint8_t *mine = malloc((size_t)S * S * 3);
  for (int k = 0; k < cases; k++) {
    data_image im;
    memset(&im, 0, sizeof im);
    im.c = 3;
    im.pixels = src[k] ? thin : image;
    im.h = (int)(src[k] ? d_thin[0] : d_img[0]);
    im.w = (int)(src[k] ? d_thin[1] : d_img[1]);
    int ti = box[4 * k], tj = box[4 * k + 1], th = box[4 * k + 2], tw = box[4 * k + 3];
    /* torchvision's offsets as uniforms in the middle of their bucket */
    double pos[2 * DATA_RRC_TRIES];
    for (int t = 0; t < DATA_RRC_TRIES; t++) pos[2 * t] = pos[2 * t + 1] = 0.5;
    int last = tries[k] - 1;
    pos[2 * last] = (ti + 0.5) / (im.h - th + 1);
    pos[2 * last + 1] = (tj + 0.5) / (im.w - tw + 1);
    int x, y, w, h;
    data_rrc_box(im.w, im.h, area + (size_t)k * DATA_RRC_TRIES, aspect + (size_t)k * DATA_RRC_TRIES,
                 pos, &x, &y, &w, &h);
    if (x != tj || y != ti || w != tw || h != th)
      fprintf(stderr, "\n  case %d: box (top %d, left %d, %dx%d), torchvision's (%d, %d, %dx%d)\n",
              k, y, x, h, w, ti, tj, th, tw);
    CU_ASSERT(x == tj && y == ti && w == tw && h == th);
    fallbacks += tries[k] == DATA_RRC_TRIES && src[k];
    data_image_resize_box(&im, tj, ti, tw, th, S, S, mine);
    const uint8_t *ref = out + (size_t)k * S * S * 3;
    for (int i = 0; i < S * S * 3; i++) {
      int dd = abs((int)mine[i] - (int)ref[i]);
      maxdiff = dd > maxdiff ? dd : maxdiff;
    }
  }
  printf("(%d cases, %d centre fallbacks, maxdiff %d) ", cases, fallbacks, maxdiff);
  CU_ASSERT(fallbacks >= 1);
  CU_ASSERT(maxdiff <= 1);
  free(mine), free(image), free(thin), free(area), free(aspect), free(tries), free(src);
  free(box), free(out);
}

/* ------------------------------------------------------------------------ */
/* Decoded pixels: libjpeg's own decode, PIL within 1                         */

static void test_decode_matches_libjpeg_and_pil(void) {
  hid_t f = open_reference();
  hsize_t dj[4], dp[4];
  uint8_t *jpeg = ref_read(f, "/jpeg", H5T_NATIVE_UINT8, 1, dj);
  uint8_t *pil = ref_read(f, "/jpeg_pil", H5T_NATIVE_UINT8, 1, dp);
  H5Fclose(f);
  int H = (int)dp[0], W = (int)dp[1];
  /* a JPEG file of two images: PIL's bytes and our encoder's */
  char path[4400], err[2048];
  snprintf(path, sizeof path, "%s/two.h5", tu_scratch_dir("jpeg_decode"));
  const char *names[2] = {"a", "b"};
  data_writer *wr;
  CU_ASSERT_FATAL(data_writer_create_jpeg(path, 3, 2, names, &wr, err, sizeof err) == 0);
  uint64_t s[3], q[3];
  data_pixel_sums(pil, (size_t)W * H, 3, s, q);
  CU_ASSERT_FATAL(
      data_writer_append_jpeg(wr, jpeg, (size_t)dj[0], H, W, s, q, 0, err, sizeof err) == 0);
  uint8_t *px = malloc((size_t)70 * 50 * 3), *enc;
  size_t enc_len;
  picture(px, 70, 50, 3);
  CU_ASSERT_FATAL(data_jpeg_encode(px, 70, 50, 3, 95, "b", &enc, &enc_len, err, sizeof err) == 0);
  data_pixel_sums(px, 70 * 50, 3, s, q);
  CU_ASSERT_FATAL(data_writer_append_jpeg(wr, enc, enc_len, 50, 70, s, q, 1, err, sizeof err) == 0);
  free(enc);
  CU_ASSERT_FATAL(data_writer_finish(wr, err, sizeof err) == 0);

  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.encoding == DATA_ENCODING_JPEG && ds.n == 2 && ds.c == 3);
  CU_ASSERT(ds.h == 50 && ds.w == 70 && ds.min_h == H && ds.min_w == W);
  int max_pil = 0;
  for (int64_t i = 0; i < 2; i++) {
    uint8_t *bytes = NULL, *got = malloc((size_t)ds.h * ds.w * 3);
    size_t cap = 0, len = 0;
    CU_ASSERT_FATAL(data_dataset_read_bytes(&ds, i, &bytes, &cap, &len, err, sizeof err) == 0);
    int rw, rh;
    uint8_t *ref = decode_ref(bytes, len, &rw, &rh);
    CU_ASSERT_FATAL(ref != NULL);
    int h, w;
    data_dataset_shape(&ds, i, &h, &w);
    CU_ASSERT(rw == w && rh == h);
    CU_ASSERT_FATAL(data_dataset_read(&ds, i, got, err, sizeof err) == 0);
    CU_ASSERT(memcmp(got, ref, (size_t)w * h * 3) == 0); /* libjpeg's own decode, exactly */
    if (i == 0) {
      CU_ASSERT(len == dj[0] && memcmp(bytes, jpeg, len) == 0); /* the bytes as stored */
      for (int k = 0; k < W * H * 3; k++) {
        int dd = abs((int)got[k] - (int)pil[k]);
        max_pil = dd > max_pil ? dd : max_pil;
      }
    }
    free(ref), free(got), free(bytes);
  }
  data_dataset_close(&ds);
  printf("(max |ours - PIL| = %d) ", max_pil);
  CU_ASSERT(max_pil <= 1);

  /* The loader (eval, no resize, centre crop of the smaller image's size):
   * the decoded pixels, x / 255 with mean 0 and std 1. */
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = path;
  o.ranks = 1, o.global_batch = 2, o.crop = H, o.reader_threads = 2;
  o.std[0] = o.std[1] = o.std[2] = 1;
  float *imgs;
  int64_t *idx;
  size_t ni;
  size_t n = run_loader(&o, 1, 0, &imgs, &idx, &ni);
  CU_ASSERT_FATAL(n == (size_t)2 * 3 * H * H);
  int rw, rh;
  uint8_t *ref = decode_ref(jpeg, (size_t)dj[0], &rw, &rh);
  int x0 = (int)nearbyint((W - H) / 2.0), bad = 0;
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < H; x++) {
        float v = imgs[((size_t)c * H + y) * H + x] * 255.0f;
        bad += fabsf(v - ref[((size_t)y * W + x0 + x) * 3 + c]) > 1e-3f;
      }
  CU_ASSERT(bad == 0);
  free(ref), free(imgs), free(idx), free(jpeg), free(pil), free(px);
}

/* A JPEG file whose encoding attribute says something this build cannot read. */
static void test_unknown_encoding_refused(void) {
  const char *dir = tu_scratch_dir("jpeg_encoding");
  char path[4400], err[2048];
  snprintf(path, sizeof path, "%s/x.h5", dir);
  const char *names[1] = {"x"};
  uint8_t px[16 * 16 * 3], *enc;
  size_t len;
  uint64_t s[3], q[3];
  picture(px, 16, 16, 0);
  data_pixel_sums(px, 16 * 16, 3, s, q);
  CU_ASSERT_FATAL(data_jpeg_encode(px, 16, 16, 3, 90, "x", &enc, &len, err, sizeof err) == 0);
  data_writer *wr;
  CU_ASSERT_FATAL(data_writer_create_jpeg(path, 3, 1, names, &wr, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_writer_append_jpeg(wr, enc, len, 16, 16, s, q, 0, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_writer_finish(wr, err, sizeof err) == 0);
  free(enc);
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  H5Adelete(f, "encoding");
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, H5T_VARIABLE);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, "encoding", str, sp, H5P_DEFAULT, H5P_DEFAULT);
  const char *webp = "webp";
  CU_ASSERT(H5Awrite(a, str, &webp) >= 0);
  H5Aclose(a), H5Sclose(sp), H5Tclose(str), H5Fclose(f);
  data_dataset ds;
  CU_ASSERT(data_dataset_open(path, &ds, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "x.h5: encoding 'webp' is not supported in version 2");
}

/* ------------------------------------------------------------------------ */
/* Conversion to JPEG                                                        */

static void test_convert_jpeg(void) {
  const char *root = make_tree("jpeg_convert", 4);
  char out[4400], err[2048];
  snprintf(out, sizeof out, "%s.h5", root);
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.size = 32;
  o.encode = DATA_ENCODING_JPEG;
  o.quality = 92;
  data_convert_stats st;
  o.stats = &st;
  int rc = data_convert_imagefolder(root, out, &o, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n%s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  CU_ASSERT(st.written == 12);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.encoding == DATA_ENCODING_JPEG && ds.n == 12 && ds.num_classes == 3);
  CU_ASSERT(strcmp(ds.class_names[1], "dog") == 0 && ds.labels[5] == 1);
  CU_ASSERT(ds.pixel_count > 0);
  for (int64_t i = 0; i < ds.n; i++) { /* shorter side 32, aspect kept as Resize(32) */
    int h, w;
    data_dataset_shape(&ds, i, &h, &w);
    CU_ASSERT((h == 32 && w >= 32) || (w == 32 && h >= 32));
  }
  /* the file's version attribute is 2, its encoding jpeg */
  char cmd[4600], txt[8192];
  snprintf(cmd, sizeof cmd, "h5dump -a version -a encoding '%s'", out);
  if (tu_run_cmd(cmd, txt, sizeof txt) == 0) {
    TU_ASSERT_CONTAINS(txt, "(0): 2");
    TU_ASSERT_CONTAINS(txt, "\"jpeg\"");
  }
  data_dataset_close(&ds);
  /* the same bytes whatever the thread count, and run to run */
  char out2[4400];
  snprintf(out2, sizeof out2, "%s.again.h5", root);
  o.threads = 3;
  CU_ASSERT_FATAL(data_convert_imagefolder(root, out2, &o, err, sizeof err) == 0);
  CU_ASSERT(same_bytes(out, out2));
}

/* ------------------------------------------------------------------------ */
/* Shards                                                                    */

/* Loader options over `path` for the equality runs. */
static data_loader_opts shard_opts(const char *path, int crop_mode, int threads) {
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = path;
  o.ranks = 1, o.global_batch = 4, o.train = 1, o.shuffle = 1, o.seed = 11, o.crop = 24;
  o.mirror = 1, o.lighting = 0.1f, o.crop_mode = crop_mode, o.reader_threads = threads;
  return o;
}

static void loaders_equal(const char *one, const char *many, int crop_mode) {
  float *a, *b;
  int64_t *ia, *ib;
  size_t na, nb, nia, nib;
  data_loader_opts o1 = shard_opts(one, crop_mode, 1), o2 = shard_opts(many, crop_mode, 3);
  size_t n1 = run_loader(&o1, 2, 0, &a, &ia, &na);
  size_t n2 = run_loader(&o2, 2, 0, &b, &ib, &nb);
  CU_ASSERT(n1 == n2 && n1 > 0 && memcmp(a, b, n1 * sizeof(float)) == 0);
  CU_ASSERT(na == nb && memcmp(ia, ib, na * sizeof(int64_t)) == 0);
  free(b), free(ib);
  /* resume at step 1 of epoch 0: the tail of the same stream */
  size_t n3 = run_loader(&o2, 1, 1, &b, &ib, &nib);
  size_t per_step = (size_t)4 * 3 * 24 * 24;
  CU_ASSERT(n3 + per_step <= n1 && memcmp(a + per_step, b, n3 * sizeof(float)) == 0);
  (void)nia;
  free(a), free(b), free(ia), free(ib);
}

static void test_shards_read_as_one(void) {
  const char *root = make_tree("jpeg_shards", 5);
  char dir[4096], one[4400], sh[4400], spec[4400], err[2048];
  snprintf(dir, sizeof dir, "%s", root);
  for (int enc = 0; enc < 2; enc++) {
    snprintf(one, sizeof one, "%s.%d.one.h5", dir, enc);
    snprintf(sh, sizeof sh, "%s.%d.sh.h5", dir, enc);
    data_convert_opts o;
    memset(&o, 0, sizeof o);
    o.size = 32;
    o.encode = enc;
    CU_ASSERT_FATAL(data_convert_imagefolder(dir, one, &o, err, sizeof err) == 0);
    o.shards = 4;
    CU_ASSERT_FATAL(data_convert_imagefolder(dir, sh, &o, err, sizeof err) == 0);
    char p[4400];
    for (int s = 0; s < 4; s++) {
      data_shard_path(sh, s, 4, p, sizeof p);
      CU_ASSERT(file_exists(p));
    }
    CU_ASSERT(strstr(p, ".sh-00003-of-00004.h5") != NULL);
    snprintf(spec, sizeof spec, "%s.%d.sh-*-of-00004.h5", dir, enc);
    data_dataset a, b;
    CU_ASSERT_FATAL(data_dataset_open(one, &a, err, sizeof err) == 0);
    int rc = data_dataset_open(spec, &b, err, sizeof err);
    if (rc != 0) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_FATAL(rc == 0);
    CU_ASSERT(b.num_shards == 4 && a.n == b.n && a.num_classes == b.num_classes);
    CU_ASSERT(memcmp(a.labels, b.labels, (size_t)a.n * 4) == 0);
    CU_ASSERT(memcmp(a.mean, b.mean, sizeof a.mean) == 0 &&
              memcmp(a.std, b.std, sizeof a.std) == 0);
    int64_t local;
    const char *f = data_dataset_locate(&b, b.n - 1, &local);
    CU_ASSERT(strstr(f, "-00003-of-00004.h5") != NULL && local == b.n - 1 - b.shard_first[3]);
    data_dataset_close(&a);
    data_dataset_close(&b);
    loaders_equal(one, spec, enc ? DATA_CROP_RANDOM_RESIZED : DATA_CROP_FIXED);
    /* a list, one path per line, reads as the glob does */
    char list[20000] = "";
    for (int s = 0; s < 4; s++) {
      data_shard_path(sh, s, 4, p, sizeof p);
      strcat(list, p);
      strcat(list, "\n");
    }
    loaders_equal(one, list, DATA_CROP_RANDOM_RESIZED);
  }
}

static void test_shard_mismatch(void) {
  const char *dir = tu_scratch_dir("jpeg_mismatch");
  char a[4400], b[4400], c[4400], list[9000], err[2048];
  snprintf(a, sizeof a, "%s/a.h5", dir);
  snprintf(b, sizeof b, "%s/b.h5", dir);
  snprintf(c, sizeof c, "%s/c.h5", dir);
  CU_ASSERT_FATAL(data_write_synthetic(a, 8, 16, 3, 4, 1, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_write_synthetic(b, 8, 16, 3, 5, 1, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_write_synthetic(c, 8, 16, 1, 4, 1, err, sizeof err) == 0);
  data_dataset ds;
  snprintf(list, sizeof list, "%s\n%s", a, b);
  CU_ASSERT(data_dataset_open(list, &ds, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "b.h5: 5 classes, but ");
  TU_ASSERT_CONTAINS(err, "a.h5 has 4 (shards must agree)");
  snprintf(list, sizeof list, "%s\n%s", a, c);
  CU_ASSERT(data_dataset_open(list, &ds, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "c.h5: 1 channels, but ");
  snprintf(list, sizeof list, "%s/nothing-*.h5", dir);
  CU_ASSERT(data_dataset_open(list, &ds, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "nothing-*.h5: no file matches this pattern");
}

/* A JPEG file whose sample 1 is not a JPEG: the loader names shard and sample. */
static void test_corrupt_jpeg_in_shard(void) {
  const char *dir = tu_scratch_dir("jpeg_corrupt");
  char s0[4400], s1[4400], spec[4400], err[2048];
  snprintf(s0, sizeof s0, "%s/ds-00000-of-00002.h5", dir);
  snprintf(s1, sizeof s1, "%s/ds-00001-of-00002.h5", dir);
  const char *names[1] = {"x"};
  uint8_t px[32 * 32 * 3], *enc;
  size_t len;
  uint64_t s[3], q[3];
  picture(px, 32, 32, 1);
  data_pixel_sums(px, 32 * 32, 3, s, q);
  CU_ASSERT_FATAL(data_jpeg_encode(px, 32, 32, 3, 90, "x", &enc, &len, err, sizeof err) == 0);
  for (int f = 0; f < 2; f++) {
    data_writer *wr;
    CU_ASSERT_FATAL(data_writer_create_jpeg(f ? s1 : s0, 3, 1, names, &wr, err, sizeof err) == 0);
    for (int i = 0; i < 3; i++) {
      uint8_t *bytes = malloc(len);
      memcpy(bytes, enc, len);
      if (f == 1 && i == 1) memset(bytes + len / 3, 0x55, len / 3); /* scrambled scan data */
      if (f == 1 && i == 1) bytes[len - 1] = 0;                     /* and no end marker */
      CU_ASSERT_FATAL(data_writer_append_jpeg(wr, bytes, len, 32, 32, s, q, 0, err, sizeof err) ==
                      0);
      free(bytes);
    }
    CU_ASSERT_FATAL(data_writer_finish(wr, err, sizeof err) == 0);
  }
  free(enc);
  snprintf(spec, sizeof spec, "%s/ds-*-of-00002.h5", dir);
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = spec;
  o.ranks = 1, o.global_batch = 6, o.crop = 32, o.reader_threads = 2;
  data_loader *ld;
  CU_ASSERT_FATAL(data_loader_open(&o, &ld, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_loader_start_epoch(ld, 0, 0, err, sizeof err) == 0);
  data_batch b;
  CU_ASSERT(data_loader_next(ld, &b, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "ds-00001-of-00002.h5: sample 1 of /jpeg: ");
  TU_ASSERT_CONTAINS(err, "(sample 4 of the 2 shards read as one)");
  data_loader_close(ld);
}

/* ------------------------------------------------------------------------ */
/* --labels: a flat folder                                                   */

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

static void test_labels_file(void) {
  const char *base = tu_scratch_dir("jpeg_labels");
  char dir[4400], path[4600], lab[4600], out[4600], tmp[4700], err[2048];
  snprintf(dir, sizeof dir, "%s/val", base);
  mkdir(dir, 0777);
  uint8_t px[40 * 30 * 3];
  for (int k = 0; k < 4; k++) {
    picture(px, 40, 30, k);
    snprintf(path, sizeof path, "%s/ILSVRC2012_val_%08d.png", dir, k + 1);
    CU_ASSERT_FATAL(data_png_write(path, 40, 30, 3, px, err, sizeof err) == 0);
  }
  snprintf(out, sizeof out, "%s/val.h5", base);
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.size = 24;
  o.labels = lab;
  /* ImageNet's LOC_val_solution.csv: ids without extension, class first */
  snprintf(lab, sizeof lab, "%s/LOC_val_solution.csv", base);
  write_text(lab,
             "ImageId,PredictionString\n"
             "ILSVRC2012_val_00000003,n02 1 2 30 20 n02 3 4 10 10\n"
             "ILSVRC2012_val_00000001,n09 0 0 10 10\n"
             "ILSVRC2012_val_00000004,n01 5 5 9 9\n"
             "ILSVRC2012_val_00000002,n09 0 0 10 10\n");
  int rc = data_convert_imagefolder(dir, out, &o, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n%s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.n == 4 && ds.num_classes == 3);
  CU_ASSERT(strcmp(ds.class_names[0], "n01") == 0 && strcmp(ds.class_names[2], "n09") == 0);
  CU_ASSERT(ds.labels[0] == 2 && ds.labels[1] == 2 && ds.labels[2] == 1 && ds.labels[3] == 0);
  data_dataset_close(&ds);
  /* "filename label" with numbers */
  snprintf(lab, sizeof lab, "%s/labels.txt", base);
  write_text(lab,
             "ILSVRC2012_val_00000001.png 7\nILSVRC2012_val_00000002.png 0\n"
             "ILSVRC2012_val_00000003.png 3\nILSVRC2012_val_00000004 3\n");
  unlink(out);
  CU_ASSERT_FATAL(data_convert_imagefolder(dir, out, &o, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_dataset_open(out, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.num_classes == 8 && ds.labels[0] == 7 && ds.labels[3] == 3);
  data_dataset_close(&ds);
  /* a missing file: the line and name, and nothing written */
  unlink(out);
  write_text(lab, "ILSVRC2012_val_00000001.png 1\nILSVRC2012_val_00000009.JPEG 2\n");
  CU_ASSERT(data_convert_imagefolder(dir, out, &o, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "labels.txt:2: ILSVRC2012_val_00000009.JPEG: no such image");
  CU_ASSERT(!file_exists(out) && !file_exists(tmp));
  /* an image without a line */
  write_text(lab,
             "ILSVRC2012_val_00000001.png 1\nILSVRC2012_val_00000002.png 1\n"
             "ILSVRC2012_val_00000003.png 1\n");
  CU_ASSERT(data_convert_imagefolder(dir, out, &o, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err, "ILSVRC2012_val_00000004.png has no line in ");
  CU_ASSERT(!file_exists(out) && !file_exists(tmp));
  /* the command line says the same */
  char cmd[16000], txt[8192];
  snprintf(cmd, sizeof cmd, "'%s' imagefolder '%s' -o '%s' --labels '%s' --size 24 2>&1",
           tu_bin("alexnet-convert"), dir, out, lab);
  CU_ASSERT(tu_run_cmd(cmd, txt, sizeof txt) == 1);
  TU_ASSERT_CONTAINS(txt, "has no line in ");
  CU_ASSERT(!file_exists(out) && !file_exists(tmp));
}

/* ------------------------------------------------------------------------ */
/* Parallel conversion: mpiexec -n 2 writes the serial bytes                 */

static void test_parallel_conversion(void) {
  const char *root = make_tree("jpeg_parallel", 3);
  char dir[4096], cmd[16000], txt[8192], a[4400], b[4400];
  snprintf(dir, sizeof dir, "%s", root);
  if (tu_run_cmd("command -v mpiexec", txt, sizeof txt) != 0) {
    printf("(no mpiexec: parallel part not run) ");
    return;
  }
  for (int enc = 0; enc < 2; enc++) {
    const char *e = enc ? "jpeg" : "raw";
    snprintf(cmd, sizeof cmd,
             "'%s' imagefolder '%s' -o '%s.serial.h5' --size 24 --shards 3 "
             "--encode %s 2>&1",
             tu_bin("alexnet-convert"), dir, dir, e);
    CU_ASSERT(tu_run_cmd(cmd, txt, sizeof txt) == 0);
    snprintf(cmd, sizeof cmd,
             "mpiexec -n 2 --oversubscribe '%s' imagefolder '%s' -o "
             "'%s.par.h5' --size 24 --shards 3 --encode %s 2>&1",
             tu_bin("alexnet-convert"), dir, dir, e);
    int rc = tu_run_cmd(cmd, txt, sizeof txt);
    if (rc != 0) fprintf(stderr, "\n%s\n", txt);
    CU_ASSERT(rc == 0);
    TU_ASSERT_CONTAINS(txt, "wrote 9 images to 3 shards");
    TU_ASSERT_CONTAINS(txt, "(2 processes)");
    for (int s = 0; s < 3; s++) {
      char sa[4400], sb[4400];
      snprintf(a, sizeof a, "%s.serial.h5", dir);
      snprintf(b, sizeof b, "%s.par.h5", dir);
      data_shard_path(a, s, 3, sa, sizeof sa);
      data_shard_path(b, s, 3, sb, sizeof sb);
      CU_ASSERT(file_exists(sb) && same_bytes(sa, sb));
    }
  }
  /* a failure on one rank leaves no shard of any rank */
  char bad[4400];
  snprintf(bad, sizeof bad, "%s/cat/zz.png", dir);
  write_text(bad, "not a png");
  snprintf(cmd, sizeof cmd, "mkdir -p '%s/eel/sub' && cp '%s' '%s/eel/sub/zz.png'", dir, bad, dir);
  CU_ASSERT(tu_run_cmd(cmd, txt, sizeof txt) == 0);
  /* the last shard holds only unreadable images */
  snprintf(cmd, sizeof cmd,
           "mpiexec -n 2 --oversubscribe '%s' imagefolder '%s' -o '%s.fail.h5' --size 24 "
           "--shards 11 2>&1",
           tu_bin("alexnet-convert"), dir, dir);
  tu_run_cmd(cmd, txt, sizeof txt);
  /* 11 shards of 11 images: shard 10 (rank 0's) is eel/sub/zz.png alone */
  TU_ASSERT_CONTAINS(txt, "-00010-of-00011.h5: none of the 1 images could be read");
  for (int s = 0; s < 11; s++) {
    char p[4400], q[4500];
    snprintf(a, sizeof a, "%s.fail.h5", dir);
    data_shard_path(a, s, 11, p, sizeof p);
    snprintf(q, sizeof q, "%s.tmp", p);
    CU_ASSERT(!file_exists(p) && !file_exists(q));
  }
}

int main(void) {
  static const tu_test tests[] = {
      {"random_resized vs torchvision", test_random_resized_crop},
      {"decode vs libjpeg and PIL", test_decode_matches_libjpeg_and_pil},
      {"unknown encoding refused", test_unknown_encoding_refused},
      {"convert to jpeg", test_convert_jpeg},
      {"shards read as one", test_shards_read_as_one},
      {"shard mismatch", test_shard_mismatch},
      {"corrupt jpeg in a shard", test_corrupt_jpeg_in_shard},
      {"labels file", test_labels_file},
      {"parallel conversion", test_parallel_conversion},
      {NULL, NULL}};
  tu_add_suite("data_jpeg", tests);
  return tu_run_all();
}
