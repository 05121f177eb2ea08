/*
 * config: the experiment description, read from a YAML file (libyaml), changed
 * by `--set key.path=value` overrides, checked, and written back as YAML (for
 * --print-config and for storing in checkpoints). Every key, its type, default
 * and meaning is documented in docs/config.md.
 *
 * The life of a config in the trainer:
 *   cfg_load(path, &c, ...)              parse + type checks (exit 2 on error)
 *   cfg_set(&c, "optimizer.lr=0.1", ...) once per --set, types checked
 *   cfg_validate(&c, ...)                ranges and cross-key checks
 *   cfg_check_ranks(&c, ranks, ...)      batch sizes divisible by the ranks
 *   cfg_check_paths(&c, ...)             the input files exist
 *   cfg_build_net(&c, &net, ...)         the network (shapes checked by nn)
 *   cfg_free(&c)
 *
 * Every error message has the form "<where>: <key.path>: <what>", where
 * <where> is "<file>:<line>:<column>" (1-based, from libyaml's marks) for a
 * key read from a file, "--set" for an override, and "<file>" for a key left
 * at its default. The trainer exits with status 2 on any of them.
 */
#ifndef LAUNCH_CONFIG_H
#define LAUNCH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

#define CFG_PATH_MAX 4096     /* bytes of a path value, incl. the NUL */
#define CFG_NAME_MAX 128      /* bytes of run.name and model.arch, incl. the NUL */
#define CFG_MAX_MILESTONES 32 /* entries of optimizer.schedule.milestones */
#define CFG_MAX_LAYERS 256    /* layers of model.features / model.classifier each */
#define CFG_MAX_KEYS 96       /* size of the origin table (>= the number of keys) */

typedef enum {
  CFG_SCHED_CONSTANT,  /* lr */
  CFG_SCHED_STEP,      /* lr * gamma^floor(epoch / step_epochs) */
  CFG_SCHED_MULTISTEP, /* lr * gamma^(milestones <= epoch) */
  CFG_SCHED_COSINE,    /* 0.5 * lr * (1 + cos(pi * epoch / epochs)) */
  CFG_SCHED_POLY       /* lr * (1 - epoch / epochs)^power */
} cfg_schedule_type;

typedef enum { CFG_RESUME_AUTO, CFG_RESUME_NEVER, CFG_RESUME_PATH } cfg_resume_mode;

/* train.precision: how convolutions and linear layers multiply (nn.h's
 * nn_bf16_kernel); everything else, the weights and the optimizer stay fp32. */
typedef enum { CFG_PRECISION_FP32, CFG_PRECISION_BF16 } cfg_precision;

/* model.weight_init: auto = paper for arch alexnet, torch for everything else. */
typedef enum { CFG_INIT_AUTO, CFG_INIT_PAPER, CFG_INIT_TORCH, CFG_INIT_KAIMING } cfg_weight_init;

/* optimizer.type */
typedef enum { CFG_OPT_SGD, CFG_OPT_LARS } cfg_optimizer_type;

/* dist.hierarchical: auto (today: the flat ring, which measured faster),
 * on (refused on one node), off. */
typedef enum { CFG_HIER_AUTO, CFG_HIER_ON, CFG_HIER_OFF } cfg_hierarchical;

/* Where a key's value came from, for messages: line 0 = the default. */
typedef struct {
  int line, column; /* 1-based, in cfg_config.source */
  int from_set;     /* 1: from cfg_set (line and column are 0) */
} cfg_origin;

/* The whole experiment. Initialize with cfg_init (or cfg_load*), release with
 * cfg_free. Plain data except the three owned layer arrays of `model`; do not
 * copy the struct and free both copies. */
typedef struct cfg_config {
  struct {
    char name[CFG_NAME_MAX]; /* default: the config file's name without .yaml */
    char dir[CFG_PATH_MAX];  /* default: runs/<name> */
    uint64_t seed;           /* default 1 */
    int deterministic;       /* bool, default 0 */
  } run;
  struct {
    char arch[CFG_NAME_MAX]; /* preset name for nn_preset, "" = explicit layer list */
    int num_classes;         /* 0 = from the data (synthetic.classes, else preset default) */
    double dropout;          /* [0, 1) overrides every dropout layer's p; < 0 (null) = keep */
    int groups;              /* alexnet only: 0 = preset default (2), 1 or 2 */
    int in_channels;         /* C of the network input, default 3 */
    int input_size;          /* H = W of the network input, 0 = data.crop */
    int weight_init;         /* a cfg_weight_init */
    int sync_batchnorm;      /* bool: batch norm statistics over the global batch */
    nn_layer_spec *features; /* (num_features), owned, section NN_FEATURES */
    int num_features;
    int avgpool_h, avgpool_w;  /* adaptive average pool output (explicit lists), 0 = none */
    nn_layer_spec *classifier; /* (num_classifier), owned, section NN_CLASSIFIER */
    int num_classifier;
  } model;
  struct {
    /* HDF5 dataset: a path, a glob, or (from a YAML list) several of them one
     * per line, read as one dataset (shards; data_dataset_open). "" = none */
    char train[CFG_PATH_MAX]; /* "" = synthetic */
    char val[CFG_PATH_MAX];
    struct {
      int64_t n; /* samples; 0 = synthetic data off */
      int size, classes, channels;
    } synthetic;
    int crop;               /* side of the (random / center) crop, default 224 */
    int mirror;             /* bool, default 1 */
    double lighting;        /* PCA lighting noise std, 0 = off */
    int has_mean, has_std;  /* 0 = the dataset file's per-channel statistics */
    double mean[3], std[3]; /* per channel, of pixels in [0, 1] */
    int shuffle;            /* bool, default 1 */
    int prefetch;           /* batches in flight, default 2 */
    double val_fraction;    /* [0, 1): share of train held out for validation */
    int channels;           /* 0 = as stored; 3 = replicate 1-channel data */
    int reader_threads;     /* loader threads reading, decoding, augmenting, default 1 */
    int crop_mode;          /* DATA_CROP_FIXED (AlexNet's) or DATA_CROP_RANDOM_RESIZED */
    int resize;             /* evaluation: shorter side to this, then the centre crop; 0 = off */
  } data;
  struct {
    int batch_size;    /* GLOBAL batch, split evenly over the ranks */
    int epochs;        /* the schedule's horizon */
    int64_t max_steps; /* 0 = no limit; stops early, never changes the schedule */
    int precision;     /* a cfg_precision */
  } train;
  struct {
    int type; /* a cfg_optimizer_type */
    double lr, momentum, weight_decay;
    double lars_eta, lars_eps; /* LARS's trust coefficient and denominator term */
    int nesterov, decay_bias;  /* bools */
    struct {
      int type;                           /* a cfg_schedule_type */
      int step_epochs;                    /* step */
      double gamma;                       /* step, multistep */
      int milestones[CFG_MAX_MILESTONES]; /* multistep: epochs, strictly increasing */
      int num_milestones;
      double power; /* poly */
    } schedule;
    double warmup_epochs; /* linear warmup from 0 over this many epochs */
  } optimizer;
  struct {
    double bucket_mb;
    int overlap;                 /* bool */
    int compress;                /* a dist_compress (DIST_COMPRESS_NONE, _BF16, _FP16, _POWERSGD) */
    int powersgd_rank;           /* >= 1 */
    int64_t powersgd_start_step; /* steps averaged uncompressed before PowerSGD */
    int hierarchical;            /* a cfg_hierarchical */
    double timeout_s;            /* 0 = no limit */
    int threads_per_rank;        /* 0 = cores of the node / ranks on the node */
  } dist;
  struct {
    char dir[CFG_PATH_MAX];         /* default: <run.dir>/checkpoints */
    int64_t every_steps;            /* 0 = off */
    int every_epochs;               /* 0 = off */
    int keep;                       /* newest checkpoints kept */
    int resume;                     /* a cfg_resume_mode */
    char resume_path[CFG_PATH_MAX]; /* CFG_RESUME_PATH: the checkpoint */
    char init[CFG_PATH_MAX];        /* weights to start from, "" = random init */
  } checkpoint;
  struct {
    int every_epochs; /* 0 = only at the end */
    int batch_size;   /* GLOBAL, 0 = train.batch_size */
    int ten_crop;     /* bool */
  } eval;
  struct {
    int every_steps;
  } log;
  char source[CFG_PATH_MAX];       /* file name (or name_for_messages) used in messages */
  cfg_origin origin[CFG_MAX_KEYS]; /* private: where each key was set */
} cfg_config;

/* Fills c with the defaults (docs/config.md); source_name is used in messages
 * and gives the default run.name. Cannot fail. Safe to cfg_free afterwards. */
void cfg_init(cfg_config *c, const char *source_name);

/* The default checkpoint.dir of a run directory, <run_dir>/checkpoints, into
 * out (len bytes; alexnet-predict looks there in a run directory). Returns 0,
 * or -1 with out all zeros when it does not fit. */
int cfg_default_checkpoint_dir(const char *run_dir, char *out, size_t len);

/* Reads a YAML config file into c (defaults first, then the file's keys).
 * Checks syntax, duplicate and unknown keys and value types, not ranges: call
 * cfg_validate after the overrides. Returns 0, or -1 with a message naming
 * file:line:column and the key in err. c is always initialized: on success
 * cfg_free it; on error it holds only the defaults, nothing allocated (what
 * the keys before the refused one built is freed), and cfg_free is safe. */
int cfg_load(const char *path, cfg_config *c, char *err, size_t errlen);

/* Same as cfg_load from YAML text in memory (e.g. a checkpoint's stored
 * config); name_for_messages stands for the file name in messages. */
int cfg_load_string(const char *yaml_text, const char *name_for_messages, cfg_config *c, char *err,
                    size_t errlen);

/* Applies one override "key.path=value": the value is parsed as YAML (a scalar,
 * or a flow sequence / mapping such as "[30, 60]" or "{type: cosine}"; a
 * mapping given for a section sets only the keys it names; an empty value is
 * null). Layer lists are replaced whole. Type checks only, like cfg_load.
 * Returns 0, or -1 with "--set: <key>: ..." in err and c unchanged. Call
 * cfg_validate after the last override. */
int cfg_set(cfg_config *c, const char *assignment, char *err, size_t errlen);

/* Checks ranges and the relations between keys (one data source, crop vs
 * synthetic size, schedule parameters, a known arch via nn_preset, layer
 * parameters, ...). Returns 0, or -1 with the first problem in err. */
int cfg_validate(const cfg_config *c, char *err, size_t errlen);

/* Checks that train.batch_size and the effective eval batch are divisible by
 * `ranks`. Returns 0, or -1 with a message in err. */
int cfg_check_ranks(const cfg_config *c, int ranks, char *err, size_t errlen);

/* Checks that data.train, data.val, checkpoint.init and a resume path, when
 * set, name readable regular files. Returns 0, or -1 with a message in err. */
int cfg_check_paths(const cfg_config *c, char *err, size_t errlen);

/* The effective config as YAML text (malloc'd, caller frees; NULL only when
 * out of memory). cfg_load_string of it gives back an equal config. */
char *cfg_to_yaml(const cfg_config *c);

/* Frees the layer arrays and zeroes c. Safe on a zeroed struct and twice. */
void cfg_free(cfg_config *c);

/* Learning rate for a step that starts `epoch_progress` epochs after the
 * start of training (step / steps_per_epoch; fractional). step and multistep
 * change at whole epochs (they use floor(epoch_progress)); cosine, poly and
 * the warmup change every step. Warmup multiplies the schedule by
 * epoch_progress / warmup_epochs while that is < 1 (so it starts at 0).
 * cosine and poly reach 0 at train.epochs and stay there. Cannot fail. */
double cfg_lr_at(const cfg_config *c, double epoch_progress);

/* The network's layer list: nn_preset(model.arch) with the model options, or
 * the explicit features / avgpool / classifier lists. *specs is malloc'd
 * (caller frees); *input is (in_channels, input_size or crop, same). Returns
 * 0, or -1 with a message in err. Does not check shapes (nn_net_build does). */
int cfg_model_specs(const cfg_config *c, nn_layer_spec **specs, int *count, nn_shape *input,
                    char *err, size_t errlen);

/* cfg_model_specs + nn_net_build: the network with zeroed parameters.
 * Returns 0, or -1 with "<file>: model: <nn's message naming the layer and
 * the shapes>" in err and *net left empty. */
int cfg_build_net(const cfg_config *c, nn_net *net, char *err, size_t errlen);

/* Names of the enum values as written in YAML ("step", "bf16", ...). */
const char *cfg_schedule_name(int type);
const char *cfg_compress_name(int compress);

#endif
