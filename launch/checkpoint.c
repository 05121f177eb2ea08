/*
 * launch/checkpoint.c: HDF5 checkpoints, written atomically and verified at
 * load (format, version, completeness marker, shapes, checksum).
 */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "util.h"

void (*ckpt_test_on_tensor)(int64_t hdf5_file, long written) = NULL;

/* HDF5 prints its own error stack by default; we report errors ourselves. */

/* FNV-1a over 64-bit words (a byte-wise FNV of 0.5 GB would cost a second):
 * detects truncation and bit rot, not tampering. */
static uint64_t checksum_update(uint64_t h, const float *data, size_t count) {
  const uint32_t *words = (const uint32_t *)data;
  size_t i = 0;
  for (; i + 1 < count; i += 2) {
    uint64_t w = (uint64_t)words[i] | ((uint64_t)words[i + 1] << 32);
    h = (h ^ w) * 0x100000001B3ull;
  }
  if (i < count) h = (h ^ (uint64_t)words[i]) * 0x100000001B3ull;
  return h;
}

/* ------------------------------------------------------------------------ */
/* Attribute helpers                                                         */

static int attr_write(hid_t loc, const char *name, hid_t type, int n, const void *value) {
  hsize_t dim = (hsize_t)n;
  hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
  hid_t attr = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = attr >= 0 ? H5Awrite(attr, type, value) : -1;
  if (attr >= 0) H5Aclose(attr);
  H5Sclose(space);
  return st < 0 ? -1 : 0;
}

static int attr_write_string(hid_t loc, const char *name, const char *value) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  int rc = attr_write(loc, name, type, 1, &value);
  H5Tclose(type);
  return rc;
}

/* Reads n values of a numeric attribute into value (memory type `type`).
 * The stored type must be of type's class (integer or float: a float is
 * never silently truncated into a step) and hold exactly n values.
 * Returns 0, or -1 if absent or not so. */
static int attr_read(hid_t loc, const char *name, hid_t type, int n, void *value) {
  if (H5Aexists(loc, name) <= 0) return -1;
  hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
  if (attr < 0) return -1;
  hid_t space = H5Aget_space(attr), ftype = H5Aget_type(attr);
  hssize_t points = space >= 0 && H5Sget_simple_extent_type(space) != H5S_NULL
                        ? H5Sget_simple_extent_npoints(space)
                        : -1;
  int same_class = ftype >= 0 && H5Tget_class(ftype) == H5Tget_class(type);
  if (space >= 0) H5Sclose(space);
  if (ftype >= 0) H5Tclose(ftype);
  herr_t st = points == n && same_class ? H5Aread(attr, type, value) : -1;
  H5Aclose(attr);
  return st < 0 ? -1 : 0;
}

/* Returns a malloc'd copy of a scalar string attribute (fixed or variable
 * length, fixed at most 16 MiB), or NULL if it is absent or not one string.
 * A variable-length one is checked first (data_hdf5_check_vlen): when its
 * stored form is corrupt, NULL with *corrupt = 1 and why filled. */
static char *attr_read_string_checked(hid_t loc, const char *name, int *corrupt, char *why,
                                      size_t whylen) {
  *corrupt = 0;
  if (H5Aexists(loc, name) <= 0) return NULL;
  hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
  if (attr < 0) return NULL;
  hid_t ftype = H5Aget_type(attr), space = H5Aget_space(attr);
  int one = space >= 0 && H5Sget_simple_extent_type(space) != H5S_NULL &&
            H5Sget_simple_extent_npoints(space) == 1;
  if (space >= 0) H5Sclose(space);
  char *out = NULL;
  if (ftype >= 0 && one && H5Tget_class(ftype) == H5T_STRING) {
    if (H5Tis_variable_str(ftype) > 0) {
      hid_t mtype = H5Tcopy(H5T_C_S1);
      H5Tset_size(mtype, H5T_VARIABLE);
      H5Tset_cset(mtype, H5Tget_cset(ftype));
      char *s = NULL;
      if (data_hdf5_check_vlen(loc, name, why, whylen) != 0) {
        *corrupt = 1;
      } else if (H5Aread(attr, mtype, &s) >= 0 && s) {
        out = strdup(s);
      }
      if (s) H5free_memory(s);
      H5Tclose(mtype);
    } else {
      size_t size = H5Tget_size(ftype);
      out = size > 0 && size <= ((size_t)16 << 20) ? calloc(size + 1, 1) : NULL;
      hid_t mtype = H5Tcopy(H5T_C_S1);
      H5Tset_size(mtype, size + 1);
      H5Tset_cset(mtype, H5Tget_cset(ftype));
      if (out && H5Aread(attr, mtype, out) < 0) {
        free(out);
        out = NULL;
      }
      H5Tclose(mtype);
    }
  }
  if (ftype >= 0) H5Tclose(ftype);
  H5Aclose(attr);
  return out;
}

/* ------------------------------------------------------------------------ */
/* Saving                                                                    */

typedef struct {
  hid_t group;
  const float *base;
  uint64_t hash;
  int failed;
  char failed_name[64];
  hid_t file;
  long written;
} write_ctx;

static void write_tensor(void *vctx, const char *name, size_t offset, size_t count, int ndim,
                         const int *dims) {
  write_ctx *c = vctx;
  if (c->failed) return;
  hsize_t hd[4];
  for (int i = 0; i < ndim; i++) hd[i] = (hsize_t)dims[i];
  hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, hd, NULL);
  hid_t ds =
      H5Dcreate2(c->group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = ds >= 0
                  ? H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->base + offset)
                  : -1;
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  if (st < 0) {
    c->failed = 1;
    snprintf(c->failed_name, sizeof c->failed_name, "%s", name);
    return;
  }
  c->hash = checksum_update(c->hash, c->base + offset, count);
  c->written++;
  if (ckpt_test_on_tensor) ckpt_test_on_tensor(c->file, c->written);
}

static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static int write_class_names(hid_t file, char **names, int count) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  hsize_t dim = (hsize_t)count;
  hid_t space = H5Screate_simple(1, &dim, NULL);
  hid_t ds = H5Dcreate2(file, "classes", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = ds >= 0 ? H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, names) : -1;
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  H5Tclose(type);
  return st < 0 ? -1 : 0;
}

static uint64_t meta_checksum(const ckpt_meta *m, const int input[3]);

/* ------------------------------------------------------------------------ */
/* PowerSGD's state, /dist/powersgd: its pieces and their checksum           */

/* The state's datasets, in the order they are written, hashed and read:
 * per rank its error feedback and (unless shared) its warm start, then the
 * shared warm start. None when the state is absent. */
static int psgd_pieces(const ckpt_psgd *ps) {
  if (ps->error_floats == 0) return 0;
  return ps->ranks * (ps->shared_warm_start ? 1 : 2) + (ps->shared_warm_start ? 1 : 0);
}

/* Piece i's dataset name (relative to /dist/powersgd) and length. */
static size_t psgd_piece(const ckpt_psgd *ps, int i, char *name, size_t namelen) {
  int per = ps->shared_warm_start ? 1 : 2;
  if (i >= ps->ranks * per) {
    snprintf(name, namelen, "warm_start");
    return (size_t)ps->warm_start_floats;
  }
  int warm = i % per == 1;
  snprintf(name, namelen, "rank-%d/%s", i / per, warm ? "warm_start" : "error_feedback");
  return (size_t)(warm ? ps->warm_start_floats : ps->error_floats);
}

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ ((const uint8_t *)p)[i]) * 0x100000001B3ull;
  return h;
}

/* The group's checksum starts from its attributes' bytes. */
static uint64_t psgd_hash_start(const ckpt_psgd *ps) {
  uint64_t h = 0xCBF29CE484222325ull;
  h = fnv_bytes(h, &ps->ranks, sizeof ps->ranks);
  h = fnv_bytes(h, &ps->powersgd_rank, sizeof ps->powersgd_rank);
  h = fnv_bytes(h, &ps->start_step, 8);
  h = fnv_bytes(h, &ps->passes, 8);
  h = fnv_bytes(h, &ps->error_floats, 8);
  h = fnv_bytes(h, &ps->warm_start_floats, 8);
  return fnv_bytes(h, &ps->shared_warm_start, sizeof ps->shared_warm_start);
}

/* checksum_update over a piece that arrives in parts: a float left over
 * from an odd part waits for the next (pending); the piece's end hashes it
 * alone, as checksum_update over the whole piece would. */
typedef struct {
  uint64_t h;
  float pending;
  int has_pending;
} stream_hash;

static void stream_update(stream_hash *s, const float *v, size_t n) {
  if (n == 0) return;
  if (s->has_pending) { /* the word checksum_update would make of the two */
    uint32_t lo, hi;
    memcpy(&lo, &s->pending, 4);
    memcpy(&hi, v, 4);
    s->h = (s->h ^ ((uint64_t)lo | ((uint64_t)hi << 32))) * 0x100000001B3ull;
    s->has_pending = 0;
    v++;
    n--;
  }
  size_t even = n & ~(size_t)1;
  s->h = checksum_update(s->h, v, even);
  if (n > even) {
    s->pending = v[even];
    s->has_pending = 1;
  }
}

/* Writes (write) or reads buf to or from floats [at, at + n) of the 1-D
 * dataset ds. Returns 0, or -1 on HDF5's error. */
static int piece_io(hid_t ds, size_t at, size_t n, float *buf, int write) {
  hsize_t start = (hsize_t)at, count = (hsize_t)n;
  hid_t fspace = H5Dget_space(ds), mspace = H5Screate_simple(1, &count, NULL);
  herr_t st = fspace >= 0 && mspace >= 0
                  ? H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL)
                  : -1;
  if (st >= 0 && write) st = H5Dwrite(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, buf);
  if (st >= 0 && !write) st = H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, buf);
  if (mspace >= 0) H5Sclose(mspace);
  if (fspace >= 0) H5Sclose(fspace);
  return st < 0 ? -1 : 0;
}

static void stream_end_piece(stream_hash *s) {
  if (s->has_pending) s->h = checksum_update(s->h, &s->pending, 1);
  s->has_pending = 0;
}

/* ------------------------------------------------------------------------ */
/* Saving in stages                                                          */

struct ckpt_writer {
  char path[4200], tmp[4200];
  hid_t file;
  int ok, saved_errno;
  char failed_what[160]; /* the tensor or piece being written when it failed */
  write_ctx c;           /* the tensors' checksum */
  const nn_net *net;
  int has_momentum;
  const ckpt_meta *meta;
  /* /dist/powersgd */
  int has_psgd;
  ckpt_psgd ps;
  hid_t group;     /* /dist/powersgd */
  int piece;       /* the piece being written */
  size_t done;     /* its floats written */
  hid_t ds;        /* its dataset, open while it is written */
  stream_hash psh; /* the group's checksum */
};

/* Marks w failed (the first failure is the one reported). */
static void writer_fail(ckpt_writer *w, const char *fmt, ...) {
  if (!w->ok) return;
  w->ok = 0;
  if (!w->saved_errno) w->saved_errno = errno;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->failed_what, sizeof w->failed_what, fmt, ap);
  va_end(ap);
}

ckpt_writer *ckpt_save_begin(const char *path, const nn_net *net, const float *momentum,
                             const ckpt_meta *meta) {
  data_hdf5_quiet();
  ckpt_writer *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->ok = 1;
  w->file = w->group = w->ds = -1;
  w->net = net;
  w->meta = meta;
  w->has_momentum = momentum != NULL;
  snprintf(w->path, sizeof w->path, "%s", path);
  snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
  unlink(w->tmp);
  errno = 0;
  w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (w->file < 0) {
    w->ok = 0;
    w->saved_errno = errno ? errno : -1; /* -1: HDF5's error */
    unlink(w->tmp); /* H5Fcreate may leave an empty file behind (a full disk) */
    return w;
  }
  errno = 0; /* from here on, an errno is the write's (ENOSPC, EDQUOT, EIO) */
  write_ctx *c = &w->c;
  *c = (write_ctx){.hash = 0xCBF29CE484222325ull, .file = w->file};
  hid_t model = H5Gcreate2(w->file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  c->group = model;
  c->base = net->params;
  if (model < 0) writer_fail(w, "group /model");
  if (w->ok) nn_visit_params(net, write_tensor, c);
  /* Batch norm's running statistics beside the parameters, as in a state_dict. */
  c->base = net->buffers;
  if (w->ok && net->num_buffers) nn_visit_buffers(net, write_tensor, c);
  if (model >= 0) H5Gclose(model);
  if (w->ok && !c->failed && momentum) {
    hid_t opt = H5Gcreate2(w->file, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t mom = opt >= 0 ? H5Gcreate2(opt, "momentum", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    c->group = mom;
    c->base = momentum;
    if (mom < 0)
      writer_fail(w, "group /optimizer/momentum");
    else
      nn_visit_params(net, write_tensor, c);
    if (mom >= 0) H5Gclose(mom);
    if (opt >= 0) H5Gclose(opt);
  }
  if (c->failed) writer_fail(w, "tensor %s", c->failed_name);
  if (w->ok && meta->class_names && meta->num_classes > 0 &&
      write_class_names(w->file, meta->class_names, meta->num_classes) != 0)
    writer_fail(w, "/classes");
  return w;
}

void ckpt_save_psgd(ckpt_writer *w, const ckpt_psgd *ps) {
  if (!w || w->has_psgd) return;
  w->has_psgd = 1;
  w->ps = *ps;
  w->psh = (stream_hash){.h = psgd_hash_start(ps)};
  if (!w->ok) return;
  hid_t dist = H5Gcreate2(w->file, "dist", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  w->group = dist >= 0 ? H5Gcreate2(dist, "powersgd", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
  if (dist >= 0) H5Gclose(dist);
  int ok =
      w->group >= 0 && attr_write(w->group, "ranks", H5T_NATIVE_INT, 1, &ps->ranks) == 0 &&
      attr_write(w->group, "powersgd_rank", H5T_NATIVE_INT, 1, &ps->powersgd_rank) == 0 &&
      attr_write(w->group, "start_step", H5T_NATIVE_INT64, 1, &ps->start_step) == 0 &&
      attr_write(w->group, "passes", H5T_NATIVE_INT64, 1, &ps->passes) == 0 &&
      attr_write(w->group, "error_floats", H5T_NATIVE_UINT64, 1, &ps->error_floats) == 0 &&
      attr_write(w->group, "warm_start_floats", H5T_NATIVE_UINT64, 1, &ps->warm_start_floats) ==
          0 &&
      attr_write(w->group, "shared_warm_start", H5T_NATIVE_INT, 1, &ps->shared_warm_start) == 0;
  for (int k = 0; ok && ps->error_floats > 0 && k < ps->ranks; k++) {
    char name[32];
    snprintf(name, sizeof name, "rank-%d", k);
    hid_t g = H5Gcreate2(w->group, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ok = g >= 0;
    if (g >= 0) H5Gclose(g);
  }
  if (!ok) writer_fail(w, "group /dist/powersgd");
}

void ckpt_save_psgd_floats(ckpt_writer *w, const float *buf, size_t count) {
  if (!w || !w->has_psgd) return;
  int pieces = psgd_pieces(&w->ps);
  while (count > 0 && w->piece < pieces) {
    char name[64];
    size_t len = psgd_piece(&w->ps, w->piece, name, sizeof name);
    size_t take = len - w->done < count ? len - w->done : count;
    if (w->ok && w->done == 0) {
      hsize_t dim = (hsize_t)len;
      hid_t space = H5Screate_simple(1, &dim, NULL);
      w->ds =
          H5Dcreate2(w->group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      H5Sclose(space);
      if (w->ds < 0) writer_fail(w, "/dist/powersgd/%s", name);
    }
    if (w->ok && take > 0 && piece_io(w->ds, w->done, take, (float *)buf, 1) != 0)
      writer_fail(w, "/dist/powersgd/%s", name);
    stream_update(&w->psh, buf, take);
    buf += take;
    count -= take;
    w->done += take;
    if (w->done == len) { /* the piece is whole */
      stream_end_piece(&w->psh);
      if (w->ds >= 0) H5Dclose(w->ds);
      w->ds = -1;
      w->piece++;
      w->done = 0;
      if (w->ok) {
        w->c.written++;
        if (ckpt_test_on_tensor) ckpt_test_on_tensor(w->file, w->c.written);
      }
    }
  }
  if (count > 0) writer_fail(w, "/dist/powersgd: %zu floats beyond the state", count);
}

/* Closes what is open, then removes tmp (the save failed). */
static void writer_abandon(ckpt_writer *w) {
  if (w->ds >= 0) H5Dclose(w->ds);
  if (w->group >= 0) H5Gclose(w->group);
  w->ds = w->group = -1;
  if (w->file >= 0) {
    data_hdf5_discard(w->file); /* room for the close's own flush on a full disk */
    data_hdf5_close(w->file);
  }
  w->file = -1;
  unlink(w->tmp);
}

int ckpt_save_end(ckpt_writer *w, char *err, size_t errlen) {
  if (!w) {
    util_errf(err, errlen,
              "checkpoint: out of memory to write it; the previous checkpoint is kept");
    return -1;
  }
  const char *path = w->path, *tmp = w->tmp;
  if (w->file < 0) {
    util_errf(err, errlen, "checkpoint %s: cannot create %s: %s; the previous checkpoint is kept",
              path, tmp, w->saved_errno > 0 ? strerror(w->saved_errno) : "HDF5 error");
    free(w);
    return -1;
  }
  if (w->has_psgd && w->piece < psgd_pieces(&w->ps))
    writer_fail(w, "/dist/powersgd (the state stopped short at piece %d of %d)", w->piece,
                psgd_pieces(&w->ps));
  if (w->ok && w->has_psgd) {
    uint64_t h = w->psh.h;
    if (attr_write(w->group, "checksum", H5T_NATIVE_UINT64, 1, &h) != 0)
      writer_fail(w, "/dist/powersgd checksum");
  }
  if (w->group >= 0) H5Gclose(w->group);
  w->group = -1;
  const nn_net *net = w->net;
  const ckpt_meta *meta = w->meta;
  hid_t file = w->file;
  if (w->ok) {
    int version = CKPT_FORMAT_VERSION;
    int input[3] = {net->input.c, net->input.h, net->input.w};
    int ok = attr_write_string(file, "format", CKPT_FORMAT_NAME) == 0 &&
             attr_write(file, "version", H5T_NATIVE_INT, 1, &version) == 0 &&
             attr_write(file, "step", H5T_NATIVE_INT64, 1, &meta->step) == 0 &&
             attr_write(file, "epoch", H5T_NATIVE_INT64, 1, &meta->epoch) == 0 &&
             attr_write(file, "step_in_epoch", H5T_NATIVE_INT64, 1, &meta->step_in_epoch) == 0 &&
             attr_write(file, "seed", H5T_NATIVE_UINT64, 1, &meta->seed) == 0 &&
             attr_write_string(file, "arch", meta->arch) == 0 &&
             attr_write_string(file, "config", meta->config_yaml ? meta->config_yaml : "") == 0 &&
             attr_write(file, "num_classes", H5T_NATIVE_INT, 1, &net->num_classes) == 0 &&
             attr_write(file, "input", H5T_NATIVE_INT, 3, input) == 0 &&
             attr_write(file, "mean", H5T_NATIVE_FLOAT, 3, meta->mean) == 0 &&
             attr_write(file, "std", H5T_NATIVE_FLOAT, 3, meta->std) == 0 &&
             attr_write(file, "has_momentum", H5T_NATIVE_INT, 1, &w->has_momentum) == 0 &&
             (!meta->run_id[0] || attr_write_string(file, "run_id", meta->run_id) == 0) &&
             attr_write(file, "checksum", H5T_NATIVE_UINT64, 1, &w->c.hash) == 0;
    if (ok) {
      ckpt_meta covered = *meta;
      covered.num_classes = net->num_classes;
      uint64_t mh = meta_checksum(&covered, input);
      ok = attr_write(file, "meta_checksum", H5T_NATIVE_UINT64, 1, &mh) == 0;
    }
    /* The completeness marker goes last, after everything else reached the
     * file; it is flushed too, so that a full disk shows before the close (a
     * failed H5Fclose leaves HDF5 unusable, see data_hdf5_close). */
    if (ok) ok = H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0;
    if (ok) {
      int complete = 1;
      ok = attr_write(file, "complete", H5T_NATIVE_INT, 1, &complete) == 0 &&
           H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0;
    }
    if (!ok) writer_fail(w, "the attributes");
  }
  if (!w->ok) {
    util_errf(err, errlen,
              "checkpoint %s: writing %s failed at %s (%s); the previous checkpoint is kept", path,
              tmp, w->failed_what, w->saved_errno > 0 ? strerror(w->saved_errno) : "HDF5 error");
    writer_abandon(w);
    free(w);
    return -1;
  }
  int saved_errno = errno;
  int ok = data_hdf5_close(file) == 0;
  if (!ok && !saved_errno) saved_errno = errno;
  if (ok && fsync_path(tmp) != 0) {
    ok = 0;
    saved_errno = errno;
  }
  if (!ok) {
    util_errf(err, errlen, "checkpoint %s: writing %s failed (%s); the previous checkpoint is kept",
              path, tmp, saved_errno ? strerror(saved_errno) : "HDF5 error");
    unlink(tmp);
    free(w);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    util_errf(err, errlen, "checkpoint %s: cannot rename %s: %s", path, tmp, strerror(errno));
    unlink(tmp);
    free(w);
    return -1;
  }
  /* Make the rename itself durable. */
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = '\0';
    fsync_path(dir[0] ? dir : "/");
  } else {
    fsync_path(".");
  }
  free(w);
  return 0;
}

int ckpt_save(const char *path, const nn_net *net, const float *momentum, const ckpt_meta *meta,
              char *err, size_t errlen) {
  return ckpt_save_end(ckpt_save_begin(path, net, momentum, meta), err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */

static hid_t open_checked(const char *path, char *err, size_t errlen) {
  data_hdf5_quiet();
  if (access(path, R_OK) != 0) {
    util_errf(err, errlen, "checkpoint %s: %s", path, strerror(errno));
    return -1;
  }
  if (H5Fis_hdf5(path) <= 0) {
    util_errf(err, errlen, "checkpoint %s: not an HDF5 file (truncated or another format)", path);
    return -1;
  }
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) {
    util_errf(err, errlen, "checkpoint %s: cannot open as HDF5 (truncated or corrupt)", path);
    return -1;
  }
  char why[512];
  int corrupt;
  if (data_hdf5_check_attrs(file, why, sizeof why) != 0) {
    util_errf(err, errlen, "checkpoint %s: corrupt root attributes: %s", path, why);
    data_hdf5_close(file);
    return -1;
  }
  char *format = attr_read_string_checked(file, "format", &corrupt, why, sizeof why);
  if (corrupt) {
    util_errf(err, errlen, "checkpoint %s: attribute format is corrupt: %s", path, why);
    data_hdf5_close(file);
    return -1;
  }
  if (!format || strcmp(format, CKPT_FORMAT_NAME) != 0) {
    util_errf(err, errlen, "checkpoint %s: attribute format is '%s', expected '%s'", path,
              format ? format : "(missing)", CKPT_FORMAT_NAME);
    free(format);
    data_hdf5_close(file);
    return -1;
  }
  free(format);
  int version = 0;
  if (attr_read(file, "version", H5T_NATIVE_INT, 1, &version) != 0 || version < 1 ||
      version > CKPT_FORMAT_VERSION) {
    util_errf(err, errlen,
              "checkpoint %s: format version %d is not supported (this program reads up to %d)",
              path, version, CKPT_FORMAT_VERSION);
    data_hdf5_close(file);
    return -1;
  }
  int complete = 0;
  if (attr_read(file, "complete", H5T_NATIVE_INT, 1, &complete) != 0 || complete != 1) {
    util_errf(err, errlen, "checkpoint %s: incomplete (its writer was interrupted)", path);
    data_hdf5_close(file);
    return -1;
  }
  return file;
}

/* The checkpoint's /classes (count strings), NULL if absent or not so;
 * *corrupt = 1 (with why) when their stored form is corrupt. */
static char **read_class_names(hid_t file, int count, int *corrupt, char *why, size_t whylen) {
  *corrupt = 0;
  if (count <= 0 || H5Lexists(file, "classes", H5P_DEFAULT) <= 0) return NULL;
  hid_t ds = H5Dopen2(file, "classes", H5P_DEFAULT);
  if (ds < 0) return NULL;
  hid_t space = H5Dget_space(ds);
  hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
  if (space >= 0) H5Sclose(space);
  char **names = NULL;
  hid_t ftype = H5Dget_type(ds);
  int vlen = ftype >= 0 && H5Tget_class(ftype) == H5T_STRING && H5Tis_variable_str(ftype) > 0;
  if (n == count && vlen && data_hdf5_check_vlen(ds, NULL, why, whylen) != 0) {
    *corrupt = 1;
  } else if (n == count && vlen) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5Tget_cset(ftype));
    char **raw = calloc((size_t)count, sizeof(char *));
    if (raw && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0) {
      names = calloc((size_t)count, sizeof(char *));
      for (int i = 0; names && i < count; i++) names[i] = strdup(raw[i] ? raw[i] : "");
    }
    for (int i = 0; raw && i < count; i++) H5free_memory(raw[i]);
    free(raw);
    H5Tclose(type);
  }
  if (ftype >= 0) H5Tclose(ftype);
  H5Dclose(ds);
  return names;
}

/* FNV-1a 64 of the attributes that say where a run stands and what the
 * model takes, stored as "meta_checksum": a changed byte in them is refused
 * like one in a tensor. (Files written before it existed are range-checked
 * only.) */
static uint64_t meta_checksum(const ckpt_meta *m, const int input[3]) {
  uint64_t h = 0xCBF29CE484222325ull;
  const void *parts[] = {&m->step,        &m->epoch, &m->step_in_epoch, &m->seed,
                         &m->num_classes, input,     m->mean,           m->std};
  const size_t sizes[] = {
      8, 8, 8, 8, sizeof(int), 3 * sizeof(int), 3 * sizeof(float), 3 * sizeof(float)};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
    for (size_t i = 0; i < sizes[k]; i++)
      h = (h ^ ((const uint8_t *)parts[k])[i]) * 0x100000001B3ull;
  return h;
}

/* The largest step a checkpoint may hold: 2^40 steps, far beyond any run. */
#define CKPT_MAX_STEP ((int64_t)1 << 40)

/* Checks the attributes read into m against sane ranges; the message names
 * the attribute and its value. */
static int check_meta(const char *path, const ckpt_meta *m, const int input[3], char *err,
                      size_t errlen) {
  if (m->step < 0 || m->step > CKPT_MAX_STEP) {
    util_errf(err, errlen, "checkpoint %s: attribute step = %lld is out of range [0, 2^40]", path,
              (long long)m->step);
    return -1;
  }
  if (m->epoch < 0 || m->epoch > m->step) {
    util_errf(err, errlen, "checkpoint %s: attribute epoch = %lld is out of range [0, step = %lld]",
              path, (long long)m->epoch, (long long)m->step);
    return -1;
  }
  if (m->step_in_epoch < 0 || m->step_in_epoch > m->step) {
    util_errf(err, errlen,
              "checkpoint %s: attribute step_in_epoch = %lld is out of range [0, step = %lld]",
              path, (long long)m->step_in_epoch, (long long)m->step);
    return -1;
  }
  if (m->num_classes < 1 || m->num_classes > (1 << 24)) {
    util_errf(err, errlen, "checkpoint %s: attribute num_classes = %d is out of range [1, 2^24]",
              path, m->num_classes);
    return -1;
  }
  for (int i = 0; i < 3; i++) {
    if (input[i] < 1 || input[i] > 65535 || (i == 0 && input[0] > 4096)) {
      util_errf(err, errlen,
                "checkpoint %s: attribute input = [%d, %d, %d] (C, H, W) is out of range", path,
                input[0], input[1], input[2]);
      return -1;
    }
  }
  for (int i = 0; i < 3; i++) {
    if (!isfinite(m->mean[i])) {
      util_errf(err, errlen, "checkpoint %s: attribute mean[%d] = %g is not finite", path, i,
                (double)m->mean[i]);
      return -1;
    }
    if (!isfinite(m->std[i]) || !(m->std[i] > 0)) {
      util_errf(err, errlen, "checkpoint %s: attribute std[%d] = %g must be finite and > 0", path,
                i, (double)m->std[i]);
      return -1;
    }
  }
  return 0;
}

/* Reads one numeric attribute of read_meta_open, naming it when it is
 * missing or of the wrong kind. */
static int meta_attr(hid_t file, const char *path, const char *name, hid_t type, int n, void *value,
                     char *err, size_t errlen) {
  if (attr_read(file, name, type, n, value) == 0) return 0;
  util_errf(err, errlen, "checkpoint %s: attribute %s is missing or not %d %s value%s", path, name,
            n, H5Tget_class(type) == H5T_FLOAT ? "floating-point" : "integer", n == 1 ? "" : "s");
  return -1;
}

/* /dist/powersgd's attributes into m->psgd (m->has_psgd = 1), when the group
 * is there; each checked against its range, the message naming it. The
 * group's checksum (attributes and state) is verified by ckpt_load. */
static int read_psgd_meta(hid_t file, const char *path, ckpt_meta *m, char *err, size_t errlen) {
  m->has_psgd = 0;
  memset(&m->psgd, 0, sizeof m->psgd);
  if (H5Lexists(file, "dist", H5P_DEFAULT) <= 0 ||
      H5Lexists(file, "dist/powersgd", H5P_DEFAULT) <= 0)
    return 0;
  hid_t g = H5Gopen2(file, "dist/powersgd", H5P_DEFAULT);
  char why[512];
  if (g < 0 || data_hdf5_check_attrs(g, why, sizeof why) != 0) {
    util_errf(err, errlen, "checkpoint %s: group /dist/powersgd is corrupt%s%s", path,
              g < 0 ? "" : ": ", g < 0 ? "" : why);
    if (g >= 0) H5Gclose(g);
    return -1;
  }
  ckpt_psgd *ps = &m->psgd;
  const char *bad = NULL;
  if (attr_read(g, "ranks", H5T_NATIVE_INT, 1, &ps->ranks) != 0)
    bad = "ranks";
  else if (attr_read(g, "powersgd_rank", H5T_NATIVE_INT, 1, &ps->powersgd_rank) != 0)
    bad = "powersgd_rank";
  else if (attr_read(g, "start_step", H5T_NATIVE_INT64, 1, &ps->start_step) != 0)
    bad = "start_step";
  else if (attr_read(g, "passes", H5T_NATIVE_INT64, 1, &ps->passes) != 0)
    bad = "passes";
  else if (attr_read(g, "error_floats", H5T_NATIVE_UINT64, 1, &ps->error_floats) != 0)
    bad = "error_floats";
  else if (attr_read(g, "warm_start_floats", H5T_NATIVE_UINT64, 1, &ps->warm_start_floats) != 0)
    bad = "warm_start_floats";
  else if (attr_read(g, "shared_warm_start", H5T_NATIVE_INT, 1, &ps->shared_warm_start) != 0)
    bad = "shared_warm_start";
  H5Gclose(g);
  if (bad) {
    util_errf(err, errlen,
              "checkpoint %s: attribute /dist/powersgd %s is missing or not one integer value",
              path, bad);
    return -1;
  }
  char value[64] = "", range[64] = "";
  if (ps->ranks < 1 || ps->ranks > (1 << 24)) {
    bad = "ranks", snprintf(value, sizeof value, "%d", ps->ranks), snprintf(range, 64, "[1, 2^24]");
  } else if (ps->powersgd_rank < 1 || ps->powersgd_rank > 1024) {
    bad = "powersgd_rank", snprintf(value, sizeof value, "%d", ps->powersgd_rank);
    snprintf(range, sizeof range, "[1, 1024]");
  } else if (ps->start_step < 0 || ps->start_step > CKPT_MAX_STEP) {
    bad = "start_step", snprintf(value, sizeof value, "%lld", (long long)ps->start_step);
    snprintf(range, sizeof range, "[0, 2^40]");
  } else if (ps->passes != m->step) {
    bad = "passes", snprintf(value, sizeof value, "%lld", (long long)ps->passes);
    snprintf(range, sizeof range, "[step = %lld]", (long long)m->step);
  } else if (ps->error_floats > ((uint64_t)1 << 40)) {
    bad = "error_floats";
    snprintf(value, sizeof value, "%llu", (unsigned long long)ps->error_floats);
    snprintf(range, sizeof range, "[0, 2^40]");
  } else if (ps->warm_start_floats > ((uint64_t)1 << 40) ||
             (ps->warm_start_floats == 0) != (ps->error_floats == 0)) {
    bad = "warm_start_floats";
    snprintf(value, sizeof value, "%llu", (unsigned long long)ps->warm_start_floats);
    snprintf(range, sizeof range, "[1, 2^40] with error_floats, else 0");
  } else if (ps->shared_warm_start != 0 && ps->shared_warm_start != 1) {
    bad = "shared_warm_start", snprintf(value, sizeof value, "%d", ps->shared_warm_start);
    snprintf(range, sizeof range, "[0, 1]");
  }
  if (bad) {
    util_errf(err, errlen, "checkpoint %s: attribute /dist/powersgd %s = %s is out of range %s",
              path, bad, value, range);
    return -1;
  }
  m->has_psgd = 1;
  return 0;
}

static int read_meta_open(hid_t file, const char *path, ckpt_meta *m, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  int input[3] = {0, 0, 0};
  if (meta_attr(file, path, "step", H5T_NATIVE_INT64, 1, &m->step, err, errlen) ||
      meta_attr(file, path, "epoch", H5T_NATIVE_INT64, 1, &m->epoch, err, errlen) ||
      meta_attr(file, path, "step_in_epoch", H5T_NATIVE_INT64, 1, &m->step_in_epoch, err, errlen) ||
      meta_attr(file, path, "seed", H5T_NATIVE_UINT64, 1, &m->seed, err, errlen) ||
      meta_attr(file, path, "num_classes", H5T_NATIVE_INT, 1, &m->num_classes, err, errlen) ||
      meta_attr(file, path, "input", H5T_NATIVE_INT, 3, input, err, errlen) ||
      meta_attr(file, path, "mean", H5T_NATIVE_FLOAT, 3, m->mean, err, errlen) ||
      meta_attr(file, path, "std", H5T_NATIVE_FLOAT, 3, m->std, err, errlen))
    return -1;
  uint64_t stored;
  if (H5Aexists(file, "meta_checksum") > 0 &&
      (attr_read(file, "meta_checksum", H5T_NATIVE_UINT64, 1, &stored) != 0 ||
       stored != meta_checksum(m, input))) {
    util_errf(err, errlen,
              "checkpoint %s: attribute checksum mismatch (step, epoch, step_in_epoch, seed, "
              "num_classes, input, mean or std was changed: the file is corrupt)",
              path);
    return -1;
  }
  if (check_meta(path, m, input, err, errlen) != 0) return -1;
  if (read_psgd_meta(file, path, m, err, errlen) != 0) return -1;
  m->has_momentum = 0;
  attr_read(file, "has_momentum", H5T_NATIVE_INT, 1, &m->has_momentum);
  m->input = (nn_shape){input[0], input[1], input[2]};
  char why[512];
  int corrupt;
  char *arch = attr_read_string_checked(file, "arch", &corrupt, why, sizeof why);
  if (!corrupt) {
    snprintf(m->arch, sizeof m->arch, "%s", arch ? arch : "custom");
    free(arch);
    m->config_yaml = attr_read_string_checked(file, "config", &corrupt, why, sizeof why);
  }
  if (!corrupt) {
    char *run_id = attr_read_string_checked(file, "run_id", &corrupt, why, sizeof why);
    snprintf(m->run_id, sizeof m->run_id, "%s", run_id ? run_id : "");
    free(run_id);
  }
  if (!corrupt) m->class_names = read_class_names(file, m->num_classes, &corrupt, why, sizeof why);
  if (corrupt) {
    util_errf(err, errlen, "checkpoint %s: %s: %s", path,
              m->class_names || m->config_yaml ? "/classes"
                                               : "attribute arch, config, run_id or /classes",
              why);
    ckpt_meta_free(m);
    return -1;
  }
  return 0;
}

int ckpt_read_meta(const char *path, ckpt_meta *meta, char *err, size_t errlen) {
  hid_t file = open_checked(path, err, errlen);
  if (file < 0) return -1;
  int rc = read_meta_open(file, path, meta, err, errlen);
  data_hdf5_close(file);
  return rc;
}

typedef struct {
  hid_t group;
  float *base;
  const char *path;
  const char *prefix;
  uint64_t hash;
  int failed;
  char *err;
  size_t errlen;
} read_ctx;

static void read_tensor(void *vctx, const char *name, size_t offset, size_t count, int ndim,
                        const int *dims) {
  read_ctx *c = vctx;
  if (c->failed) return;
  if (H5Lexists(c->group, name, H5P_DEFAULT) <= 0) {
    util_errf(c->err, c->errlen, "checkpoint %s: %s/%s is missing (a checkpoint of another model?)",
              c->path, c->prefix, name);
    c->failed = 1;
    return;
  }
  hid_t ds = H5Dopen2(c->group, name, H5P_DEFAULT);
  hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
  hsize_t hd[8] = {0};
  int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  int same = rank == ndim;
  if (same) {
    H5Sget_simple_extent_dims(space, hd, NULL);
    for (int i = 0; i < ndim; i++) same &= hd[i] == (hsize_t)dims[i];
  }
  if (!same) {
    char want[64] = "", got[64] = "";
    for (int i = 0; i < ndim; i++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? "x" : "", dims[i]);
    for (int i = 0; i < rank && i < 8; i++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? "x" : "",
               (unsigned long long)hd[i]);
    util_errf(
        c->err, c->errlen,
        "checkpoint %s: %s/%s has shape %s, the model needs %s (a checkpoint of another model?)",
        c->path, c->prefix, name, got[0] ? got : "?", want);
    c->failed = 1;
  } else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->base + offset) < 0) {
    util_errf(c->err, c->errlen, "checkpoint %s: cannot read %s/%s (truncated or corrupt)", c->path,
              c->prefix, name);
    c->failed = 1;
  } else {
    c->hash = checksum_update(c->hash, c->base + offset, count);
    /* A NaN that ReLU drops would evaluate fine and be carried into every
     * later checkpoint of a resumed run: refused here, by name. */
    const float *v = c->base + offset;
    for (size_t i = 0; i < count && !c->failed; i++) {
      if (!isfinite(v[i])) {
        util_errf(c->err, c->errlen,
                  "checkpoint %s: %s/%s holds a non-finite value (%g at flat index %zu)", c->path,
                  c->prefix, name, (double)v[i], i);
        c->failed = 1;
      }
    }
  }
  if (space >= 0) H5Sclose(space);
  if (ds >= 0) H5Dclose(ds);
}

/* ------------------------------------------------------------------------ */
/* Reading PowerSGD's state                                                  */

struct ckpt_psgd_reader {
  char path[4200];
  hid_t file;  /* -1 when the group is read inside another open file's load */
  int own;     /* file is this reader's */
  hid_t group; /* /dist/powersgd */
  ckpt_psgd ps;
  int piece;
  size_t done;
  hid_t ds;
  stream_hash h;
  int failed;
  char err[4600];
};

static void reader_fail(ckpt_psgd_reader *r, const char *fmt, ...) {
  if (r->failed) return;
  r->failed = 1;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(r->err, sizeof r->err, "checkpoint %s: %s", r->path, msg);
}

static void reader_init(ckpt_psgd_reader *r, hid_t file, const char *path, const ckpt_psgd *ps) {
  memset(r, 0, sizeof *r);
  r->file = file;
  r->ds = -1;
  r->ps = *ps;
  r->h = (stream_hash){.h = psgd_hash_start(ps)};
  snprintf(r->path, sizeof r->path, "%s", path);
  r->group = H5Gopen2(file, "dist/powersgd", H5P_DEFAULT);
  if (r->group < 0) reader_fail(r, "group /dist/powersgd is missing");
}

int ckpt_psgd_read_floats(ckpt_psgd_reader *r, float *buf, size_t count) {
  int pieces = psgd_pieces(&r->ps);
  while (count > 0 && r->piece < pieces) {
    char name[64];
    size_t len = psgd_piece(&r->ps, r->piece, name, sizeof name);
    size_t take = len - r->done < count ? len - r->done : count;
    if (!r->failed && r->done == 0) {
      r->ds =
          H5Lexists(r->group, name, H5P_DEFAULT) > 0 ? H5Dopen2(r->group, name, H5P_DEFAULT) : -1;
      hid_t space = r->ds >= 0 ? H5Dget_space(r->ds) : -1;
      hid_t type = r->ds >= 0 ? H5Dget_type(r->ds) : -1;
      hsize_t dim = 0;
      int ok = space >= 0 && H5Sget_simple_extent_ndims(space) == 1 &&
               H5Sget_simple_extent_dims(space, &dim, NULL) == 1 && type >= 0 &&
               H5Tget_class(type) == H5T_FLOAT;
      if (space >= 0) H5Sclose(space);
      if (type >= 0) H5Tclose(type);
      if (r->ds < 0)
        reader_fail(r, "/dist/powersgd/%s is missing", name);
      else if (!ok || dim != (hsize_t)len)
        reader_fail(r,
                    "/dist/powersgd/%s has %llu floats, its attributes say %zu (the file is "
                    "corrupt)",
                    name, (unsigned long long)dim, len);
    }
    if (!r->failed && take > 0) {
      if (piece_io(r->ds, r->done, take, buf, 0) != 0)
        reader_fail(r, "cannot read /dist/powersgd/%s (truncated or corrupt)", name);
      for (size_t i = 0; i < take && !r->failed; i++)
        if (!isfinite(buf[i]))
          reader_fail(r, "/dist/powersgd/%s holds a non-finite value (%g at flat index %zu)", name,
                      (double)buf[i], r->done + i);
    }
    if (r->failed) memset(buf, 0, take * sizeof *buf);
    stream_update(&r->h, buf, take);
    buf += take;
    count -= take;
    r->done += take;
    if (r->done == len) {
      stream_end_piece(&r->h);
      if (r->ds >= 0) H5Dclose(r->ds);
      r->ds = -1;
      r->piece++;
      r->done = 0;
    }
  }
  if (count > 0) {
    reader_fail(r, "/dist/powersgd: %zu floats asked beyond the state", count);
    memset(buf, 0, count * sizeof *buf);
  }
  return r->failed ? -1 : 0;
}

/* Checks that the whole state was read and its checksum; closes. */
static int reader_finish(ckpt_psgd_reader *r, char *err, size_t errlen) {
  if (!r->failed && r->piece < psgd_pieces(&r->ps))
    reader_fail(r, "/dist/powersgd was read only to piece %d of %d", r->piece, psgd_pieces(&r->ps));
  uint64_t stored = 0;
  if (!r->failed &&
      (attr_read(r->group, "checksum", H5T_NATIVE_UINT64, 1, &stored) != 0 || stored != r->h.h))
    reader_fail(r,
                "/dist/powersgd checksum mismatch (its state or attributes were changed: the "
                "file is corrupt)");
  if (r->ds >= 0) H5Dclose(r->ds);
  if (r->group >= 0) H5Gclose(r->group);
  if (r->own) data_hdf5_close(r->file);
  int rc = r->failed ? -1 : 0;
  if (rc) util_errf(err, errlen, "%s", r->err);
  return rc;
}

/* Reads the whole state in pieces of a bounded buffer: values, shapes and
 * checksum. */
static int verify_psgd(hid_t file, const char *path, const ckpt_psgd *ps, char *err,
                       size_t errlen) {
  ckpt_psgd_reader r;
  reader_init(&r, file, path, ps);
  size_t total = 0;
  for (int i = 0; i < psgd_pieces(ps); i++) {
    char name[64];
    total += psgd_piece(ps, i, name, sizeof name);
  }
  size_t chunk = total < CKPT_PSGD_CHUNK ? total : CKPT_PSGD_CHUNK;
  float *buf = malloc((chunk ? chunk : 1) * sizeof *buf);
  if (!buf) reader_fail(&r, "out of memory to verify /dist/powersgd");
  for (size_t done = 0; buf && done < total && !r.failed; done += chunk)
    ckpt_psgd_read_floats(&r, buf, total - done < chunk ? total - done : chunk);
  free(buf);
  return reader_finish(&r, err, errlen);
}

ckpt_psgd_reader *ckpt_psgd_open(const char *path, ckpt_psgd *ps, char *err, size_t errlen) {
  hid_t file = open_checked(path, err, errlen);
  if (file < 0) return NULL;
  ckpt_meta m;
  if (read_meta_open(file, path, &m, err, errlen) != 0) {
    data_hdf5_close(file);
    return NULL;
  }
  ckpt_meta_free(&m);
  if (!m.has_psgd) {
    util_errf(err, errlen, "checkpoint %s: holds no /dist/powersgd group", path);
    data_hdf5_close(file);
    return NULL;
  }
  ckpt_psgd_reader *r = malloc(sizeof *r);
  if (!r) {
    util_errf(err, errlen, "checkpoint %s: out of memory to read /dist/powersgd", path);
    data_hdf5_close(file);
    return NULL;
  }
  reader_init(r, file, path, &m.psgd);
  r->own = 1;
  *ps = m.psgd;
  return r;
}

int ckpt_psgd_close(ckpt_psgd_reader *r, char *err, size_t errlen) {
  if (!r) return -1;
  int rc = reader_finish(r, err, errlen);
  free(r);
  return rc;
}

int ckpt_load(const char *path, nn_net *net, float *momentum, ckpt_meta *meta, char *err,
              size_t errlen) {
  hid_t file = open_checked(path, err, errlen);
  if (file < 0) return -1;
  ckpt_meta local;
  int rc = read_meta_open(file, path, &local, err, errlen);
  if (rc == 0 && local.num_classes != net->num_classes) {
    util_errf(err, errlen, "checkpoint %s: has %d classes, the model has %d", path,
              local.num_classes, net->num_classes);
    rc = -1;
  }
  /* A resume continues the same model; weights alone (checkpoint.init,
   * predict) may serve another input size of the same channels. */
  if (rc == 0 && (local.input.c != net->input.c ||
                  (momentum && (local.input.h != net->input.h || local.input.w != net->input.w)))) {
    util_errf(err, errlen,
              "checkpoint %s: attribute input = [%d, %d, %d], the model takes "
              "[%d, %d, %d] (C, H, W)",
              path, local.input.c, local.input.h, local.input.w, net->input.c, net->input.h,
              net->input.w);
    rc = -1;
  }
  if (rc == 0 && momentum && !local.has_momentum) {
    util_errf(err, errlen,
              "checkpoint %s: holds no optimizer state (weights only); use it as "
              "checkpoint.init, not to resume",
              path);
    rc = -1;
  }
  read_ctx c = {.hash = 0xCBF29CE484222325ull, .path = path, .err = err, .errlen = errlen};
  if (rc == 0) {
    c.group = H5Gopen2(file, "model", H5P_DEFAULT);
    c.base = net->params;
    c.prefix = "model";
    if (c.group < 0) {
      util_errf(err, errlen, "checkpoint %s: group /model is missing", path);
      rc = -1;
    } else {
      nn_visit_params(net, read_tensor, &c);
      c.base = net->buffers;
      if (net->num_buffers) nn_visit_buffers(net, read_tensor, &c);
      H5Gclose(c.group);
      rc = c.failed ? -1 : 0;
    }
  }
  if (rc == 0 && local.has_momentum) {
    /* The checksum covers the momentum too: read it into momentum, or
     * nowhere useful when the caller wants weights only. */
    float *scratch = momentum ? NULL : malloc(net->num_params * sizeof(float));
    c.group = H5Gopen2(file, "optimizer/momentum", H5P_DEFAULT);
    c.base = momentum ? momentum : scratch;
    c.prefix = "optimizer/momentum";
    if (c.group < 0 || !c.base) {
      util_errf(err, errlen, "checkpoint %s: group /optimizer/momentum is missing", path);
      rc = -1;
    } else {
      nn_visit_params(net, read_tensor, &c);
      rc = c.failed ? -1 : 0;
    }
    if (c.group >= 0) H5Gclose(c.group);
    free(scratch);
  }
  uint64_t stored = 0;
  if (rc == 0 &&
      (attr_read(file, "checksum", H5T_NATIVE_UINT64, 1, &stored) != 0 || stored != c.hash)) {
    util_errf(err, errlen, "checkpoint %s: checksum mismatch (the file is corrupt)", path);
    rc = -1;
  }
  if (rc == 0 && local.has_psgd) rc = verify_psgd(file, path, &local.psgd, err, errlen);
  data_hdf5_close(file);
  if (rc == 0 && meta) {
    *meta = local;
  } else {
    ckpt_meta_free(&local);
  }
  return rc;
}

void ckpt_meta_free(ckpt_meta *m) {
  if (!m) return;
  free(m->config_yaml);
  if (m->class_names)
    for (int i = 0; i < m->num_classes; i++) free(m->class_names[i]);
  free(m->class_names);
  m->config_yaml = NULL;
  m->class_names = NULL;
}

/* ------------------------------------------------------------------------ */
/* A run's checkpoint directory                                              */

void ckpt_step_path(const char *dir, int64_t step, char *path, size_t pathlen) {
  snprintf(path, pathlen, "%s/step-%08lld.h5", dir, (long long)step);
}

int ckpt_list_steps(const char *dir, int64_t **steps_out) {
  *steps_out = NULL;
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -1;
  int count = 0, cap = 0;
  int64_t *steps = NULL;
  struct dirent *e;
  while ((e = readdir(d))) {
    long long step;
    char tail[8];
    if (sscanf(e->d_name, "step-%lld.%7s", &step, tail) == 2 && strcmp(tail, "h5") == 0) {
      if (count == cap) {
        cap = cap ? 2 * cap : 16;
        int64_t *grown = realloc(steps, (size_t)cap * sizeof *steps);
        if (!grown) break;
        steps = grown;
      }
      steps[count++] = step;
    }
  }
  closedir(d);
  for (int i = 1; i < count; i++) /* insertion sort, descending */
    for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
      int64_t t = steps[j];
      steps[j] = steps[j - 1];
      steps[j - 1] = t;
    }
  *steps_out = steps;
  return count;
}

int ckpt_load_latest(const char *dir, nn_net *net, float *momentum, ckpt_meta *meta, char *path,
                     size_t pathlen, char *err, size_t errlen) {
  int64_t *steps;
  int count = ckpt_list_steps(dir, &steps);
  if (count < 0) {
    util_errf(err, errlen, "checkpoint directory %s: %s", dir, strerror(errno));
    return -1;
  }
  int found = 0;
  for (int i = 0; i < count && !found; i++) {
    char candidate[4200], why[4400];
    ckpt_step_path(dir, steps[i], candidate, sizeof candidate);
    if (ckpt_load(candidate, net, momentum, meta, why, sizeof why) == 0) {
      snprintf(path, pathlen, "%s", candidate);
      found = 1;
    } else {
      fprintf(stderr, "alexnet: skipping %s\n", why);
    }
  }
  free(steps);
  return found;
}

int ckpt_verify(const char *path, const nn_net *net, ckpt_meta *meta, char *err, size_t errlen) {
  nn_net scratch = *net; /* same layers and offsets, other storage */
  float *params = malloc(net->num_params * sizeof(float));
  float *buffers = net->num_buffers ? malloc(net->num_buffers * sizeof(float)) : NULL;
  int rc = -1;
  if (!params || (net->num_buffers && !buffers)) {
    util_errf(err, errlen, "checkpoint %s: out of memory to verify it", path);
  } else {
    scratch.params = params;
    scratch.buffers = buffers;
    /* ckpt_load reads a stored momentum into scratch of its own (for the checksum). */
    rc = ckpt_load(path, &scratch, NULL, meta, err, errlen);
  }
  free(params);
  free(buffers);
  return rc;
}

int ckpt_prune_run(const char *dir, int keep, const nn_net *net, const char *run_id, int64_t upto) {
  int64_t *steps;
  int count = ckpt_list_steps(dir, &steps), kept = 0, deleted = 0;
  for (int i = 0; i < count; i++) {
    if (steps[i] > upto) continue; /* not written by this run's past: never counted */
    char p[4200], why[4400];
    ckpt_step_path(dir, steps[i], p, sizeof p);
    ckpt_meta meta;
    if (ckpt_read_meta(p, &meta, why, sizeof why) != 0) continue;
    int ours = strcmp(meta.run_id, run_id) == 0;
    ckpt_meta_free(&meta);
    if (!ours || ckpt_verify(p, net, NULL, why, sizeof why) != 0) continue;
    if (kept < keep)
      kept++;
    else if (unlink(p) == 0)
      deleted++;
  }
  free(steps);
  return deleted;
}

int ckpt_find_other_run(const char *dir, const char *run_id, const nn_net *net, char *path,
                        size_t pathlen, char *other_run, size_t other_len) {
  int64_t *steps;
  int count = ckpt_list_steps(dir, &steps), found = 0;
  for (int i = 0; i < count && !found; i++) {
    char p[4200], why[4400];
    ckpt_step_path(dir, steps[i], p, sizeof p);
    ckpt_meta meta;
    if (ckpt_read_meta(p, &meta, why, sizeof why) != 0) continue;
    if ((!run_id || strcmp(meta.run_id, run_id) != 0) &&
        ckpt_verify(p, net, NULL, why, sizeof why) == 0) {
      snprintf(path, pathlen, "%s", p);
      snprintf(other_run, other_len, "%s", meta.run_id[0] ? meta.run_id : "(no run id)");
      found = 1;
    }
    ckpt_meta_free(&meta);
  }
  free(steps);
  return found;
}
