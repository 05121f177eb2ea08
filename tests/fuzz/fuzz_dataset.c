/*
 * Fuzz target: the dataset opener's validation (data_dataset_open) and what
 * follows a successful open (data_dataset_read, the loader).
 *
 * Random bytes would almost never get past HDF5's own superblock checks, and
 * HDF5's parser is not ours to fix. So the input DESCRIBES a file instead:
 * each byte choice below picks how one part of an alexnet-hdf5 file is made
 * (present or not, its type, rank, sizes, values), and the file is written
 * with the HDF5 API to a temporary path. That way every input is a
 * well-formed HDF5 file that is wrong (or right) in its own way, and the
 * fuzzer explores our validation: attribute kinds, dataset types and ranks,
 * mismatched lengths, out-of-range labels, odd strings, zero/NaN/Inf std...
 *
 * Invariants: a refused file yields -1 and a message naming the file; an
 * accepted one satisfies every promise of data.h (sizes, labels in range,
 * class names, finite mean, positive std), its samples read back, reads out
 * of range are refused, and a loader over it produces batches.
 * FUZZ_VERBOSE=1 prints what each input makes (accepted, or the refusal).
 * Declared sizes are kept small (at most 2^16 samples of 16x16): the file is
 * written at every run, and what an open allocates is proportional to them.
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "fuzz.h"

/* The input, read a byte at a time (zeros once it runs out). */
typedef struct {
  const uint8_t *p;
  size_t n, at;
} reader;

static unsigned byte(reader *r) {
  return r->at < r->n ? r->p[r->at++] : 0;
}

/* An integer from a small menu of interesting values, or from the input. */
static long long pick_int(reader *r, long long usual) {
  switch (byte(r) % 8) {
    case 0:
      return usual;
    case 1:
      return 0;
    case 2:
      return -1 - (long long)(byte(r) % 4);
    case 3:
      return (long long)(byte(r) % 16);
    case 4:
      return 2147483647LL;
    case 5:
      return (long long)((uint32_t)byte(r) << 24 | (uint32_t)byte(r) << 16 | byte(r) << 8 |
                         byte(r));
    case 6:
      return usual + 1;
    default:
      return usual;
  }
}

static float pick_float(reader *r, float usual) {
  static const float menu[] = {0.5f, 0.0f, -1.0f, 1e30f, 0.25f, 1e-30f};
  unsigned b = byte(r) % 10;
  if (b < 6) return menu[b];
  if (b == 6) return NAN;
  if (b == 7) return INFINITY;
  return usual;
}

/* A string of up to 15 input bytes (any values, NUL ends it early) in out[16]. */
static void pick_string(reader *r, char out[16]) {
  memset(out, 0, 16);
  size_t n = byte(r) % 16, left = r->n - r->at;
  if (n > left) n = left;
  memcpy(out, r->p + r->at, n);
  r->at += n;
}

static void put_attr(hid_t loc, const char *name, hid_t type, hsize_t n, const void *value) {
  hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
  hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
  if (a >= 0) {
    H5Awrite(a, type, value);
    H5Aclose(a);
  }
  H5Sclose(sp);
}

static void put_string_attr(hid_t loc, const char *name, const char *value, int fixed) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (fixed) {
    H5Tset_size(t, strlen(value) + 1);
    put_attr(loc, name, t, 0, value);
  } else {
    H5Tset_size(t, H5T_VARIABLE);
    put_attr(loc, name, t, 0, &value);
  }
  H5Tclose(t);
}

/* A dataset of the given type and shape whose bytes come from the input
 * (or are left unwritten: HDF5 then returns its fill value). */
static void put_dataset(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                        reader *r, int chunked) {
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hsize_t chunk[8];
  size_t points = 1;
  for (int i = 0; i < rank; i++) {
    chunk[i] = dims[i] > 0 ? (i == 0 ? 1 : dims[i]) : 1;
    points *= (size_t)dims[i];
  }
  if (chunked) H5Pset_chunk(dcpl, rank, chunk);
  hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  size_t bytes = points * H5Tget_size(type);
  if (d >= 0 && points > 0 && bytes <= (1u << 20) && byte(r) % 4 != 0) {
    uint8_t *buf = malloc(bytes);
    if (buf) {
      for (size_t i = 0; i < bytes; i++) buf[i] = (uint8_t)byte(r);
      H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
      free(buf);
    }
  }
  if (d >= 0) H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(sp);
}

/* Labels: mostly in [0, classes), sometimes one off either end. */
static void put_labels(hid_t f, reader *r, hid_t type, int rank, hsize_t n, long long classes) {
  hsize_t dims[2] = {n, 2};
  if (n > (1u << 16)) return;
  long long *v = malloc((size_t)(n ? n : 1) * 2 * sizeof *v);
  if (!v) return;
  long long span = classes > 0 && classes < 1000 ? classes + 2 : 5;
  for (hsize_t i = 0; i < n * (rank == 2 ? 2 : 1); i++) v[i] = (long long)(byte(r) % span) - 1;
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(f, "labels", type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (d >= 0) {
    if (n) H5Dwrite(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
  }
  H5Sclose(sp);
  free(v);
}

static void put_classes(hid_t f, reader *r, unsigned how, hsize_t n) {
  if (n > 4096) return;
  char(*names)[16] = calloc((size_t)(n ? n : 1), 16);
  const char **ptrs = calloc((size_t)(n ? n : 1), sizeof *ptrs);
  if (!names || !ptrs) {
    free(names);
    free(ptrs);
    return;
  }
  for (hsize_t i = 0; i < n; i++) {
    pick_string(r, names[i]);
    ptrs[i] = names[i];
  }
  hid_t t = H5Tcopy(H5T_C_S1);
  hsize_t dims[2] = {n, 1};
  int rank = how == 4 ? 2 : 1;
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  if (how == 3) { /* integers instead of names */
    H5Tclose(t);
    t = H5Tcopy(H5T_NATIVE_INT);
  } else if (how == 2) {
    H5Tset_size(t, 16);
  } else {
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, byte(r) % 2 ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
  }
  hid_t d = H5Dcreate2(f, "classes", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (d >= 0) {
    if (n && how == 3) {
      int *ids = calloc((size_t)n, sizeof *ids);
      if (ids) H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
      free(ids);
    } else if (n) {
      H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT,
               how == 2 ? (const void *)names : (const void *)ptrs);
    }
    H5Dclose(d);
  }
  H5Sclose(sp);
  H5Tclose(t);
  free(names);
  free(ptrs);
}

/* mean or std: per channel floats, or the wrong count, type or kind. */
static void put_stat(hid_t f, reader *r, const char *name, int channels, float usual) {
  unsigned how = byte(r) % 8;
  float v[4];
  for (int i = 0; i < 4; i++) v[i] = how < 4 ? usual : pick_float(r, usual);
  int count = channels >= 1 && channels <= 4 ? channels : 3;
  switch (how) {
    case 0:
      return; /* absent */
    case 1:
      put_attr(f, name, H5T_NATIVE_DOUBLE, 0, &(double){0.5});
      return;
    case 2:
      put_string_attr(f, name, "0.5", 1);
      return;
    case 3:
      put_attr(f, name, H5T_NATIVE_FLOAT, (hsize_t)(byte(r) % 5), v);
      return;
    case 4: {
      int iv[4] = {1, 1, 1, 1};
      put_attr(f, name, H5T_NATIVE_INT, (hsize_t)count, iv);
      return;
    }
    default:
      put_attr(f, name, H5T_NATIVE_FLOAT, (hsize_t)count, v);
      return;
  }
}

/* Writes the file the input describes. */
static void make_file(const char *path, reader *r) {
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) return;
  char s[16];
  switch (byte(r) % 6) { /* format */
    case 0:
      break;
    case 1:
      put_string_attr(f, "format", "alexnet-hdf5", 1);
      break;
    case 2:
      pick_string(r, s);
      put_string_attr(f, "format", s, byte(r) % 2);
      break;
    case 3:
      put_attr(f, "format", H5T_NATIVE_INT, 0, &(int){1});
      break;
    default:
      put_string_attr(f, "format", "alexnet-hdf5", 0);
      break;
  }
  switch (byte(r) % 6) { /* version */
    case 0:
      break;
    case 1:
      put_attr(f, "version", H5T_NATIVE_DOUBLE, 0, &(double){1.0});
      break;
    case 2:
      put_string_attr(f, "version", "1", 0);
      break;
    case 3:
      put_attr(f, "version", H5T_NATIVE_LLONG, 0, &(long long){pick_int(r, 1)});
      break;
    case 4:
      put_attr(f, "version", H5T_NATIVE_INT, 2, (int[]){1, 1});
      break;
    default:
      put_attr(f, "version", H5T_STD_U8LE, 0, &(uint8_t){1});
      break;
  }
  long long classes = 1 + byte(r) % 8;
  switch (byte(r) % 6) { /* num_classes */
    case 0:
      break;
    case 1:
      put_attr(f, "num_classes", H5T_NATIVE_FLOAT, 0, &(float){(float)classes});
      break;
    case 2:
      classes = pick_int(r, classes); /* fall through */
    default:
      put_attr(f, "num_classes", H5T_NATIVE_LLONG, 0, &classes);
      break;
  }
  /* /images: (N, H, W, C) uint8 mostly */
  hsize_t n = (hsize_t)(byte(r) % 24);
  if (byte(r) % 16 == 0) n = (hsize_t)1 << 16; /* many samples, unwritten */
  hsize_t dims[5] = {n, 1 + byte(r) % 16, 1 + byte(r) % 16, byte(r) % 2 ? 3 : 1, 2};
  static const int channel_menu[8] = {3, 1, 3, 1, 0, 2, 4, 3};
  dims[3] = (hsize_t)channel_menu[byte(r) % 8];
  if (byte(r) % 8 == 0) dims[1 + byte(r) % 2] = 0;
  unsigned images = byte(r) % 10;
  static const int rank_menu[6] = {4, 4, 4, 3, 5, 1};
  int rank = rank_menu[byte(r) % 6];
  hid_t types[4] = {H5T_STD_U8LE, H5T_STD_I8LE, H5T_IEEE_F32LE, H5T_STD_U16LE};
  if (images == 1) {
    hid_t g = H5Gcreate2(f, "images", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g >= 0) H5Gclose(g);
  } else if (images > 1) {
    hid_t t = images < 7 ? H5T_STD_U8LE : types[byte(r) % 4];
    put_dataset(f, "images", t, rank, dims, r, n > 64 || byte(r) % 2);
  }
  /* /labels: as many as the images, or one more or fewer */
  hsize_t nl = n;
  unsigned labels = byte(r) % 10;
  if (labels == 1) nl = n + 1;
  if (labels == 2 && n > 0) nl = n - 1;
  hid_t ltypes[6] = {H5T_STD_I32LE,  H5T_STD_I64LE, H5T_STD_U8LE,
                     H5T_IEEE_F32LE, H5T_STD_I32BE, H5T_STD_I16LE};
  if (labels != 3)
    put_labels(f, r, labels >= 6 ? ltypes[byte(r) % 6] : H5T_STD_I32LE, labels == 4 ? 2 : 1, nl,
               classes);
  /* /classes */
  unsigned how = byte(r) % 8;
  hsize_t nc = classes > 0 && classes < 64 ? (hsize_t)classes : 3;
  if (byte(r) % 6 == 0) nc = (hsize_t)(byte(r) % 10);
  if (how != 0) put_classes(f, r, how > 4 ? 1 : how, nc);
  put_stat(f, r, "mean", (int)dims[3], 0.5f);
  put_stat(f, r, "std", (int)dims[3], 0.25f);
  H5Fclose(f);
}

/* What data.h promises about an open dataset. */
static void check_open(data_dataset *ds, const char *path, reader *r) {
  char err[4096];
  FUZZ_CHECK(ds->n >= 1 && ds->h >= 1 && ds->w >= 1 && (ds->c == 1 || ds->c == 3),
             "accepted %lld samples of %dx%dx%d", (long long)ds->n, ds->h, ds->w, ds->c);
  FUZZ_CHECK(ds->num_classes >= 1 && ds->class_names && ds->labels, "accepted %d classes",
             ds->num_classes);
  for (int i = 0; i < ds->num_classes; i++) FUZZ_CHECK(ds->class_names[i], "class %d", i);
  for (int64_t i = 0; i < ds->n; i++)
    FUZZ_CHECK(ds->labels[i] >= 0 && ds->labels[i] < ds->num_classes, "label %lld = %d",
               (long long)i, ds->labels[i]);
  for (int c = 0; c < ds->c; c++)
    FUZZ_CHECK(isfinite(ds->mean[c]) && isfinite(ds->std[c]) && ds->std[c] > 0, "mean %g std %g",
               (double)ds->mean[c], (double)ds->std[c]);
  uint8_t *img = malloc((size_t)ds->h * ds->w * ds->c);
  FUZZ_CHECK(img != NULL, "out of memory");
  int64_t probe[3] = {0, ds->n - 1, ds->n / 2};
  for (int k = 0; k < 3; k++)
    FUZZ_CHECK(data_dataset_read(ds, probe[k], img, err, sizeof err) == 0, "read %lld: %s",
               (long long)probe[k], err);
  FUZZ_CHECK(data_dataset_read(ds, ds->n, img, err, sizeof err) == -1 && strstr(err, path),
             "read past the end");
  FUZZ_CHECK(data_dataset_read(ds, -1, img, err, sizeof err) == -1, "read at -1");
  free(img);

  /* A loader over it: a train or eval epoch's first batches. */
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = path;
  o.ranks = 1 + (int)(byte(r) % 3);
  o.rank = (int)(byte(r) % (unsigned)o.ranks);
  o.global_batch = o.ranks * (1 + (int)(byte(r) % 4));
  o.train = byte(r) % 2;
  o.shuffle = 1;
  o.seed = byte(r);
  int side = ds->h < ds->w ? ds->h : ds->w;
  o.crop = 1 + (int)(byte(r) % (unsigned)side);
  o.mirror = byte(r) % 2;
  o.lighting = byte(r) % 2 ? 0.1f : 0.0f;
  o.ten_crop = !o.train && byte(r) % 4 == 0;
  o.out_channels = ds->c == 1 && byte(r) % 2 ? 3 : 0;
  o.prefetch = 1;
  data_loader *ld = NULL;
  if (data_loader_open(&o, &ld, err, sizeof err) != 0) {
    /* only a batch larger than the training set is a valid refusal here */
    FUZZ_CHECK(ld == NULL && o.train && o.global_batch > ds->n, "loader refused: %s", err);
    return;
  }
  FUZZ_CHECK(data_loader_start_epoch(ld, 0, 0, err, sizeof err) == 0, "start: %s", err);
  data_batch b;
  for (int k = 0; k < 2; k++) {
    int got = data_loader_next(ld, &b, err, sizeof err);
    FUZZ_CHECK(got >= 0, "next: %s", err);
    if (got == 0) break;
    for (int i = 0; i < b.count; i++)
      FUZZ_CHECK(b.labels[i] >= 0 && b.labels[i] < ds->num_classes, "batch label %d", b.labels[i]);
  }
  data_loader_close(ld);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char path[256];
  if (!path[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fuzz-dataset-%d.h5", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  }
  reader r = {data, size, 0};
  unlink(path);
  make_file(path, &r);
  data_dataset ds;
  char err[4096] = "";
  int rc = data_dataset_open(path, &ds, err, sizeof err);
  if (getenv("FUZZ_VERBOSE")) /* for looking at a corpus: what each input makes */
    fprintf(stderr, "%s\n", rc == 0 ? "accepted" : err);
  if (rc == 0) {
    check_open(&ds, path, &r);
    data_dataset_close(&ds);
  } else {
    FUZZ_CHECK(strstr(err, path) != NULL, "a refusal that does not name the file: %s", err);
    FUZZ_CHECK(ds.labels == NULL && ds.class_names == NULL, "a refusal left memory behind");
  }
  data_dataset_close(&ds); /* twice is fine */
  unlink(path);
  return 0;
}
