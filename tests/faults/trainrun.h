/*
 * trainrun: what the training, fault and determinism tests share. They run
 * alexnet-train on configs/debug.yaml through the binary, as users do, in a
 * scratch run directory that also tags the processes (the directory is on
 * every rank's command line); start runs in the background and wait for
 * them; find a rank's process; read checkpoints through launch's own loader
 * (so "equal" also means "valid": complete marker, shapes, checksum) and
 * compare them bitwise; and read metrics.jsonl.
 */
#ifndef TESTS_FAULTS_TRAINRUN_H
#define TESTS_FAULTS_TRAINRUN_H

#include <stddef.h>
#include <stdint.h>

/* Output (stdout + stderr) of the last tr_train or tr_run. */
extern char tr_out[1 << 16];

/* mpiexec with 2 ranks on one node (the tests' environment allows root and
 * oversubscription). */
#define TR_MPI2 "mpiexec -n 2 --oversubscribe"

/* Runs "<launcher> alexnet-train configs/debug.yaml --set run.dir=<dir> <extra>"
 * in the foreground (alexnet-train-hooked, tests/faults/hooked.c, when the
 * launcher sets an ALEXNET_TEST_ variable); returns its exit status (128 + signal when killed) and
 * leaves its output in tr_out (printed with the command when the status is not
 * 0). launcher may hold environment assignments and mpiexec. */
int tr_train(const char *launcher, const char *dir, const char *extra);
/* The same for a run expected to fail: prints nothing. */
int tr_train_status(const char *launcher, const char *dir, const char *extra);

/* Runs a shell command, output in tr_out; returns its exit status. */
int tr_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Starts the same command as tr_train in the background: output to
 * <dir>/log.txt, exit status to <dir>/status when it ends. */
void tr_train_bg(const char *launcher, const char *dir, const char *extra);
/* Waits up to max_s seconds for the background run of dir to end; returns its
 * exit status, or -1 on timeout. Its log is then in tr_out. */
int tr_wait(const char *dir, double max_s);

/* Waits up to max_s seconds for path to exist; returns 1 if it does. */
int tr_wait_file(const char *path, double max_s);
/* Waits up to max_s seconds for metrics.jsonl of dir to hold a train line of
 * step >= step; returns 1 if it does. */
int tr_wait_step(const char *dir, int64_t step, double max_s);

/* PID of the alexnet-train process of Open MPI rank `rank` (any when
 * rank < 0) whose command line contains tag; 0 if none. */
int tr_find_rank(const char *tag, int rank);
/* alexnet-train or mpiexec processes (not zombies) whose command line holds
 * tag, after waiting up to max_s seconds for them to go. */
int tr_leftover(const char *tag, double max_s);

/* "<dir>/checkpoints/step-<N>.h5" into path. */
void tr_ckpt(const char *dir, int64_t step, char *path, size_t len);
/* Highest N of the step-<N>.h5 files of a checkpoint directory; -1 if none. */
int64_t tr_newest_step(const char *ckpt_dir);

/* Loads a checkpoint as the trainer's resume does (network rebuilt from its
 * stored config, every tensor and the momentum, checksum verified). Returns
 * 0, or -1 with the loader's message in err. */
int tr_ckpt_valid(const char *path, char *err, size_t errlen);
/* Largest relative difference (floor 1e-3) over the weights, momentum and
 * batch-norm running statistics of
 * two checkpoints; *bitwise (if not NULL) = 1 when they are identical.
 * INFINITY, with the reason printed, when either does not load. */
double tr_ckpt_diff(const char *a, const char *b, int *bitwise);
/* The same with another floor: |a - b| / max(|a|, floor) element by element. */
double tr_ckpt_diff_floor(const char *a, const char *b, double floor, int *bitwise);
/* 1 when both checkpoints load and their weights and momentum are bitwise
 * equal; else 0, printing why (and the largest difference). */
int tr_ckpt_same(const char *a, const char *b);

/* One line of metrics.jsonl, the values that must be reproducible. */
typedef struct {
  int64_t step, epoch;
  int val; /* split "val" */
  double loss, top1, top5, lr;
} tr_metric;
/* Reads up to max lines of dir's metrics.jsonl; returns how many. */
int tr_metrics(const char *dir, tr_metric *rows, int max);
/* Lines of dir's metrics.jsonl (0 when absent). */
int tr_metric_lines(const char *dir);

#endif
