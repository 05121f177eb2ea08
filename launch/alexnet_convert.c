/*
 * alexnet-convert: makes the HDF5 dataset files training reads
 * (docs/data-format.md) from an ImageFolder tree of JPEG/PNG files, the
 * CIFAR-10/100 binaries, MNIST-style IDX files, or a synthetic set.
 *
 * Exit status: 0 done, 1 the conversion failed (the message says why; no
 * output file is left behind), 2 a usage error, 128 + signal when
 * interrupted (the temporary files are removed first).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

static const char usage[] =
    "usage:\n"
    "  alexnet-convert imagefolder DIR -o OUT.h5 [--size 256] [--val-fraction F --val-out VAL.h5]\n"
    "                  [--seed S] [--compress 0-9] [--threads N]\n"
    "  alexnet-convert cifar10 DIR -o OUT.h5 [--split train|test] [--compress 0-9]\n"
    "  alexnet-convert cifar100 DIR -o OUT.h5 [--split train|test] [--compress 0-9]\n"
    "  alexnet-convert idx IMAGES LABELS -o OUT.h5 [--class-names FILE] [--compress 0-9]\n"
    "  alexnet-convert synthetic --n N --size S --classes K -o OUT.h5 [--seed S] [--channels 1|3]\n"
    "                  [--compress 0-9] [--threads N]\n"
    "IMAGES and LABELS may be gzipped. --threads 0 (default) uses every core.\n";

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
  const char *out, *val_out, *split, *class_names;
  long long size, n, classes, channels, compress, threads, seed;
  double val_fraction;
  int have_n, have_size, have_classes;
} args_t;

/* Which options each command takes. */
static int allowed(const char *cmd, const char *opt) {
  static const char *const common[] = {"-o", "--compress", NULL};
  static const char *const folder[] = {"--size", "--val-fraction", "--val-out",
                                       "--seed", "--threads",      NULL};
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
                  {"--threads", 0, 1024, &a->threads, NULL},
                  {"--seed", 0, (1ll << 62), &a->seed, NULL}};
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
  if (a->channels == 2) return usage_error("%s", "--channels must be 1 or 3");
  if (strcmp(a->cmd, "synthetic") == 0 && !(a->have_n && a->have_size && a->have_classes))
    return usage_error("%s", "synthetic needs --n, --size and --classes");
  return 0;
}

/* The temporary files a conversion writes ("<out>.tmp"): removed on SIGINT,
 * SIGTERM or SIGHUP, so an interrupted run leaves nothing behind. */
static char tmp_paths[2][4200];

static void on_signal(int sig) {
  for (int i = 0; i < 2; i++)
    if (tmp_paths[i][0]) unlink(tmp_paths[i]); /* async-signal-safe */
  signal(sig, SIG_DFL);
  raise(sig);
}

static void remove_tmp_on_signals(const char *out, const char *val_out) {
  snprintf(tmp_paths[0], sizeof tmp_paths[0], "%s.tmp", out);
  if (val_out) snprintf(tmp_paths[1], sizeof tmp_paths[1], "%s.tmp", val_out);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
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

  remove_tmp_on_signals(a.out, a.val_out);
  data_convert_stats st;
  memset(&st, 0, sizeof st);
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.size = (int)a.size;
  o.val_fraction = a.val_fraction;
  o.val_out = a.val_out;
  o.compress = (int)a.compress;
  o.threads = (int)a.threads;
  o.progress = 1;
  o.seed = (uint64_t)a.seed;
  o.class_names = a.class_names;
  o.stats = &st;
  char err[2048] = "";
  if (strcmp(a.cmd, "imagefolder") == 0)
    rc = data_convert_imagefolder(a.pos[0], a.out, &o, err, sizeof err);
  else if (strcmp(a.cmd, "cifar10") == 0 || strcmp(a.cmd, "cifar100") == 0)
    rc = data_convert_cifar(a.pos[0], strcmp(a.cmd, "cifar100") == 0, a.split, a.out, &o, err,
                            sizeof err);
  else if (strcmp(a.cmd, "idx") == 0)
    rc = data_convert_idx(a.pos[0], a.pos[1], a.out, &o, err, sizeof err);
  else
    rc = data_convert_synthetic(a.out, a.n, (int)a.size, (int)a.channels, (int)a.classes, &o, err,
                                sizeof err);
  if (rc != 0) {
    fprintf(stderr, "alexnet-convert: %s\n", err);
    return 1;
  }
  int64_t total = st.written + st.written_val;
  printf("alexnet-convert: wrote %lld images to %s", (long long)st.written, a.out);
  if (a.val_out) printf(" and %lld to %s", (long long)st.written_val, a.val_out);
  printf(", skipped %lld, %.2f s, %.1f images/s\n", (long long)st.skipped, st.seconds,
         st.seconds > 0 ? (double)(total + st.skipped) / st.seconds : 0.0);
  return 0;
}
