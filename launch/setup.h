/*
 * setup: what alexnet-train and alexnet-eval both do before their loops:
 * resolve the config's data (synthetic files made once by rank 0, a val split
 * held out of train), open the sharded loaders, build the network for the
 * data's class count, and report errors the same way on every rank.
 */
#ifndef LAUNCH_SETUP_H
#define LAUNCH_SETUP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "data.h"
#include "nn.h"

typedef struct {
  char train_path[CFG_PATH_MAX + 128];  /* "" = no training data */
  char val_path[CFG_PATH_MAX + 128];    /* "" = no validation */
  int64_t *train_indices, *val_indices; /* val_fraction split of train, else NULL */
  int64_t num_train_indices, num_val_indices;
  data_loader *train, *val; /* owned, NULL when absent */
  float mean[3], std[3];    /* the normalization in effect */
  int channels;             /* network input channels */
} setup_data;

/* Decides the files: data.train / data.val, or synthetic files under run.dir
 * (written by rank 0 once, then every rank waits), or the val_fraction split.
 * Collective. Returns 0, or -1 with a message. */
int setup_resolve(const cfg_config *c, setup_data *s, char *err, size_t errlen);

/* Opens the train loader (if train_path) and the val loader (if val_path)
 * for this rank. Collective in its error handling: when any rank fails, all
 * return -1 with that rank's message. */
int setup_open_loaders(const cfg_config *c, setup_data *s, int open_train, char *err,
                       size_t errlen);

/* Builds the network: model.num_classes (0 = the data's class count) and
 * checks that it and the input channels fit the data. c->model.num_classes is
 * set to the effective count. With train.precision bf16, sets net->kernel to
 * the bf16 kernel of this CPU (nn_bf16_select). Returns 0, or -1 with a
 * message. */
int setup_build_net(cfg_config *c, const setup_data *s, nn_net *net, char *err, size_t errlen);

void setup_free(setup_data *s);

/* The tool's name for messages ("alexnet-train"); main sets it first. */
extern const char *setup_tool;

/* Leaves the job: rank 0 prints "<tool>: <message>" on stderr (fmt NULL:
 * nothing), then every rank finalizes MPI and exits with status, so mpirun
 * sees one consistent status and nothing hangs. Every rank must call it. */
void setup_exit(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Loads config_path into c, applies the num_sets "key=value" overrides in
 * order and validates the result; on any error, leaves through setup_exit
 * with status 2 and the message (file:line:col or the --set key). */
void setup_load_config(const char *config_path, const char *const *sets, int num_sets,
                       cfg_config *c);

/* The global evaluation batch: eval.batch_size, else train.batch_size,
 * rounded up to a multiple of ranks. */
int setup_eval_batch(const cfg_config *c, int ranks);

/* Creates dir and its parents (mkdir -p). Returns 0, or -1 with a message. */
int setup_mkdirs(const char *dir, char *err, size_t errlen);

#endif
