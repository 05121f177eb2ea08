/*
 * test_config: the YAML config module (launch/config.c). Defaults, the
 * shipped configs, every error message the loader, the overrides and the
 * checks can print (each compared whole), --set, the YAML round trip, the
 * learning rate schedules against hand-computed values and the explicit
 * layer list syntax.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dist.h"
#include "testutil.h"

#define ERRLEN 4096

/* Minimal valid sections, for cases about something else. */
#define OK_MODEL "model: {arch: alexnet_cifar}\n"
#define OK_DATA "data: {synthetic: {n: 64}, crop: 32}\n"

static void write_file(const char *path, const char *text, size_t len) {
  FILE *f = fopen(path, "wb");
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT_FATAL(fwrite(text, 1, len, f) == len);
  fclose(f);
}

/* Loads a shipped config by name. */
static int load_shipped(const char *name, cfg_config *c, char *err) {
  char path[4096];
  snprintf(path, sizeof path, "%s/configs/%s", ALEXNET_SOURCE_DIR, name);
  return cfg_load(path, c, err, ERRLEN);
}

/* ------------------------------------------------------------------------ */
/* Defaults and shipped configs                                              */

static void test_defaults(void) {
  cfg_config c;
  cfg_init(&c, "configs/my-run.yaml");
  CU_ASSERT_STRING_EQUAL(c.source, "configs/my-run.yaml");
  CU_ASSERT_STRING_EQUAL(c.run.name, "my-run");
  CU_ASSERT_STRING_EQUAL(c.run.dir, "runs/my-run");
  CU_ASSERT_STRING_EQUAL(c.checkpoint.dir, "runs/my-run/checkpoints");
  CU_ASSERT_EQUAL(c.run.seed, 1);
  CU_ASSERT_EQUAL(c.run.deterministic, 0);
  CU_ASSERT_STRING_EQUAL(c.model.arch, "");
  CU_ASSERT_EQUAL(c.model.num_classes, 0);
  CU_ASSERT(c.model.dropout < 0);
  CU_ASSERT_EQUAL(c.model.groups, 0);
  CU_ASSERT_EQUAL(c.model.in_channels, 3);
  CU_ASSERT_EQUAL(c.model.input_size, 0);
  CU_ASSERT_EQUAL(c.model.weight_init, CFG_INIT_AUTO);
  CU_ASSERT_EQUAL(c.model.num_features + c.model.num_classifier, 0);
  CU_ASSERT_EQUAL(c.data.synthetic.n, 0);
  CU_ASSERT_EQUAL(c.data.synthetic.size, 32);
  CU_ASSERT_EQUAL(c.data.synthetic.classes, 10);
  CU_ASSERT_EQUAL(c.data.synthetic.channels, 3);
  CU_ASSERT_EQUAL(c.data.crop, 224);
  CU_ASSERT_EQUAL(c.data.mirror, 1);
  CU_ASSERT_EQUAL(c.data.lighting, 0);
  CU_ASSERT_EQUAL(c.data.has_mean + c.data.has_std, 0);
  CU_ASSERT_EQUAL(c.data.shuffle, 1);
  CU_ASSERT_EQUAL(c.data.prefetch, 2);
  CU_ASSERT_EQUAL(c.data.val_fraction, 0);
  CU_ASSERT_EQUAL(c.data.channels, 0);
  CU_ASSERT_EQUAL(c.train.batch_size, 128);
  CU_ASSERT_EQUAL(c.train.epochs, 90);
  CU_ASSERT_EQUAL(c.train.max_steps, 0);
  CU_ASSERT_EQUAL(c.train.precision, CFG_PRECISION_FP32);
  CU_ASSERT_EQUAL(c.optimizer.lr, 0.01);
  CU_ASSERT_EQUAL(c.optimizer.momentum, 0.9);
  CU_ASSERT_EQUAL(c.optimizer.weight_decay, 5e-4);
  CU_ASSERT_EQUAL(c.optimizer.nesterov, 0);
  CU_ASSERT_EQUAL(c.optimizer.decay_bias, 1);
  CU_ASSERT_EQUAL(c.optimizer.schedule.type, CFG_SCHED_STEP);
  CU_ASSERT_EQUAL(c.optimizer.schedule.step_epochs, 30);
  CU_ASSERT_EQUAL(c.optimizer.schedule.gamma, 0.1);
  CU_ASSERT_EQUAL(c.optimizer.schedule.num_milestones, 0);
  CU_ASSERT_EQUAL(c.optimizer.schedule.power, 1.0);
  CU_ASSERT_EQUAL(c.optimizer.warmup_epochs, 0);
  CU_ASSERT_EQUAL(c.dist.bucket_mb, 25);
  CU_ASSERT_EQUAL(c.dist.overlap, 1);
  CU_ASSERT_EQUAL(c.dist.compress, DIST_COMPRESS_NONE);
  CU_ASSERT_EQUAL(c.dist.powersgd_rank, 4);
  CU_ASSERT_EQUAL(c.dist.powersgd_start_step, 1000);
  CU_ASSERT_EQUAL(c.dist.hierarchical, CFG_HIER_AUTO);
  CU_ASSERT_EQUAL(c.dist.timeout_s, 300);
  CU_ASSERT_EQUAL(c.dist.threads_per_rank, 0);
  CU_ASSERT_EQUAL(c.checkpoint.every_steps, 0);
  CU_ASSERT_EQUAL(c.checkpoint.every_epochs, 1);
  CU_ASSERT_EQUAL(c.checkpoint.keep, 3);
  CU_ASSERT_EQUAL(c.checkpoint.resume, CFG_RESUME_AUTO);
  CU_ASSERT_STRING_EQUAL(c.checkpoint.init, "");
  CU_ASSERT_EQUAL(c.eval.every_epochs, 1);
  CU_ASSERT_EQUAL(c.eval.batch_size, 0);
  CU_ASSERT_EQUAL(c.eval.ten_crop, 0);
  CU_ASSERT_EQUAL(c.log.every_steps, 10);
  cfg_free(&c);

  /* A source name that is no file name gives the run name "run". */
  cfg_init(&c, "checkpoint step-00000100.h5");
  CU_ASSERT_STRING_EQUAL(c.run.name, "run");
  cfg_free(&c);
  cfg_free(&c); /* twice is safe */

  /* An empty file is all defaults, which validate once there is a model and data. */
  char err[ERRLEN] = "";
  CU_ASSERT_EQUAL(cfg_load_string("", "empty.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_STRING_EQUAL(c.run.name, "empty");
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "empty.yaml: model.arch: no model: set model.arch or an explicit "
                         "model.features / model.classifier list");
  cfg_free(&c);
  CU_ASSERT_EQUAL(cfg_load_string(OK_MODEL OK_DATA, "min.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  cfg_free(&c);
}

static const char *const shipped[] = {"imagenet.yaml",         "imagenet-owt.yaml",
                                      "cifar10.yaml",          "fashion-mnist.yaml",
                                      "flowers17.yaml",        "debug.yaml",
                                      "imagenet-bn-lars.yaml", "fashion-mnist-large-batch.yaml"};
#define NUM_SHIPPED ((int)(sizeof shipped / sizeof shipped[0]))

static void test_shipped_configs_validate(void) {
  char err[ERRLEN];
  for (int i = 0; i < NUM_SHIPPED; i++) {
    cfg_config c;
    int rc = load_shipped(shipped[i], &c, err);
    if (rc == 0) rc = cfg_validate(&c, err, ERRLEN);
    if (rc == 0) rc = cfg_check_ranks(&c, 1, err, ERRLEN);
    if (rc) fprintf(stderr, "\n  %s: %s\n", shipped[i], err);
    CU_ASSERT_EQUAL(rc, 0);
    nn_layer_spec *specs = NULL;
    int count = 0;
    nn_shape in;
    CU_ASSERT_EQUAL(cfg_model_specs(&c, &specs, &count, &in, err, ERRLEN), 0);
    CU_ASSERT(count > 0);
    CU_ASSERT_EQUAL(in.h, c.data.crop);
    CU_ASSERT_EQUAL(in.c, c.model.in_channels);
    free(specs);
    cfg_free(&c);
  }
  /* No config in configs/ is left out of this list. */
  char cmd[4200], out[4096];
  snprintf(cmd, sizeof cmd, "ls %s/configs/*.yaml | wc -l", ALEXNET_SOURCE_DIR);
  CU_ASSERT_EQUAL(tu_run_cmd(cmd, out, sizeof out), 0);
  CU_ASSERT_EQUAL(atoi(out), NUM_SHIPPED);
}

static void test_shipped_config_values(void) {
  char err[ERRLEN];
  cfg_config c;
  /* The paper. */
  CU_ASSERT_EQUAL_FATAL(load_shipped("imagenet.yaml", &c, err), 0);
  CU_ASSERT_STRING_EQUAL(c.model.arch, "alexnet");
  CU_ASSERT_EQUAL(c.model.groups, 2);
  CU_ASSERT_EQUAL(c.data.crop, 227);
  CU_ASSERT_EQUAL(c.data.lighting, 0.1);
  CU_ASSERT_STRING_EQUAL(c.data.train, "data/imagenet/train.h5");
  CU_ASSERT_STRING_EQUAL(c.data.val, "data/imagenet/val.h5");
  CU_ASSERT_EQUAL(c.train.batch_size, 128);
  CU_ASSERT_EQUAL(c.train.epochs, 90);
  CU_ASSERT_EQUAL(c.optimizer.lr, 0.01);
  CU_ASSERT_EQUAL(c.optimizer.momentum, 0.9);
  CU_ASSERT_EQUAL(c.optimizer.weight_decay, 5e-4);
  CU_ASSERT_EQUAL(c.optimizer.schedule.type, CFG_SCHED_STEP);
  CU_ASSERT_EQUAL(c.optimizer.schedule.step_epochs, 30);
  CU_ASSERT_EQUAL(c.optimizer.schedule.gamma, 0.1);
  CU_ASSERT_EQUAL(c.model.weight_init, CFG_INIT_PAPER);
  cfg_free(&c);
  /* torchvision's recipe. */
  CU_ASSERT_EQUAL_FATAL(load_shipped("imagenet-owt.yaml", &c, err), 0);
  CU_ASSERT_STRING_EQUAL(c.model.arch, "alexnet_owt");
  CU_ASSERT_EQUAL(c.data.crop, 224);
  CU_ASSERT_EQUAL(c.train.batch_size, 256);
  CU_ASSERT_EQUAL(c.optimizer.weight_decay, 1e-4);
  CU_ASSERT_EQUAL(c.data.has_mean, 1);
  CU_ASSERT_EQUAL(c.data.std[2], 0.225);
  cfg_free(&c);
  /* TFLearn's flowers network: LRN after each pooling, tanh fully connected. */
  CU_ASSERT_EQUAL_FATAL(load_shipped("flowers17.yaml", &c, err), 0);
  CU_ASSERT_EQUAL(c.optimizer.lr, 0.001);
  CU_ASSERT_EQUAL(c.train.batch_size, 64);
  CU_ASSERT_EQUAL(c.data.val_fraction, 0.1);
  CU_ASSERT_EQUAL(c.model.num_features, 16);
  int lrn_after_pool = 0;
  for (int i = 1; i < c.model.num_features; i++)
    lrn_after_pool +=
        c.model.features[i].kind == NN_LRN && c.model.features[i - 1].kind == NN_MAXPOOL;
  CU_ASSERT_EQUAL(lrn_after_pool, 3);
  CU_ASSERT_EQUAL(c.model.classifier[1].kind, NN_TANH);
  CU_ASSERT_EQUAL(c.model.classifier[4].kind, NN_TANH);
  CU_ASSERT_EQUAL(c.model.classifier[6].out, 17);
  cfg_free(&c);
  /* The small networks build: their shape chains fit. */
  const char *small[] = {"debug.yaml", "fashion-mnist.yaml"};
  int classes[] = {4, 10};
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL_FATAL(load_shipped(small[i], &c, err), 0);
    nn_net net;
    int rc = cfg_build_net(&c, &net, err, ERRLEN);
    if (rc) fprintf(stderr, "\n  %s: %s\n", small[i], err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(net.num_classes, classes[i]);
    nn_net_free(&net);
    cfg_free(&c);
  }
  CU_ASSERT_EQUAL_FATAL(load_shipped("debug.yaml", &c, err), 0);
  CU_ASSERT_STRING_EQUAL(c.run.dir, "runs/debug");
  CU_ASSERT_EQUAL(c.data.synthetic.n, 512);
  cfg_free(&c);
}

/* ------------------------------------------------------------------------ */
/* Errors: each case is YAML text (source "t.yaml"), optionally an override,
 * and the whole message expected from the first step that fails (load, set,
 * validate). */

typedef struct {
  const char *yaml;
  const char *set;
  const char *msg;
} err_case;

static const err_case error_cases[] = {
    /* not YAML */
    {"run:\n  name: [a, b\nmodel: x\n", NULL,
     "t.yaml:3:6: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence "
     "at line 2, column 9)"},
    {"run: {name: a\n", NULL,
     "t.yaml:2:1: invalid YAML: did not find expected ',' or '}' (while parsing a flow mapping at "
     "line 1, column 6)"},
    {"\tlog: 1\n", NULL,
     "t.yaml:1:1: invalid YAML: found character that cannot start any token (while scanning for "
     "the next token at line 1, column 1)"},
    {"a: b: c\n", NULL, "t.yaml:1:5: invalid YAML: mapping values are not allowed in this context"},
    {"run: {}\n---\n[\n", NULL,
     "t.yaml:4:1: invalid YAML: did not find expected node content (while parsing a flow node at "
     "line 4, column 1)"},
    {"run: \xff\n", NULL, "t.yaml: not a YAML text: invalid leading UTF-8 octet at byte 5"},
    {"hello\n", NULL,
     "t.yaml:1:1: expected a mapping of sections (run, model, data, train, optimizer, dist, "
     "checkpoint, eval, log), got \"hello\""},
    {"- run\n", NULL,
     "t.yaml:1:1: expected a mapping of sections (run, model, data, train, optimizer, dist, "
     "checkpoint, eval, log), got a list"},
    {"run: {}\n---\nlog: {}\n", NULL, "t.yaml:3:1: expected one YAML document, found a second one"},
    {"? [a]\n: 1\n", NULL, "t.yaml:1:3: (top level): expected a key name, got a list"},
    /* unknown keys, with their full path and a suggestion */
    {"colour: red\n", NULL,
     "t.yaml:1:1: colour: unknown key (known: run, model, data, train, optimizer, dist, "
     "checkpoint, eval, log)"},
    {"optimizer:\n  lrr: 0.1\n", NULL,
     "t.yaml:2:3: optimizer.lrr: unknown key (did you mean optimizer.lr?)"},
    {"data:\n  synthetic: {n: 5, sise: 3}\n", NULL,
     "t.yaml:2:21: data.synthetic.sise: unknown key (did you mean data.synthetic.size?)"},
    {"optimizer: {schedule.type: step}\n", NULL,
     "t.yaml:1:13: optimizer.schedule.type: unknown key (known: type, lr, momentum, weight_decay, "
     "nesterov, decay_bias, schedule, warmup_epochs, lars_eta, lars_eps)"},
    {"model:\n  classifier: [{relu: {inplace: true}}, {linear: 4}]\n", NULL,
     "t.yaml:2:24: model.classifier[0].relu.inplace: unknown key: relu takes no parameters "
     "(write 'relu')"},
    /* the tools' thread limit (TOOL_MAX_THREADS), not a silent cap */
    {"dist: {threads_per_rank: 1025}\n", NULL,
     "t.yaml:1:26: dist.threads_per_rank: expected an integer in [0, 1024], got 1025"},
    /* duplicate keys */
    {"optimizer:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n", NULL,
     "t.yaml:4:3: optimizer.lr: duplicate key (first at line 2)"},
    {"run: {}\nrun: {}\n", NULL, "t.yaml:2:1: run: duplicate key (first at line 1)"},
    /* wrong types */
    {"optimizer:\n  lr: fast\n", NULL,
     "t.yaml:2:7: optimizer.lr: expected a positive number, got \"fast\""},
    {"optimizer: {lr: .inf}\n", NULL,
     "t.yaml:1:17: optimizer.lr: expected a positive number, got \".inf\""},
    {"optimizer: {lr: 0x10}\n", NULL,
     "t.yaml:1:17: optimizer.lr: expected a positive number, got \"0x10\""},
    {"train: {batch_size: \"128\"}\n", NULL,
     "t.yaml:1:21: train.batch_size: expected an integer in [1, 1048576], got \"128\""},
    {"train: {epochs: 1.5}\n", NULL,
     "t.yaml:1:17: train.epochs: expected an integer in [1, 1000000], got \"1.5\""},
    {"train: {epochs: 99999999999}\n", NULL,
     "t.yaml:1:17: train.epochs: expected an integer in [1, 1000000], got \"99999999999\""},
    {"train: {epochs: [1]}\n", NULL,
     "t.yaml:1:17: train.epochs: expected an integer in [1, 1000000], got a list"},
    {"train: {max_steps: many}\n", NULL,
     "t.yaml:1:20: train.max_steps: expected an integer >= 0, got \"many\""},
    {"train: {precision: fp16}\n", NULL,
     "t.yaml:1:20: train.precision: expected fp32 or bf16, got \"fp16\""},
    {"run: {seed: -1}\n", NULL, "t.yaml:1:13: run.seed: expected an integer >= 0, got \"-1\""},
    {"data: {mirror: maybe}\n", NULL,
     "t.yaml:1:16: data.mirror: expected true or false, got \"maybe\""},
    {"data: {mirror: 'a\"b'}\n", NULL,
     "t.yaml:1:16: data.mirror: expected true or false, got \"a\\\"b\""},
    {"data: {train: {a: 1}}\n", NULL,
     "t.yaml:1:15: data.train: expected a path, a glob, a list of them, or null of at most 4095 "
     "bytes, got a mapping"},
    {"data: {val: [a.h5, {b: 1}]}\n", NULL,
     "t.yaml:1:20: data.val: expected a path, a glob, a list of them, or null of at most 4095 "
     "bytes, got a mapping"},
    {"data: {crop_mode: random}\n", NULL,
     "t.yaml:1:19: data.crop_mode: expected fixed or random_resized, got \"random\""},
    {"data: {reader_threads: 0}\n", NULL,
     "t.yaml:1:24: data.reader_threads: expected an integer in [1, 256], got 0"},
    {"model: {dropout: -0.5}\n", NULL,
     "t.yaml:1:18: model.dropout: expected a number in [0, 1) or null, got \"-0.5\""},
    {"model: {weight_init: xavier}\n", NULL,
     "t.yaml:1:22: model.weight_init: expected auto, paper, torch or kaiming, got \"xavier\""},
    {"dist: {compress: int8}\n", NULL,
     "t.yaml:1:18: dist.compress: expected none, bf16, fp16 or powersgd, got \"int8\""},
    {"dist: {powersgd_rank: 0}\n", NULL,
     "t.yaml:1:23: dist.powersgd_rank: expected an integer in [1, 1024], got 0"},
    {"dist: {powersgd_rank: -2}\n", NULL,
     "t.yaml:1:23: dist.powersgd_rank: expected an integer in [1, 1024], got -2"},
    {"dist: {hierarchical: yes}\n", NULL,
     "t.yaml:1:22: dist.hierarchical: expected auto, on or off, got \"yes\""},
    {"data: {mean: [0.5, 0.5]}\n", NULL,
     "t.yaml:1:14: data.mean: expected null, a number or a list of 3 numbers, got a list"},
    {"data: {std: [0.5, x, 0.5]}\n", NULL,
     "t.yaml:1:13: data.std: expected null, a positive number or a list of 3 positive numbers, "
     "got a list"},
    {"optimizer: 5\n", NULL, "t.yaml:1:12: optimizer: expected a mapping, got \"5\""},
    {"optimizer: {schedule: [step]}\n", NULL,
     "t.yaml:1:23: optimizer.schedule: expected a mapping or a schedule name, got a list"},
    {"checkpoint: {resume: null}\n", NULL,
     "t.yaml:1:22: checkpoint.resume: expected auto, never or a checkpoint path, got \"null\""},
    {"model: {avgpool: [1, 2, 3]}\n", NULL,
     "t.yaml:1:18: model.avgpool: expected an output size: a positive integer, [h, w] or null, "
     "got a list"},
    /* schedules */
    {"optimizer: {schedule: exp}\n", NULL,
     "t.yaml:1:23: optimizer.schedule.type: expected constant, step, multistep, cosine or poly, "
     "got \"exp\""},
    {"optimizer: {schedule: {milestones: [30, x]}}\n", NULL,
     "t.yaml:1:41: optimizer.schedule.milestones[1]: expected an integer epoch, got \"x\""},
    {"optimizer: {schedule: {milestones: soon}}\n", NULL,
     "t.yaml:1:36: optimizer.schedule.milestones: expected a list of integer epochs, got "
     "\"soon\""},
    {"optimizer: {schedule: {milestones: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,"
     "21,22,23,24,25,26,27,28,29,30,31,32,33]}}\n",
     NULL, "t.yaml:1:36: optimizer.schedule.milestones: expected at most 32 milestones, got 33"},
    {OK_MODEL OK_DATA "optimizer: {schedule: multistep}\n", NULL,
     "t.yaml: optimizer.schedule.milestones: the multistep schedule needs at least one "
     "milestone"},
    {OK_MODEL OK_DATA "optimizer: {schedule: {type: multistep, milestones: [60, 30]}}\n", NULL,
     "t.yaml:3:53: optimizer.schedule.milestones: expected strictly increasing positive epochs, "
     "got 30 at index 1"},
    {OK_MODEL OK_DATA "optimizer: {schedule: {type: step, gamma: 0}}\n", NULL,
     "t.yaml:3:43: optimizer.schedule.gamma: expected a number in (0, 1], got 0"},
    {OK_MODEL OK_DATA "optimizer: {schedule: {type: poly, power: 0}}\n", NULL,
     "t.yaml:3:43: optimizer.schedule.power: expected a positive number, got 0"},
    {OK_MODEL OK_DATA "optimizer: {schedule: {step_epochs: 0}}\n", NULL,
     "t.yaml:3:37: optimizer.schedule.step_epochs: expected an integer in [1, 1000000], got 0"},
    {OK_MODEL OK_DATA "optimizer: {warmup_epochs: 100}\n", NULL,
     "t.yaml:3:28: optimizer.warmup_epochs: 100 is more than train.epochs 90"},
    {OK_MODEL OK_DATA "optimizer: {nesterov: true, momentum: 0}\n", NULL,
     "t.yaml:3:23: optimizer.nesterov: needs optimizer.momentum > 0"},
    /* negative and zero sizes, out-of-range values */
    {OK_MODEL OK_DATA "train:\n  batch_size: 0\n", NULL,
     "t.yaml:4:15: train.batch_size: expected an integer in [1, 1048576], got 0"},
    {OK_MODEL OK_DATA "train:\n  epochs: -3\n", NULL,
     "t.yaml:4:11: train.epochs: expected an integer in [1, 1000000], got -3"},
    {OK_MODEL "data: {synthetic: {n: 64}, crop: -5}\n", NULL,
     "t.yaml:2:34: data.crop: expected an integer in [1, 8192], got -5"},
    {OK_MODEL "data: {synthetic: {n: -1}}\n", NULL,
     "t.yaml:2:23: data.synthetic.n: expected an integer >= 0, got -1"},
    {OK_MODEL "data: {synthetic: {n: 64, size: 0}}\n", NULL,
     "t.yaml:2:33: data.synthetic.size: expected an integer in [1, 8192], got 0"},
    {OK_MODEL OK_DATA "optimizer: {lr: -0.1}\n", NULL,
     "t.yaml:3:17: optimizer.lr: expected a positive number, got -0.1"},
    {OK_MODEL OK_DATA "optimizer: {lr: 0}\n", NULL,
     "t.yaml:3:17: optimizer.lr: expected a positive number, got 0"},
    {OK_MODEL OK_DATA "optimizer: {momentum: 1}\n", NULL,
     "t.yaml:3:23: optimizer.momentum: expected a number in [0, 1), got 1"},
    {"model: {arch: alexnet_cifar, dropout: 1}\n" OK_DATA, NULL,
     "t.yaml:1:39: model.dropout: expected a number in [0, 1) or null, got 1"},
    {"model: {arch: alexnet_cifar, groups: 4}\n" OK_DATA, NULL,
     "t.yaml:1:38: model.groups: expected 0, 1 or 2, got 4"},
    {"model: {arch: alexnet_cifar, in_channels: 2}\n" OK_DATA, NULL,
     "t.yaml:1:43: model.in_channels: expected 1 or 3, got 2"},
    {OK_MODEL "data: {synthetic: {n: 64}, crop: 32, std: 0}\n", NULL,
     "t.yaml:2:43: data.std: expected null, a positive number or a list of 3 positive numbers, "
     "got 0 in channel 0"},
    {OK_MODEL "data: {synthetic: {n: 64}, crop: 32, val_fraction: 1}\n", NULL,
     "t.yaml:2:52: data.val_fraction: expected a number in [0, 1), got 1"},
    {OK_MODEL "data: {synthetic: {n: 64}, crop: 32, channels: 1}\n", NULL,
     "t.yaml:2:48: data.channels: expected 0 (as stored) or 3 (replicate gray), got 1"},
    {OK_MODEL OK_DATA "dist: {bucket_mb: 0}\n", NULL,
     "t.yaml:3:19: dist.bucket_mb: expected a positive number, got 0"},
    {OK_MODEL OK_DATA "checkpoint: {keep: 0}\n", NULL,
     "t.yaml:3:20: checkpoint.keep: expected a positive integer, got 0"},
    {OK_MODEL OK_DATA "log: {every_steps: 0}\n", NULL,
     "t.yaml:3:20: log.every_steps: expected a positive integer, got 0"},
    {"model: {features: [{conv: {out: 8, kernel: 3}}], classifier: [{linear: 4}], "
     "avgpool: -1}\n" OK_DATA,
     NULL,
     "t.yaml:1:86: model.avgpool: expected an output size: a positive integer, [h, w] or null, "
     "got [-1, -1]"},
    /* architectures and models */
    {"model: {arch: alexnet_cifar, features: [relu]}\n" OK_DATA, NULL,
     "t.yaml:1:15: model.arch: \"alexnet_cifar\" given together with an explicit layer list "
     "(model.features / model.classifier); use one of them"},
    {"model: {arch: alexnet_owt, avgpool: 6}\n" OK_DATA, NULL,
     "t.yaml:1:37: model.avgpool: only for explicit layer lists (the presets have their own)"},
    {"model: {arch: alexnet_cifar, input_size: 28}\n" OK_DATA, NULL,
     "t.yaml:1:42: model.input_size: 28 does not match data.crop 32 (the network sees the crops)"},
    {"model: {arch: alexnet_cifar, num_classes: 100}\n" OK_DATA, NULL,
     "t.yaml:1:43: model.num_classes: 100 does not match data.synthetic.classes 10"},
    {"model: {num_classes: 5, classifier: [{linear: 4}]}\n" OK_DATA, NULL,
     "t.yaml:1:22: model.num_classes: 5 does not match the 4 outputs of the last layer"},
    /* layer lists */
    {"model: {features: relu}\n", NULL,
     "t.yaml:1:19: model.features: expected a list of layers, got \"relu\""},
    {"model: {features: [conv2d]}\n", NULL,
     "t.yaml:1:20: model.features[0]: unknown layer kind \"conv2d\" (did you mean conv?)"},
    {"model: {features: [pool]}\n", NULL,
     "t.yaml:1:20: model.features[0]: unknown layer kind \"pool\" (known: conv, linear, relu, "
     "tanh, lrn, maxpool, avgpool, flatten, dropout, batchnorm)"},
    {"model: {features: [[relu]]}\n", NULL,
     "t.yaml:1:20: model.features[0]: expected a layer: a kind name or {kind: parameters}, got "
     "a list"},
    {"model: {features: [{relu: null, tanh: null}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: expected one layer kind as the only key, got 2 keys"},
    {"model: {classifier: [relu, {relu: 3}]}\n", NULL,
     "t.yaml:1:35: model.classifier[1].relu: expected nothing (null), got \"3\""},
    {"model: {features: [{conv: 3}]}\n", NULL,
     "t.yaml:1:27: model.features[0].conv: expected a mapping of conv parameters, got \"3\""},
    {"model: {features: [{conv: {kernel: 3}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: conv needs out"},
    {"model: {features: [{maxpool: {stride: 2}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: maxpool needs kernel"},
    {"model: {features: [{conv: {out: 8, kernal: 3}}]}\n", NULL,
     "t.yaml:1:36: model.features[0].conv.kernal: unknown key (did you mean kernel?)"},
    {"model: {features: [{conv: {out: 8, out: 3}}]}\n", NULL,
     "t.yaml:1:36: model.features[0].conv.out: duplicate key (first at line 1)"},
    {"model: {features: [{conv: {[out]: 8}}]}\n", NULL,
     "t.yaml:1:28: model.features[0].conv: expected a parameter name, got a list"},
    {"model: {features: [{conv: {out: 8, kernel: 3, padding: [1, 2, 3]}}]}\n", NULL,
     "t.yaml:1:56: model.features[0].conv.padding: expected an integer, [before, after] or "
     "[top, bottom, left, right], got a list"},
    {"model: {features: [{conv: {out: 8, kernel: [3, x]}}]}\n", NULL,
     "t.yaml:1:44: model.features[0].conv.kernel: expected an integer or [h, w], got a list"},
    {"model: {features: [{conv: {out: eight, kernel: 3}}]}\n", NULL,
     "t.yaml:1:33: model.features[0].conv.out: expected a positive integer, got \"eight\""},
    {"model: {features: [{conv: {out: 8, kernel: 3, groups: two}}]}\n", NULL,
     "t.yaml:1:55: model.features[0].conv.groups: expected a positive integer, got \"two\""},
    {"model: {features: [{conv: {out: 8, kernel: 3, bias: no-thanks}}]}\n", NULL,
     "t.yaml:1:53: model.features[0].conv.bias: expected true or false, got \"no-thanks\""},
    {"model: {features: [{conv: {out: 8, kernel: 0}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: conv: kernel: expected a positive integer or [h, w], got "
     "[0, 0]"},
    {"model: {features: [{conv: {out: 0, kernel: 3}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: conv: out: expected a positive integer, got 0"},
    {"model: {features: [{conv: {out: 8, kernel: 3, groups: 0}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: conv: groups: expected a positive integer, got 0"},
    {"model: {features: [{conv: {out: 8, kernel: 3, stride: [1, 0]}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: conv: stride: expected a positive integer or [h, w], got "
     "[1, 0]"},
    {"model: {features: [{maxpool: {kernel: 3, padding: -1}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: maxpool: padding: expected integers >= 0, got [-1, -1, -1, "
     "-1]"},
    {"model: {features: [{lrn: {size: 0}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: lrn: size: expected a positive integer, got 0"},
    {"model: {features: [{lrn: {alpha: -1}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: lrn: alpha: expected a number >= 0, got -1"},
    {"model: {features: [{lrn: {beta: -1}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: lrn: beta: expected a number >= 0, got -1"},
    {"model: {features: [{lrn: {k: 0}}]}\n", NULL,
     "t.yaml:1:20: model.features[0]: lrn: k: expected a positive number, got 0"},
    {"model: {features: [{lrn: {k: big}}]}\n", NULL,
     "t.yaml:1:30: model.features[0].lrn.k: expected a number, got \"big\""},
    {"model: {features: [{lrn: {size: five}}]}\n", NULL,
     "t.yaml:1:33: model.features[0].lrn.size: expected a positive integer, got \"five\""},
    {"model: {classifier: [{dropout: 1.5}]}\n", NULL,
     "t.yaml:1:22: model.classifier[0]: dropout: p: expected a number in [0, 1), got 1.5"},
    {"model: {classifier: [{dropout: half}]}\n", NULL,
     "t.yaml:1:32: model.classifier[0].dropout: expected a number in [0, 1), got \"half\""},
    {"model: {classifier: [{avgpool: 0}]}\n", NULL,
     "t.yaml:1:22: model.classifier[0]: avgpool: out: expected a positive integer or [h, w], got "
     "[0, 0]"},
    {"model: {classifier: [{avgpool: [1]}]}\n", NULL,
     "t.yaml:1:32: model.classifier[0].avgpool: expected an integer or [h, w], got a list"},
    /* data */
    {OK_MODEL "data: {crop: 32}\n", NULL,
     "t.yaml: data.train: no training data: set data.train or data.synthetic.n"},
    {OK_MODEL "data: {train: a.h5, synthetic: {n: 64}, crop: 32}\n", NULL,
     "t.yaml:2:36: data.synthetic.n: synthetic data and data.train are both set; use one"},
    {OK_MODEL "data: {val: v.h5, synthetic: {n: 64}, crop: 32}\n", NULL,
     "t.yaml:2:13: data.val: not used with synthetic data (hold out with data.val_fraction)"},
    {OK_MODEL "data: {train: a.h5, val: v.h5, val_fraction: 0.1, crop: 32}\n", NULL,
     "t.yaml:2:46: data.val_fraction: 0.1 together with data.val; hold out part of train only "
     "without a val file"},
    {OK_MODEL "data: {synthetic: {n: 64, size: 32}, crop: 40}\n", NULL,
     "t.yaml:2:44: data.crop: 40 is larger than data.synthetic.size 32"},
    {OK_MODEL "data: {synthetic: {n: 64}, crop: 32, mean: 0.5}\n", NULL,
     "t.yaml:2:44: data.mean: set data.mean and data.std together (or neither, to use the "
     "file's)"},
    {"model: {arch: alexnet_cifar, in_channels: 1}\ndata: {synthetic: {n: 64}, crop: 32, "
     "channels: 3}\n",
     NULL, "t.yaml:2:48: data.channels: 3 does not match model.in_channels 1"},
    {"model: {arch: alexnet_cifar, in_channels: 1}\n" OK_DATA, NULL,
     "t.yaml: data.synthetic.channels: 3 does not match model.in_channels 1"},
    /* strings */
    {"run: {name: \"a\\0b\"}\n", NULL,
     "t.yaml:1:13: run.name: expected a name of at most 127 bytes, got \"a\\x00b\""},
    {"run: {name: "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\n",
     NULL,
     "t.yaml:1:13: run.name: expected a name of at most 127 bytes, got "
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\""},
    {OK_MODEL OK_DATA "run: {dir: null}\n", NULL,
     "t.yaml:3:12: run.dir: expected a path, got \"\""},
    {OK_MODEL OK_DATA "checkpoint: {dir: ''}\n", NULL,
     "t.yaml:3:19: checkpoint.dir: expected a path, got \"\""},
    /* --set */
    {OK_MODEL OK_DATA, "lr", "--set: expected key.path=value, got \"lr\""},
    {OK_MODEL OK_DATA, "=0.1", "--set: expected key.path=value, got \"=0.1\""},
    {OK_MODEL OK_DATA, "optimizer.lrr=0.1",
     "--set: optimizer.lrr: unknown key (did you mean optimizer.lr?)"},
    {OK_MODEL OK_DATA, "optimiser.lr=0.1",
     "--set: optimiser.lr: unknown key (did you mean optimizer?)"},
    {OK_MODEL OK_DATA, "optimizer.lr.x=0.1",
     "--set: optimizer.lr.x: unknown key (optimizer.lr has no sub-keys)"},
    {OK_MODEL OK_DATA, "optimizer.warmup=1",
     "--set: optimizer.warmup: unknown key (known: type, lr, momentum, weight_decay, nesterov, "
     "decay_bias, schedule, warmup_epochs, lars_eta, lars_eps)"},
    {OK_MODEL OK_DATA, "optimizer.lr=fast",
     "--set: optimizer.lr: expected a positive number, got \"fast\""},
    {OK_MODEL OK_DATA, "optimizer.lr=[1",
     "--set: optimizer.lr: invalid YAML value \"[1\": did not find expected ',' or ']' (while "
     "parsing a flow sequence)"},
    {OK_MODEL OK_DATA, "optimizer.lr=1\n---\n2",
     "--set: optimizer.lr: invalid YAML value \"1\n---\n2\": expected one YAML document, found a "
     "second one"},
    {OK_MODEL OK_DATA, "optimizer.schedule.milestones=[30, x]",
     "--set: optimizer.schedule.milestones[1]: expected an integer epoch, got \"x\""},
    {OK_MODEL OK_DATA, "optimizer={lr: 0.1, lr: 0.2}", "--set: optimizer.lr: duplicate key"},
    {OK_MODEL OK_DATA, "optimizer.schedule={type: poly, gamma: x}",
     "--set: optimizer.schedule.gamma: expected a number in (0, 1], got \"x\""},
    {OK_MODEL OK_DATA, "train.batch_size=0",
     "--set: train.batch_size: expected an integer in [1, 1048576], got 0"},
    {OK_MODEL OK_DATA, "model.arch=lenet",
     "--set: model.arch: unknown architecture 'lenet' (known: alexnet, alexnet_bn, alexnet_owt, "
     "alexnet_cifar)"},
    {OK_MODEL OK_DATA, "checkpoint.resume=",
     "--set: checkpoint.resume: expected auto, never or "
     "a checkpoint path, got \"\""},
    {OK_MODEL OK_DATA, "run.dir=", "--set: run.dir: expected a path, got \"\""},
    {OK_MODEL OK_DATA, "model.features=[{conv: {out: 8, kernel: 3}}]",
     "t.yaml:1:15: model.arch: \"alexnet_cifar\" given together with an explicit layer list "
     "(model.features / model.classifier); use one of them"},
    /* unknown architecture, from the file */
    {"model: {arch: foo}\n" OK_DATA, NULL,
     "t.yaml:1:15: model.arch: unknown architecture 'foo' (known: alexnet, alexnet_bn, "
     "alexnet_owt, "
     "alexnet_cifar)"},
};

static void test_error_messages(void) {
  int n = (int)(sizeof error_cases / sizeof error_cases[0]);
  for (int i = 0; i < n; i++) {
    const err_case *e = &error_cases[i];
    char err[ERRLEN] = "";
    cfg_config c;
    int rc = cfg_load_string(e->yaml, "t.yaml", &c, err, ERRLEN);
    if (rc == 0 && e->set) rc = cfg_set(&c, e->set, err, ERRLEN);
    if (rc == 0) rc = cfg_validate(&c, err, ERRLEN);
    if (rc != -1 || strcmp(err, e->msg) != 0)
      fprintf(stderr, "\n  case %d (%s%s%s):\n    expected: %s\n    got (%d): %s\n", i, e->yaml,
              e->set ? " --set " : "", e->set ? e->set : "", e->msg, rc, err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_STRING_EQUAL(err, e->msg);
    cfg_free(&c);
  }
}

/* Messages about files: missing, a directory, NUL bytes, too large. */
static void test_file_errors(void) {
  const char *dir = tu_scratch_dir("config_files");
  char path[4200], err[ERRLEN], want[8400];
  cfg_config c;

  snprintf(path, sizeof path, "%s/missing.yaml", dir);
  CU_ASSERT_EQUAL(cfg_load(path, &c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
  CU_ASSERT_STRING_EQUAL(err, want);
  cfg_free(&c);

  CU_ASSERT_EQUAL(cfg_load(dir, &c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "%s: cannot read: Is a directory", dir);
  CU_ASSERT_STRING_EQUAL(err, want);
  cfg_free(&c);

  snprintf(path, sizeof path, "%s/binary.yaml", dir);
  write_file(path, "run:\0\x01\x02", 7);
  CU_ASSERT_EQUAL(cfg_load(path, &c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "%s: not a YAML text: contains a NUL byte", path);
  CU_ASSERT_STRING_EQUAL(err, want);
  cfg_free(&c);

  snprintf(path, sizeof path, "%s/control.yaml", dir);
  write_file(path, "run: \x01\n", 7);
  CU_ASSERT_EQUAL(cfg_load(path, &c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "%s: not a YAML text: control characters are not allowed at byte 5",
           path);
  CU_ASSERT_STRING_EQUAL(err, want);
  cfg_free(&c);

  snprintf(path, sizeof path, "%s/huge.yaml", dir);
  size_t big = (16u << 20) + 1;
  char *text = malloc(big);
  CU_ASSERT_FATAL(text != NULL);
  memset(text, '#', big);
  write_file(path, text, big);
  free(text);
  CU_ASSERT_EQUAL(cfg_load(path, &c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "%s: larger than 16 MiB; not a config file", path);
  CU_ASSERT_STRING_EQUAL(err, want);
  cfg_free(&c);
  remove(path);

  /* A real file: the message names it with line and column. */
  snprintf(path, sizeof path, "%s/x.yaml", dir);
  const char *yaml = "# comment\nrun:\n  name: x\noptimizer:\n  lr: fast\n";
  write_file(path, yaml, strlen(yaml));
  CU_ASSERT_EQUAL(cfg_load(path, &c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "%s:5:7: optimizer.lr: expected a positive number, got \"fast\"",
           path);
  CU_ASSERT_STRING_EQUAL(err, want);
  cfg_free(&c);
  /* A refused key after a layer list: the list is freed, c holds defaults
   * (the sanitizer pass's leak check would also see it kept). */
  CU_ASSERT_EQUAL(cfg_load_string("model: {features: [relu, tanh]}\noptimizer: {lr: fast}\n",
                                  "t.yaml", &c, err, ERRLEN),
                  -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:2:17: optimizer.lr: expected a positive number, got \"fast\"");
  CU_ASSERT_PTR_NULL(c.model.features);
  CU_ASSERT_EQUAL(c.model.num_features, 0);
  CU_ASSERT_STRING_EQUAL(c.run.name, "t");
}

/* Checks that need more than the config: ranks, files, nn's shape checks. */
static void test_ranks_paths_and_shapes(void) {
  char err[ERRLEN];
  cfg_config c;
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string(OK_MODEL OK_DATA "train: {batch_size: 128}\n", "t.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_ranks(&c, 1, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_ranks(&c, 8, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_ranks(&c, 3, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml:3:21: train.batch_size: 128 is not divisible by the 3 ranks");
  CU_ASSERT_EQUAL(cfg_check_ranks(&c, 0, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml: 0 ranks");
  CU_ASSERT_EQUAL(cfg_set(&c, "eval.batch_size=100", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_ranks(&c, 8, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "--set: eval.batch_size: 100 is not divisible by the 8 ranks");
  cfg_free(&c);

  /* Paths. */
  const char *dir = tu_scratch_dir("config_paths");
  char file[4200], set[4300], want[8400];
  snprintf(file, sizeof file, "%s/train.h5", dir);
  write_file(file, "x", 1);
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string(OK_MODEL "data: {train: /nonexistent/train.h5}\n", "t.yaml", &c, err, ERRLEN),
      0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:2:15: data.train: cannot read \"/nonexistent/train.h5\": "
                         "No such file or directory");
  snprintf(set, sizeof set, "data.train=%s", file);
  CU_ASSERT_EQUAL(cfg_set(&c, set, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), 0);
  snprintf(set, sizeof set, "data.val=%s", dir);
  CU_ASSERT_EQUAL(cfg_set(&c, set, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "--set: data.val: \"%s\" is not a regular file", dir);
  CU_ASSERT_STRING_EQUAL(err, want);
  CU_ASSERT_EQUAL(cfg_set(&c, "data.val=", err, ERRLEN), 0);
  /* shards: a glob must match, a list is checked file by file */
  snprintf(set, sizeof set, "data.train=%s/train-*-of-00004.h5", dir);
  CU_ASSERT_EQUAL(cfg_set(&c, set, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), -1);
  snprintf(want, sizeof want, "--set: data.train: no file matches \"%s/train-*-of-00004.h5\"", dir);
  CU_ASSERT_STRING_EQUAL(err, want);
  snprintf(set, sizeof set, "data.train=%s/tr*.h5", dir);
  CU_ASSERT_EQUAL(cfg_set(&c, set, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), 0);
  snprintf(set, sizeof set, "data.train=[%s, /nonexistent/b.h5]", file);
  CU_ASSERT_EQUAL(cfg_set(&c, set, err, ERRLEN), 0);
  snprintf(want, sizeof want, "%s\n/nonexistent/b.h5", file);
  CU_ASSERT_STRING_EQUAL(c.data.train, want);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), -1);
  TU_ASSERT_CONTAINS(err, "data.train: cannot read \"/nonexistent/b.h5\"");
  char *yaml = cfg_to_yaml(&c); /* a list prints as a list and loads back */
  TU_ASSERT_CONTAINS(yaml, "/nonexistent/b.h5\"]");
  cfg_config c2;
  CU_ASSERT_EQUAL(cfg_load_string(yaml, "round.yaml", &c2, err, ERRLEN), 0);
  CU_ASSERT_STRING_EQUAL(c2.data.train, c.data.train);
  cfg_free(&c2);
  free(yaml);
  snprintf(set, sizeof set, "data.train=%s", file);
  CU_ASSERT_EQUAL(cfg_set(&c, set, err, ERRLEN), 0);
  /* evaluation's resize must hold the crop */
  CU_ASSERT_EQUAL(cfg_set(&c, "data.resize=200", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  TU_ASSERT_CONTAINS(err, "data.resize: 200 is smaller than data.crop 224");
  CU_ASSERT_EQUAL(cfg_set(&c, "data.resize=256", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.init=/nonexistent/w.h5", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "--set: checkpoint.init: cannot read \"/nonexistent/w.h5\": No such "
                         "file or directory");
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.init=null", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.resume=/nonexistent/step-1.h5", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_check_paths(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "--set: checkpoint.resume: cannot read \"/nonexistent/step-1.h5\": "
                         "No such file or directory");
  cfg_free(&c);

  /* A layer list whose shapes do not fit: nn names the layer and the shapes. */
  CU_ASSERT_EQUAL_FATAL(cfg_load_string("model:\n  features: [{conv: {out: 8, kernel: 11}}, relu]\n"
                                        "  classifier: [{linear: 10}]\n"
                                        "data: {synthetic: {n: 64, size: 8}, crop: 8}\n",
                                        "t.yaml", &c, err, ERRLEN),
                        0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  nn_net net;
  CU_ASSERT_EQUAL(cfg_build_net(&c, &net, err, ERRLEN), -1);
  TU_ASSERT_CONTAINS(err, "t.yaml: model: features.0 (conv)");
  TU_ASSERT_CONTAINS(err, "11x11");
  TU_ASSERT_CONTAINS(err, "3x8x8");
  CU_ASSERT_EQUAL(net.num_layers, 0);
  cfg_free(&c);

  /* A max-pooling window too large for its 16-bit argmax. */
  CU_ASSERT_EQUAL_FATAL(cfg_load_string("model:\n  features: [{maxpool: {kernel: 256}}]\n"
                                        "  classifier: [{linear: 10}]\n"
                                        "data: {synthetic: {n: 64, size: 8}, crop: 8}\n",
                                        "t.yaml", &c, err, ERRLEN),
                        0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_build_net(&c, &net, err, ERRLEN), -1);
  TU_ASSERT_CONTAINS(err,
                     "t.yaml: model: features.0 (maxpool): window 256x256 has more than "
                     "65534 cells");
  CU_ASSERT_EQUAL(net.num_layers, 0);
  cfg_free(&c);

  /* cfg_model_specs without validation reports an unknown arch itself. */
  CU_ASSERT_EQUAL_FATAL(cfg_load_string("model: {arch: vgg}\n", "t.yaml", &c, err, ERRLEN), 0);
  nn_layer_spec *specs = NULL;
  int count;
  nn_shape in;
  CU_ASSERT_EQUAL(cfg_model_specs(&c, &specs, &count, &in, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:1:15: model.arch: unknown architecture 'vgg' (known: "
                         "alexnet, alexnet_bn, alexnet_owt, alexnet_cifar)");
  CU_ASSERT_PTR_NULL(specs);
  cfg_free(&c);
}

/* Values only a program (not YAML) can produce are refused by cfg_validate too. */
static void test_validate_programmatic(void) {
  char err[ERRLEN];
  cfg_config c;
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model: {features: [{conv: {out: 8, kernel: 3}}], classifier: "
                      "[{linear: 4}]}\n" OK_DATA,
                      "t.yaml", &c, err, ERRLEN),
      0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  c.model.features[0].out = 0;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:1:19: model.features: [0] conv: out: expected a positive "
                         "integer, got 0");
  c.model.features[0].out = 8;
  c.model.features[0].section = NN_CLASSIFIER;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml:1:19: model.features: layer 0 is in the wrong section");
  c.model.features[0].section = NN_FEATURES;
  c.model.features[0].kind = (nn_kind)99;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml:1:19: model.features: [0] ?: unknown layer kind 99");
  c.model.features[0].kind = NN_CONV;
  c.model.num_features = CFG_MAX_LAYERS + 1;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml:1:19: model.features: expected at most 256 layers, got 257");
  c.model.num_features = 1;
  c.optimizer.schedule.type = 9;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml: optimizer.schedule.type: expected constant, step, "
                         "multistep, cosine or poly, got 9");
  c.optimizer.schedule.type = CFG_SCHED_STEP;
  c.optimizer.lr = NAN;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml: optimizer.lr: expected a positive number, got nan");
  c.optimizer.lr = 0.1;
  c.checkpoint.resume = CFG_RESUME_PATH;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml: checkpoint.resume: expected auto, never or a checkpoint "
                         "path, got an empty path");
  c.checkpoint.resume = CFG_RESUME_AUTO;
  c.optimizer.schedule.num_milestones = 40;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml: optimizer.schedule.milestones: expected at most 32 "
                         "milestones, got 40");
  c.optimizer.schedule.num_milestones = 0;
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  cfg_free(&c);
}

/* Layer lists longer than CFG_MAX_LAYERS are refused; null empties a list. */
static void test_layer_list_limits(void) {
  char err[ERRLEN];
  size_t cap = 64 + 6 * (CFG_MAX_LAYERS + 1);
  char *yaml = malloc(cap);
  CU_ASSERT_FATAL(yaml != NULL);
  size_t used = (size_t)snprintf(yaml, cap, "model: {features: [");
  for (int i = 0; i <= CFG_MAX_LAYERS; i++)
    used += (size_t)snprintf(yaml + used, cap - used, "%srelu", i ? ", " : "");
  snprintf(yaml + used, cap - used, "]}\n");
  cfg_config c;
  CU_ASSERT_EQUAL(cfg_load_string(yaml, "t.yaml", &c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "t.yaml:1:19: model.features: expected at most 256 layers, got 257");
  cfg_free(&c);
  free(yaml);

  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model: {features: [relu, tanh]}\n", "t.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.model.num_features, 2);
  CU_ASSERT_EQUAL(cfg_set(&c, "model.features=null", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.model.num_features, 0);
  CU_ASSERT_PTR_NULL(c.model.features);
  CU_ASSERT_EQUAL(cfg_set(&c, "model.features=[]", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.model.num_features, 0);
  cfg_free(&c);
}

/* The config takes its layer rules from nn's kind table: the same checks at
 * load as at build, and shapes that overflow int refused (issue 17). */
static void test_layer_rules_from_nn(void) {
  char err[ERRLEN];
  cfg_config c;
  /* max-pool padding at most half the kernel: once only nn refused it */
  CU_ASSERT_EQUAL(cfg_load_string("model: {features: [{maxpool: {kernel: 2, padding: 2}}]}\n",
                                  "t.yaml", &c, err, ERRLEN),
                  -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:1:20: model.features[0]: maxpool: padding: expected at most half "
                         "the kernel 2x2, got [2, 2, 2, 2]");
  cfg_free(&c);
  /* rules on the previous layer of the list, checked by cfg_validate */
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model: {features: [{linear: 4}, {conv: {out: 4, kernel: 1}}]}\n", "t.yaml",
                      &c, err, ERRLEN),
      0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:1:19: model.features: [1] conv: must not follow a linear layer "
                         "(its output is flat)");
  cfg_free(&c);
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model: {features: [relu, batchnorm]}\n", "t.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:1:19: model.features: [1] batchnorm: must directly follow a conv "
                         "(BatchNorm2d) or a linear layer (BatchNorm1d), not relu");
  cfg_free(&c);
  /* a kind the config knows only from nn's table */
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model:\n  features: [{conv: {out: 8, kernel: 3}}, batchnorm, relu]\n"
                      "  classifier: [{linear: 4}, batchnorm]\n"
                      "data: {synthetic: {n: 64, size: 8, classes: 4}, crop: 8}\n",
                      "t.yaml", &c, err, ERRLEN),
      0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  char *yaml = cfg_to_yaml(&c);
  TU_ASSERT_CONTAINS(yaml,
                     "\n    - {conv: {out: 8, kernel: 3, stride: 1, padding: 0, groups: 1}}"
                     "\n    - batchnorm\n    - relu\n");
  free(yaml);
  nn_net net;
  CU_ASSERT_EQUAL(cfg_build_net(&c, &net, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(net.num_buffers, 2 * 8 + 1 + 2 * 4 + 1);
  nn_net_free(&net);
  cfg_free(&c);
  /* a given 0 stays refused although 0 means "derived" to nn's builders */
  CU_ASSERT_EQUAL(cfg_load_string("model: {features: [{maxpool: {kernel: 2, stride: 0}}]}\n",
                                  "t.yaml", &c, err, ERRLEN),
                  -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml:1:20: model.features[0]: maxpool: stride: expected a positive "
                         "integer or [h, w], got [0, 0]");
  cfg_free(&c);
  /* a padding that overflowed int in the shape computation (UBSan) and
   * trained a meaningless net: refused, naming the layer and the sizes */
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model:\n  features: [{conv: {out: 8, kernel: 3, padding: 2147483647}}]\n"
                      "  classifier: [{linear: 4}]\n"
                      "data: {synthetic: {n: 64, size: 8, classes: 4}, crop: 8}\n",
                      "t.yaml", &c, err, ERRLEN),
      0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_build_net(&c, &net, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "t.yaml: model: features.0 (conv): output 8x4294967300x4294967300 is too "
                         "large (at most 2147483647 values per sample); input shape 3x8x8");
  CU_ASSERT_EQUAL(net.num_layers, 0);
  cfg_free(&c);
}

/* ------------------------------------------------------------------------ */
/* --set                                                                     */

static void test_set_overrides(void) {
  char err[ERRLEN];
  cfg_config c;
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string(OK_MODEL OK_DATA "checkpoint: {dir: ck}\n", "exp.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.lr=0.1", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.optimizer.lr, 0.1);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule.gamma = 0.5", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.optimizer.schedule.gamma, 0.5);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule=cosine", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.optimizer.schedule.type, CFG_SCHED_COSINE);
  /* A mapping sets the keys it names and leaves the others. */
  CU_ASSERT_EQUAL(
      cfg_set(&c, "optimizer.schedule={type: multistep, milestones: [10, 20]}", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.optimizer.schedule.type, CFG_SCHED_MULTISTEP);
  CU_ASSERT_EQUAL(c.optimizer.schedule.num_milestones, 2);
  CU_ASSERT_EQUAL(c.optimizer.schedule.milestones[1], 20);
  CU_ASSERT_EQUAL(c.optimizer.schedule.gamma, 0.5);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule.milestones=15", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.optimizer.schedule.num_milestones, 1);
  CU_ASSERT_EQUAL(c.optimizer.schedule.milestones[0], 15);
  CU_ASSERT_EQUAL(cfg_set(&c, "data.mean=[0.5, 0.4, 0.3]", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "data.std=0.25", err, ERRLEN), 0);
  CU_ASSERT(c.data.has_mean && c.data.has_std);
  CU_ASSERT_EQUAL(c.data.mean[2], 0.3);
  CU_ASSERT_EQUAL(c.data.std[0], 0.25);
  CU_ASSERT_EQUAL(c.data.std[2], 0.25);
  CU_ASSERT_EQUAL(cfg_set(&c, "data.std=[0.2]", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.data.std[1], 0.2);
  CU_ASSERT_EQUAL(cfg_set(&c, "dist.compress=bf16", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.dist.compress, DIST_COMPRESS_BF16);
  CU_ASSERT_EQUAL(cfg_set(&c, "train.precision=bf16", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.train.precision, CFG_PRECISION_BF16);
  CU_ASSERT_EQUAL(cfg_set(&c, "data.synthetic={n: 100, size: 48}", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.data.synthetic.n, 100);
  CU_ASSERT_EQUAL(c.data.synthetic.size, 48);
  CU_ASSERT_EQUAL(c.data.synthetic.classes, 10);
  CU_ASSERT_EQUAL(cfg_set(&c, "run.seed=18446744073709551615", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.run.seed, UINT64_MAX);
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.resume=never", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.checkpoint.resume, CFG_RESUME_NEVER);
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.resume=runs/x/step-00000001.h5", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.checkpoint.resume, CFG_RESUME_PATH);
  CU_ASSERT_STRING_EQUAL(c.checkpoint.resume_path, "runs/x/step-00000001.h5");
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.resume=auto", err, ERRLEN), 0);
  CU_ASSERT_STRING_EQUAL(c.checkpoint.resume_path, "");
  /* A value may contain '=' and '#'. */
  CU_ASSERT_EQUAL(cfg_set(&c, "data.train=data/a=b#c.h5", err, ERRLEN), 0);
  CU_ASSERT_STRING_EQUAL(c.data.train, "data/a=b#c.h5");
  CU_ASSERT_EQUAL(cfg_set(&c, "data.train=", err, ERRLEN), 0);
  CU_ASSERT_STRING_EQUAL(c.data.train, "");
  /* A default run.dir follows run.name; a file's checkpoint.dir stays. */
  CU_ASSERT_STRING_EQUAL(c.run.name, "exp");
  CU_ASSERT_STRING_EQUAL(c.run.dir, "runs/exp");
  CU_ASSERT_EQUAL(cfg_set(&c, "run.name=other", err, ERRLEN), 0);
  CU_ASSERT_STRING_EQUAL(c.run.dir, "runs/other");
  CU_ASSERT_STRING_EQUAL(c.checkpoint.dir, "ck");
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  /* On error nothing changes, even for a mapping that was valid in part. */
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule={type: poly, gamma: x}", err, ERRLEN), -1);
  CU_ASSERT_EQUAL(c.optimizer.schedule.type, CFG_SCHED_MULTISTEP);
  /* Layer lists are replaced whole; arch can be cleared. */
  CU_ASSERT_EQUAL(cfg_set(&c, "model.arch=null", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "model.features=[{conv: {out: 8, kernel: 3}}, relu]", err, ERRLEN),
                  0);
  CU_ASSERT_EQUAL(cfg_set(&c, "model.classifier=[{linear: 10}]", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.model.num_features, 2);
  CU_ASSERT_EQUAL(c.model.features[0].out, 8);
  CU_ASSERT_EQUAL(cfg_set(&c, "model.features=[tanh]", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(c.model.num_features, 1);
  CU_ASSERT_EQUAL(c.model.features[0].kind, NN_TANH);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  /* A value set by --set is reported as such by cfg_validate. */
  CU_ASSERT_EQUAL(cfg_set(&c, "data.crop=64", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  CU_ASSERT_STRING_EQUAL(err, "--set: data.crop: 64 is larger than data.synthetic.size 48");
  cfg_free(&c);
}

/* ------------------------------------------------------------------------ */
/* Round trip                                                                */

/* Equal configs: every field but where the values came from. */
static int same_config(const cfg_config *a, const cfg_config *b) {
  cfg_config x, y;
  memcpy(&x, a, sizeof x);
  memcpy(&y, b, sizeof y);
  memset(x.origin, 0, sizeof x.origin);
  memset(y.origin, 0, sizeof y.origin);
  memset(x.source, 0, sizeof x.source);
  memset(y.source, 0, sizeof y.source);
  x.model.features = y.model.features = NULL;
  x.model.classifier = y.model.classifier = NULL;
  if (memcmp(&x, &y, sizeof x) != 0) return 0;
  if (a->model.num_features && memcmp(a->model.features, b->model.features,
                                      (size_t)a->model.num_features * sizeof(nn_layer_spec)))
    return 0;
  if (a->model.num_classifier && memcmp(a->model.classifier, b->model.classifier,
                                        (size_t)a->model.num_classifier * sizeof(nn_layer_spec)))
    return 0;
  return 1;
}

static void round_trip(const cfg_config *c) {
  char err[ERRLEN];
  char *y1 = cfg_to_yaml(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(y1);
  cfg_config back;
  int rc = cfg_load_string(y1, "stored config", &back, err, ERRLEN);
  if (rc) fprintf(stderr, "\n  %s\n%s\n", err, y1);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  int same = same_config(c, &back);
  if (!same) fprintf(stderr, "\n  round trip differs for %s:\n%s\n", c->source, y1);
  CU_ASSERT(same);
  char *y2 = cfg_to_yaml(&back);
  CU_ASSERT_PTR_NOT_NULL_FATAL(y2);
  /* equal apart from the first comment line, which names the source */
  CU_ASSERT_STRING_EQUAL(strchr(y1, '\n'), strchr(y2, '\n'));
  free(y1);
  free(y2);
  cfg_free(&back);
}

static void test_round_trip(void) {
  char err[ERRLEN];
  cfg_config c;
  for (int i = 0; i < NUM_SHIPPED; i++) {
    CU_ASSERT_EQUAL_FATAL(load_shipped(shipped[i], &c, err), 0);
    round_trip(&c);
    cfg_free(&c);
  }
  /* Every kind of value away from its default. */
  const char *yaml =
      "run: {name: \"we\\\"ird \\\\ näme\\t\", dir: '/tmp/a b', seed: 18446744073709551615,\n"
      "      deterministic: yes}\n"
      "model:\n"
      "  num_classes: 10\n"
      "  dropout: 0\n"
      "  in_channels: 1\n"
      "  input_size: 30\n"
      "  weight_init: paper\n"
      "  features:\n"
      "    - {conv: {out: 7, kernel: [3, 5], stride: [1, 2], padding: [0, 1, 2, 3], groups: 1,"
      " bias: false}}\n"
      "    - {conv: {out: 7, kernel: 3, padding: [1, 2]}}\n"
      "    - {maxpool: {kernel: [3, 2], stride: 1, padding: 1}}\n"
      "    - {lrn: {size: 3, alpha: 0.1, beta: 0.3333, k: 1.5}}\n"
      "    - flatten\n"
      "  avgpool: [6, 7]\n"
      "  classifier: [{dropout: 0.1}, {avgpool: [2, 3]}, {linear: {out: 12, bias: false}}, tanh,"
      " {linear: 10}]\n"
      "data:\n"
      "  synthetic: {n: 1000, size: 33, classes: 10, channels: 1}\n"
      "  crop: 30\n"
      "  mirror: off\n"
      "  lighting: 0.30000000000000004\n"
      "  mean: [0.1, 0.2, 1e-7]\n"
      "  std: 0.5\n"
      "  shuffle: false\n"
      "  prefetch: 5\n"
      "  val_fraction: 0.25\n"
      "train: {batch_size: 12, epochs: 7, max_steps: 123456789012}\n"
      "optimizer:\n"
      "  lr: 0.123456789\n"
      "  momentum: 0\n"
      "  weight_decay: 1e-5\n"
      "  nesterov: false\n"
      "  decay_bias: false\n"
      "  schedule: {type: poly, step_epochs: 2, gamma: 0.7, milestones: [1, 3, 5], power: 2.5}\n"
      "  warmup_epochs: 0.5\n"
      "dist: {bucket_mb: 0.5, overlap: false, compress: fp16, timeout_s: 1.5, threads_per_rank: "
      "3}\n"
      "checkpoint: {dir: ck, every_steps: 100, every_epochs: 0, keep: 9, resume: auto, init: "
      "w.h5}\n"
      "eval: {every_epochs: 2, batch_size: 24, ten_crop: true}\n"
      "log: {every_steps: 1}\n";
  int rc = cfg_load_string(yaml, "all.yaml", &c, err, ERRLEN);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_STRING_EQUAL(c.run.name, "we\"ird \\ näme\t");
  CU_ASSERT_EQUAL(c.data.mirror, 0);
  CU_ASSERT_EQUAL(c.run.deterministic, 1);
  rc = cfg_validate(&c, err, ERRLEN);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL(rc, 0);
  round_trip(&c);
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.resume=never", err, ERRLEN), 0);
  round_trip(&c);
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.resume=auto/../auto", err, ERRLEN), 0);
  round_trip(&c);
  /* A checkpoint file literally named "auto" stays a path. */
  strcpy(c.checkpoint.resume_path, "auto");
  c.checkpoint.resume = CFG_RESUME_PATH;
  char *y = cfg_to_yaml(&c);
  cfg_config back;
  CU_ASSERT_EQUAL(cfg_load_string(y, "y", &back, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(back.checkpoint.resume, CFG_RESUME_PATH);
  CU_ASSERT_STRING_EQUAL(back.checkpoint.resume_path, "./auto");
  free(y);
  cfg_free(&back);
  cfg_free(&c);
}

/* What the loader accepts, the stored config gives back byte for byte
 * (issue 17: a run name with U+FFFE trained, then its checkpoint was refused;
 * U+0085 reloaded as a space). */
static void test_strings_reload_identically(void) {
  static const struct {
    const char *yaml_value; /* as written in the file */
    const char *bytes;      /* what it means */
    const char *written;    /* how cfg_to_yaml writes it */
  } cases[] = {
      {"\"a\\uFFFEb\"",
       "a\xEF\xBF\xBE"
       "b",
       "\"a\\uFFFEb\""},
      {"\"a\\uFFFFb\"",
       "a\xEF\xBF\xBF"
       "b",
       "\"a\\uFFFFb\""},
      {"\"a\\x85b\"",
       "a\xC2\x85"
       "b",
       "\"a\\x85b\""},
      {"\"a\\x80\\x9fb\"",
       "a\xC2\x80\xC2\x9F"
       "b",
       "\"a\\x80\\x9fb\""},
      {"\"a\\u2028b\\u2029\"",
       "a\xE2\x80\xA8"
       "b\xE2\x80\xA9",
       "\"a\\u2028b\\u2029\""},
      {"\"\\uFEFFa\"",
       "\xEF\xBB\xBF"
       "a",
       "\"\\uFEFFa\""},
      {"\"tab\\there\\x7f\"", "tab\there\x7F", "\"tab\\x09here\\x7f\""},
      {"\"caf\\xe9 \\U0001F600\"", "caf\xC3\xA9 \xF0\x9F\x98\x80",
       "\"caf\xC3\xA9 \xF0\x9F\x98\x80\""},
      {"'q\"uo\\te'", "q\"uo\\te", "\"q\\\"uo\\\\te\""},
  };
  char err[ERRLEN], yaml[256], want[256];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cfg_config c, back;
    snprintf(yaml, sizeof yaml, "run: {name: %s, dir: %s}\n", cases[i].yaml_value,
             cases[i].yaml_value);
    int rc = cfg_load_string(yaml, "t.yaml", &c, err, ERRLEN);
    if (rc) fprintf(stderr, "\n  case %zu: %s\n", i, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(c.run.name, cases[i].bytes);
    char *text = cfg_to_yaml(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    snprintf(want, sizeof want, "\n  name: %s\n", cases[i].written);
    TU_ASSERT_CONTAINS(text, want);
    rc = cfg_load_string(text, "stored", &back, err, ERRLEN);
    if (rc) fprintf(stderr, "\n  case %zu: %s\n", i, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(back.run.name, cases[i].bytes);
    CU_ASSERT_STRING_EQUAL(back.run.dir, cases[i].bytes);
    free(text);
    cfg_free(&back);
    cfg_free(&c);
  }
  /* a string a program set that is not UTF-8 at all still writes a text
   * libyaml reads */
  cfg_config c, back;
  cfg_init(&c, "t.yaml");
  strcpy(c.run.name, "bad\xFF\xC3(");
  char *text = cfg_to_yaml(&c);
  TU_ASSERT_CONTAINS(text, "name: \"bad\\xff\\xc3(\"");
  CU_ASSERT_EQUAL(cfg_load_string(text, "stored", &back, err, ERRLEN), 0);
  free(text);
  cfg_free(&back);
  cfg_free(&c);
}

/* A run.dir too long for the default checkpoint.dir beside it is named, with
 * its limit (it was reported as `checkpoint.dir: expected a path, got ""`). */
static void test_long_run_dir(void) {
  char err[ERRLEN];
  cfg_config c;
  size_t len = CFG_PATH_MAX - 5;
  char *yaml = malloc(len + 128);
  CU_ASSERT_PTR_NOT_NULL_FATAL(yaml);
  int at = snprintf(yaml, len + 128, OK_MODEL OK_DATA "run: {dir: ");
  memset(yaml + at, 'd', len);
  snprintf(yaml + at + len, 128, "}\n");
  CU_ASSERT_EQUAL_FATAL(cfg_load_string(yaml, "t.yaml", &c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), -1);
  char want[256];
  snprintf(want, sizeof want,
           ": run.dir: %zu bytes is too long for the default checkpoint.dir "
           "<run.dir>/checkpoints (at most %d bytes): use a run.dir of at most %d bytes, or set "
           "checkpoint.dir",
           len, CFG_PATH_MAX - 1, CFG_PATH_MAX - 13);
  TU_ASSERT_CONTAINS(err, want);
  TU_ASSERT_CONTAINS(err, "t.yaml:3:12: run.dir:");
  /* with its own checkpoint.dir the long run.dir is fine */
  CU_ASSERT_EQUAL(cfg_set(&c, "checkpoint.dir=/tmp/ck", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  cfg_free(&c);
  free(yaml);
}

/* ------------------------------------------------------------------------ */
/* Learning rate                                                             */

static void test_lr_schedules(void) {
  char err[ERRLEN];
  cfg_config c;
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string(OK_MODEL OK_DATA "optimizer: {lr: 0.1}\n", "lr.yaml", &c, err, ERRLEN), 0);
  const double eps = 1e-12;
  /* step (default: /10 every 30 epochs), changing at whole epochs */
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 0), 0.1, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 29.999), 0.1, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 30), 0.01, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 65.5), 0.001, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, -1), 0.1, eps);
  CU_ASSERT_EQUAL(
      cfg_set(&c, "optimizer.schedule={type: step, step_epochs: 4, gamma: 0.5}", err, ERRLEN), 0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 11.9), 0.1 * 0.25, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 12), 0.1 * 0.125, eps);
  /* constant */
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule=constant", err, ERRLEN), 0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 0), 0.1, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 89.5), 0.1, eps);
  /* multistep: gamma^(milestones <= floor(epoch)) */
  CU_ASSERT_EQUAL(cfg_set(&c,
                          "optimizer.schedule={type: multistep, milestones: [30, 60, 80], "
                          "gamma: 0.5}",
                          err, ERRLEN),
                  0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 29.9), 0.1, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 30), 0.05, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 60.5), 0.025, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 85), 0.0125, eps);
  /* cosine over train.epochs = 90, per step */
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule=cosine", err, ERRLEN), 0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 0), 0.1, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 30), 0.075, eps); /* 0.05 * (1 + cos(pi / 3)) */
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 45), 0.05, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 67.5), 0.05 * (1 - sqrt(0.5)), eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 90), 0, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 100), 0, eps);
  /* poly, power 2 */
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule={type: poly, power: 2}", err, ERRLEN), 0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 45), 0.025, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 9), 0.1 * 0.81, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 90), 0, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 95), 0, eps);
  /* linear warmup from 0 over 5 epochs, multiplying the schedule */
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer={warmup_epochs: 5, schedule: step}", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule.step_epochs=30", err, ERRLEN), 0);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule.gamma=0.1", err, ERRLEN), 0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 0), 0, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 1), 0.02, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 2.5), 0.05, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 5), 0.1, eps);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 31), 0.01, eps);
  CU_ASSERT_EQUAL(cfg_set(&c, "optimizer.schedule=cosine", err, ERRLEN), 0);
  CU_ASSERT_DOUBLE_EQUAL(cfg_lr_at(&c, 2), 0.4 * 0.05 * (1 + cos(M_PI * 2 / 90)), eps);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  cfg_free(&c);
}

/* ------------------------------------------------------------------------ */
/* Explicit layer lists                                                      */

static void test_layer_list(void) {
  char err[ERRLEN];
  cfg_config c;
  const char *yaml =
      "model:\n"
      "  features:\n"
      "    - {conv: {out: 64, kernel: [11, 9], stride: [4, 3], padding: [1, 2], groups: 2,"
      " bias: false}}\n"
      "    - relu\n"
      "    - {maxpool: {kernel: 3, stride: 2}}\n"
      "    - {maxpool: 2}\n"
      "    - {lrn: {size: 7, alpha: 2e-4, beta: 0.5, k: 1}}\n"
      "    - lrn\n"
      "    - {conv: {out: 8, kernel: 3, padding: [1, 2, 3, 4]}}\n"
      "    - conv:\n"
      "        out: 4\n"
      "        kernel: 1\n"
      "        padding: 5\n"
      "  avgpool: [6, 7]\n"
      "  classifier:\n"
      "    - dropout\n"
      "    - {dropout: 0.25}\n"
      "    - {linear: 4096}\n"
      "    - tanh\n"
      "    - flatten:\n"
      "    - {avgpool: 1}\n"
      "    - {linear: {out: 10, bias: false}}\n"
      "data: {synthetic: {n: 64, size: 48}, crop: 48}\n";
  int rc = cfg_load_string(yaml, "layers.yaml", &c, err, ERRLEN);
  if (rc) fprintf(stderr, "\n  %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL_FATAL(c.model.num_features, 8);
  CU_ASSERT_EQUAL_FATAL(c.model.num_classifier, 7);
  const nn_layer_spec *f = c.model.features;
  CU_ASSERT_EQUAL(f[0].kind, NN_CONV);
  CU_ASSERT_EQUAL(f[0].section, NN_FEATURES);
  CU_ASSERT_EQUAL(f[0].out, 64);
  CU_ASSERT_EQUAL(f[0].kernel_h, 11);
  CU_ASSERT_EQUAL(f[0].kernel_w, 9);
  CU_ASSERT_EQUAL(f[0].stride_h, 4);
  CU_ASSERT_EQUAL(f[0].stride_w, 3);
  CU_ASSERT_EQUAL(f[0].pad_top, 1);
  CU_ASSERT_EQUAL(f[0].pad_bottom, 2);
  CU_ASSERT_EQUAL(f[0].pad_left, 1);
  CU_ASSERT_EQUAL(f[0].pad_right, 2);
  CU_ASSERT_EQUAL(f[0].groups, 2);
  CU_ASSERT_EQUAL(f[0].no_bias, 1);
  CU_ASSERT_EQUAL(f[1].kind, NN_RELU);
  CU_ASSERT_EQUAL(f[2].kind, NN_MAXPOOL);
  CU_ASSERT_EQUAL(f[2].kernel_h, 3);
  CU_ASSERT_EQUAL(f[2].kernel_w, 3);
  CU_ASSERT_EQUAL(f[2].stride_h, 2);
  CU_ASSERT_EQUAL(f[2].stride_w, 2);
  CU_ASSERT_EQUAL(f[2].pad_top + f[2].pad_bottom + f[2].pad_left + f[2].pad_right, 0);
  CU_ASSERT_EQUAL(f[3].kernel_h, 2); /* shorthand; stride defaults to the kernel */
  CU_ASSERT_EQUAL(f[3].stride_w, 2);
  CU_ASSERT_EQUAL(f[4].kind, NN_LRN);
  CU_ASSERT_EQUAL(f[4].lrn_size, 7);
  CU_ASSERT_EQUAL(f[4].lrn_alpha, 2e-4f);
  CU_ASSERT_EQUAL(f[4].lrn_beta, 0.5f);
  CU_ASSERT_EQUAL(f[4].lrn_k, 1.0f);
  CU_ASSERT_EQUAL(f[5].lrn_size, 5); /* bare lrn: the paper's */
  CU_ASSERT_EQUAL(f[5].lrn_alpha, 1e-4f);
  CU_ASSERT_EQUAL(f[5].lrn_beta, 0.75f);
  CU_ASSERT_EQUAL(f[5].lrn_k, 2.0f);
  CU_ASSERT_EQUAL(f[6].pad_top, 1);
  CU_ASSERT_EQUAL(f[6].pad_bottom, 2);
  CU_ASSERT_EQUAL(f[6].pad_left, 3);
  CU_ASSERT_EQUAL(f[6].pad_right, 4);
  CU_ASSERT_EQUAL(f[6].stride_h, 1); /* conv defaults: stride 1, groups 1, bias */
  CU_ASSERT_EQUAL(f[6].groups, 1);
  CU_ASSERT_EQUAL(f[6].no_bias, 0);
  CU_ASSERT_EQUAL(f[7].kind, NN_CONV); /* block style */
  CU_ASSERT_EQUAL(f[7].out, 4);
  CU_ASSERT_EQUAL(f[7].kernel_w, 1);
  CU_ASSERT(f[7].pad_top == 5 && f[7].pad_bottom == 5 && f[7].pad_left == 5 && f[7].pad_right == 5);
  CU_ASSERT_EQUAL(c.model.avgpool_h, 6);
  CU_ASSERT_EQUAL(c.model.avgpool_w, 7);
  const nn_layer_spec *k = c.model.classifier;
  CU_ASSERT_EQUAL(k[0].kind, NN_DROPOUT);
  CU_ASSERT_EQUAL(k[0].section, NN_CLASSIFIER);
  CU_ASSERT_EQUAL(k[0].dropout_p, 0.5f);
  CU_ASSERT_EQUAL(k[1].dropout_p, 0.25f);
  CU_ASSERT_EQUAL(k[2].kind, NN_LINEAR);
  CU_ASSERT_EQUAL(k[2].out, 4096);
  CU_ASSERT_EQUAL(k[2].no_bias, 0);
  CU_ASSERT_EQUAL(k[3].kind, NN_TANH);
  CU_ASSERT_EQUAL(k[4].kind, NN_FLATTEN);
  CU_ASSERT_EQUAL(k[5].kind, NN_AVGPOOL);
  CU_ASSERT_EQUAL(k[5].out_h, 1);
  CU_ASSERT_EQUAL(k[5].out_w, 1);
  CU_ASSERT_EQUAL(k[6].out, 10);
  CU_ASSERT_EQUAL(k[6].no_bias, 1);

  /* The list handed to nn: features, the avgpool section, the classifier. */
  nn_layer_spec *specs;
  int count;
  nn_shape in;
  CU_ASSERT_EQUAL_FATAL(cfg_model_specs(&c, &specs, &count, &in, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(count, 16);
  CU_ASSERT_EQUAL(specs[8].kind, NN_AVGPOOL);
  CU_ASSERT_EQUAL(specs[8].section, NN_AVGPOOL_SECTION);
  CU_ASSERT_EQUAL(specs[8].out_w, 7);
  CU_ASSERT_EQUAL(specs[9].kind, NN_DROPOUT);
  CU_ASSERT_EQUAL(specs[9].dropout_p, 0.5f);
  CU_ASSERT(in.c == 3 && in.h == 48 && in.w == 48);
  free(specs);
  /* model.dropout overrides every dropout layer and keeps them (PyTorch's indices). */
  CU_ASSERT_EQUAL(cfg_set(&c, "model.dropout=0", err, ERRLEN), 0);
  CU_ASSERT_EQUAL_FATAL(cfg_model_specs(&c, &specs, &count, &in, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(count, 16);
  CU_ASSERT_EQUAL(specs[9].dropout_p, 0.0f);
  CU_ASSERT_EQUAL(specs[10].dropout_p, 0.0f);
  free(specs);
  cfg_free(&c);

  /* A preset takes the model options: classes from the synthetic data,
   * in_channels, input size = crop, dropout. */
  CU_ASSERT_EQUAL_FATAL(
      cfg_load_string("model: {arch: alexnet_cifar, in_channels: 1, dropout: 0}\n"
                      "data: {synthetic: {n: 64, size: 28, classes: 4, channels: 1}, crop: 28}\n",
                      "p.yaml", &c, err, ERRLEN),
      0);
  CU_ASSERT_EQUAL(cfg_validate(&c, err, ERRLEN), 0);
  CU_ASSERT_EQUAL_FATAL(cfg_model_specs(&c, &specs, &count, &in, err, ERRLEN), 0);
  CU_ASSERT(in.c == 1 && in.h == 28 && in.w == 28);
  CU_ASSERT_EQUAL(specs[count - 1].kind, NN_LINEAR);
  CU_ASSERT_EQUAL(specs[count - 1].out, 4);
  int dropouts = 0;
  for (int i = 0; i < count; i++)
    if (specs[i].kind == NN_DROPOUT) {
      dropouts++;
      CU_ASSERT_EQUAL(specs[i].dropout_p, 0.0f);
    }
  CU_ASSERT_EQUAL(dropouts, 2);
  free(specs);
  nn_net net;
  CU_ASSERT_EQUAL(cfg_build_net(&c, &net, err, ERRLEN), 0);
  CU_ASSERT_EQUAL(net.num_classes, 4);
  nn_net_free(&net);
  cfg_free(&c);
}

static void test_names(void) {
  CU_ASSERT_STRING_EQUAL(cfg_schedule_name(CFG_SCHED_MULTISTEP), "multistep");
  CU_ASSERT_STRING_EQUAL(cfg_schedule_name(CFG_SCHED_POLY), "poly");
  CU_ASSERT_STRING_EQUAL(cfg_schedule_name(17), "?");
  CU_ASSERT_STRING_EQUAL(cfg_compress_name(DIST_COMPRESS_FP16), "fp16");
  CU_ASSERT_STRING_EQUAL(cfg_compress_name(-1), "?");
}

int main(void) {
  static const tu_test tests[] = {
      {"defaults", test_defaults},
      {"shipped configs validate", test_shipped_configs_validate},
      {"shipped config values", test_shipped_config_values},
      {"error messages", test_error_messages},
      {"file errors", test_file_errors},
      {"ranks, paths and shapes", test_ranks_paths_and_shapes},
      {"validate programmatic values", test_validate_programmatic},
      {"--set overrides", test_set_overrides},
      {"round trip", test_round_trip},
      {"strings reload identically", test_strings_reload_identically},
      {"a run.dir too long for its checkpoint.dir", test_long_run_dir},
      {"learning rate schedules", test_lr_schedules},
      {"explicit layer list", test_layer_list},
      {"layer list limits", test_layer_list_limits},
      {"layer rules from nn", test_layer_rules_from_nn},
      {"enum names", test_names},
      {NULL, NULL},
  };
  tu_add_suite("config", tests);
  return tu_run_all();
}
