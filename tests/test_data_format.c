/*
 * The alexnet-hdf5 dataset file: the writer's round trip (pixels, labels,
 * class names, mean/std, atomic tmp + rename, abort), files written the way
 * an h5py user would (int64 labels, fixed-length strings) being accepted,
 * and every refusal of data_dataset_open and data_dataset_read, each with its
 * message: wrong format or version, missing datasets and attributes,
 * mismatched lengths, labels out of range, zero samples, wrong types and
 * shapes, truncated and non-HDF5 files, a file truncated after opening.
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "testutil.h"

/* Pixel (y, x, c) of image i in the test sets. */
static uint8_t pix(int64_t i, int y, int x, int c) {
  return (uint8_t)((i * 37 + y * 11 + x * 5 + c * 70) & 0xFF);
}

static void fill_image(int64_t i, int h, int w, int c, uint8_t *dst) {
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++) dst[((size_t)y * w + x) * c + k] = pix(i, y, x, k);
}

/* Writes n images of h x w x c with label i % classes through data_writer. */
static void write_set(const char *path, int64_t n, int h, int w, int c, int classes, int compress) {
  char err[1024];
  const char *names[8] = {"zero", "one", "two", "three", "four", "five", "six", "seven"};
  data_writer *wr;
  CU_ASSERT_FATAL(
      data_writer_create(path, h, w, c, classes, names, compress, &wr, err, sizeof err) == 0);
  uint8_t *img = malloc((size_t)h * w * c);
  for (int64_t i = 0; i < n; i++) {
    fill_image(i, h, w, c, img);
    CU_ASSERT_FATAL(data_writer_append(wr, img, (int32_t)(i % classes), err, sizeof err) == 0);
  }
  free(img);
  CU_ASSERT_FATAL(data_writer_finish(wr, err, sizeof err) == 0);
}

static void check_round_trip(int64_t n, int h, int w, int c, int classes, int compress) {
  const char *dir = tu_scratch_dir("format_round_trip");
  char path[4200], err[1024];
  snprintf(path, sizeof path, "%s/set.h5", dir);
  write_set(path, n, h, w, c, classes, compress);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  CU_ASSERT(ds.n == n && ds.h == h && ds.w == w && ds.c == c && ds.num_classes == classes);
  CU_ASSERT_STRING_EQUAL(ds.class_names[0], "zero");
  CU_ASSERT_STRING_EQUAL(ds.class_names[classes - 1], classes == 3 ? "two" : "four");
  /* mean and std of all pixels scaled to [0, 1], per channel */
  uint8_t *img = malloc((size_t)h * w * c), *want = malloc((size_t)h * w * c);
  for (int k = 0; k < c; k++) {
    double s = 0, q = 0, cnt = (double)n * h * w;
    for (int64_t i = 0; i < n; i++)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
          double v = pix(i, y, x, k) / 255.0;
          s += v, q += v * v;
        }
    double m = s / cnt, sd = sqrt(q / cnt - m * m);
    CU_ASSERT(fabs(ds.mean[k] - m) < 1e-5);
    CU_ASSERT(fabs(ds.std[k] - sd) < 1e-5);
  }
  for (int64_t i = 0; i < n; i++) {
    CU_ASSERT(ds.labels[i] == i % classes);
    fill_image(i, h, w, c, want);
    CU_ASSERT_FATAL(data_dataset_read(&ds, i, img, err, sizeof err) == 0);
    CU_ASSERT(memcmp(img, want, (size_t)h * w * c) == 0);
  }
  CU_ASSERT(data_dataset_read(&ds, n, img, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "sample index");
  TU_ASSERT_CONTAINS(err, "out of range");
  free(img);
  free(want);
  data_dataset_close(&ds);
  data_dataset_close(&ds); /* idempotent */
}

/* Large images (one per chunk), small ones (several per chunk), gray, deflate. */
static void test_round_trip(void) {
  check_round_trip(7, 96, 80, 3, 3, 0);
  check_round_trip(23, 5, 4, 3, 5, 0);
  check_round_trip(23, 6, 7, 1, 5, 6);
}

/* Until finish the file exists only as "<path>.tmp"; abort removes it. */
static void test_writer_atomic(void) {
  const char *dir = tu_scratch_dir("format_atomic");
  char path[4200], tmp[4300], err[1024];
  snprintf(path, sizeof path, "%s/out.h5", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  const char *names[2] = {"a", "b"};
  uint8_t img[4 * 4 * 3] = {0};
  data_writer *wr;
  CU_ASSERT_FATAL(data_writer_create(path, 4, 4, 3, 2, names, 0, &wr, err, sizeof err) == 0);
  CU_ASSERT(data_writer_append(wr, img, 1, err, sizeof err) == 0);
  CU_ASSERT(access(path, F_OK) != 0);
  CU_ASSERT(access(tmp, F_OK) == 0);
  data_writer_abort(wr);
  CU_ASSERT(access(tmp, F_OK) != 0);
  CU_ASSERT(access(path, F_OK) != 0);

  CU_ASSERT_FATAL(data_writer_create(path, 4, 4, 3, 2, names, 0, &wr, err, sizeof err) == 0);
  CU_ASSERT(data_writer_append(wr, img, 2, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "label 2 of image 0 is out of range [0, 2)");
  CU_ASSERT(data_writer_finish(wr, err, sizeof err) == -1); /* nothing appended */
  TU_ASSERT_CONTAINS(err, "no images to write (zero samples)");
  CU_ASSERT(access(tmp, F_OK) != 0 && access(path, F_OK) != 0);

  CU_ASSERT(data_writer_create(path, 4, 4, 2, 2, names, 0, &wr, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "cannot store images of 4x4x2");
  CU_ASSERT(data_writer_create(path, 4, 4, 3, 2, names, 12, &wr, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "compression level 12 is not in 0..9");
  CU_ASSERT(data_writer_create(path, 4, 4, 3, 0, names, 0, &wr, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "num_classes = 0");
  snprintf(tmp, sizeof tmp, "%s/no/such/dir/out.h5", dir);
  CU_ASSERT(data_writer_create(tmp, 4, 4, 3, 2, names, 0, &wr, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "out.h5.tmp: cannot create");
}

/* ------------------------------------------------------------------------ */
/* Files made directly with HDF5, each with one thing wrong                  */

typedef struct {
  const char *format; /* NULL = attribute absent */
  int fixed_strings;  /* format and classes as fixed-length strings (h5py-like) */
  long long version;  /* < 0 = absent */
  long long num_classes;
  int64_t n_images, n_labels;
  int h, w, c, rank; /* /images shape; rank 4 normally */
  int images_float;  /* /images as float32 */
  int labels_int64;
  int64_t bad_label_at; /* >= 0: that label = 99 */
  int n_classes_ds;     /* entries of /classes */
  int no_images, no_labels, no_classes;
  int odd_types; /* 1: float labels, 2: integer classes, 3: float version, 4: string mean */
  int n_mean;    /* values in mean (std has c) */
  float std1;    /* std[1] */
} spec;

static spec good_spec(void) {
  spec s = {.format = "alexnet-hdf5",
            .version = 1,
            .num_classes = 3,
            .n_images = 6,
            .n_labels = 6,
            .h = 8,
            .w = 9,
            .c = 3,
            .rank = 4,
            .bad_label_at = -1,
            .n_classes_ds = 3,
            .n_mean = 3,
            .std1 = 0.25f};
  return s;
}

static void put_attr(hid_t f, const char *name, hid_t type, int n, const void *v) {
  hsize_t d = (hsize_t)n;
  hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
  hid_t a = H5Acreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, v);
  H5Aclose(a);
  H5Sclose(sp);
}

static void make_file(const char *path, const spec *s) {
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  hid_t str = H5Tcopy(H5T_C_S1);
  if (s->format) {
    if (s->fixed_strings) {
      H5Tset_size(str, strlen(s->format));
      put_attr(f, "format", str, 0, s->format);
    } else {
      H5Tset_size(str, H5T_VARIABLE);
      put_attr(f, "format", str, 0, &s->format);
    }
  }
  double fversion = (double)s->version;
  if (s->version >= 0 && s->odd_types == 3) put_attr(f, "version", H5T_NATIVE_DOUBLE, 0, &fversion);
  if (s->version >= 0 && s->odd_types != 3)
    put_attr(f, "version", H5T_NATIVE_LLONG, 0, &s->version);
  put_attr(f, "num_classes", H5T_NATIVE_LLONG, 0, &s->num_classes);
  float mean[3] = {0.5f, 0.4f, 0.3f}, sd[3] = {0.2f, s->std1, 0.3f};
  if (s->odd_types == 4) {
    hid_t fixed = H5Tcopy(H5T_C_S1);
    H5Tset_size(fixed, 4);
    put_attr(f, "mean", fixed, 0, "0.5");
    H5Tclose(fixed);
  } else {
    put_attr(f, "mean", H5T_NATIVE_FLOAT, s->n_mean, mean);
  }
  put_attr(f, "std", H5T_NATIVE_FLOAT, s->c, sd);
  if (!s->no_images) {
    hsize_t dims[4] = {(hsize_t)s->n_images, (hsize_t)s->h, (hsize_t)s->w, (hsize_t)s->c};
    hsize_t *d = s->rank == 4 ? dims : dims + (4 - s->rank);
    hid_t sp = H5Screate_simple(s->rank, d, NULL);
    hid_t t = s->images_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8;
    hid_t ds = H5Dcreate2(f, "images", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    size_t cnt = (size_t)H5Sget_simple_extent_npoints(sp);
    if (cnt) {
      float *buf = calloc(cnt, sizeof(float)); /* zeros of either type */
      H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
      free(buf);
    }
    H5Dclose(ds);
    H5Sclose(sp);
  }
  if (!s->no_labels) {
    hsize_t n = (hsize_t)s->n_labels;
    long long *lab = calloc(n + 1, sizeof *lab);
    for (hsize_t i = 0; i < n; i++) lab[i] = (long long)(i % 3);
    if (s->bad_label_at >= 0) lab[s->bad_label_at] = 99;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t lt = s->odd_types == 1 ? H5T_IEEE_F32LE : s->labels_int64 ? H5T_STD_I64LE : H5T_STD_I32LE;
    hid_t ds = H5Dcreate2(f, "labels", lt, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, lab);
    H5Dclose(ds);
    H5Sclose(sp);
    free(lab);
  }
  if (!s->no_classes && s->odd_types == 2) {
    hsize_t n = (hsize_t)s->n_classes_ds;
    int ids[8] = {0};
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t ds = H5Dcreate2(f, "classes", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    H5Dclose(ds);
    H5Sclose(sp);
  } else if (!s->no_classes) {
    const char *names[8] = {"cat", "dog", "bird", "fish", "e", "f", "g", "h"};
    hsize_t n = (hsize_t)s->n_classes_ds;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t t = H5Tcopy(H5T_C_S1);
    if (s->fixed_strings) {
      char buf[8][8];
      memset(buf, 0, sizeof buf);
      for (int i = 0; i < 8; i++) snprintf(buf[i], 8, "%s", names[i]);
      H5Tset_size(t, 8);
      hid_t ds = H5Dcreate2(f, "classes", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
      H5Dclose(ds);
    } else {
      H5Tset_size(t, H5T_VARIABLE);
      hid_t ds = H5Dcreate2(f, "classes", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, names);
      H5Dclose(ds);
    }
    H5Tclose(t);
    H5Sclose(sp);
  }
  H5Tclose(str);
  H5Fclose(f);
}

/* Makes the file of spec s and checks that opening it fails with `want`. */
static void expect_refused(const spec *s, const char *want) {
  const char *dir = tu_scratch_dir("format_refused");
  char path[4200], err[2048] = "";
  snprintf(path, sizeof path, "%s/bad.h5", dir);
  make_file(path, s);
  data_dataset ds;
  int rc = data_dataset_open(path, &ds, err, sizeof err);
  CU_ASSERT(rc == -1);
  TU_ASSERT_CONTAINS(err, path); /* every message names the file */
  TU_ASSERT_CONTAINS(err, want);
  if (rc == 0) data_dataset_close(&ds);
}

/* A file as an h5py user might write it: int64 labels, fixed-length strings. */
static void test_h5py_style_accepted(void) {
  const char *dir = tu_scratch_dir("format_h5py");
  char path[4200], err[2048];
  snprintf(path, sizeof path, "%s/ok.h5", dir);
  spec s = good_spec();
  s.fixed_strings = 1;
  s.labels_int64 = 1;
  make_file(path, &s);
  data_dataset ds;
  int rc = data_dataset_open(path, &ds, err, sizeof err);
  if (rc != 0) fprintf(stderr, "\n%s\n", err);
  CU_ASSERT_FATAL(rc == 0);
  CU_ASSERT(ds.n == 6 && ds.h == 8 && ds.w == 9 && ds.c == 3 && ds.num_classes == 3);
  CU_ASSERT_STRING_EQUAL(ds.class_names[2], "bird");
  CU_ASSERT(ds.labels[4] == 1);
  CU_ASSERT(fabsf(ds.std[1] - 0.25f) < 1e-7f);
  data_dataset_close(&ds);
}

static void test_refusals(void) {
  spec s;
  s = good_spec(), s.format = "imagenet-hdf5";
  expect_refused(&s, "root attribute format = 'imagenet-hdf5', expected 'alexnet-hdf5'");
  s = good_spec(), s.format = NULL;
  expect_refused(&s, "missing root attribute 'format' (not an alexnet-hdf5 file)");
  s = good_spec(), s.version = 3;
  expect_refused(&s, "format version 3 is not supported (this build reads 1 to 2)");
  s = good_spec(), s.version = 2; /* version 2 says its encoding */
  expect_refused(&s, "missing root attribute 'encoding' (version 2)");
  s = good_spec(), s.version = -1;
  expect_refused(&s, "missing root attribute 'version'");
  s = good_spec(), s.num_classes = 0;
  expect_refused(&s, "root attribute num_classes must be a positive integer");
  s = good_spec(), s.no_images = 1;
  expect_refused(&s, "missing dataset /images");
  s = good_spec(), s.no_labels = 1;
  expect_refused(&s, "missing dataset /labels");
  s = good_spec(), s.no_classes = 1;
  expect_refused(&s, "missing dataset /classes");
  s = good_spec(), s.n_labels = 4;
  expect_refused(&s, "/labels has 4 entries but /images has 6 samples (first unmatched index 4)");
  s = good_spec(), s.n_labels = 9;
  expect_refused(&s, "/labels has 9 entries but /images has 6 samples (first unmatched index 6)");
  s = good_spec(), s.bad_label_at = 4;
  expect_refused(&s, "/labels[4] = 99 is out of range [0, 3)");
  s = good_spec(), s.n_images = s.n_labels = 0;
  expect_refused(&s, "/images holds zero samples");
  s = good_spec(), s.n_classes_ds = 2;
  expect_refused(&s, "/classes has 2 names but num_classes = 3 (first unmatched index 2)");
  s = good_spec(), s.images_float = 1;
  expect_refused(&s, "/images must be uint8");
  s = good_spec(), s.rank = 3;
  expect_refused(&s, "/images has rank 3, expected 4 (N, H, W, C)");
  s = good_spec(), s.c = 2, s.n_mean = 2;
  expect_refused(&s, "/images has 2 channels, expected 1 or 3");
  s = good_spec(), s.n_mean = 1;
  expect_refused(&s, "root attribute 'mean' has 1 values, expected 3 (one per channel)");
  s = good_spec(), s.h = 0;
  expect_refused(&s, "/images has an image size of 0x9");
  s = good_spec(), s.odd_types = 1;
  expect_refused(&s, "/labels must be a 1-D integer dataset (int32 [N])");
  s = good_spec(), s.odd_types = 2;
  expect_refused(&s, "/classes must be a 1-D dataset of strings");
  s = good_spec(), s.odd_types = 3;
  expect_refused(&s, "root attribute 'version' is not an integer");
  s = good_spec(), s.odd_types = 4;
  expect_refused(&s, "root attribute 'mean' is not numeric");
  s = good_spec(), s.std1 = 0;
  expect_refused(&s, "root attribute std[1] = 0 is invalid (must be > 0)");
}

static void copy_prefix(const char *from, const char *to, long bytes) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  CU_ASSERT_FATAL(a && b);
  char buf[4096];
  long left = bytes;
  while (left > 0) {
    size_t got = fread(buf, 1, left < 4096 ? (size_t)left : 4096, a);
    if (got == 0) break;
    fwrite(buf, 1, got, b);
    left -= (long)got;
  }
  fclose(a);
  fclose(b);
}

/* Truncated anywhere, a non-HDF5 file, a missing file: refused, never a crash. */
static void test_truncated_and_foreign(void) {
  const char *dir = tu_scratch_dir("format_truncated");
  char good[4200], bad[4200], err[2048];
  snprintf(good, sizeof good, "%s/good.h5", dir);
  snprintf(bad, sizeof bad, "%s/bad.h5", dir);
  write_set(good, 20, 16, 16, 3, 3, 0);
  struct stat sb;
  CU_ASSERT_FATAL(stat(good, &sb) == 0);
  data_dataset ds;
  for (int k = 0; k < 20; k++) {
    long cut = (long)(sb.st_size * k / 20);
    copy_prefix(good, bad, cut);
    err[0] = '\0';
    int rc = data_dataset_open(bad, &ds, err, sizeof err);
    if (rc == 0) {
      /* metadata intact (HDF5 writes it last, at the end): the images are cut */
      uint8_t img[16 * 16 * 3];
      int bad_read = 0;
      for (int64_t i = 0; i < ds.n; i++)
        bad_read |= data_dataset_read(&ds, i, img, err, sizeof err) != 0;
      data_dataset_close(&ds);
      CU_ASSERT(bad_read);
    } else {
      TU_ASSERT_CONTAINS(err, bad);
    }
  }
  copy_prefix(good, bad, 4);
  CU_ASSERT(data_dataset_open(bad, &ds, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "not an HDF5 file (or its header is corrupt)");
  copy_prefix(good, bad, sb.st_size / 2);
  CU_ASSERT(data_dataset_open(bad, &ds, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "cannot open as HDF5 (truncated or corrupt file?)");
  FILE *f = fopen(bad, "w");
  fputs("label,path\n1,a.jpg\n", f);
  fclose(f);
  CU_ASSERT(data_dataset_open(bad, &ds, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "not an HDF5 file (or its header is corrupt)");
  snprintf(bad, sizeof bad, "%s/missing.h5", dir);
  CU_ASSERT(data_dataset_open(bad, &ds, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "missing.h5: cannot open: No such file or directory");
  CU_ASSERT(data_dataset_open(dir, &ds, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, "not a regular file");
}

/* Truncated after it was opened (a file system filling or a copy overwriting it). */
static void test_truncated_while_open(void) {
  const char *dir = tu_scratch_dir("format_truncated_open");
  char path[4200], err[2048];
  snprintf(path, sizeof path, "%s/set.h5", dir);
  write_set(path, 12, 64, 64, 3, 3, 0);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(path, &ds, err, sizeof err) == 0);
  uint8_t *img = malloc(64 * 64 * 3);
  CU_ASSERT(data_dataset_read(&ds, 11, img, err, sizeof err) == 0);
  CU_ASSERT_FATAL(truncate(path, ds.file_size / 3) == 0);
  CU_ASSERT(data_dataset_read(&ds, 11, img, err, sizeof err) == -1);
  TU_ASSERT_CONTAINS(err, path);
  TU_ASSERT_CONTAINS(err, "the file was truncated");
  TU_ASSERT_CONTAINS(err, "when reading sample 11 of /images");
  free(img);
  data_dataset_close(&ds);
}

/* The format as the docs promise it to h5dump users. */
static void test_layout(void) {
  const char *dir = tu_scratch_dir("format_layout");
  char path[4200], cmd[4400], out[8192];
  snprintf(path, sizeof path, "%s/set.h5", dir);
  write_set(path, 5, 100, 60, 3, 3, 4); /* 18000 bytes: one image per chunk */
  snprintf(cmd, sizeof cmd, "h5dump -p -H '%s'", path);
  if (tu_run_cmd("command -v h5dump", out, sizeof out) != 0)
    TU_SKIP("h5dump is not installed (apt-get install hdf5-tools)");
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  TU_ASSERT_CONTAINS(out,
                     "DATASPACE  SIMPLE { ( 5, 100, 60, 3 ) / ( H5S_UNLIMITED, 100, 60, 3 ) }");
  TU_ASSERT_CONTAINS(out, "CHUNKED ( 1, 100, 60, 3 )");
  TU_ASSERT_CONTAINS(out, "COMPRESSION DEFLATE { LEVEL 4 }");
  TU_ASSERT_CONTAINS(out, "H5T_STD_I32LE");
  TU_ASSERT_CONTAINS(out, "CSET H5T_CSET_UTF8");
  snprintf(cmd, sizeof cmd, "h5dump -a format -a version -a num_classes '%s'", path);
  CU_ASSERT(tu_run_cmd(cmd, out, sizeof out) == 0);
  TU_ASSERT_CONTAINS(out, "\"alexnet-hdf5\"");
}

int main(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  tu_add_suite("data_format",
               (tu_test[]){{"writer round trip", test_round_trip},
                           {"writer tmp, rename, abort", test_writer_atomic},
                           {"h5py-style file accepted", test_h5py_style_accepted},
                           {"refused files", test_refusals},
                           {"truncated and foreign files", test_truncated_and_foreign},
                           {"truncated while open", test_truncated_while_open},
                           {"layout for h5dump", test_layout},
                           {NULL, NULL}});
  return tu_run_all();
}
