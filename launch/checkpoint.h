/*
 * checkpoint: a network's parameters, its optimizer state and where the run
 * stands, in one HDF5 file a user can read with h5py (docs/checkpoint-format.md).
 *   /model/<name>                 float32, PyTorch layout and name: parameters, then
 *                                 buffers (batch norm running statistics; num_batches_tracked
 *                                 a float32 scalar)
 *   /optimizer/momentum/<name>    float32, same (absent for weight-only files)
 *   /classes                      class names (optional)
 *   root attributes: format = "alexnet-checkpoint", version, step, epoch,
 *   step_in_epoch, seed, arch, config (YAML), num_classes, input (C,H,W),
 *   mean, std, checksum (FNV-1a 64 of every tensor's bytes in order), and
 *   complete = 1, written last: a file without it is never taken for whole.
 *   /dist/powersgd                dist.compress: powersgd's state (its own
 *                                 attributes and checksum; see ckpt_psgd)
 * Files are written under "<path>.tmp", fsync'd, then renamed.
 */
#ifndef LAUNCH_CHECKPOINT_H
#define LAUNCH_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

#define CKPT_FORMAT_NAME "alexnet-checkpoint"
#define CKPT_FORMAT_VERSION 1

/* PowerSGD's state (docs/checkpoint-format.md, "PowerSGD"): the group
 * /dist/powersgd's attributes. Its datasets, all float32 1-D, in the order
 * they are written, hashed and read (ckpt_save_psgd_floats,
 * ckpt_psgd_read_floats):
 *   rank-<k>/error_feedback   (error_floats) rank k's E, k = 0 .. ranks-1,
 *   rank-<k>/warm_start       (warm_start_floats) after it, when not shared
 *   warm_start                (warm_start_floats) last, when shared
 * none at all when error_floats is 0 (written before a compressed step:
 * E is zero and Q its seed's). */
typedef struct {
  int ranks;                  /* ranks of the run that wrote it */
  int powersgd_rank;          /* dist.powersgd_rank */
  int64_t start_step;         /* dist.powersgd_start_step */
  int64_t passes;             /* reducer passes taken: the file's step */
  uint64_t error_floats;      /* per rank: dist_reducer_error_floats, 0 = no state */
  uint64_t warm_start_floats; /* per rank: the rest of dist_reducer_state_floats */
  int shared_warm_start;      /* 1: every rank's warm start was the same, stored once */
} ckpt_psgd;

/* Pieces of the state a writer or reader handles at a time (floats). */
#define CKPT_PSGD_CHUNK ((size_t)1 << 20)

typedef struct {
  int64_t step;          /* optimizer steps taken (global) */
  int64_t epoch;         /* epoch the next step belongs to */
  int64_t step_in_epoch; /* the next step's index inside that epoch */
  uint64_t seed;         /* run.seed: every random stream derives from it and the step */
  char arch[64];         /* preset name, or "custom" for a layer list */
  char *config_yaml;     /* effective config, owned (may be NULL) */
  int num_classes;
  nn_shape input;
  float mean[3], std[3]; /* normalization the model was trained with */
  char **class_names;    /* num_classes strings or NULL, owned */
  int has_momentum;      /* set by ckpt_read_meta */
  char run_id[40];       /* the run (lineage) that wrote it: set by a fresh start, kept
                          * by every resume; "" = written before run ids existed */
  int has_psgd;          /* set by ckpt_read_meta: the file holds /dist/powersgd */
  ckpt_psgd psgd;        /* its attributes, when has_psgd */
} ckpt_meta;

/* Fault injection for tests (docs/reliability.md, "test hooks"): called by
 * ckpt_save after each tensor reached the file open as hdf5_file, with the
 * count written so far. NULL in production; tests/faults/hooked.c sets it. */
extern void (*ckpt_test_on_tensor)(int64_t hdf5_file, long written);

/* Writes net's parameters (and momentum, when not NULL) with meta to path,
 * atomically. Returns 0, or -1 with a message naming the file; the previous
 * file at path, if any, is untouched on failure. */
int ckpt_save(const char *path, const nn_net *net, const float *momentum, const ckpt_meta *meta,
              char *err, size_t errlen);

/* The same in stages, for a state that arrives in pieces (PowerSGD's, from
 * every rank): begin writes the tensors (meta, net and momentum must live
 * until end); ckpt_save_psgd declares /dist/powersgd; ckpt_save_psgd_floats
 * appends the next count floats of its datasets in their order; end writes
 * the attributes, the marker, and renames. After a failure every call but
 * end does nothing, and end reports it (removing the .tmp file): a caller
 * that gathers the pieces from other ranks goes on gathering. begin returns
 * NULL only when out of memory, which end then reports. */
typedef struct ckpt_writer ckpt_writer;
ckpt_writer *ckpt_save_begin(const char *path, const nn_net *net, const float *momentum,
                             const ckpt_meta *meta);
void ckpt_save_psgd(ckpt_writer *w, const ckpt_psgd *ps);
void ckpt_save_psgd_floats(ckpt_writer *w, const float *buf, size_t count);
int ckpt_save_end(ckpt_writer *w, char *err, size_t errlen);

/* Reading /dist/powersgd back in pieces (a resume): open reads and checks
 * the file's attributes, *ps filled (NULL with a message when the file has
 * no such group or is not one); read_floats fills the next count floats in
 * the datasets' order (zeros after a failure, returning -1: a caller
 * sending the pieces to other ranks goes on sending); close checks that
 * every float was read, finite, and the group's checksum, and frees.
 * Returns 0, or -1 with the first failure's message. */
typedef struct ckpt_psgd_reader ckpt_psgd_reader;
ckpt_psgd_reader *ckpt_psgd_open(const char *path, ckpt_psgd *ps, char *err, size_t errlen);
int ckpt_psgd_read_floats(ckpt_psgd_reader *r, float *buf, size_t count);
int ckpt_psgd_close(ckpt_psgd_reader *r, char *err, size_t errlen);

/* Reads the attributes and class names only (to build the right network).
 * Refuses another format, a future version or an incomplete file. */
int ckpt_read_meta(const char *path, ckpt_meta *meta, char *err, size_t errlen);

/* Loads parameters into net (every tensor must be present with net's shape)
 * and momentum when not NULL (then it must be in the file); verifies the
 * checksum, and /dist/powersgd when present (read in pieces: values,
 * shapes, its checksum; the state itself is restored by the trainer). On failure net's parameters
 * may be partly written: callers load before training starts and exit on failure. meta may be NULL.
 */
int ckpt_load(const char *path, nn_net *net, float *momentum, ckpt_meta *meta, char *err,
              size_t errlen);

void ckpt_meta_free(ckpt_meta *meta);

/* Loads the newest checkpoint of dir ("step-<N>.h5", highest N) that loads
 * completely (format, completeness marker, shapes, checksum), skipping broken
 * ones with a line on stderr each. Returns 1 with its path, 0 when there is
 * none (net untouched only if no file was tried), -1 on error. */
int ckpt_load_latest(const char *dir, nn_net *net, float *momentum, ckpt_meta *meta, char *path,
                     size_t pathlen, char *err, size_t errlen);

/* checkpoint.keep for run run_id, after it wrote step `upto` in dir: of the
 * step-<N>.h5 files with N <= upto whose run_id attribute is run_id and
 * that load and verify into a network shaped like net (read into scratch
 * buffers: net is untouched), keeps the newest `keep` and deletes the older
 * ones. Nothing else is ever deleted: other runs' files, broken files, files
 * of later steps. Returns the number of files deleted. */
int ckpt_prune_run(const char *dir, int keep, const nn_net *net, const char *run_id, int64_t upto);

/* Loads path into scratch buffers shaped like net and verifies it (format,
 * completeness, shapes, checksum) without touching net. Returns 0, or -1
 * with the loader's message. */
int ckpt_verify(const char *path, const nn_net *net, ckpt_meta *meta, char *err, size_t errlen);

/* Looks for a checkpoint of dir written by another run than run_id (any run
 * when run_id is NULL) that auto-resume could take: a step-<N>.h5 file whose
 * run_id differs and that loads and verifies into a network shaped like net.
 * Returns 1 with the newest such file's path and run in path and other_run,
 * 0 when there is none. */
int ckpt_find_other_run(const char *dir, const char *run_id, const nn_net *net, char *path,
                        size_t pathlen, char *other_run, size_t other_len);

/* The steps N of dir's step-<N>.h5 files, newest first, in *steps (malloc'd).
 * Returns the count (0 when dir does not exist), or -1 when it cannot be read. */
int ckpt_list_steps(const char *dir, int64_t **steps);

/* Path of the checkpoint of a step: "<dir>/step-<N>.h5" (N zero-padded to 8). */
void ckpt_step_path(const char *dir, int64_t step, char *path, size_t pathlen);

#endif
