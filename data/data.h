/*
 * data: the HDF5 dataset format, image decoding and resizing, the converters
 * behind alexnet-convert, and the sharded prefetching loader with AlexNet's
 * augmentations. data knows nothing of MPI: the loader is told its rank and
 * the rank count. The format is documented in docs/data-format.md.
 *
 * Every function that can fail returns 0 on success or -1 with a message in
 * err (errlen bytes) naming the file, the dataset and the first bad index.
 */
#ifndef DATA_DATA_H
#define DATA_DATA_H

#include <stddef.h>
#include <stdint.h>

#define DATA_FORMAT_NAME "alexnet-hdf5"
#define DATA_FORMAT_VERSION 1

/* ------------------------------------------------------------------------ */
/* Images in memory                                                          */

typedef struct {
  int w, h, c;     /* c = 1 (gray) or 3 (RGB) */
  uint8_t *pixels; /* (h, w, c) row-major, owned */
  /* A JPEG decoded with DCT scaling holds the full_w x full_h picture at
   * `scale` (= num/8) decoded pixels per original pixel; libjpeg rounds w, h
   * up, so the picture's extent is full_w * scale, not w. Resizing uses this
   * to keep torchvision's geometry. full_w = 0: the image is w x h, scale 1. */
  int full_w, full_h;
  double scale;
} data_image;

/* Decodes a JPEG (incl. grayscale, CMYK/YCCK with Adobe's inverted values)
 * or PNG (incl. 16-bit, palette, gray, alpha, which is dropped) file to 8-bit
 * RGB (c = 3); the type comes from the file's first bytes, not its name. If
 * min_short_side > 0, JPEGs are decoded with libjpeg's DCT scaling to the
 * smallest size whose shorter side is still >= min_short_side. Images above
 * 2^28 decoded pixels are refused (bounded memory). Never exits or crashes on
 * a corrupt or truncated file: returns -1 with a message naming the file. */
int data_image_load(const char *path, int min_short_side, data_image *img, char *err,
                    size_t errlen);
/* The same from memory; `name` is used in messages (e.g. the file name). */
int data_image_decode(const uint8_t *buf, size_t len, const char *name, int min_short_side,
                      data_image *img, char *err, size_t errlen);
/* Frees the pixels and zeroes img; NULL or an empty image is fine. */
void data_image_free(data_image *img);

/* Antialiased resize (triangle filter widened by the scale factor, like
 * PIL's bilinear with antialias) to out_w x out_h. dst has out_w*out_h*c.
 * Both can only fail out of memory, which exits with a message. */
void data_image_resize(const data_image *src, int out_w, int out_h, uint8_t *dst);

/* Shorter side to `size` (the longer one to floor(long*size/short), as
 * torchvision's Resize), then a centred size x size crop (torchvision's
 * CenterCrop; AlexNet's 256x256 preprocessing). dst has size*size*c bytes. */
void data_image_resize_center_crop(const data_image *src, int size, uint8_t *dst);

/* Writes an 8-bit RGB (c = 3) or gray (c = 1) PNG; -1 with a message naming
 * the path if it cannot be created or written. */
int data_png_write(const char *path, int w, int h, int c, const uint8_t *pixels, char *err,
                   size_t errlen);

/* ------------------------------------------------------------------------ */
/* The dataset file                                                          */

typedef struct {
  char path[4096];
  int64_t n;   /* samples */
  int h, w, c; /* stored image size, c = 1 or 3 */
  int num_classes;
  float mean[3], std[3];      /* per channel, of pixels scaled to [0, 1] */
  char **class_names;         /* num_classes strings, owned */
  int32_t *labels;            /* (n), owned, read and validated at open */
  int64_t file_id, images_id; /* HDF5 handles (hid_t), kept open for reads */
  int64_t file_size;          /* bytes at open: a smaller file later = truncated */
} data_dataset;

/* Opens and validates a dataset file read-only: the format attribute and
 * version, /images (uint8, rank 4, C in {1,3}), /labels (int32, same length,
 * all in [0, num_classes)), /classes (num_classes strings), mean and std.
 * Refuses anything else with a message naming file, dataset and first bad index. */
int data_dataset_open(const char *path, data_dataset *ds, char *err, size_t errlen);
/* Closes the handles and frees labels and names; safe to call twice. */
void data_dataset_close(data_dataset *ds);

/* Reads sample i's pixels (h, w, c) into dst. Fails with a message naming the
 * file and index (an index out of range, a file truncated since it was opened,
 * a read error). A file deleted while open stays readable (POSIX).
 * Not thread-safe on the same data_dataset (one thread owns a handle). */
int data_dataset_read(data_dataset *ds, int64_t i, uint8_t *dst, char *err, size_t errlen);

/* Writing: images are appended one at a time; data_writer_finish computes the
 * mean/std attributes, closes and renames tmp -> path. Until then the file
 * only exists as "<path>.tmp", so an interrupted conversion never leaves a
 * file that looks whole. compress: 0 = none, 1-9 = deflate level. */
typedef struct data_writer data_writer;
/* Creates "<path>.tmp" for images of h x w x c and its class names (copied).
 * -1 with a message on bad sizes or a file that cannot be created. */
int data_writer_create(const char *path, int h, int w, int c, int num_classes,
                       const char *const *class_names, int compress, data_writer **out, char *err,
                       size_t errlen);
/* Appends one image (h, w, c) with its label; -1 on a label out of range or a
 * write error (the caller then aborts). */
int data_writer_append(data_writer *wr, const uint8_t *pixels, int32_t label, char *err,
                       size_t errlen);
/* Writes labels, classes, attributes; fsyncs; renames tmp -> path; frees wr.
 * On failure (incl. zero images) removes the tmp file, frees wr, returns -1. */
int data_writer_finish(data_writer *wr, char *err, size_t errlen);
void data_writer_abort(data_writer *wr); /* removes the temporary file, frees wr */

/* Closes an HDF5 file (its hid_t) that data/ or launch/ opened. Returns 0,
 * or -1 if HDF5 could not close it (a last flush that hit a full disk or a
 * quota, a corrupt file): HDF5 1.10 then leaves a dangling id that would
 * crash its clean-up at exit, which is therefore skipped (data/hdf5_file.c);
 * the caller reports the error and must not use HDF5 again. */
int data_hdf5_close(int64_t file_id);
/* Empties a file open for writing that is about to be removed (an aborted
 * write), before its datasets and the file are closed: their last flushes
 * then find room on a full disk. */
void data_hdf5_discard(int64_t file_id);

/* ------------------------------------------------------------------------ */
/* Converters (alexnet-convert)                                              */

typedef struct {
  int64_t written;     /* images in `out` */
  int64_t written_val; /* images in val_out (imagefolder with val_fraction) */
  int64_t skipped;     /* unreadable images (listed on stderr with progress) */
  double seconds;      /* wall time of the conversion */
} data_convert_stats;

typedef struct {
  int size;            /* imagefolder: output side, default 256 (0 = 256) */
  double val_fraction; /* imagefolder: held out into val_out, chosen by seed */
  const char *val_out;
  int compress;              /* 0 = none, 1-9 = deflate level */
  int threads;               /* decoding threads, 0 = all cores */
  int progress;              /* 1: progress (a bar on a terminal) and the skipped list on stderr */
  uint64_t seed;             /* imagefolder: the val split; synthetic: the samples */
  const char *class_names;   /* idx: optional file of class names, one per line */
  data_convert_stats *stats; /* optional: filled on success */
} data_convert_opts;

/* torchvision's ImageFolder layout: class = sorted subfolder names, images
 * found recursively in sorted order (.jpg/.jpeg/.png, any case). Corrupt
 * images are skipped and counted; all unreadable = an error. */
int data_convert_imagefolder(const char *dir, const char *out, const data_convert_opts *o,
                             char *err, size_t errlen);
/* CIFAR binary: dir holds data_batch_*.bin/test_batch.bin (10) or train.bin/test.bin (100);
 * which = "train" or "test". */
int data_convert_cifar(const char *dir, int cifar100, const char *which, const char *out,
                       const data_convert_opts *o, char *err, size_t errlen);
/* MNIST/Fashion-MNIST IDX, gzipped or not. Class names: o->class_names, else
 * Fashion-MNIST's when a path contains "fashion", else the digits. */
int data_convert_idx(const char *images, const char *labels, const char *out,
                     const data_convert_opts *o, char *err, size_t errlen);
/* A learnable synthetic set: class-dependent patterns (a colour and an
 * oriented stripe frequency per class, the same whatever the seed) plus
 * per-sample phase, contrast and noise (from seed). Label i = i % classes. */
int data_write_synthetic(const char *out, int64_t n, int size, int channels, int classes,
                         uint64_t seed, char *err, size_t errlen);
/* The same with converter options (seed from o->seed; threads, compress, progress). */
int data_convert_synthetic(const char *out, int64_t n, int size, int channels, int classes,
                           const data_convert_opts *o, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* The loader                                                                */

typedef struct {
  const char *path;       /* the dataset file */
  const int64_t *indices; /* optional subset of the file (e.g. a val split); NULL = all */
  int64_t num_indices;
  int rank, ranks;       /* this process's shard */
  int global_batch;      /* B: per step, over all ranks; divisible by ranks */
  int train;             /* 1: shuffle (if shuffle), random crop/mirror/lighting, drop last
                            partial batch; 0: center crop (or ten-crop), all samples */
  int shuffle;           /* train: a new permutation each epoch; eval keeps file order */
  uint64_t seed;         /* with the epoch and the sample index: every random choice */
  int crop;              /* output side; <= stored size */
  int mirror;            /* train: random horizontal flip */
  float lighting;        /* train: PCA lighting std (0 = off) */
  int ten_crop;          /* eval: 10 views per sample, consecutive in the batch */
  int out_channels;      /* 0 = stored; 3 with 1 stored = replicate gray */
  float mean[3], std[3]; /* normalization; std[0] == 0 = the file's attributes */
  int prefetch;          /* batches prepared ahead (0 = 2); memory: prefetch + 1 buffers of
                            B/ranks * views * C * crop * crop floats */
} data_loader_opts;

typedef struct {
  float *images;    /* (count * views, C, crop, crop), normalized */
  int32_t *labels;  /* (count) */
  int64_t *indices; /* (count): file indices, for tests and error messages */
  int count;        /* samples of this rank in this batch (may be 0 in eval) */
  int views;        /* 1, or 10 with ten_crop */
  int64_t step;     /* step within the epoch */
  double wait_ms;   /* how long data_loader_next waited for it */
} data_batch;

typedef struct data_loader data_loader;

/* Opens and validates the file, checks the options against it (B divisible
 * by ranks, crop <= stored size, channels, indices in range), allocates the
 * batch ring and starts the reader thread. -1 with a message naming the file. */
int data_loader_open(const data_loader_opts *o, data_loader **out, char *err, size_t errlen);
/* Stops and joins the reader thread (at any point, mid-epoch too) and frees all. */
void data_loader_close(data_loader *ld);
/* Batches (steps) per epoch: floor(N/B) when training, ceil(N/B) in eval. */
int64_t data_loader_steps(const data_loader *ld);
/* Samples the loader draws from: num_indices, or the file's n. */
int64_t data_loader_size(const data_loader *ld);
/* The open file's metadata (labels, class names, mean/std); read-only. */
const data_dataset *data_loader_dataset(const data_loader *ld);
/* Starts producing the batches of `epoch` from step `first_step` on (resume). */
int data_loader_start_epoch(data_loader *ld, int64_t epoch, int64_t first_step, char *err,
                            size_t errlen);
/* Takes the next batch of the epoch; it stays valid until the next call.
 * Returns 1 with a batch, 0 at the end of the epoch, -1 with a message on a
 * read error (naming the file and sample). */
int data_loader_next(data_loader *ld, data_batch *b, char *err, size_t errlen);

/* The epoch permutation of [0, n) that every rank computes alike from
 * (seed, epoch): identity if !shuffle. perm has n entries. */
void data_epoch_permutation(int64_t n, uint64_t seed, int64_t epoch, int shuffle, int64_t *perm);

/* Hold-out split of [0, n) by seed alone (e.g. data.val_fraction when there is
 * no val file; imagefolder's --val-fraction uses the same draw): exactly
 * data_holdout_count(n, fraction) indices go to *held, the rest to *keep, both
 * ascending and malloc'd (caller frees). Returns -1 on a fraction outside
 * [0, 1) or out of memory. */
int data_holdout_split(int64_t n, double fraction, uint64_t seed, int64_t **keep, int64_t *num_keep,
                       int64_t **held, int64_t *num_held, char *err, size_t errlen);
/* round(fraction * n), at least 1 when fraction > 0, at most n. */
int64_t data_holdout_count(int64_t n, double fraction);

#endif
