/*
 * alexnet-convert: makes the HDF5 dataset files training reads
 * (docs/data-format.md) from an ImageFolder tree of JPEG/PNG files, the
 * CIFAR-10/100 binaries, MNIST-style IDX files, or a synthetic set.
 *
 * Exit status: 0 done, 1 the conversion failed (the message says why; no
 * output file is left behind), 2 a usage error, 128 + signal when
 * interrupted (the temporary files are removed first).
 *
 * Under mpirun, `imagefolder --shards K` splits the shards over the ranks
 * (rank r writes shards r, r + N, ...; each shard's bytes are what one
 * process writes). Every rank finishes its shards as "<file>.tmp"; only when
 * all ranks agree that all are complete are they renamed, else all removed.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "dist.h"
#include "tool.h"
#include "util.h"

static const char usage[] =
    "usage:\n"
    "  alexnet-convert imagefolder DIR -o OUT.h5 [--size 256] [--val-fraction F --val-out VAL.h5]\n"
    "                  [--seed S] [--compress 0-9] [--threads N] [--encode raw|jpeg] [--quality "
    "Q]\n"
    "                  [--shards K] [--labels FILE [--class-names FILE]]\n"
    "  alexnet-convert cifar10 DIR -o OUT.h5 [--split train|test] [--compress 0-9]\n"
    "  alexnet-convert cifar100 DIR -o OUT.h5 [--split train|test] [--compress 0-9]\n"
    "  alexnet-convert idx IMAGES LABELS -o OUT.h5 [--class-names FILE] [--compress 0-9]\n"
    "  alexnet-convert synthetic --n N --size S --classes K -o OUT.h5 [--seed S] [--channels 1|3]\n"
    "                  [--compress 0-9] [--threads N]\n"
    "IMAGES and LABELS may be gzipped. --threads 0 (default) uses every core.\n"
    "--shards K writes OUT-00000-of-0000K.h5 ...; under mpirun the ranks share the shards.\n";

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "alexnet-convert: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", usage);
  return 2;
}

/* Parses an integer option value in [lo, hi]; returns 0 or -1. */
static int parse_ll(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

typedef struct {
  const char *cmd;
  const char *pos[2]; /* positional arguments */
  int npos;
  const char *out, *val_out, *split, *class_names, *labels;
  long long size, n, classes, channels, compress, threads, seed, quality, shards;
  int encode;
  double val_fraction;
  int have_n, have_size, have_classes;
} args_t;

/* Which options each command takes. */
static int allowed(const char *cmd, const char *opt) {
  static const char *const common[] = {"-o", "--compress", NULL};
  static const char *const folder[] = {"--size",    "--val-fraction", "--val-out", "--seed",
                                       "--threads", "--encode",       "--quality", "--shards",
                                       "--labels",  "--class-names",  NULL};
  static const char *const cifar[] = {"--split", NULL};
  static const char *const idx[] = {"--class-names", NULL};
  static const char *const synth[] = {"--n",        "--size",    "--classes", "--seed",
                                      "--channels", "--threads", NULL};
  const char *const *lists[2] = {common, NULL};
  if (strcmp(cmd, "imagefolder") == 0) lists[1] = folder;
  if (strcmp(cmd, "cifar10") == 0 || strcmp(cmd, "cifar100") == 0) lists[1] = cifar;
  if (strcmp(cmd, "idx") == 0) lists[1] = idx;
  if (strcmp(cmd, "synthetic") == 0) lists[1] = synth;
  for (int l = 0; l < 2; l++)
    for (int i = 0; lists[l] && lists[l][i]; i++)
      if (strcmp(opt, lists[l][i]) == 0) return 1;
  return 0;
}

/* 1 when paths a and b name one file: the same string, or (once either
 * exists) the same device and inode, or the same directory and base name. */
static int same_file(const char *a, const char *b) {
  if (strcmp(a, b) == 0) return 1;
  struct stat sa, sb;
  if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  char da[PATH_MAX], db[PATH_MAX], ra[PATH_MAX], rb[PATH_MAX];
  snprintf(da, sizeof da, "%s", a);
  snprintf(db, sizeof db, "%s", b);
  const char *ba = strrchr(a, '/'), *bb = strrchr(b, '/');
  if (strcmp(ba ? ba + 1 : a, bb ? bb + 1 : b) != 0) return 0;
  snprintf(da, sizeof da, "%.*s", ba ? (int)(ba - a + 1) : 1, ba ? a : ".");
  snprintf(db, sizeof db, "%.*s", bb ? (int)(bb - b + 1) : 1, bb ? b : ".");
  return realpath(da, ra) && realpath(db, rb) && strcmp(ra, rb) == 0;
}

static int parse_args(int argc, char **argv, args_t *a) {
  memset(a, 0, sizeof *a);
  a->split = "train";
  a->channels = 3;
  a->seed = 1;
  a->cmd = argv[1];
  int want = strcmp(a->cmd, "idx") == 0 ? 2 : strcmp(a->cmd, "synthetic") == 0 ? 0 : 1;
  for (int i = 2; i < argc; i++) {
    const char *arg = argv[i];
    if (arg[0] != '-' || arg[1] == '\0') {
      if (a->npos >= want) return usage_error("unexpected argument '%s'", arg);
      a->pos[a->npos++] = arg;
      continue;
    }
    if (!allowed(a->cmd, arg)) return usage_error("unknown option '%s' for this command", arg);
    if (i + 1 >= argc) return usage_error("option %s needs a value", arg);
    const char *v = argv[++i];
    long long x = 0;
    if (strcmp(arg, "-o") == 0) {
      a->out = v;
    } else if (strcmp(arg, "--val-out") == 0) {
      a->val_out = v;
    } else if (strcmp(arg, "--split") == 0) {
      if (strcmp(v, "train") != 0 && strcmp(v, "test") != 0)
        return usage_error("--split must be train or test, not '%s'", v);
      a->split = v;
    } else if (strcmp(arg, "--class-names") == 0) {
      a->class_names = v;
    } else if (strcmp(arg, "--labels") == 0) {
      a->labels = v;
    } else if (strcmp(arg, "--encode") == 0) {
      if (strcmp(v, "raw") != 0 && strcmp(v, "jpeg") != 0)
        return usage_error("--encode must be raw or jpeg, not '%s'", v);
      a->encode = strcmp(v, "jpeg") == 0 ? DATA_ENCODING_JPEG : DATA_ENCODING_RAW;
    } else if (strcmp(arg, "--val-fraction") == 0) {
      char *end;
      double f = strtod(v, &end);
      if (end == v || *end || !(f >= 0 && f < 1))
        return usage_error("--val-fraction must be a number in [0, 1), not '%s'", v);
      a->val_fraction = f;
    } else {
      struct {
        const char *name;
        long long lo, hi, *dst;
        int *seen;
      } nums[] = {{"--size", 1, 65535, &a->size, &a->have_size},
                  {"--n", 1, (1ll << 40), &a->n, &a->have_n},
                  {"--classes", 1, 1 << 24, &a->classes, &a->have_classes},
                  {"--channels", 1, 3, &a->channels, NULL},
                  {"--compress", 0, 9, &a->compress, NULL},
                  {"--threads", 0, TOOL_MAX_THREADS, &a->threads, NULL},
                  {"--seed", 0, (1ll << 62), &a->seed, NULL},
                  {"--quality", 1, 100, &a->quality, NULL},
                  {"--shards", 1, 99999, &a->shards, NULL}};
      for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        if (strcmp(arg, nums[k].name) != 0) continue;
        if (parse_ll(v, nums[k].lo, nums[k].hi, &x) != 0) {
          fprintf(stderr, "alexnet-convert: %s must be an integer in [%lld, %lld], not '%s'\n%s",
                  arg, nums[k].lo, nums[k].hi, v, usage);
          return 2;
        }
        *nums[k].dst = x;
        if (nums[k].seen) *nums[k].seen = 1;
      }
    }
  }
  if (a->npos < want)
    return usage_error("%s", want == 2 ? "idx needs IMAGES and LABELS files" : "missing DIR");
  if (!a->out) return usage_error("%s", "missing -o OUT.h5");
  if (a->val_fraction > 0 && !a->val_out)
    return usage_error("%s", "--val-fraction needs --val-out");
  if (a->val_out && !(a->val_fraction > 0))
    return usage_error("%s", "--val-out needs --val-fraction > 0");
  if (a->val_out && same_file(a->out, a->val_out))
    return usage_error(
        "--val-out %s is the same file as -o: give the validation split its own "
        "file",
        a->val_out);
  if (a->channels == 2) return usage_error("%s", "--channels must be 1 or 3");
  if (a->quality && a->encode != DATA_ENCODING_JPEG)
    return usage_error("%s", "--quality needs --encode jpeg");
  if (a->class_names && strcmp(a->cmd, "imagefolder") == 0 && !a->labels)
    return usage_error("%s", "--class-names with imagefolder needs --labels");
  if (a->shards > 1 && a->val_out)
    return usage_error("%s",
                       "--val-fraction with --shards: convert the validation images on "
                       "their own");
  if (strcmp(a->cmd, "synthetic") == 0 && !(a->have_n && a->have_size && a->have_classes))
    return usage_error("%s", "synthetic needs --n, --size and --classes");
  return 0;
}

/* The temporary files a conversion writes ("<out>.tmp", one per shard of
 * this rank): removed on SIGINT, SIGTERM or SIGHUP, so an interrupted run
 * leaves nothing behind. */
#define TMP_PATH_LEN 4200
static char (*tmp_paths)[TMP_PATH_LEN];
static int num_tmp_paths;

static void on_signal(int sig) {
  for (int i = 0; i < num_tmp_paths; i++)
    if (tmp_paths[i][0]) unlink(tmp_paths[i]); /* async-signal-safe */
  signal(sig, SIG_DFL);
  raise(sig);
}

/* The output files of this rank (one, or its shards, and val_out). */
static int output_paths(const args_t *a, int rank, int ranks, char (**out)[TMP_PATH_LEN]) {
  int k = a->shards > 1 ? (int)a->shards : 1, n = 0;
  char(*p)[TMP_PATH_LEN] = calloc((size_t)k + 1, TMP_PATH_LEN);
  if (!p) return -1;
  if (k == 1 && rank == 0) snprintf(p[n++], TMP_PATH_LEN, "%s", a->out);
  for (int s = rank; k > 1 && s < k; s += ranks)
    data_shard_path(a->out, s, k, p[n++], TMP_PATH_LEN);
  if (a->val_out && rank == 0) snprintf(p[n++], TMP_PATH_LEN, "%s", a->val_out);
  *out = p;
  return n;
}

static void remove_tmp_on_signals(char (*paths)[TMP_PATH_LEN], int n) {
  tmp_paths = calloc((size_t)n + 1, TMP_PATH_LEN);
  if (!tmp_paths) return;
  for (int i = 0; i < n; i++) snprintf(tmp_paths[i], TMP_PATH_LEN, "%.4190s.tmp", paths[i]);
  num_tmp_paths = n;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
}

static int convert(args_t *a, int rank, int ranks) {
  double t0 = util_now();
  char(*paths)[TMP_PATH_LEN] = NULL;
  int npaths = output_paths(a, rank, ranks, &paths);
  if (npaths < 0) {
    fprintf(stderr, "alexnet-convert: out of memory\n");
    return 1;
  }
  remove_tmp_on_signals(paths, npaths);
  data_convert_stats st;
  memset(&st, 0, sizeof st);
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.size = (int)a->size;
  o.val_fraction = a->val_fraction;
  o.val_out = a->val_out;
  o.compress = (int)a->compress;
  o.threads = (int)a->threads;
  o.progress = 1;
  o.seed = (uint64_t)a->seed;
  o.class_names = a->class_names;
  o.encode = a->encode;
  o.quality = (int)a->quality;
  o.shards = (int)a->shards;
  o.shard_rank = rank;
  o.shard_ranks = ranks;
  o.keep_tmp = ranks > 1; /* renamed below once every rank is done */
  o.labels = a->labels;
  o.stats = &st;
  char err[2048] = "";
  int rc = 0;
  if (strcmp(a->cmd, "imagefolder") == 0)
    rc = data_convert_imagefolder(a->pos[0], a->out, &o, err, sizeof err);
  else if (strcmp(a->cmd, "cifar10") == 0 || strcmp(a->cmd, "cifar100") == 0)
    rc = data_convert_cifar(a->pos[0], strcmp(a->cmd, "cifar100") == 0, a->split, a->out, &o, err,
                            sizeof err);
  else if (strcmp(a->cmd, "idx") == 0)
    rc = data_convert_idx(a->pos[0], a->pos[1], a->out, &o, err, sizeof err);
  else
    rc = data_convert_synthetic(a->out, a->n, (int)a->size, (int)a->channels, (int)a->classes, &o,
                                err, sizeof err);
  if (ranks > 1) {
    /* All complete, or nobody's files stay. */
    if (dist_agree(rc != 0, err, sizeof err) != 0) rc = -1;
    for (int i = 0; i < npaths; i++) {
      char tmp[TMP_PATH_LEN + 8];
      snprintf(tmp, sizeof tmp, "%s.tmp", paths[i]);
      if (rc != 0)
        unlink(tmp);
      else if (data_commit_tmp(paths[i], err, sizeof err) != 0)
        rc = -1;
    }
    if (dist_agree(rc != 0, err, sizeof err) != 0) rc = -1;
    int64_t sum[3] = {st.written, st.written_val, st.skipped};
    dist_allreduce_sum_int64(sum, 3);
    st.written = sum[0], st.written_val = sum[1], st.skipped = sum[2];
    st.seconds = util_now() - t0; /* the agreements above waited for the slowest rank */
  }
  free(paths);
  if (rc != 0) {
    if (rank == 0) fprintf(stderr, "alexnet-convert: %s\n", err);
    return 1;
  }
  if (rank != 0) return 0;
  int64_t total = st.written + st.written_val;
  if (a->shards > 1) {
    char first[TMP_PATH_LEN];
    data_shard_path(a->out, 0, (int)a->shards, first, sizeof first);
    printf("alexnet-convert: wrote %lld images to %lld shards (%s ...)", (long long)st.written,
           a->shards, first);
  } else {
    printf("alexnet-convert: wrote %lld images to %s", (long long)st.written, a->out);
  }
  if (a->val_out) printf(" and %lld to %s", (long long)st.written_val, a->val_out);
  printf(", skipped %lld, %.2f s, %.1f images/s", (long long)st.skipped, st.seconds,
         st.seconds > 0 ? (double)(total + st.skipped) / st.seconds : 0.0);
  if (ranks > 1) printf(" (%d processes)", ranks);
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage_error("%s", "missing command");
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  const char *cmds[] = {"imagefolder", "cifar10", "cifar100", "idx", "synthetic", NULL};
  int known = 0;
  for (int i = 0; cmds[i]; i++) known |= strcmp(argv[1], cmds[i]) == 0;
  if (!known) return usage_error("unknown command '%s'", argv[1]);
  args_t a;
  int rc = parse_args(argc, argv, &a);
  if (rc != 0) return rc;
  /* MPI only when launched by mpirun: a plain run stays a plain process. */
  int under_mpi = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
  int rank = 0, ranks = 1;
  if (under_mpi) {
    dist_init(&argc, &argv);
    rank = dist_rank(), ranks = dist_size();
  }
  if (ranks > 1 && !(strcmp(a.cmd, "imagefolder") == 0 && a.shards > 1)) {
    if (rank == 0)
      fprintf(stderr, "alexnet-convert: %d processes need imagefolder with --shards K\n%s", ranks,
              usage);
    rc = 2;
  } else {
    rc = convert(&a, rank, ranks);
  }
  if (under_mpi) dist_finalize();
  return rc;
}
