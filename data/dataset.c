/*
 * data/dataset.c: the alexnet-hdf5 dataset file (docs/data-format.md):
 * opening and validating it, reading one sample, and writing one atomically.
 *
 * N = samples, H, W = stored image height and width, C = channels (1 or 3).
 * /images uint8 (N, H, W, C) chunked by a few images at most; /labels int32
 * (N); /classes variable-length UTF-8 strings (num_classes); root attributes
 * format, version, num_classes, mean (C), std (C), and the exact pixel sums.
 * JPEG files (version 2, encoding "jpeg") hold /jpeg (bytes), /offsets
 * (N + 1) and /shapes (N, 2) instead of /images. Several files (shards) open
 * as one data_dataset whose `shards` are the files, numbered in order.
 *
 * HDF5's own error-stack printing is switched off (per thread: Debian's build
 * is thread-safe with one stack per thread) and every failure is reported
 * with the file, the dataset and the first bad index.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "internal.h"
#include "util.h"

#define CHUNK_TARGET_BYTES 16384 /* small images share a chunk up to this size */
#define LABEL_BLOCK 65536        /* labels are validated in blocks of this many */

/* ------------------------------------------------------------------------ */
/* Reading attributes                                                        */

/* Reads a scalar string attribute (fixed or variable length, at most 64 KiB)
 * into out. Returns 0, -1 if absent, -2 if not a single string, -3 if its
 * stored form is corrupt (why says how; see data_hdf5_check_vlen). */
static int attr_string(hid_t obj, const char *name, char *out, size_t outlen, char *why,
                       size_t whylen) {
  if (H5Aexists(obj, name) <= 0) return -1;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return -2;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  int rc = -2;
  H5S_class_t sc = sp >= 0 ? H5Sget_simple_extent_type(sp) : H5S_NO_CLASS;
  if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_STRING && sc != H5S_NULL &&
      H5Sget_simple_extent_npoints(sp) == 1) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_cset(mt, H5Tget_cset(t));
    if (H5Tis_variable_str(t) > 0) {
      char *s = NULL;
      H5Tset_size(mt, H5T_VARIABLE);
      if (data_hdf5_check_vlen(obj, name, why, whylen) != 0) {
        rc = -3;
      } else if (H5Aread(a, mt, &s) >= 0 && s) {
        snprintf(out, outlen, "%s", s);
        rc = 0;
      }
      if (s) H5free_memory(s);
    } else {
      size_t n = H5Tget_size(t);
      char *buf = n > 0 && n <= 65536 ? calloc(n + 1, 1) : NULL;
      H5Tset_size(mt, n);
      if (buf && H5Aread(a, mt, buf) >= 0) {
        buf[n] = '\0';
        size_t len = strlen(buf);
        while (len > 0 && buf[len - 1] == ' ') buf[--len] = '\0'; /* space padding */
        snprintf(out, outlen, "%s", buf);
        rc = 0;
      }
      free(buf);
    }
    H5Tclose(mt);
  }
  if (sp >= 0) H5Sclose(sp);
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
  return rc;
}

/* Reads a scalar integer attribute. Returns 0, -1 if absent, -2 if not one integer. */
static int attr_int(hid_t obj, const char *name, long long *v) {
  if (H5Aexists(obj, name) <= 0) return -1;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return -2;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  int rc = -2;
  if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER &&
      H5Sget_simple_extent_npoints(sp) == 1 && H5Aread(a, H5T_NATIVE_LLONG, v) >= 0)
    rc = 0;
  if (sp >= 0) H5Sclose(sp);
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
  return rc;
}

/* Reads a numeric attribute of exactly n values as float. Returns 0, -1 if
 * absent, -2 if not numeric, else the number of values it holds (> 0, != n). */
static long long attr_floats(hid_t obj, const char *name, float *out, int n) {
  if (H5Aexists(obj, name) <= 0) return -1;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return -2;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  long long rc = -2;
  H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
  if (sp >= 0 && (cls == H5T_FLOAT || cls == H5T_INTEGER)) {
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    if (np != n)
      rc = np > 0 ? np : -2;
    else if (H5Aread(a, H5T_NATIVE_FLOAT, out) >= 0)
      rc = 0;
  }
  if (sp >= 0) H5Sclose(sp);
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */

/* Opens dataset `name` if it exists as a dataset; else returns -1. */
static hid_t open_dataset(hid_t file, const char *name) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return -1;
  return H5Dopen2(file, name, H5P_DEFAULT); /* fails on a group of that name */
}

/* Rank and dims of a dataset (dims has room for 8). Returns the rank or -1. */
static int dataset_dims(hid_t d, hsize_t *dims) {
  hid_t sp = H5Dget_space(d);
  if (sp < 0) return -1;
  int r = H5Sget_simple_extent_ndims(sp);
  if (r > 8 || (r > 0 && H5Sget_simple_extent_dims(sp, dims, NULL) < 0)) r = -1;
  H5Sclose(sp);
  return r;
}

/* Opens dataset `name`, which must be 1-D of type class `cls` with `want`
 * entries; `kind` names an entry ("entries"), `want_desc` where `want` comes
 * from. Returns the dataset, or -1 with the message. */
static hid_t open_vector(const char *p, hid_t file, const char *name, H5T_class_t cls,
                         const char *must_be, const char *kind, int64_t want, const char *want_desc,
                         char *err, size_t errlen) {
  hid_t d = open_dataset(file, name);
  if (d < 0) return util_errf(err, errlen, "%s: missing dataset %s", p, name);
  hsize_t dims[8];
  int r = dataset_dims(d, dims);
  hid_t t = H5Dget_type(d);
  int ok = t >= 0 && H5Tget_class(t) == cls && r == 1;
  if (t >= 0) H5Tclose(t);
  if (!ok) {
    H5Dclose(d);
    return util_errf(err, errlen, "%s: %s must be %s", p, name, must_be);
  }
  if ((int64_t)dims[0] != want) {
    H5Dclose(d);
    int64_t first = (int64_t)dims[0] < want ? (int64_t)dims[0] : want;
    return util_errf(err, errlen, "%s: %s has %lld %s but %s (first unmatched index %lld)", p, name,
                     (long long)dims[0], kind, want_desc, (long long)first);
  }
  return d;
}

/* Checks that dataset d (`name`) can be read as stored: every filter of its
 * pipeline is one this build of HDF5 can decode (an lzf file from h5py, say,
 * would otherwise fail at its first read, mid-run, as "corrupt"), and its
 * storage is all written (a sparse file that declares more than it holds
 * would read as zeros). */
static int check_storage(const char *p, hid_t d, const char *name, char *err, size_t errlen) {
  hid_t dcpl = H5Dget_create_plist(d);
  int nf = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1, rc = 0;
  for (int i = 0; rc == 0 && i < nf; i++) {
    unsigned flags = 0, conf = 0;
    size_t nvals = 0;
    char fname[64] = "";
    H5Z_filter_t id =
        H5Pget_filter2(dcpl, (unsigned)i, &flags, &nvals, NULL, sizeof fname, fname, &conf);
    if (id < 0 || H5Zfilter_avail(id) <= 0 || H5Zget_filter_info(id, &conf) < 0 ||
        !(conf & H5Z_FILTER_CONFIG_DECODE_ENABLED))
      rc = util_errf(err, errlen,
                     "%s: %s is stored with HDF5 filter %d ('%s'), which this build of HDF5 "
                     "cannot decode (re-convert it without that compression, or install the "
                     "filter's plugin)",
                     p, name, (int)id, fname[0] ? fname : "unnamed");
  }
  /* Written = every chunk allocated (chunked), or the storage allocated
   * (contiguous; compact data lives in the header). */
  int written = 0;
  H5D_layout_t layout = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;
  if (layout == H5D_CHUNKED) {
    hsize_t dims[8], chunk[8], want = 1, have = 0;
    hid_t sp = H5Dget_space(d);
    int r = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
    if (r > 0 && r <= 8 && H5Pget_chunk(dcpl, r, chunk) == r) {
      for (int i = 0; i < r; i++) want *= chunk[i] ? (dims[i] + chunk[i] - 1) / chunk[i] : 0;
      written = H5Dget_num_chunks(d, sp, &have) >= 0 && have == want;
    }
    if (sp >= 0) H5Sclose(sp);
  } else if (layout == H5D_COMPACT) {
    written = 1;
  } else {
    H5D_space_status_t status;
    written = H5Dget_space_status(d, &status) >= 0 && status == H5D_SPACE_STATUS_ALLOCATED;
  }
  if (dcpl >= 0) H5Pclose(dcpl);
  if (rc == 0 && !written)
    rc = util_errf(err, errlen,
                   "%s: %s is not all written (a sparse or unfinished file: its unwritten "
                   "samples would read as zeros)",
                   p, name);
  return rc;
}

/* Reads and checks /labels: any integer type, values in [0, num_classes). */
static int read_labels(data_dataset *ds, hid_t file, char *err, size_t errlen) {
  const char *p = ds->path;
  char desc[64];
  snprintf(desc, sizeof desc, "/images has %lld samples", (long long)ds->n);
  hid_t d = open_vector(p, file, "/labels", H5T_INTEGER, "a 1-D integer dataset (int32 [N])",
                        "entries", ds->n, desc, err, errlen);
  if (d < 0) return -1;
  if (check_storage(p, d, "/labels", err, errlen) != 0) {
    H5Dclose(d);
    return -1;
  }
  ds->labels = malloc((size_t)ds->n * sizeof(int32_t));
  long long *blk = malloc(LABEL_BLOCK * sizeof(long long));
  if (!ds->labels || !blk) {
    free(blk);
    H5Dclose(d);
    return util_errf(err, errlen, "%s: out of memory reading /labels", p);
  }
  hid_t fs = H5Dget_space(d);
  int rc = 0;
  for (int64_t s = 0; s < ds->n && rc == 0; s += LABEL_BLOCK) {
    hsize_t start = (hsize_t)s,
            count = (hsize_t)(ds->n - s < LABEL_BLOCK ? ds->n - s : LABEL_BLOCK);
    hid_t ms = H5Screate_simple(1, &count, NULL);
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
        H5Dread(d, H5T_NATIVE_LLONG, ms, fs, H5P_DEFAULT, blk) < 0) {
      rc =
          util_errf(err, errlen, "%s: cannot read /labels[%lld..%lld] (truncated or corrupt file?)",
                    p, (long long)s, (long long)(s + (int64_t)count - 1));
    }
    for (hsize_t k = 0; rc == 0 && k < count; k++) {
      if (blk[k] < 0 || blk[k] >= ds->num_classes)
        rc = util_errf(err, errlen, "%s: /labels[%lld] = %lld is out of range [0, %d)", p,
                       (long long)(s + (int64_t)k), blk[k], ds->num_classes);
      else
        ds->labels[s + (int64_t)k] = (int32_t)blk[k];
    }
    H5Sclose(ms);
  }
  H5Sclose(fs);
  free(blk);
  H5Dclose(d);
  return rc;
}

/* Reads /classes: num_classes strings, variable or fixed length. */
static int read_classes(data_dataset *ds, hid_t file, char *err, size_t errlen) {
  const char *p = ds->path;
  char desc[64];
  snprintf(desc, sizeof desc, "num_classes = %d", ds->num_classes);
  hid_t d = open_vector(p, file, "/classes", H5T_STRING, "a 1-D dataset of strings", "names",
                        ds->num_classes, desc, err, errlen);
  if (d < 0) return -1;
  hid_t t = H5Dget_type(d);
  int n = ds->num_classes, rc = 0;
  ds->class_names = calloc((size_t)n, sizeof(char *));
  hid_t mt = H5Tcopy(H5T_C_S1);
  H5Tset_cset(mt, H5Tget_cset(t));
  char why[512];
  if (H5Tis_variable_str(t) > 0 && data_hdf5_check_vlen(d, NULL, why, sizeof why) != 0) {
    rc = util_errf(err, errlen, "%s: /classes is corrupt: %s", p, why);
  } else if (H5Tis_variable_str(t) > 0) {
    char **s = calloc((size_t)n, sizeof(char *));
    H5Tset_size(mt, H5T_VARIABLE);
    if (!s || !ds->class_names || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0) {
      rc = util_errf(err, errlen, "%s: cannot read /classes (truncated or corrupt file?)", p);
      for (int i = 0; s && i < n; i++) H5free_memory(s[i]); /* a read that failed midway */
    } else {
      for (int i = 0; i < n; i++) {
        ds->class_names[i] = strdup(s[i] ? s[i] : "");
        if (s[i]) H5free_memory(s[i]);
      }
    }
    free(s);
  } else {
    size_t sz = H5Tget_size(t);
    char *buf = sz > 0 && sz <= 65536 ? calloc((size_t)n, sz) : NULL;
    H5Tset_size(mt, sz);
    if (!buf || !ds->class_names || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
      rc = util_errf(err, errlen, "%s: cannot read /classes (truncated or corrupt file?)", p);
    } else {
      for (int i = 0; i < n; i++) ds->class_names[i] = strndup(buf + (size_t)i * sz, sz);
    }
    free(buf);
  }
  for (int i = 0; rc == 0 && i < n; i++)
    if (!ds->class_names[i]) rc = util_errf(err, errlen, "%s: out of memory reading /classes", p);
  H5Tclose(mt);
  H5Tclose(t);
  H5Dclose(d);
  return rc;
}

/* Checks /images: uint8, (N, H, W, C) with C in {1, 3}, N > 0. Keeps it open. */
static int open_images(data_dataset *ds, hid_t file, char *err, size_t errlen) {
  const char *p = ds->path;
  hid_t d = open_dataset(file, "/images");
  if (d < 0) return util_errf(err, errlen, "%s: missing dataset /images", p);
  ds->images_id = d;
  hsize_t dims[8];
  int r = dataset_dims(d, dims);
  hid_t t = H5Dget_type(d);
  int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 &&
           H5Tget_sign(t) == H5T_SGN_NONE;
  if (t >= 0) H5Tclose(t);
  if (!ok) return util_errf(err, errlen, "%s: /images must be uint8", p);
  if (r != 4)
    return util_errf(err, errlen, "%s: /images has rank %d, expected 4 (N, H, W, C)", p, r);
  if (dims[3] != 1 && dims[3] != 3)
    return util_errf(err, errlen, "%s: /images has %llu channels, expected 1 or 3", p,
                     (unsigned long long)dims[3]);
  if (dims[1] == 0 || dims[2] == 0 || dims[1] > 65535 || dims[2] > 65535)
    return util_errf(err, errlen, "%s: /images has an image size of %llux%llu", p,
                     (unsigned long long)dims[1], (unsigned long long)dims[2]);
  if (dims[0] == 0) return util_errf(err, errlen, "%s: /images holds zero samples", p);
  if (dims[1] * dims[2] > DATA_MAX_IMAGE_PIXELS)
    return util_errf(err, errlen,
                     "%s: /images are %llux%llu, more than the %d pixels per image this build "
                     "reads (every reader holds one image)",
                     p, (unsigned long long)dims[1], (unsigned long long)dims[2],
                     DATA_MAX_IMAGE_PIXELS);
  if (check_storage(p, d, "/images", err, errlen) != 0) return -1;
  ds->n = (int64_t)dims[0];
  ds->h = (int)dims[1];
  ds->w = (int)dims[2];
  ds->c = (int)dims[3];
  return 0;
}

/* Reads a whole integer dataset as int64 (into room for all its values). */
static int read_ints(hid_t d, int64_t *out) {
  return H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0 ? -1 : 0;
}

/* A JPEG file: /jpeg uint8 [bytes], /offsets int64 [N + 1] (image i is
 * /jpeg[offsets[i]:offsets[i+1]]), /shapes int32 [N, 2] (height, width),
 * root attribute channels. Keeps /jpeg open as images_id. */
static int open_jpeg(data_dataset *ds, hid_t file, char *err, size_t errlen) {
  const char *p = ds->path;
  long long c;
  int rc = attr_int(file, "channels", &c);
  if (rc == -1) return util_errf(err, errlen, "%s: missing root attribute 'channels'", p);
  if (rc != 0 || c != 3)
    return util_errf(err, errlen, "%s: root attribute channels must be 3 (JPEG files are RGB)", p);
  ds->c = (int)c;
  hid_t d = open_dataset(file, "/shapes");
  if (d < 0) return util_errf(err, errlen, "%s: missing dataset /shapes", p);
  hsize_t dims[8];
  int r = dataset_dims(d, dims);
  hid_t t = H5Dget_type(d);
  int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && r == 2 && dims[1] == 2;
  if (t >= 0) H5Tclose(t);
  if (!ok) {
    H5Dclose(d);
    return util_errf(err, errlen, "%s: /shapes must be an integer dataset [N, 2] (height, width)",
                     p);
  }
  if (dims[0] == 0) {
    H5Dclose(d);
    return util_errf(err, errlen, "%s: /shapes holds zero samples", p);
  }
  if (check_storage(p, d, "/shapes", err, errlen) != 0) {
    H5Dclose(d);
    return -1;
  }
  ds->n = (int64_t)dims[0];
  int64_t *tmp = malloc((size_t)(2 * ds->n + 1) * sizeof(int64_t));
  ds->shapes = malloc((size_t)(2 * ds->n) * sizeof(int32_t));
  ds->offsets = malloc((size_t)(ds->n + 1) * sizeof(int64_t));
  if (!tmp || !ds->shapes || !ds->offsets) {
    free(tmp);
    H5Dclose(d);
    return util_errf(err, errlen, "%s: out of memory for %lld shapes", p, (long long)ds->n);
  }
  rc = read_ints(d, tmp);
  H5Dclose(d);
  if (rc != 0) {
    free(tmp);
    return util_errf(err, errlen, "%s: cannot read /shapes (truncated or corrupt file?)", p);
  }
  ds->h = ds->w = 0;
  ds->min_h = ds->min_w = 65535;
  for (int64_t i = 0; i < ds->n; i++) {
    int64_t h = tmp[2 * i], w = tmp[2 * i + 1];
    if (h < 1 || w < 1 || h > 65535 || w > 65535) {
      free(tmp);
      return util_errf(err, errlen, "%s: /shapes[%lld] = (%lld, %lld) is not an image size", p,
                       (long long)i, (long long)h, (long long)w);
    }
    ds->shapes[2 * i] = (int32_t)h, ds->shapes[2 * i + 1] = (int32_t)w;
    if (h > ds->h) ds->h = (int)h;
    if (w > ds->w) ds->w = (int)w;
    if (h < ds->min_h) ds->min_h = (int)h;
    if (w < ds->min_w) ds->min_w = (int)w;
  }
  free(tmp);
  d = open_dataset(file, "/jpeg");
  if (d < 0) return util_errf(err, errlen, "%s: missing dataset /jpeg", p);
  ds->images_id = d;
  r = dataset_dims(d, dims);
  t = H5Dget_type(d);
  ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 && r == 1;
  if (t >= 0) H5Tclose(t);
  if (!ok) return util_errf(err, errlen, "%s: /jpeg must be a 1-D uint8 dataset", p);
  if (check_storage(p, d, "/jpeg", err, errlen) != 0) return -1;
  int64_t bytes = (int64_t)dims[0];
  char desc[64];
  snprintf(desc, sizeof desc, "/shapes has %lld samples (+ 1)", (long long)ds->n);
  hid_t od = open_vector(p, file, "/offsets", H5T_INTEGER, "a 1-D integer dataset (int64 [N + 1])",
                         "entries", ds->n + 1, desc, err, errlen);
  if (od < 0) return -1;
  rc = read_ints(od, ds->offsets);
  H5Dclose(od);
  if (rc != 0)
    return util_errf(err, errlen, "%s: cannot read /offsets (truncated or corrupt file?)", p);
  if (ds->offsets[0] != 0)
    return util_errf(err, errlen, "%s: /offsets[0] = %lld, expected 0", p,
                     (long long)ds->offsets[0]);
  for (int64_t i = 0; i < ds->n; i++)
    if (ds->offsets[i + 1] <= ds->offsets[i] || ds->offsets[i + 1] > bytes)
      return util_errf(err, errlen,
                       "%s: /offsets[%lld] = %lld is not in (%lld, %lld] (the /jpeg bytes)", p,
                       (long long)(i + 1), (long long)ds->offsets[i + 1], (long long)ds->offsets[i],
                       (long long)bytes);
  return 0;
}

/* The optional exact statistics (see data_dataset); absent or malformed = none. */
static void read_pixel_stats(data_dataset *ds, hid_t file) {
  long long cnt;
  uint64_t s[3], q[3];
  if (attr_int(file, "pixel_count", &cnt) != 0 || cnt <= 0) return;
  const char *names[2] = {"pixel_sum", "pixel_sumsq"};
  uint64_t *dst[2] = {s, q};
  for (int k = 0; k < 2; k++) {
    if (H5Aexists(file, names[k]) <= 0) return;
    hid_t a = H5Aopen(file, names[k], H5P_DEFAULT);
    if (a < 0) return;
    hid_t sp = H5Aget_space(a), t = H5Aget_type(a);
    int ok = sp >= 0 && t >= 0 && H5Tget_class(t) == H5T_INTEGER &&
             H5Sget_simple_extent_npoints(sp) == ds->c &&
             H5Aread(a, H5T_NATIVE_UINT64, dst[k]) >= 0;
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    if (!ok) return;
  }
  ds->pixel_count = (uint64_t)cnt;
  memcpy(ds->pixel_sum, s, sizeof s);
  memcpy(ds->pixel_sumsq, q, sizeof q);
}

static int read_root_attrs(data_dataset *ds, hid_t file, char *err, size_t errlen) {
  const char *p = ds->path;
  char fmt[256], why[512];
  int rc = attr_string(file, "format", fmt, sizeof fmt, why, sizeof why);
  if (rc == -3) return util_errf(err, errlen, "%s: root attribute 'format' is corrupt: %s", p, why);
  if (rc == -1)
    return util_errf(err, errlen, "%s: missing root attribute 'format' (not an %s file)", p,
                     DATA_FORMAT_NAME);
  if (rc != 0 || strcmp(fmt, DATA_FORMAT_NAME) != 0)
    return util_errf(err, errlen, "%s: root attribute format = '%s', expected '%s'", p,
                     rc == 0 ? fmt : "(not a string)", DATA_FORMAT_NAME);
  long long v;
  rc = attr_int(file, "version", &v);
  if (rc == -1) return util_errf(err, errlen, "%s: missing root attribute 'version'", p);
  if (rc != 0) return util_errf(err, errlen, "%s: root attribute 'version' is not an integer", p);
  if (v < 1 || v > DATA_FORMAT_VERSION)
    return util_errf(err, errlen,
                     "%s: format version %lld is not supported (this build reads 1 to %d)", p, v,
                     DATA_FORMAT_VERSION);
  /* Version 1 is raw pixels; from 2 on the encoding attribute says which. */
  char enc[64] = "raw";
  rc = attr_string(file, "encoding", enc, sizeof enc, why, sizeof why);
  if (rc == -3)
    return util_errf(err, errlen, "%s: root attribute 'encoding' is corrupt: %s", p, why);
  if (rc == -1 && v >= 2)
    return util_errf(err, errlen, "%s: missing root attribute 'encoding' (version %lld)", p, v);
  if (rc == -2) return util_errf(err, errlen, "%s: root attribute 'encoding' is not a string", p);
  if (strcmp(enc, "raw") == 0)
    ds->encoding = DATA_ENCODING_RAW;
  else if (strcmp(enc, "jpeg") == 0 && v >= 2)
    ds->encoding = DATA_ENCODING_JPEG;
  else
    return util_errf(err, errlen,
                     "%s: encoding '%s' is not supported in version %lld (this build reads raw, "
                     "and jpeg from version 2)",
                     p, enc, v);
  rc = attr_int(file, "num_classes", &v);
  if (rc == -1) return util_errf(err, errlen, "%s: missing root attribute 'num_classes'", p);
  if (rc != 0 || v <= 0 || v > INT_MAX)
    return util_errf(err, errlen, "%s: root attribute num_classes must be a positive integer", p);
  ds->num_classes = (int)v;
  return 0;
}

static int read_mean_std(data_dataset *ds, hid_t file, char *err, size_t errlen) {
  static const char *names[2] = {"mean", "std"};
  float *dst[2] = {ds->mean, ds->std};
  for (int k = 0; k < 2; k++) {
    long long rc = attr_floats(file, names[k], dst[k], ds->c);
    if (rc == -1)
      return util_errf(err, errlen, "%s: missing root attribute '%s'", ds->path, names[k]);
    if (rc == -2)
      return util_errf(err, errlen, "%s: root attribute '%s' is not numeric", ds->path, names[k]);
    if (rc > 0)
      return util_errf(err, errlen,
                       "%s: root attribute '%s' has %lld values, expected %d (one per channel)",
                       ds->path, names[k], rc, ds->c);
    for (int i = 0; i < ds->c; i++) {
      float x = dst[k][i];
      if (!isfinite(x) || (k == 1 && !(x > 0)))
        return util_errf(err, errlen, "%s: root attribute %s[%d] = %g is invalid%s", ds->path,
                         names[k], i, (double)x, k == 1 ? " (must be > 0)" : "");
    }
  }
  return 0;
}

static int64_t mtime_ns(const struct stat *sb) {
  return (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
}

/* Opens one file (data_dataset_open without the shard list). */
static int file_open(const char *path, data_dataset *ds, char *err, size_t errlen) {
  memset(ds, 0, sizeof *ds);
  ds->file_id = ds->images_id = -1;
  if (strlen(path) >= sizeof ds->path) return util_errf(err, errlen, "%s: path too long", path);
  snprintf(ds->path, sizeof ds->path, "%s", path);
  data_hdf5_quiet();
  struct stat sb;
  if (stat(path, &sb) != 0)
    return util_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  if (!S_ISREG(sb.st_mode)) return util_errf(err, errlen, "%s: not a regular file", path);
  if (H5Fis_hdf5(path) <= 0)
    return util_errf(err, errlen, "%s: not an HDF5 file (or its header is corrupt)", path);
  /* Readers of an immutable file need no lock; cluster filesystems often refuse one. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_file_locking(fapl, 0, 1);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  if (f < 0)
    return util_errf(err, errlen, "%s: cannot open as HDF5 (truncated or corrupt file?)", path);
  ds->file_id = f;
  ds->file_size = (int64_t)sb.st_size;
  ds->mtime_ns = mtime_ns(&sb);
  char why[512];
  int rc = data_hdf5_check_attrs(f, why, sizeof why) == 0
               ? 0
               : util_errf(err, errlen, "%s: corrupt root attributes: %s", path, why);
  if (rc == 0) rc = read_root_attrs(ds, f, err, errlen);
  if (rc == 0 && ds->encoding == DATA_ENCODING_JPEG) {
    rc = open_jpeg(ds, f, err, errlen);
  } else if (rc == 0) {
    rc = open_images(ds, f, err, errlen);
    ds->min_h = ds->h, ds->min_w = ds->w;
  }
  if (rc == 0) rc = read_labels(ds, f, err, errlen);
  if (rc == 0) rc = read_classes(ds, f, err, errlen);
  if (rc == 0) rc = read_mean_std(ds, f, err, errlen);
  if (rc == 0) read_pixel_stats(ds, f);
  if (rc != 0) data_dataset_close(ds);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Several files as one (shards)                                             */

/* Expands a spec (paths or globs, one per line) into a list of paths: a path
 * that exists is taken literally, a glob is sorted; a glob that matches
 * nothing is an error. Returns the count, or -1 with the message. */
static int expand_spec(const char *spec, char ***out, char *err, size_t errlen) {
  *out = NULL;
  int n = 0, cap = 0, rc = 0;
  char **list = NULL;
  const char *s = spec;
  while (rc == 0 && *s) {
    const char *e = strchr(s, '\n');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    char item[4096];
    if (len >= sizeof item) {
      rc = util_errf(err, errlen, "%.64s...: path too long", s);
      break;
    }
    memcpy(item, s, len);
    item[len] = '\0';
    s += len + (e ? 1 : 0);
    if (len == 0) continue;
    glob_t g;
    memset(&g, 0, sizeof g);
    struct stat sb;
    int literal = stat(item, &sb) == 0 || !strpbrk(item, "*?[");
    if (!literal && glob(item, 0, NULL, &g) != 0) {
      globfree(&g);
      rc = util_errf(err, errlen, "%s: no file matches this pattern", item);
      break;
    }
    size_t k = literal ? 1 : g.gl_pathc;
    for (size_t j = 0; rc == 0 && j < k; j++) {
      if (n == cap) {
        cap = cap ? 2 * cap : 8;
        char **l = realloc(list, (size_t)cap * sizeof *l);
        if (!l) {
          rc = util_errf(err, errlen, "out of memory listing the dataset files");
          break;
        }
        list = l;
      }
      list[n] = strdup(literal ? item : g.gl_pathv[j]);
      if (!list[n])
        rc = util_errf(err, errlen, "out of memory listing the dataset files");
      else
        n++;
    }
    if (!literal) globfree(&g);
  }
  if (rc == 0 && n == 0) rc = util_errf(err, errlen, "no dataset file given");
  if (rc != 0) {
    for (int j = 0; j < n; j++) free(list[j]);
    free(list);
    return -1;
  }
  *out = list;
  return n;
}

/* Checks shard b against shard a (the first). */
static int shards_agree(const data_dataset *a, const data_dataset *b, char *err, size_t errlen) {
  static const char *enc[2] = {"raw", "jpeg"};
  if (b->encoding != a->encoding)
    return util_errf(err, errlen, "%s: encoding %s, but %s is %s (shards must agree)", b->path,
                     enc[b->encoding], a->path, enc[a->encoding]);
  if (b->c != a->c)
    return util_errf(err, errlen, "%s: %d channels, but %s has %d (shards must agree)", b->path,
                     b->c, a->path, a->c);
  if (b->encoding == DATA_ENCODING_RAW && (b->h != a->h || b->w != a->w))
    return util_errf(err, errlen, "%s: images of %dx%d, but %s has %dx%d (shards must agree)",
                     b->path, b->w, b->h, a->path, a->w, a->h);
  if (b->num_classes != a->num_classes)
    return util_errf(err, errlen, "%s: %d classes, but %s has %d (shards must agree)", b->path,
                     b->num_classes, a->path, a->num_classes);
  for (int k = 0; k < a->num_classes; k++)
    if (strcmp(a->class_names[k], b->class_names[k]) != 0)
      return util_errf(err, errlen,
                       "%s: class %d is '%s', but in %s it is '%s' (shards must agree)", b->path, k,
                       b->class_names[k], a->path, a->class_names[k]);
  return 0;
}

/* mean/std from exact sums, as the writer computes them. */
void data_stats_from_sums(const uint64_t *sum, const uint64_t *sumsq, double cnt, int c,
                          float *mean, float *sd) {
  for (int k = 0; k < c; k++) {
    double m = (double)sum[k] / cnt / 255.0;
    double var = (double)sumsq[k] / cnt / (255.0 * 255.0) - m * m;
    mean[k] = (float)m;
    sd[k] = (float)sqrt(var > 0 ? var : 0);
    if (!(sd[k] > 0)) sd[k] = 1.0f; /* a constant channel: normalization only shifts */
  }
}

/* Merges open shards into ds (which takes them over). */
static int shards_merge(data_dataset *ds, data_dataset *sh, int k, char *err, size_t errlen) {
  memset(ds, 0, sizeof *ds);
  ds->file_id = ds->images_id = -1;
  ds->shards = sh;
  ds->num_shards = k;
  snprintf(ds->path, sizeof ds->path, "%s", sh[0].path);
  ds->shard_first = malloc((size_t)(k + 1) * sizeof(int64_t));
  if (!ds->shard_first) return util_errf(err, errlen, "%s: out of memory", sh[0].path);
  ds->shard_first[0] = 0;
  for (int j = 0; j < k; j++) ds->shard_first[j + 1] = ds->shard_first[j] + sh[j].n;
  ds->n = ds->shard_first[k];
  ds->c = sh[0].c, ds->encoding = sh[0].encoding, ds->num_classes = sh[0].num_classes;
  ds->h = ds->w = 0, ds->min_h = ds->min_w = 65535;
  int exact = 1;
  double wsum[3] = {0, 0, 0}, wsq[3] = {0, 0, 0}, wn = 0;
  for (int j = 0; j < k; j++) {
    if (sh[j].h > ds->h) ds->h = sh[j].h;
    if (sh[j].w > ds->w) ds->w = sh[j].w;
    if (sh[j].min_h < ds->min_h) ds->min_h = sh[j].min_h;
    if (sh[j].min_w < ds->min_w) ds->min_w = sh[j].min_w;
    exact &= sh[j].pixel_count > 0;
    ds->pixel_count += sh[j].pixel_count;
    double nj = (double)sh[j].n;
    for (int c = 0; c < ds->c; c++) {
      ds->pixel_sum[c] += sh[j].pixel_sum[c];
      ds->pixel_sumsq[c] += sh[j].pixel_sumsq[c];
      wsum[c] += nj * sh[j].mean[c]; /* files without sums: weighted by samples */
      wsq[c] += nj * ((double)sh[j].std[c] * sh[j].std[c] + (double)sh[j].mean[c] * sh[j].mean[c]);
    }
    wn += nj;
  }
  if (exact) {
    data_stats_from_sums(ds->pixel_sum, ds->pixel_sumsq, (double)ds->pixel_count, ds->c, ds->mean,
                         ds->std);
  } else {
    ds->pixel_count = 0;
    for (int c = 0; c < ds->c; c++) {
      double m = wsum[c] / wn, v = wsq[c] / wn - m * m;
      ds->mean[c] = (float)m;
      ds->std[c] = (float)sqrt(v > 0 ? v : 0);
      if (!(ds->std[c] > 0)) ds->std[c] = 1.0f;
    }
  }
  ds->labels = malloc((size_t)ds->n * sizeof(int32_t));
  ds->class_names = calloc((size_t)ds->num_classes, sizeof(char *));
  if (ds->encoding == DATA_ENCODING_JPEG) ds->shapes = malloc((size_t)ds->n * 2 * sizeof(int32_t));
  if (!ds->labels || !ds->class_names || (ds->encoding == DATA_ENCODING_JPEG && !ds->shapes))
    return util_errf(err, errlen, "%s: out of memory", sh[0].path);
  for (int j = 0; j < k; j++) {
    memcpy(ds->labels + ds->shard_first[j], sh[j].labels, (size_t)sh[j].n * sizeof(int32_t));
    if (ds->shapes)
      memcpy(ds->shapes + 2 * ds->shard_first[j], sh[j].shapes,
             (size_t)sh[j].n * 2 * sizeof(int32_t));
  }
  for (int c = 0; c < ds->num_classes; c++) {
    ds->class_names[c] = strdup(sh[0].class_names[c]);
    if (!ds->class_names[c]) return util_errf(err, errlen, "%s: out of memory", sh[0].path);
  }
  return 0;
}

int data_dataset_open(const char *spec, data_dataset *ds, char *err, size_t errlen) {
  memset(ds, 0, sizeof *ds);
  ds->file_id = ds->images_id = -1;
  struct stat sb;
  if (stat(spec, &sb) == 0 || (!strchr(spec, '\n') && !strpbrk(spec, "*?[")))
    return file_open(spec, ds, err, errlen);
  char **paths;
  int k = expand_spec(spec, &paths, err, errlen);
  if (k < 0) return -1;
  int rc = 0;
  if (k == 1) {
    rc = file_open(paths[0], ds, err, errlen);
  } else {
    data_dataset *sh = calloc((size_t)k, sizeof *sh);
    int opened = 0;
    if (!sh) rc = util_errf(err, errlen, "%s: out of memory", paths[0]);
    for (; rc == 0 && opened < k; opened++) {
      rc = file_open(paths[opened], &sh[opened], err, errlen);
      if (rc == 0 && opened > 0) rc = shards_agree(&sh[0], &sh[opened], err, errlen);
      if (rc != 0) data_dataset_close(&sh[opened]);
    }
    if (rc != 0) {
      for (int j = 0; sh && j < opened - 1; j++) data_dataset_close(&sh[j]);
      free(sh);
    } else {
      rc = shards_merge(ds, sh, k, err, errlen);
      if (rc != 0) data_dataset_close(ds);
    }
  }
  for (int j = 0; j < k; j++) free(paths[j]);
  free(paths);
  return rc;
}

void data_dataset_close(data_dataset *ds) {
  if (!ds) return;
  if (ds->shards) {
    for (int k = 0; k < ds->num_shards; k++) data_dataset_close(&ds->shards[k]);
    free(ds->shards);
    free(ds->shard_first);
    ds->shards = NULL;
    ds->shard_first = NULL;
    ds->num_shards = 0;
  }
  free(ds->shapes);
  free(ds->offsets);
  ds->shapes = NULL;
  ds->offsets = NULL;
  if (ds->images_id > 0) H5Dclose(ds->images_id);
  data_hdf5_close(ds->file_id);
  ds->images_id = ds->file_id = -1;
  if (ds->class_names) {
    for (int i = 0; i < ds->num_classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
  }
  ds->class_names = NULL;
  free(ds->labels);
  ds->labels = NULL;
}

/* HDF5 reads past the end of a file as zeros: a truncation shows only in the
 * size. Returns -1 with the message if the file shrank since it was opened. */
static int check_truncated(const data_dataset *ds, int64_t i, const char *dset, char *err,
                           size_t errlen) {
  int *fdp = NULL;
  struct stat sb;
  if (H5Fget_vfd_handle(ds->file_id, H5P_DEFAULT, (void **)&fdp) >= 0 && fdp &&
      fstat(*fdp, &sb) == 0) {
    if ((int64_t)sb.st_size < ds->file_size)
      return util_errf(err, errlen,
                       "%s: the file was truncated (%lld bytes, %lld at open) when reading "
                       "sample %lld of %s",
                       ds->path, (long long)sb.st_size, (long long)ds->file_size, (long long)i,
                       dset);
    /* Overwritten in place (a copy over it, at any size): its modification
     * time moved. A file replaced by a rename is another inode: the open one
     * stays as it was. */
    if (mtime_ns(&sb) != ds->mtime_ns)
      return util_errf(err, errlen,
                       "%s: the file was modified after it was opened (written over in place) "
                       "when reading sample %lld of %s; a data set must not change while a run "
                       "reads it",
                       ds->path, (long long)i, dset);
  }
  return 0;
}

/* Raw sample i of one file into dst (h, w, c). */
static int file_read_raw(data_dataset *ds, int64_t i, uint8_t *dst, char *err, size_t errlen) {
  hsize_t start[4] = {(hsize_t)i, 0, 0, 0};
  hsize_t count[4] = {1, (hsize_t)ds->h, (hsize_t)ds->w, (hsize_t)ds->c};
  hid_t fs = H5Dget_space(ds->images_id);
  hid_t ms = H5Screate_simple(4, count, NULL);
  herr_t st = -1;
  if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    st = H5Dread(ds->images_id, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, dst);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  if (check_truncated(ds, i, "/images", err, errlen) != 0) return -1;
  if (st < 0)
    return util_errf(err, errlen,
                     "%s: cannot read sample %lld of /images (truncated or corrupt file?)",
                     ds->path, (long long)i);
  return 0;
}

/* JPEG sample i of one file: its bytes into dst (len bytes). */
static int file_read_jpeg(data_dataset *ds, int64_t i, uint8_t *dst, size_t len, char *err,
                          size_t errlen) {
  hsize_t start = (hsize_t)ds->offsets[i], count = (hsize_t)len;
  hid_t fs = H5Dget_space(ds->images_id);
  hid_t ms = H5Screate_simple(1, &count, NULL);
  herr_t st = -1;
  if (fs >= 0 && ms >= 0 &&
      H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0)
    st = H5Dread(ds->images_id, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, dst);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  if (check_truncated(ds, i, "/jpeg", err, errlen) != 0) return -1;
  if (st < 0)
    return util_errf(err, errlen,
                     "%s: cannot read sample %lld of /jpeg (truncated or corrupt file?)", ds->path,
                     (long long)i);
  return 0;
}

const char *data_dataset_locate(const data_dataset *ds, int64_t i, int64_t *local) {
  if (ds->num_shards == 0) {
    *local = i;
    return ds->path;
  }
  int lo = 0, hi = ds->num_shards - 1; /* the last shard whose first index <= i */
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (ds->shard_first[mid] <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  *local = i - ds->shard_first[lo];
  return ds->shards[lo].path;
}

/* The shard holding global sample i (or ds itself) and i's index in it. */
static data_dataset *shard_of(data_dataset *ds, int64_t i, int64_t *local) {
  if (ds->num_shards == 0) {
    *local = i;
    return ds;
  }
  const char *p = data_dataset_locate(ds, i, local);
  for (int k = 0; k < ds->num_shards; k++)
    if (ds->shards[k].path == p) return &ds->shards[k];
  return ds; /* not reached */
}

/* Appends "(sample G of the N shards)" to a shard's message. */
static int shard_context(const data_dataset *ds, int64_t i, char *err, size_t errlen) {
  if (ds->num_shards > 0 && err && errlen) {
    size_t n = strlen(err);
    snprintf(err + n, errlen - n, " (sample %lld of the %d shards read as one)", (long long)i,
             ds->num_shards);
  }
  return -1;
}

void data_dataset_shape(const data_dataset *ds, int64_t i, int *h, int *w) {
  if (ds->shapes) {
    *h = ds->shapes[2 * i], *w = ds->shapes[2 * i + 1];
  } else {
    *h = ds->h, *w = ds->w;
  }
}

static int check_index(const data_dataset *ds, int64_t i, char *err, size_t errlen) {
  if (i < 0 || i >= ds->n)
    return util_errf(err, errlen, "%s: sample index %lld is out of range [0, %lld)", ds->path,
                     (long long)i, (long long)ds->n);
  if (ds->num_shards == 0 && ds->images_id <= 0)
    return util_errf(err, errlen, "%s: dataset is not open", ds->path);
  return 0;
}

int data_dataset_read_bytes(data_dataset *ds, int64_t i, uint8_t **buf, size_t *cap, size_t *len,
                            char *err, size_t errlen) {
  if (check_index(ds, i, err, errlen) != 0) return -1;
  int64_t li;
  data_dataset *f = shard_of(ds, i, &li);
  size_t need = f->encoding == DATA_ENCODING_JPEG ? (size_t)(f->offsets[li + 1] - f->offsets[li])
                                                  : (size_t)f->h * f->w * f->c;
  if (need > *cap) {
    uint8_t *b = realloc(*buf, need);
    if (!b)
      return util_errf(err, errlen, "%s: out of memory reading sample %lld", f->path,
                       (long long)li);
    *buf = b, *cap = need;
  }
  *len = need;
  data_hdf5_quiet();
  int rc = f->encoding == DATA_ENCODING_JPEG ? file_read_jpeg(f, li, *buf, need, err, errlen)
                                             : file_read_raw(f, li, *buf, err, errlen);
  return rc != 0 ? shard_context(ds, i, err, errlen) : 0;
}

int data_dataset_read(data_dataset *ds, int64_t i, uint8_t *dst, char *err, size_t errlen) {
  if (check_index(ds, i, err, errlen) != 0) return -1;
  if (ds->encoding == DATA_ENCODING_RAW) {
    int64_t li;
    data_dataset *f = shard_of(ds, i, &li);
    data_hdf5_quiet();
    return file_read_raw(f, li, dst, err, errlen) != 0 ? shard_context(ds, i, err, errlen) : 0;
  }
  uint8_t *buf = NULL;
  size_t cap = 0, len = 0;
  int rc = data_dataset_read_bytes(ds, i, &buf, &cap, &len, err, errlen);
  data_image img;
  memset(&img, 0, sizeof img);
  if (rc == 0) rc = data_dataset_decode(ds, i, buf, len, 8, &img, err, errlen);
  free(buf);
  if (rc == 0) memcpy(dst, img.pixels, (size_t)img.w * img.h * img.c);
  data_image_free(&img);
  return rc;
}

int data_dataset_decode(const data_dataset *ds, int64_t i, const uint8_t *buf, size_t len,
                        int scale_num, data_image *img, char *err, size_t errlen) {
  int64_t li;
  const char *p = data_dataset_locate(ds, i, &li);
  char name[4400];
  snprintf(name, sizeof name, "%s: sample %lld of /jpeg", p, (long long)li);
  if (data_jpeg_decode_scaled(buf, len, name, scale_num, img, err, errlen) != 0)
    return shard_context(ds, i, err, errlen);
  int h, w;
  data_dataset_shape(ds, i, &h, &w);
  if (img->full_w != w || img->full_h != h || img->c != ds->c) {
    util_errf(err, errlen, "%s: the JPEG is %dx%dx%d but /shapes and channels say %dx%dx%d", name,
              img->full_w, img->full_h, img->c, w, h, ds->c);
    data_image_free(img);
    return shard_context(ds, i, err, errlen);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

struct data_writer {
  char path[4096], tmp[4200];
  hid_t file, images;
  int h, w, c, num_classes;
  char **names;    /* (num_classes), owned copies */
  int chunk_n;     /* images per chunk */
  uint8_t *chunk;  /* (chunk_n, h, w, c): images not yet written */
  int fill;        /* images in chunk */
  int64_t n;       /* images appended */
  int32_t *labels; /* (cap) */
  int64_t cap;
  uint64_t sum[3], sumsq[3]; /* per channel, exact: fits 2^64 for any realistic N */
  uint64_t pixels;           /* pixels summed (per channel) */
  /* JPEG files: the bytes not yet written, and each image's offset and shape */
  int jpeg;
  uint8_t *stage;
  size_t stage_fill, stage_cap;
  int64_t total;    /* bytes appended */
  int64_t *offsets; /* (cap + 1) */
  int32_t *shapes;  /* (cap, 2) */
};

#define JPEG_CHUNK_BYTES 65536 /* /jpeg's chunks: one image spans one or two */

static void writer_free(data_writer *wr) {
  if (!wr) return;
  if (wr->names)
    for (int i = 0; i < wr->num_classes; i++) free(wr->names[i]);
  free(wr->names);
  free(wr->chunk);
  free(wr->labels);
  free(wr->stage);
  free(wr->offsets);
  free(wr->shapes);
  free(wr);
}

/* Closes an aborted write's handles: the file is emptied first (it is about
 * to be removed), so that the closes' last flushes fit on a full disk. */
static void writer_close_h5(data_writer *wr) {
  data_hdf5_discard(wr->file);
  if (wr->images > 0) H5Dclose(wr->images);
  data_hdf5_close(wr->file);
  wr->images = wr->file = -1;
}

/* The writer and its "<path>.tmp" file; with jpeg, without /images (the
 * JPEG writer makes /jpeg). */
static int writer_open(const char *path, int h, int w, int c, int num_classes,
                       const char *const *class_names, int compress, int jpeg, data_writer **out,
                       char *err, size_t errlen);

int data_writer_create(const char *path, int h, int w, int c, int num_classes,
                       const char *const *class_names, int compress, data_writer **out, char *err,
                       size_t errlen) {
  return writer_open(path, h, w, c, num_classes, class_names, compress, 0, out, err, errlen);
}

static int writer_open(const char *path, int h, int w, int c, int num_classes,
                       const char *const *class_names, int compress, int jpeg, data_writer **out,
                       char *err, size_t errlen) {
  *out = NULL;
  if (h <= 0 || w <= 0 || h > 65535 || w > 65535 || (c != 1 && c != 3))
    return util_errf(err, errlen, "%s: cannot store images of %dx%dx%d", path, h, w, c);
  if (num_classes <= 0) return util_errf(err, errlen, "%s: num_classes = %d", path, num_classes);
  if (compress < 0 || compress > 9)
    return util_errf(err, errlen, "%s: compression level %d is not in 0..9", path, compress);
  if (strlen(path) >= 4096) return util_errf(err, errlen, "%s: path too long", path);
  data_writer *wr = calloc(1, sizeof *wr);
  if (!wr) return util_errf(err, errlen, "%s: out of memory", path);
  wr->file = wr->images = -1;
  snprintf(wr->path, sizeof wr->path, "%s", path);
  snprintf(wr->tmp, sizeof wr->tmp, "%s.tmp", path);
  wr->h = h, wr->w = w, wr->c = c, wr->num_classes = num_classes;
  size_t img = (size_t)h * w * c;
  wr->chunk_n = img >= CHUNK_TARGET_BYTES ? 1 : (int)(CHUNK_TARGET_BYTES / img);
  wr->names = calloc((size_t)num_classes, sizeof(char *));
  wr->chunk = malloc((size_t)wr->chunk_n * img);
  if (!wr->names || !wr->chunk) {
    writer_free(wr);
    return util_errf(err, errlen, "%s: out of memory", path);
  }
  for (int i = 0; i < num_classes; i++) {
    wr->names[i] = strdup(class_names && class_names[i] ? class_names[i] : "");
    if (!wr->names[i]) {
      writer_free(wr);
      return util_errf(err, errlen, "%s: out of memory", path);
    }
  }
  data_hdf5_quiet();
  wr->file = H5Fcreate(wr->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (wr->file < 0) {
    int e = errno;
    unlink(wr->tmp); /* H5Fcreate may leave an empty file behind (a full disk) */
    writer_free(wr);
    return util_errf(err, errlen, "%s.tmp: cannot create (%s)", path,
                     e ? strerror(e) : "HDF5 error");
  }
  if (jpeg) {
    *out = wr;
    return 0;
  }
  hsize_t dims[4] = {0, (hsize_t)h, (hsize_t)w, (hsize_t)c};
  hsize_t maxd[4] = {H5S_UNLIMITED, (hsize_t)h, (hsize_t)w, (hsize_t)c};
  hsize_t chunk[4] = {(hsize_t)wr->chunk_n, (hsize_t)h, (hsize_t)w, (hsize_t)c};
  hid_t sp = H5Screate_simple(4, dims, maxd);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_obj_track_times(dcpl, 0); /* no timestamps: the same input gives the same bytes */
  H5Pset_chunk(dcpl, 4, chunk);
  if (compress > 0) H5Pset_deflate(dcpl, (unsigned)compress);
  wr->images = H5Dcreate2(wr->file, "/images", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(sp);
  if (wr->images < 0) {
    data_writer_abort(wr);
    return util_errf(err, errlen, "%s.tmp: cannot create /images", path);
  }
  *out = wr;
  return 0;
}

int data_writer_create_jpeg(const char *path, int c, int num_classes,
                            const char *const *class_names, data_writer **out, char *err,
                            size_t errlen) {
  *out = NULL;
  if (c != 3)
    return util_errf(err, errlen, "%s: JPEG files hold RGB images, not %d channels", path, c);
  data_writer *wr; /* h, w 1: the raw checks pass; every image has its own size */
  if (writer_open(path, 1, 1, c, num_classes, class_names, 0, 1, &wr, err, errlen) != 0) return -1;
  wr->jpeg = 1;
  wr->stage_cap = JPEG_CHUNK_BYTES;
  wr->stage = malloc(wr->stage_cap);
  wr->offsets = malloc(1025 * sizeof(int64_t));
  wr->shapes = malloc(1024 * 2 * sizeof(int32_t));
  hsize_t dims = 0, maxd = H5S_UNLIMITED, chunk = JPEG_CHUNK_BYTES;
  hid_t sp = H5Screate_simple(1, &dims, &maxd);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_obj_track_times(dcpl, 0);
  H5Pset_chunk(dcpl, 1, &chunk);
  wr->images = H5Dcreate2(wr->file, "/jpeg", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(sp);
  if (wr->images < 0 || !wr->stage || !wr->offsets || !wr->shapes) {
    data_writer_abort(wr);
    return util_errf(err, errlen, "%s.tmp: cannot create /jpeg", path);
  }
  wr->offsets[0] = 0;
  *out = wr;
  return 0;
}

/* Writes the staged JPEG bytes at [total - stage_fill, total). */
static int writer_flush_jpeg(data_writer *wr, char *err, size_t errlen) {
  if (wr->stage_fill == 0) return 0;
  hsize_t dims = (hsize_t)wr->total, start = (hsize_t)(wr->total - (int64_t)wr->stage_fill),
          count = (hsize_t)wr->stage_fill;
  errno = 0;
  herr_t st = H5Dset_extent(wr->images, &dims);
  hid_t fs = st >= 0 ? H5Dget_space(wr->images) : -1;
  hid_t ms = H5Screate_simple(1, &count, NULL);
  st = -1;
  if (fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0)
    st = H5Dwrite(wr->images, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, wr->stage);
  if (fs >= 0) H5Sclose(fs);
  H5Sclose(ms);
  if (st < 0)
    return util_errf(err, errlen, "%s: cannot write the JPEG bytes of images up to %lld (%s)",
                     wr->tmp, (long long)wr->n, errno ? strerror(errno) : "HDF5 error");
  wr->stage_fill = 0;
  return 0;
}

void data_pixel_sums(const uint8_t *pixels, size_t n, int c, uint64_t sum[3], uint64_t sumsq[3]) {
  for (int ch = 0; ch < c; ch++) {
    uint64_t s = 0, q = 0;
    for (size_t k = (size_t)ch; k < n * (size_t)c; k += (size_t)c) {
      uint32_t v = pixels[k];
      s += v;
      q += v * v;
    }
    sum[ch] = s, sumsq[ch] = q;
  }
}

/* Room for one more label (and offset and shape). */
static int writer_grow(data_writer *wr, char *err, size_t errlen) {
  if (wr->n < wr->cap) return 0;
  int64_t cap = wr->cap ? 2 * wr->cap : 1024;
  int32_t *l = realloc(wr->labels, (size_t)cap * sizeof *l);
  if (l) wr->labels = l;
  int ok = l != NULL;
  if (ok && wr->jpeg) {
    int64_t *o = realloc(wr->offsets, (size_t)(cap + 1) * sizeof *o);
    if (o) wr->offsets = o;
    int32_t *sh = o ? realloc(wr->shapes, (size_t)cap * 2 * sizeof *sh) : NULL;
    if (sh) wr->shapes = sh;
    ok = o && sh;
  }
  if (!ok)
    return util_errf(err, errlen, "%s: out of memory at image %lld", wr->path, (long long)wr->n);
  wr->cap = cap;
  return 0;
}

int data_writer_append_jpeg(data_writer *wr, const uint8_t *jpeg, size_t len, int h, int w,
                            const uint64_t sum[3], const uint64_t sumsq[3], int32_t label,
                            char *err, size_t errlen) {
  if (!wr->jpeg) return util_errf(err, errlen, "%s: not a JPEG file", wr->path);
  if (label < 0 || label >= wr->num_classes)
    return util_errf(err, errlen, "%s: label %d of image %lld is out of range [0, %d)", wr->path,
                     label, (long long)wr->n, wr->num_classes);
  if (h < 1 || w < 1 || h > 65535 || w > 65535 || len == 0)
    return util_errf(err, errlen, "%s: image %lld of %dx%d (%zu bytes) cannot be stored", wr->path,
                     (long long)wr->n, w, h, len);
  if (writer_grow(wr, err, errlen) != 0) return -1;
  size_t done = 0;
  while (done < len) { /* through the stage, one chunk at a time */
    size_t k = wr->stage_cap - wr->stage_fill;
    if (k > len - done) k = len - done;
    memcpy(wr->stage + wr->stage_fill, jpeg + done, k);
    wr->stage_fill += k, wr->total += (int64_t)k, done += k;
    if (wr->stage_fill == wr->stage_cap && writer_flush_jpeg(wr, err, errlen) != 0) return -1;
  }
  for (int c = 0; c < wr->c; c++) wr->sum[c] += sum[c], wr->sumsq[c] += sumsq[c];
  wr->pixels += (uint64_t)h * (uint64_t)w;
  wr->shapes[2 * wr->n] = h, wr->shapes[2 * wr->n + 1] = w;
  wr->labels[wr->n++] = label;
  wr->offsets[wr->n] = wr->total;
  return 0;
}

/* Writes the buffered images at [n - fill, n). */
static int writer_flush(data_writer *wr, char *err, size_t errlen) {
  if (wr->jpeg) return writer_flush_jpeg(wr, err, errlen);
  if (wr->fill == 0) return 0;
  hsize_t dims[4] = {(hsize_t)wr->n, (hsize_t)wr->h, (hsize_t)wr->w, (hsize_t)wr->c};
  hsize_t start[4] = {(hsize_t)(wr->n - wr->fill), 0, 0, 0};
  hsize_t count[4] = {(hsize_t)wr->fill, (hsize_t)wr->h, (hsize_t)wr->w, (hsize_t)wr->c};
  errno = 0;
  herr_t st = H5Dset_extent(wr->images, dims);
  hid_t fs = st >= 0 ? H5Dget_space(wr->images) : -1;
  hid_t ms = H5Screate_simple(4, count, NULL);
  st = -1;
  if (fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    st = H5Dwrite(wr->images, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, wr->chunk);
  if (fs >= 0) H5Sclose(fs);
  H5Sclose(ms);
  if (st < 0)
    return util_errf(err, errlen, "%s: cannot write images %lld..%lld (%s)", wr->tmp,
                     (long long)(wr->n - wr->fill), (long long)(wr->n - 1),
                     errno ? strerror(errno) : "HDF5 error");
  wr->fill = 0;
  return 0;
}

int data_writer_append(data_writer *wr, const uint8_t *pixels, int32_t label, char *err,
                       size_t errlen) {
  if (wr->jpeg) return util_errf(err, errlen, "%s: a JPEG file takes encoded images", wr->path);
  if (label < 0 || label >= wr->num_classes)
    return util_errf(err, errlen, "%s: label %d of image %lld is out of range [0, %d)", wr->path,
                     label, (long long)wr->n, wr->num_classes);
  if (writer_grow(wr, err, errlen) != 0) return -1;
  wr->pixels += (uint64_t)wr->h * (uint64_t)wr->w;
  size_t img = (size_t)wr->h * wr->w * wr->c;
  uint8_t *dst = wr->chunk + (size_t)wr->fill * img;
  memcpy(dst, pixels, img);
  for (int ch = 0; ch < wr->c; ch++) {
    uint64_t s = 0, q = 0;
    for (size_t k = (size_t)ch; k < img; k += (size_t)wr->c) {
      uint32_t v = pixels[k];
      s += v;
      q += v * v;
    }
    wr->sum[ch] += s;
    wr->sumsq[ch] += q;
  }
  wr->labels[wr->n++] = label;
  wr->fill++;
  return wr->fill == wr->chunk_n ? writer_flush(wr, err, errlen) : 0;
}

static herr_t write_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n,
                         const void *v) {
  hsize_t dims = (hsize_t)n;
  hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dims, NULL);
  hid_t a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = a >= 0 ? H5Awrite(a, mtype, v) : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  return st;
}

/* Writes labels, classes and the root attributes. */
static int writer_metadata(data_writer *wr) {
  hid_t f = wr->file;
  hsize_t n = (hsize_t)wr->n, k = (hsize_t)wr->num_classes;
  hid_t sp = H5Screate_simple(1, &n, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_obj_track_times(dcpl, 0);
  hid_t d = H5Dcreate2(f, "/labels", H5T_STD_I32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  herr_t st =
      d >= 0 ? H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, wr->labels) : -1;
  if (d >= 0) H5Dclose(d);
  H5Sclose(sp);
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, H5T_VARIABLE);
  H5Tset_cset(str, H5T_CSET_UTF8);
  sp = H5Screate_simple(1, &k, NULL);
  d = H5Dcreate2(f, "/classes", str, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (st >= 0) st = d >= 0 ? H5Dwrite(d, str, H5S_ALL, H5S_ALL, H5P_DEFAULT, wr->names) : -1;
  if (d >= 0) H5Dclose(d);
  H5Sclose(sp);

  if (wr->jpeg && st >= 0) { /* /offsets int64 [N + 1], /shapes int32 [N, 2] */
    hsize_t no = n + 1, ns[2] = {n, 2};
    sp = H5Screate_simple(1, &no, NULL);
    d = H5Dcreate2(f, "/offsets", H5T_STD_I64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    st = d >= 0 ? H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, wr->offsets) : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(2, ns, NULL);
    d = H5Dcreate2(f, "/shapes", H5T_STD_I32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (st >= 0)
      st = d >= 0 ? H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, wr->shapes) : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
  }
  H5Pclose(dcpl);

  const char *fmt = DATA_FORMAT_NAME, *enc = wr->jpeg ? "jpeg" : "raw";
  int32_t version = wr->jpeg ? DATA_FORMAT_VERSION : DATA_FORMAT_VERSION_RAW, nc = wr->num_classes,
          ch = wr->c;
  float mean[3], sd[3];
  data_stats_from_sums(wr->sum, wr->sumsq, (double)wr->pixels, wr->c, mean, sd);
  uint64_t cnt = wr->pixels;
  if (st >= 0) st = write_attr(f, "format", str, str, 0, &fmt);
  if (st >= 0) st = write_attr(f, "version", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &version);
  if (st >= 0 && wr->jpeg) st = write_attr(f, "encoding", str, str, 0, &enc);
  if (st >= 0 && wr->jpeg) st = write_attr(f, "channels", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &ch);
  if (st >= 0) st = write_attr(f, "pixel_count", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &cnt);
  if (st >= 0) st = write_attr(f, "pixel_sum", H5T_STD_U64LE, H5T_NATIVE_UINT64, wr->c, wr->sum);
  if (st >= 0)
    st = write_attr(f, "pixel_sumsq", H5T_STD_U64LE, H5T_NATIVE_UINT64, wr->c, wr->sumsq);
  if (st >= 0) st = write_attr(f, "num_classes", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &nc);
  if (st >= 0) st = write_attr(f, "mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, wr->c, mean);
  if (st >= 0) st = write_attr(f, "std", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, wr->c, sd);
  H5Tclose(str);
  return st < 0 ? -1 : 0;
}

/* fsync a file or directory by path; returns 0 or -1 with errno. */
static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

/* "<dir of path>" into dir, for syncing a rename. */
static void dir_of(const char *path, char *dir, size_t len) {
  snprintf(dir, len, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash)
    slash == dir ? (void)(slash[1] = '\0') : (void)(*slash = '\0');
  else
    snprintf(dir, len, ".");
}

int data_commit_tmp(const char *path, char *err, size_t errlen) {
  char tmp[4200], dir[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return util_errf(err, errlen, "%s: cannot rename to %s: %s", tmp, path, strerror(e));
  }
  dir_of(path, dir, sizeof dir);
  fsync_path(dir); /* best effort: the file itself is whole */
  return 0;
}

int data_writer_finish(data_writer *wr, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s", wr->path);
  if (data_writer_finish_tmp(wr, err, errlen) != 0) return -1;
  return data_commit_tmp(path, err, errlen);
}

int data_writer_finish_tmp(data_writer *wr, char *err, size_t errlen) {
  data_hdf5_quiet();
  if (wr->n == 0) {
    util_errf(err, errlen, "%s: no images to write (zero samples)", wr->path);
    data_writer_abort(wr);
    return -1;
  }
  if (writer_flush(wr, err, errlen) != 0) {
    data_writer_abort(wr);
    return -1;
  }
  /* Everything is flushed before the close, so that a full disk shows here,
   * where the write can still be abandoned cleanly, rather than in H5Fclose
   * (see data_hdf5_close). */
  errno = 0;
  if (writer_metadata(wr) != 0 || H5Fflush(wr->file, H5F_SCOPE_GLOBAL) < 0) {
    util_errf(err, errlen, "%s: cannot write /labels, /classes or the attributes (%s)", wr->tmp,
              errno ? strerror(errno) : "HDF5 error");
    data_writer_abort(wr);
    return -1;
  }
  errno = 0;
  herr_t st = H5Dclose(wr->images);
  wr->images = -1;
  if (data_hdf5_close(wr->file) != 0) st = -1;
  wr->file = -1;
  if (st < 0) {
    util_errf(err, errlen, "%s: cannot close (%s)", wr->tmp,
              errno ? strerror(errno) : "HDF5 error");
    data_writer_abort(wr);
    return -1;
  }
  if (fsync_path(wr->tmp) != 0) {
    util_errf(err, errlen, "%s: cannot sync to disk: %s", wr->tmp, strerror(errno));
    data_writer_abort(wr);
    return -1;
  }
  writer_free(wr);
  return 0;
}

void data_shard_path(const char *out, int s, int k, char *buf, size_t len) {
  size_t n = strlen(out);
  int ext = n >= 3 && strcmp(out + n - 3, ".h5") == 0;
  snprintf(buf, len, "%.*s-%05d-of-%05d.h5", (int)(ext ? n - 3 : n), out, s, k);
}

void data_writer_abort(data_writer *wr) {
  if (!wr) return;
  data_hdf5_quiet();
  writer_close_h5(wr);
  unlink(wr->tmp);
  writer_free(wr);
}
