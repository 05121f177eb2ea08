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
/* Version 1: raw pixels in /images (still what raw files are written as, so
 * older builds read them). Version 2 adds the `encoding` attribute and
 * JPEG-encoded files (/jpeg, /offsets, /shapes). This build reads 1 and 2. */
#define DATA_FORMAT_VERSION 2
#define DATA_FORMAT_VERSION_RAW 1

typedef enum { DATA_ENCODING_RAW = 0, DATA_ENCODING_JPEG = 1 } data_encoding;

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
/* The same with the shorter side to `resize`, then the centred crop x crop
 * window (torchvision's Resize(resize) + CenterCrop(crop); crop <= resize). */
void data_image_resize_crop(const data_image *src, int resize, int crop, uint8_t *dst);

/* Encodes (h, w, c) pixels (c = 1 or 3) as a baseline JPEG of the given
 * quality (1..100; 4:2:0 chroma subsampling, libjpeg-turbo's defaults, so
 * the bytes are a function of the pixels and quality only). *out is
 * malloc'd (caller frees). -1 with a message naming `name` on failure. */
int data_jpeg_encode(const uint8_t *pixels, int w, int h, int c, int quality, const char *name,
                     uint8_t **out, size_t *len, char *err, size_t errlen);

/* Decodes a JPEG with DCT scaling (scale_num / 8, 1..8) to RGB; img's
 * full_w/full_h/scale describe the geometry as data_image says. */
int data_jpeg_decode_scaled(const uint8_t *buf, size_t len, const char *name, int scale_num,
                            data_image *img, char *err, size_t errlen);
/* The smallest libjpeg scale (num of num/8) whose decoded w x h picture
 * still has at least need_w x need_h pixels inside the box bw x bh of the
 * full image (i.e. ceil-free: bw * num / 8 >= need_w and bh * num / 8 >= need_h). */
int data_jpeg_scale_for(double bw, double bh, int need_w, int need_h);

/* Resizes the box (bx, by, bw, bh) of src (in full-image pixels, see
 * data_image) to out_w x out_h, as PIL's img.crop(box).resize((out_w,
 * out_h), BILINEAR) does for an integer box (the filter does not reach
 * outside the box). dst has out_w*out_h*c bytes. */
void data_image_resize_box(const data_image *src, double bx, double by, double bw, double bh,
                           int out_w, int out_h, uint8_t *dst);

/* torchvision's RandomResizedCrop.get_params with scale (0.08, 1) and ratio
 * (3/4, 4/3) on a width x height image, given the draws of its tries:
 * area[t] the fraction of the area (uniform in [0.08, 1)), aspect[t] the
 * aspect ratio (exp of a uniform in [log 3/4, log 4/3)), pos[2t], pos[2t+1]
 * uniforms in [0, 1) picking the top and the left offset (floor(u * range)).
 * After DATA_RRC_TRIES misses, torchvision's centre fallback. The box is
 * (x, y) (left, top) and w x h. */
#define DATA_RRC_TRIES 10
void data_rrc_box(int width, int height, const double *area, const double *aspect,
                  const double *pos, int *x, int *y, int *w, int *h);

/* torchvision's Resize(resize) (shorter side to resize, the longer to
 * floor(long*resize/short)): the size it gives. */
void data_resize_shape(int w, int h, int resize, int *out_w, int *out_h);

/* Writes an 8-bit RGB (c = 3) or gray (c = 1) PNG; -1 with a message naming
 * the path if it cannot be created or written. */
int data_png_write(const char *path, int w, int h, int c, const uint8_t *pixels, char *err,
                   size_t errlen);

/* ------------------------------------------------------------------------ */
/* The dataset file                                                          */

typedef struct data_dataset data_dataset;
struct data_dataset {
  char path[4096];  /* the file; for shards the first file's path */
  int64_t n;        /* samples */
  int h, w, c;      /* raw: the stored image size; jpeg: the largest height and width */
  int min_h, min_w; /* the smallest stored height and width (raw: h, w) */
  int encoding;     /* data_encoding */
  int num_classes;
  float mean[3], std[3];      /* per channel, of pixels scaled to [0, 1] */
  char **class_names;         /* num_classes strings, owned */
  int32_t *labels;            /* (n), owned, read and validated at open */
  int32_t *shapes;            /* jpeg: (n, 2) height, width of each image; NULL for raw */
  int64_t *offsets;           /* jpeg: (n + 1) byte offsets of each image in /jpeg */
  int64_t file_id, images_id; /* HDF5 handles (hid_t; /images or /jpeg), kept open for reads */
  int64_t file_size;          /* bytes at open: a smaller file later = truncated */
  int64_t mtime_ns;           /* modification time at open: another later = overwritten */
  /* The exact pixel statistics (attributes pixel_count, pixel_sum, pixel_sumsq),
   * from which shards' mean/std combine bit for bit as one file's; count 0 = absent. */
  uint64_t pixel_count, pixel_sum[3], pixel_sumsq[3];
  /* Several files read as one (shards): the files, in order, and the global
   * index of each one's first sample (num_shards + 1 entries). 0 = one file. */
  int num_shards;
  data_dataset *shards;
  int64_t *shard_first;
};

/* The largest stored image data_dataset_open accepts, in pixels (H * W):
 * 8192 x 8192, the largest crop a config takes. Every reader thread holds one. */
#define DATA_MAX_IMAGE_PIXELS (1 << 26)

/* Opens and validates a dataset file read-only: the format attribute and
 * version, /images (uint8, rank 4, C in {1,3}) or for JPEG files /jpeg,
 * /offsets and /shapes, /labels (int32, same length, all in [0,
 * num_classes)), /classes (num_classes strings), mean and std. Refuses
 * anything else with a message naming file, dataset and first bad index.
 * `path` may also name several files read as one dataset (shards): a glob
 * (`train-*-of-00004.h5`, sorted) or several paths or globs one per line.
 * Their samples are numbered in that order; their classes, channels,
 * encoding (and raw image size) must agree, else the message names both
 * files. A path that exists as a file is taken literally. */
int data_dataset_open(const char *path, data_dataset *ds, char *err, size_t errlen);
/* Decodes sample i's JPEG bytes (from data_dataset_read_bytes) at
 * scale_num / 8 (8 = full size) and checks them against /shapes; a corrupt
 * JPEG fails with a message naming the file (shard) and the sample. */
int data_dataset_decode(const data_dataset *ds, int64_t i, const uint8_t *buf, size_t len,
                        int scale_num, data_image *img, char *err, size_t errlen);
/* Sample i's stored height and width. */
void data_dataset_shape(const data_dataset *ds, int64_t i, int *h, int *w);
/* The file holding sample i and the sample's index in it. */
const char *data_dataset_locate(const data_dataset *ds, int64_t i, int64_t *local);
/* Reads sample i's stored bytes: a JPEG's bytes, or a raw image's pixels,
 * into *buf (grown with realloc to *cap bytes; *buf may start NULL); *len
 * says how many. Errors as data_dataset_read. */
int data_dataset_read_bytes(data_dataset *ds, int64_t i, uint8_t **buf, size_t *cap, size_t *len,
                            char *err, size_t errlen);
/* Closes the handles and frees labels and names; safe to call twice. */
void data_dataset_close(data_dataset *ds);

/* Reads sample i's pixels (h, w, c) into dst (JPEG files: decoded, of the
 * sample's own shape, at most ds->h * ds->w * ds->c bytes). Fails with a message naming the
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
/* A JPEG-encoded file (format version 2): images of any size, c = 1 or 3,
 * appended as their encoded bytes with data_writer_append_jpeg. */
int data_writer_create_jpeg(const char *path, int c, int num_classes,
                            const char *const *class_names, data_writer **out, char *err,
                            size_t errlen);
/* Appends one JPEG (len bytes) of an h x w image, with the per-channel sums
 * and sums of squares of the pixels it was encoded from (the file's mean/std). */
int data_writer_append_jpeg(data_writer *wr, const uint8_t *jpeg, size_t len, int h, int w,
                            const uint64_t sum[3], const uint64_t sumsq[3], int32_t label,
                            char *err, size_t errlen);
/* Per-channel sums and sums of squares of n pixels of c channels. */
void data_pixel_sums(const uint8_t *pixels, size_t n, int c, uint64_t sum[3], uint64_t sumsq[3]);
/* As data_writer_finish but leaves the complete file as "<path>.tmp" (not
 * renamed): several processes can agree before anyone commits. */
int data_writer_finish_tmp(data_writer *wr, char *err, size_t errlen);
/* Renames "<path>.tmp" to path and syncs the directory; -1 with a message. */
int data_commit_tmp(const char *path, char *err, size_t errlen);
/* Shard s of k of OUT.h5: "OUT-0000s-of-0000k.h5" (".h5" is appended if OUT
 * lacks it). */
void data_shard_path(const char *out, int s, int k, char *buf, size_t len);

/* Turns off HDF5's automatic error-stack printing for the calling thread
 * (the thread-safe HDF5 build keeps one error stack per thread): data/ and
 * launch/ report HDF5's errors themselves. Cannot fail. */
void data_hdf5_quiet(void);
/* Closes an HDF5 file (its hid_t) that data/ or launch/ opened. Returns 0,
 * or -1 if HDF5 could not close it (a last flush that hit a full disk or a
 * quota, a corrupt file): HDF5 1.10 then leaves a dangling id that would
 * crash its clean-up at exit, which is therefore skipped (data/hdf5_file.c);
 * the caller reports the error and must not use HDF5 again. */
int data_hdf5_close(int64_t file_id);
/* Checks, from the file's bytes, that the variable-length strings of
 * attribute `attr` of object obj (attr NULL: of dataset obj) can be read by
 * HDF5 1.10, which trusts their stored lengths and heap objects and corrupts
 * memory on a changed byte there. Call it before H5Aread/H5Dread of such
 * strings. Returns 0, or -1 with what is corrupt in why. */
int data_hdf5_check_vlen(int64_t obj, const char *attr, char *why, size_t whylen);
/* Checks, from the file's bytes, that every attribute message in the object
 * header of obj (a file or group id: its root group) holds together (name,
 * type, space and data sizes inside the message): HDF5 1.10 trusts them, and
 * any H5Aexists/H5Aopen on that object would overflow the heap on a changed
 * byte there. Call it after opening a file, before reading its attributes.
 * Returns 0, or -1 with what is corrupt in why. */
int data_hdf5_check_attrs(int64_t obj, char *why, size_t whylen);
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
  int compress;            /* 0 = none, 1-9 = deflate level */
  int threads;             /* decoding threads, 0 = all cores */
  int progress;            /* 1: progress (a bar on a terminal) and the skipped list on stderr */
  uint64_t seed;           /* imagefolder: the val split; synthetic: the samples */
  const char *class_names; /* idx, imagefolder --labels with numbers: class names, one a line */
  int encode;              /* imagefolder: DATA_ENCODING_RAW (size x size centre crops) or
                              DATA_ENCODING_JPEG (shorter side to size, aspect kept, JPEG) */
  int quality;             /* JPEG quality 1..100 (0 = 90) */
  int shards;              /* imagefolder: this many files data_shard_path(out, s, shards),
                              shard s holding listed images [s*n/K, (s+1)*n/K); 0, 1 = one */
  int shard_rank, shard_ranks; /* write only shards s with s % shard_ranks == shard_rank */
  int keep_tmp;                /* leave complete "<file>.tmp" files for data_commit_tmp */
  const char *labels;          /* imagefolder: DIR is flat, this file gives each image's class:
                                  lines "filename label-or-class", or ImageNet's
                                  LOC_val_solution.csv ("ImageId,PredictionString") */
  data_convert_stats *stats;   /* optional: filled on success */
} data_convert_opts;

/* torchvision's ImageFolder layout: class = sorted subfolder names, images
 * found recursively in sorted order (.jpg/.jpeg/.png, any case). Corrupt
 * images are skipped and counted; all unreadable = an error. With
 * o->labels, DIR is a flat folder and the file names each image's class
 * (a name missing from DIR, or an image without a line, is an error before
 * anything is written). With o->shards, the shards this process writes. */
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
  const char *path;       /* the dataset file, or shards (data_dataset_open) */
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
  int prefetch;          /* batches prepared ahead (0 = 2); memory: max(prefetch, reader
                            threads) + 1 buffers of B/ranks * views * C * crop * crop floats */
  int crop_mode;         /* train: DATA_CROP_FIXED or DATA_CROP_RANDOM_RESIZED */
  int resize;            /* eval: shorter side to resize, then the centre crop(s); 0 = crop the
                            stored image as it is */
  int reader_threads;    /* threads reading, decoding and augmenting whole batches (0 = 1) */
} data_loader_opts;

/* Training crops: AlexNet's crop x crop window of the stored image, or
 * torchvision's RandomResizedCrop (scale (0.08, 1), ratio (3/4, 4/3),
 * bilinear with antialias) of the stored image resized to crop x crop. */
enum { DATA_CROP_FIXED = 0, DATA_CROP_RANDOM_RESIZED = 1 };

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
