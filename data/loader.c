/*
 * data/loader.c: the sharded prefetching loader with AlexNet's augmentations.
 *
 * Global-batch semantics (docs/data-format.md): M = samples, B = global
 * batch, p = ranks, r = this rank. Every rank computes the same permutation
 * of [0, M) from (seed, epoch). Step k of the epoch covers permutation
 * entries [k*B, k*B + s) with s = min(B, M - k*B); rank r takes the slice
 * [k*B + r*s/p, k*B + (r+1)*s/p). Training has floor(M/B) steps (the last
 * partial batch is dropped, so s = B always); evaluation has ceil(M/B) and
 * covers every sample exactly once (a rank's share of the last batch may be
 * empty).
 *
 * reader_threads background threads (1 by default) each prepare whole
 * batches: read this rank's samples (one thread in HDF5 at a time, io_mu),
 * decode JPEGs, crop (a window of the stored image, or RandomResizedCrop),
 * mirror, light and normalize them into a ring of max(prefetch,
 * reader_threads) + 1 batch buffers allocated at open (one is held by the
 * caller), so memory is bounded and, once warm, data_loader_next does not
 * wait. Every random choice is a function of (seed, epoch, index of the
 * sample in the file or shard list) only, so a sample's augmentation does not
 * depend on the rank count, the prefetch depth, the reader count, the shard
 * boundaries or thread timing.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "internal.h"
#include "util.h"

/* AlexNet's PCA lighting (Krizhevsky et al. 2012; the values of fb.resnet.torch
 * and torchvision's references): eigenvalues and eigenvectors (columns) of
 * ImageNet's RGB covariance, pixels in [0, 1]. */
static const float pca_eigval[3] = {0.2175f, 0.0188f, 0.0045f};
static const float pca_eigvec[3][3] = {
    {-0.5675f, 0.7192f, 0.4009f}, {-0.5808f, -0.0045f, -0.8140f}, {-0.5836f, -0.6948f, 0.4203f}};

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD };

typedef struct {
  float *images;    /* (per_rank * views, C, crop, crop) */
  int32_t *labels;  /* (per_rank) */
  int64_t *indices; /* (per_rank) */
  int count;
  int64_t step;
  int state, status;
  char err[1024];
} slot_t;

/* One reader thread's buffers, grown as needed and reused. */
typedef struct {
  pthread_t thread;
  int started;
  uint8_t *buf; /* the sample's stored bytes (raw pixels or JPEG) */
  size_t cap;
  uint8_t *work; /* a resized image */
  size_t work_cap;
} reader_t;

struct data_loader {
  data_loader_opts o; /* copy; o.indices points to subset */
  int64_t *subset;    /* (m) file indices, or NULL for all */
  int64_t m;          /* samples */
  data_dataset ds;    /* read under io_mu, metadata by anyone */
  int cin, cout, crop, views, per_rank, lighting_on;
  float mean[3], std[3];
  int64_t steps;
  int64_t *perm; /* (m) the current epoch's permutation */
  int nslots;
  slot_t *slots; /* (nslots) */
  int nreaders;
  reader_t *readers; /* (nreaders) */

  pthread_mutex_t io_mu; /* one reader in HDF5 at a time */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* under mu: */
  int have_epoch, failed, stop, held;
  int64_t epoch, next_produce, next_consume;
  /* bumped by start_epoch and close: the batches being filled are abandoned */
  atomic_int abort_seq;
};

/* ------------------------------------------------------------------------ */
/* Augmentation                                                              */

/* Writes one view: the crop x crop window at (x0, y0) of pix (rows of W
 * pixels of cin channels), mirrored if flip, plus add[c] (lighting, [0,1]
 * scale), normalized, to dst (cout, crop, crop). */
static void write_view(const data_loader *ld, const uint8_t *pix, int W, int x0, int y0, int flip,
                       const float add[3], float *dst) {
  int C = ld->cin, K = ld->crop;
  for (int c = 0; c < ld->cout; c++) {
    int ci = C == 1 ? 0 : c;
    float scale = 1.0f / (255.0f * ld->std[c]);
    float bias = (add[c] - ld->mean[c]) / ld->std[c];
    float *d = dst + (size_t)c * K * K;
    for (int y = 0; y < K; y++) {
      const uint8_t *s = pix + ((size_t)(y0 + y) * W + x0) * C + ci;
      float *o = d + (size_t)y * K;
      if (flip)
        for (int x = 0; x < K; x++) o[x] = (float)s[(size_t)(K - 1 - x) * C] * scale + bias;
      else
        for (int x = 0; x < K; x++) o[x] = (float)s[(size_t)x * C] * scale + bias;
    }
  }
}

/* torchvision's CenterCrop offset: int(round((dim - crop) / 2)), half to even. */
static int center_offset(int dim, int crop) {
  return (int)nearbyint((dim - crop) / 2.0);
}

/* rd->work with room for n bytes; -1 out of memory. */
static int work_room(reader_t *rd, size_t n) {
  if (n <= rd->work_cap) return 0;
  uint8_t *p = realloc(rd->work, n);
  if (!p) return -1;
  rd->work = p, rd->work_cap = n;
  return 0;
}

/* The picture of sample idx (stored bytes in rd->buf, len bytes) as an
 * image: raw pixels are used in place; a JPEG is decoded at scale_num/8
 * (*owned = 1: free it). */
static int sample_image(const data_loader *ld, reader_t *rd, int64_t idx, size_t len, int scale_num,
                        data_image *img, int *owned, char *err, size_t errlen) {
  *owned = 0;
  memset(img, 0, sizeof *img);
  if (ld->ds.encoding == DATA_ENCODING_RAW) {
    img->w = ld->ds.w, img->h = ld->ds.h, img->c = ld->cin, img->pixels = rd->buf;
    return 0;
  }
  if (data_dataset_decode(&ld->ds, idx, rd->buf, len, scale_num, img, err, errlen) != 0) return -1;
  *owned = 1;
  return 0;
}

/* A stored image smaller than the crop (JPEG files hold any size). */
static int too_small(const data_loader *ld, int64_t idx, int W, int H, char *err, size_t errlen) {
  int64_t li;
  const char *p = data_dataset_locate(&ld->ds, idx, &li);
  return util_errf(err, errlen,
                   "%s: sample %lld is %dx%d, smaller than the crop %dx%d (set data.resize or "
                   "data.crop_mode: random_resized)",
                   p, (long long)li, W, H, ld->crop, ld->crop);
}

/* All views of sample idx (its stored bytes in rd->buf) into dst. -1 with
 * a message naming the file and sample on a bad JPEG. */
static int augment(const data_loader *ld, reader_t *rd, int64_t idx, size_t len, int64_t epoch,
                   float *dst, char *err, size_t errlen) {
  int H, W, K = ld->crop;
  data_dataset_shape(&ld->ds, idx, &H, &W);
  size_t plane = (size_t)ld->cout * K * K;
  float zero[3] = {0, 0, 0};
  data_image img;
  int owned = 0, rc = 0;
  if (ld->o.train) {
    /* Always the same draws in the same order, whatever is switched off. */
    data_rng r = data_rng_key(ld->o.seed, DATA_STREAM_AUG, (uint64_t)epoch, (uint64_t)idx);
    int rrc = ld->o.crop_mode == DATA_CROP_RANDOM_RESIZED;
    int x0 = 0, y0 = 0, bw = 0, bh = 0;
    if (rrc) {
      double area[DATA_RRC_TRIES], aspect[DATA_RRC_TRIES], pos[2 * DATA_RRC_TRIES];
      const double lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
      for (int t = 0; t < DATA_RRC_TRIES; t++) {
        area[t] = 0.08 + (1.0 - 0.08) * data_rng_uniform(&r);
        aspect[t] = exp(lr0 + (lr1 - lr0) * data_rng_uniform(&r));
        pos[2 * t] = data_rng_uniform(&r);
        pos[2 * t + 1] = data_rng_uniform(&r);
      }
      data_rrc_box(W, H, area, aspect, pos, &x0, &y0, &bw, &bh);
    } else {
      if (W < K || H < K) return too_small(ld, idx, W, H, err, errlen);
      x0 = (int)data_rng_below(&r, (uint64_t)(W - K + 1));
      y0 = (int)data_rng_below(&r, (uint64_t)(H - K + 1));
    }
    int flip = (int)(data_rng_next(&r) >> 63);
    double alpha[3];
    for (int j = 0; j < 3; j++) alpha[j] = data_rng_normal(&r) * ld->o.lighting;
    float add[3] = {0, 0, 0};
    if (ld->lighting_on)
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) add[i] += (float)(pca_eigvec[i][j] * alpha[j] * pca_eigval[j]);
    flip = ld->o.mirror ? flip : 0;
    if (rrc) {
      /* DCT scaling: the smallest decode that still has crop x crop pixels in the box */
      int num = data_jpeg_scale_for(bw, bh, K, K);
      if (sample_image(ld, rd, idx, len, num, &img, &owned, err, errlen) != 0) return -1;
      if (work_room(rd, (size_t)K * K * ld->cin) != 0)
        rc = util_errf(err, errlen, "%s: out of memory", ld->ds.path);
      else
        data_image_resize_box(&img, x0, y0, bw, bh, K, K, rd->work);
      if (rc == 0) write_view(ld, rd->work, K, 0, 0, flip, add, dst);
    } else {
      if (sample_image(ld, rd, idx, len, 8, &img, &owned, err, errlen) != 0) return -1;
      write_view(ld, img.pixels, img.w, x0, y0, flip, add, dst);
    }
  } else {
    int R = ld->o.resize;
    const uint8_t *pix;
    int PW, PH; /* the picture the views are cut from */
    if (R > 0) {
      int sw, sh;
      data_resize_shape(W, H, R, &sw, &sh);
      int num = data_jpeg_scale_for(W, H, sw, sh);
      if (sample_image(ld, rd, idx, len, num, &img, &owned, err, errlen) != 0) return -1;
      size_t need = ld->views == 1 ? (size_t)K * K * ld->cin : (size_t)sw * sh * ld->cin;
      if (work_room(rd, need) != 0) {
        rc = util_errf(err, errlen, "%s: out of memory", ld->ds.path);
      } else if (ld->views == 1) { /* only the centre window is resampled */
        data_image_resize_crop(&img, R, K, rd->work);
        sw = sh = K;
      } else {
        data_image_resize(&img, sw, sh, rd->work);
      }
      pix = rd->work, PW = sw, PH = sh;
    } else {
      if (W < K || H < K) return too_small(ld, idx, W, H, err, errlen);
      if (sample_image(ld, rd, idx, len, 8, &img, &owned, err, errlen) != 0) return -1;
      pix = img.pixels, PW = img.w, PH = img.h;
    }
    if (rc == 0 && ld->views == 1) {
      write_view(ld, pix, PW, center_offset(PW, K), center_offset(PH, K), 0, zero, dst);
    } else if (rc == 0) {
      /* TenCrop: five_crop(img) + five_crop(hflip(img)): top-left, top-right,
       * bottom-left, bottom-right, center. A window at x of the mirrored image
       * is the mirror of the window at W - K - x of the original. */
      int xs[5] = {0, PW - K, 0, PW - K, center_offset(PW, K)};
      int ys[5] = {0, 0, PH - K, PH - K, center_offset(PH, K)};
      for (int v = 0; v < 5; v++) {
        write_view(ld, pix, PW, xs[v], ys[v], 0, zero, dst + (size_t)v * plane);
        write_view(ld, pix, PW, PW - K - xs[v], ys[v], 1, zero, dst + (size_t)(5 + v) * plane);
      }
    }
  }
  if (owned) data_image_free(&img);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The reader threads                                                        */

#define ABANDONED 1

/* This rank's slice of step `step`. */
static void step_slice(const data_loader *ld, int64_t step, int64_t *lo, int64_t *hi) {
  int64_t B = ld->o.global_batch, g0 = step * B;
  int64_t s = ld->m - g0 < B ? ld->m - g0 : B;
  int p = ld->o.ranks, r = ld->o.rank;
  *lo = g0 + (int64_t)r * s / p;
  *hi = g0 + (int64_t)(r + 1) * s / p;
}

/* Fills slot with step `step` of `epoch`. Returns 0, -1 (read error, message
 * in slot->err) or ABANDONED when start_epoch or close intervened. */
static int produce(data_loader *ld, reader_t *rd, slot_t *slot, int64_t step, int64_t epoch,
                   int seq) {
  int64_t lo, hi;
  step_slice(ld, step, &lo, &hi);
  size_t stride = (size_t)ld->views * ld->cout * ld->crop * ld->crop;
  slot->count = 0;
  for (int64_t j = lo; j < hi; j++) {
    if (atomic_load(&ld->abort_seq) != seq) return ABANDONED;
    int64_t pos = ld->perm[j];
    int64_t idx = ld->subset ? ld->subset[pos] : pos;
    size_t len = 0;
    pthread_mutex_lock(&ld->io_mu);
    int rc = data_dataset_read_bytes(&ld->ds, idx, &rd->buf, &rd->cap, &len, slot->err,
                                     sizeof slot->err);
    pthread_mutex_unlock(&ld->io_mu);
    if (rc != 0) return -1;
    int i = slot->count++;
    if (augment(ld, rd, idx, len, epoch, slot->images + (size_t)i * stride, slot->err,
                sizeof slot->err) != 0)
      return -1;
    slot->labels[i] = ld->ds.labels[idx];
    slot->indices[i] = idx;
  }
  return 0;
}

typedef struct {
  data_loader *ld;
  reader_t *rd;
} reader_arg;

static void *reader_main(void *arg) {
  data_loader *ld = ((reader_arg *)arg)->ld;
  reader_t *rd = ((reader_arg *)arg)->rd;
  free(arg);
  data_hdf5_quiet(); /* HDF5's error stacks are per thread */
  pthread_mutex_lock(&ld->mu);
  while (!ld->stop) {
    int s = -1;
    if (ld->have_epoch && !ld->failed && ld->next_produce < ld->steps)
      for (int i = 0; i < ld->nslots && s < 0; i++)
        if (ld->slots[i].state == SLOT_FREE) s = i;
    if (s < 0) {
      pthread_cond_wait(&ld->cv, &ld->mu);
      continue;
    }
    slot_t *slot = &ld->slots[s];
    int64_t step = ld->next_produce++, epoch = ld->epoch;
    int seq = atomic_load(&ld->abort_seq);
    slot->state = SLOT_FILLING;
    slot->step = step;
    pthread_mutex_unlock(&ld->mu);
    int rc = produce(ld, rd, slot, step, epoch, seq);
    pthread_mutex_lock(&ld->mu);
    if (rc == ABANDONED || atomic_load(&ld->abort_seq) != seq) {
      slot->state = SLOT_FREE;
    } else {
      slot->status = rc;
      slot->state = SLOT_READY;
      if (rc != 0) ld->failed = 1; /* nothing new after a read error: next() reports it */
    }
    pthread_cond_broadcast(&ld->cv);
  }
  pthread_mutex_unlock(&ld->mu);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

static void loader_free(data_loader *ld) {
  if (ld->slots)
    for (int i = 0; i < ld->nslots; i++) {
      free(ld->slots[i].images);
      free(ld->slots[i].labels);
      free(ld->slots[i].indices);
    }
  free(ld->slots);
  if (ld->readers)
    for (int i = 0; i < ld->nreaders; i++) {
      free(ld->readers[i].buf);
      free(ld->readers[i].work);
    }
  free(ld->readers);
  free(ld->perm);
  free(ld->subset);
  data_dataset_close(&ld->ds);
  free(ld);
}

/* Checks the options against the file and derives the shapes. */
static int loader_configure(data_loader *ld, char *err, size_t errlen) {
  const data_loader_opts *o = &ld->o;
  const data_dataset *ds = &ld->ds;
  const char *p = ds->path;
  if (o->ranks < 1 || o->rank < 0 || o->rank >= o->ranks)
    return util_errf(err, errlen, "%s: rank %d is not in [0, %d)", p, o->rank, o->ranks);
  if (o->global_batch < 1)
    return util_errf(err, errlen, "%s: global batch %d must be >= 1", p, o->global_batch);
  if (o->global_batch % o->ranks != 0)
    return util_errf(err, errlen, "%s: global batch %d is not divisible by %d ranks", p,
                     o->global_batch, o->ranks);
  if (o->crop < 1) return util_errf(err, errlen, "%s: crop %d must be >= 1", p, o->crop);
  if (o->crop_mode != DATA_CROP_FIXED && o->crop_mode != DATA_CROP_RANDOM_RESIZED)
    return util_errf(err, errlen, "%s: crop mode %d is not fixed (0) or random_resized (1)", p,
                     o->crop_mode);
  if (o->resize < 0 || (o->resize > 0 && o->resize < o->crop))
    return util_errf(err, errlen, "%s: resize %d is smaller than the crop %d", p, o->resize,
                     o->crop);
  if (o->reader_threads < 0 || o->reader_threads > 256)
    return util_errf(err, errlen, "%s: reader threads %d is not in 0..256", p, o->reader_threads);
  /* Windows of the stored image: each image must hold the crop. */
  int windows = o->train ? o->crop_mode == DATA_CROP_FIXED : o->resize == 0;
  if (windows && ds->encoding == DATA_ENCODING_RAW && (o->crop > ds->h || o->crop > ds->w))
    return util_errf(err, errlen, "%s: /images are %dx%d, smaller than the crop %dx%d", p, ds->h,
                     ds->w, o->crop, o->crop);
  if (windows && (o->crop > ds->min_h || o->crop > ds->min_w))
    return util_errf(err, errlen,
                     "%s: the smallest images are %d high and %d wide, smaller than the crop %d "
                     "(set data.resize or data.crop_mode: random_resized)",
                     p, ds->min_h, ds->min_w, o->crop);
  ld->cin = ds->c;
  ld->cout = o->out_channels == 0 ? ds->c : o->out_channels;
  if (!(ld->cout == ds->c || (ld->cout == 3 && ds->c == 1)))
    return util_errf(err, errlen,
                     "%s: out_channels %d with %d-channel images (1 -> 3 replicates gray; 3 -> 1 "
                     "is not supported)",
                     p, o->out_channels, ds->c);
  if (!(o->lighting >= 0 && isfinite(o->lighting)))
    return util_errf(err, errlen, "%s: lighting %g must be >= 0", p, (double)o->lighting);
  if (o->prefetch < 0 || o->prefetch > 64)
    return util_errf(err, errlen, "%s: prefetch %d is not in 0..64", p, o->prefetch);
  for (int c = 0; c < ld->cout; c++) {
    if (o->std[0] == 0) { /* the file's statistics; gray replicated to 3 uses channel 0 */
      ld->mean[c] = ds->mean[ds->c == 1 ? 0 : c];
      ld->std[c] = ds->std[ds->c == 1 ? 0 : c];
    } else {
      ld->mean[c] = o->mean[c];
      ld->std[c] = o->std[c];
      if (!(o->std[c] > 0) || !isfinite(o->std[c]) || !isfinite(o->mean[c]))
        return util_errf(err, errlen,
                         "%s: normalization std[%d] = %g, mean[%d] = %g: std must be > 0", p, c,
                         (double)o->std[c], c, (double)o->mean[c]);
    }
  }
  ld->crop = o->crop;
  ld->views = (!o->train && o->ten_crop) ? 10 : 1;
  ld->lighting_on = o->train && o->lighting > 0 && ld->cout == 3;
  ld->per_rank = o->global_batch / o->ranks;
  ld->steps = o->train ? ld->m / o->global_batch : (ld->m + o->global_batch - 1) / o->global_batch;
  return 0;
}

int data_loader_open(const data_loader_opts *o, data_loader **out, char *err, size_t errlen) {
  *out = NULL;
  if (!o || !o->path) return util_errf(err, errlen, "data loader: no dataset path");
  data_loader *ld = calloc(1, sizeof *ld);
  if (!ld) return util_errf(err, errlen, "%s: out of memory", o->path);
  ld->o = *o;
  ld->held = -1;
  ld->ds.file_id = ld->ds.images_id = -1;
  if (data_dataset_open(o->path, &ld->ds, err, errlen) != 0) {
    loader_free(ld);
    return -1;
  }
  ld->m = ld->ds.n;
  if (o->indices) {
    if (o->num_indices <= 0) {
      loader_free(ld);
      return util_errf(err, errlen, "%s: empty subset of indices (zero samples)", o->path);
    }
    ld->subset = malloc((size_t)o->num_indices * sizeof(int64_t));
    if (!ld->subset) {
      loader_free(ld);
      return util_errf(err, errlen, "%s: out of memory", o->path);
    }
    for (int64_t i = 0; i < o->num_indices; i++) {
      if (o->indices[i] < 0 || o->indices[i] >= ld->ds.n) {
        util_errf(err, errlen, "%s: indices[%lld] = %lld is out of range [0, %lld)", o->path,
                  (long long)i, (long long)o->indices[i], (long long)ld->ds.n);
        loader_free(ld);
        return -1;
      }
      ld->subset[i] = o->indices[i];
    }
    ld->m = o->num_indices;
  }
  ld->o.indices = ld->subset;
  ld->o.num_indices = ld->subset ? ld->m : 0;
  if (loader_configure(ld, err, errlen) != 0) {
    loader_free(ld);
    return -1;
  }
  ld->nreaders = o->reader_threads > 0 ? o->reader_threads : 1;
  int ahead = o->prefetch > 0 ? o->prefetch : 2;
  ld->nslots = (ahead > ld->nreaders ? ahead : ld->nreaders) + 1; /* every reader has a slot */
  ld->slots = calloc((size_t)ld->nslots, sizeof(slot_t));
  ld->perm = malloc((size_t)ld->m * sizeof(int64_t));
  ld->readers = calloc((size_t)ld->nreaders, sizeof(reader_t));
  int ok = ld->slots && ld->perm && ld->readers;
  size_t nimg = (size_t)ld->per_rank * ld->views * ld->cout * ld->crop * ld->crop;
  for (int i = 0; ok && i < ld->nslots; i++) {
    slot_t *s = &ld->slots[i];
    s->images = malloc(nimg * sizeof(float));
    s->labels = malloc((size_t)ld->per_rank * sizeof(int32_t));
    s->indices = malloc((size_t)ld->per_rank * sizeof(int64_t));
    ok = s->images && s->labels && s->indices;
  }
  if (!ok) {
    loader_free(ld);
    return util_errf(err, errlen, "%s: out of memory for %d batch buffers of %zu MiB", o->path,
                     ld->nslots, (nimg * sizeof(float)) >> 20);
  }
  pthread_mutex_init(&ld->io_mu, NULL);
  pthread_mutex_init(&ld->mu, NULL);
  pthread_cond_init(&ld->cv, NULL);
  atomic_init(&ld->abort_seq, 0);
  for (int i = 0; i < ld->nreaders; i++) {
    reader_arg *a = malloc(sizeof *a);
    if (a) a->ld = ld, a->rd = &ld->readers[i];
    if (!a || pthread_create(&ld->readers[i].thread, NULL, reader_main, a) != 0) {
      free(a);
      data_loader_close(ld);
      return util_errf(err, errlen, "%s: cannot start reader thread %d", o->path, i);
    }
    ld->readers[i].started = 1;
  }
  *out = ld;
  return 0;
}

void data_loader_close(data_loader *ld) {
  if (!ld) return;
  if (ld->readers) { /* the threads, mutexes and condition exist once readers are allocated */
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    atomic_fetch_add(&ld->abort_seq, 1);
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    for (int i = 0; i < ld->nreaders; i++)
      if (ld->readers[i].started) pthread_join(ld->readers[i].thread, NULL);
    pthread_cond_destroy(&ld->cv);
    pthread_mutex_destroy(&ld->mu);
    pthread_mutex_destroy(&ld->io_mu);
  }
  loader_free(ld);
}

int64_t data_loader_steps(const data_loader *ld) {
  return ld->steps;
}

int64_t data_loader_size(const data_loader *ld) {
  return ld->m;
}

const data_dataset *data_loader_dataset(const data_loader *ld) {
  return &ld->ds;
}

int data_loader_start_epoch(data_loader *ld, int64_t epoch, int64_t first_step, char *err,
                            size_t errlen) {
  if (epoch < 0) return util_errf(err, errlen, "%s: epoch %lld < 0", ld->ds.path, (long long)epoch);
  if (first_step < 0 || first_step > ld->steps)
    return util_errf(err, errlen, "%s: first step %lld is not in [0, %lld]", ld->ds.path,
                     (long long)first_step, (long long)ld->steps);
  pthread_mutex_lock(&ld->mu);
  atomic_fetch_add(&ld->abort_seq, 1);
  ld->have_epoch = 0;
  for (;;) { /* the thread drops the batch it is filling at its next sample */
    int filling = 0;
    for (int i = 0; i < ld->nslots; i++) filling |= ld->slots[i].state == SLOT_FILLING;
    if (!filling) break;
    pthread_cond_wait(&ld->cv, &ld->mu);
  }
  for (int i = 0; i < ld->nslots; i++) ld->slots[i].state = SLOT_FREE;
  ld->held = -1;
  pthread_mutex_unlock(&ld->mu);
  data_epoch_permutation(ld->m, ld->o.seed, epoch, ld->o.train && ld->o.shuffle, ld->perm);
  pthread_mutex_lock(&ld->mu);
  ld->epoch = epoch;
  ld->next_produce = ld->next_consume = first_step;
  ld->failed = 0;
  ld->have_epoch = 1;
  pthread_cond_broadcast(&ld->cv);
  pthread_mutex_unlock(&ld->mu);
  return 0;
}

int data_loader_next(data_loader *ld, data_batch *b, char *err, size_t errlen) {
  memset(b, 0, sizeof *b);
  pthread_mutex_lock(&ld->mu);
  if (ld->held >= 0) {
    ld->slots[ld->held].state = SLOT_FREE;
    ld->held = -1;
    pthread_cond_broadcast(&ld->cv);
  }
  if (!ld->have_epoch) {
    pthread_mutex_unlock(&ld->mu);
    return util_errf(err, errlen, "%s: data_loader_next before data_loader_start_epoch",
                     ld->ds.path);
  }
  if (ld->next_consume >= ld->steps) {
    pthread_mutex_unlock(&ld->mu);
    return 0;
  }
  double t0 = util_now();
  int s = -1;
  for (;;) {
    for (int i = 0; i < ld->nslots && s < 0; i++)
      if (ld->slots[i].state == SLOT_READY && ld->slots[i].step == ld->next_consume) s = i;
    if (s >= 0) break;
    pthread_cond_wait(&ld->cv, &ld->mu);
  }
  slot_t *slot = &ld->slots[s];
  if (slot->status != 0) { /* stays READY: every later call reports the same error */
    util_errf(err, errlen, "%s", slot->err);
    pthread_mutex_unlock(&ld->mu);
    return -1;
  }
  slot->state = SLOT_HELD;
  ld->held = s;
  ld->next_consume++;
  pthread_cond_broadcast(&ld->cv);
  pthread_mutex_unlock(&ld->mu);
  b->images = slot->images;
  b->labels = slot->labels;
  b->indices = slot->indices;
  b->count = slot->count;
  b->views = ld->views;
  b->step = slot->step;
  b->wait_ms = 1e3 * (util_now() - t0);
  return 1;
}
