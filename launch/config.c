/*
 * launch/config.c: the YAML experiment config. One table (keys[]) lists every
 * key with its type, where it lives in cfg_config, its default, its allowed
 * range and how to describe that range. Each type has one set of functions
 * (key_types[]: default, parse, range check, YAML writer); cfg_init, the
 * loader, the --set overrides, the range checks and the YAML writer all walk
 * the table, so a key is added in one row (plus its field in cfg_config and
 * its entry in docs/config.md).
 *
 * Parsing uses libyaml's document API: the whole file becomes a node tree
 * whose marks give the line and column of every key and value. Types are
 * checked while walking the tree (with the value's position), ranges and
 * relations in cfg_validate (with the position recorded in c->origin), so
 * that --set overrides can repair a file before anything is judged.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config_internal.h"
#include "dist.h"
#include "util.h"

_Static_assert(DIST_COMPRESS_NONE == 0 && DIST_COMPRESS_BF16 == 1 && DIST_COMPRESS_FP16 == 2 &&
                   DIST_COMPRESS_POWERSGD == 3,
               "cfg compress names follow dist_compress");

#define MAX_CONFIG_BYTES (16u << 20) /* a config file is text; refuse anything bigger */

/* ------------------------------------------------------------------------ */
/* The key table                                                             */

/* A key's type. Each type has one set of functions (key_types[], after the
 * parsers): its default, its parser, its range check and its YAML writer. */
typedef enum {
  K_SECTION,    /* a mapping of further keys */
  K_STR,        /* char array; aux = capacity; null = "" */
  K_PATHS,      /* char array of paths or globs, a YAML list joined one per line */
  K_BOOL,       /* int 0/1 */
  K_INT,        /* int */
  K_I64,        /* int64_t */
  K_U64,        /* uint64_t */
  K_DOUBLE,     /* double */
  K_OPT_DOUBLE, /* double, null = -1 */
  K_ENUM,       /* int index into names */
  K_VEC3,       /* double[3]; aux = offset of the int has_ flag; null = unset */
  K_MILESTONES, /* int[CFG_MAX_MILESTONES]; aux = offset of the count */
  K_LAYERS,     /* nn_layer_spec *; aux = offset of the count; section in `section` */
  K_AVGPOOL,    /* int out_h; aux = offset of out_w; null = none */
  K_RESUME,     /* int mode + resume_path */
  K_TYPE_COUNT
} key_kind;

/* One key. A new key is one row here plus its field in cfg_config (and its
 * line in docs/config.md); its type's functions do the rest. */
typedef struct {
  const char *path;
  key_kind kind;
  size_t off, aux;
  double def;               /* the default of a number, bool or enum (index); strings,
                               lists and optional values default to empty / null */
  double lo, hi;            /* numbers: allowed range */
  int lo_open;              /* 1: lo itself is not allowed */
  int hi_open;              /* 1: hi itself is not allowed */
  const char *expect;       /* what a good value is, for messages */
  const char *const *names; /* K_ENUM: the value names, NULL-terminated */
  const int *only;          /* K_INT: the allowed values, -1-terminated, or NULL */
  const char *shorthand;    /* K_SECTION: a bare scalar sets this sub-key */
  nn_section section;       /* K_LAYERS */
} key_desc;

#define OFF(field) offsetof(cfg_config, field)
#define SIZE(field) sizeof(((cfg_config *)0)->field)
#define BIG 1e300

static const char *const schedule_names[] = {"constant", "step", "multistep",
                                             "cosine",   "poly", NULL};
static const char *const compress_names[] = {"none", "bf16", "fp16", "powersgd", NULL};
static const char *const hierarchical_names[] = {"auto", "on", "off", NULL};
static const char *const init_names[] = {"auto", "paper", "torch", "kaiming", NULL};
static const char *const optimizer_names[] = {"sgd", "lars", NULL};
static const char *const crop_mode_names[] = {"fixed", "random_resized", NULL};
static const char *const precision_names[] = {"fp32", "bf16", NULL};
static const int groups_only[] = {0, 1, 2, -1};
static const int channels_only[] = {1, 3, -1};
static const int data_channels_only[] = {0, 3, -1};

/* Row builders for the common types: path, field, default, range, message. */
#define SECTION(p) \
  { .path = p, .kind = K_SECTION }
#define STR(p, f, e) \
  { .path = p, .kind = K_STR, .off = OFF(f), .aux = SIZE(f), .expect = e }
#define BOOL(p, f, d) \
  { .path = p, .kind = K_BOOL, .off = OFF(f), .def = d, .expect = "true or false" }
#define INT(p, f, d, l, h, e) \
  { .path = p, .kind = K_INT, .off = OFF(f), .def = d, .lo = l, .hi = h, .expect = e }
#define I64(p, f, d, l, e) \
  { .path = p, .kind = K_I64, .off = OFF(f), .def = d, .lo = l, .hi = 1e19, .expect = e }
#define DBL(p, f, d, l, lopen, h, hopen, e)                                                   \
  {                                                                                           \
    .path = p, .kind = K_DOUBLE, .off = OFF(f), .def = d, .lo = l, .lo_open = lopen, .hi = h, \
    .hi_open = hopen, .expect = e                                                             \
  }
#define ENUM(p, f, d, n, e) \
  { .path = p, .kind = K_ENUM, .off = OFF(f), .def = d, .names = n, .expect = e }

static const key_desc keys[] = {
    SECTION("run"),
    STR("run.name", run.name, "a name"), /* default: derive_defaults */
    STR("run.dir", run.dir, "a path"),   /* default: derive_defaults */
    {.path = "run.seed",
     .kind = K_U64,
     .off = OFF(run.seed),
     .def = 1,
     .expect = "an integer >= 0"},
    BOOL("run.deterministic", run.deterministic, 0),

    SECTION("model"),
    STR("model.arch", model.arch, "an architecture name or null"),
    INT("model.num_classes", model.num_classes, 0, 0, 1e6, "an integer in [0, 1000000]"),
    {.path = "model.dropout",
     .kind = K_OPT_DOUBLE,
     .off = OFF(model.dropout),
     .def = -1,
     .lo = 0,
     .hi = 1,
     .hi_open = 1,
     .expect = "a number in [0, 1) or null"},
    {.path = "model.groups",
     .kind = K_INT,
     .off = OFF(model.groups),
     .def = 0,
     .lo = 0,
     .hi = 2,
     .only = groups_only,
     .expect = "0, 1 or 2"},
    {.path = "model.in_channels",
     .kind = K_INT,
     .off = OFF(model.in_channels),
     .def = 3,
     .lo = 1,
     .hi = 3,
     .only = channels_only,
     .expect = "1 or 3"},
    INT("model.input_size", model.input_size, 0, 0, 8192, "an integer in [0, 8192]"),
    ENUM("model.weight_init", model.weight_init, CFG_INIT_AUTO, init_names,
         "auto, paper, torch or kaiming"),
    BOOL("model.sync_batchnorm", model.sync_batchnorm, 0),
    {.path = "model.features",
     .kind = K_LAYERS,
     .off = OFF(model.features),
     .aux = OFF(model.num_features),
     .section = NN_FEATURES,
     .expect = "a list of layers"},
    {.path = "model.avgpool",
     .kind = K_AVGPOOL,
     .off = OFF(model.avgpool_h),
     .aux = OFF(model.avgpool_w),
     .lo = 1,
     .hi = 8192,
     .expect = "an output size: a positive integer, [h, w] or null"},
    {.path = "model.classifier",
     .kind = K_LAYERS,
     .off = OFF(model.classifier),
     .aux = OFF(model.num_classifier),
     .section = NN_CLASSIFIER,
     .expect = "a list of layers"},

    SECTION("data"),
    {.path = "data.train",
     .kind = K_PATHS,
     .off = OFF(data.train),
     .aux = SIZE(data.train),
     .expect = "a path, a glob, a list of them, or null"},
    {.path = "data.val",
     .kind = K_PATHS,
     .off = OFF(data.val),
     .aux = SIZE(data.val),
     .expect = "a path, a glob, a list of them, or null"},
    SECTION("data.synthetic"),
    I64("data.synthetic.n", data.synthetic.n, 0, 0, "an integer >= 0"),
    INT("data.synthetic.size", data.synthetic.size, 32, 1, 8192, "an integer in [1, 8192]"),
    INT("data.synthetic.classes", data.synthetic.classes, 10, 1, 1e6, "an integer in [1, 1000000]"),
    {.path = "data.synthetic.channels",
     .kind = K_INT,
     .off = OFF(data.synthetic.channels),
     .def = 3,
     .lo = 1,
     .hi = 3,
     .only = channels_only,
     .expect = "1 or 3"},
    INT("data.crop", data.crop, 224, 1, 8192, "an integer in [1, 8192]"),
    BOOL("data.mirror", data.mirror, 1),
    DBL("data.lighting", data.lighting, 0, 0, 0, BIG, 0, "a number >= 0"),
    {.path = "data.mean",
     .kind = K_VEC3,
     .off = OFF(data.mean),
     .aux = OFF(data.has_mean),
     .lo = -BIG,
     .hi = BIG,
     .expect = "null, a number or a list of 3 numbers"},
    {.path = "data.std",
     .kind = K_VEC3,
     .off = OFF(data.std),
     .aux = OFF(data.has_std),
     .lo = 0,
     .lo_open = 1,
     .hi = BIG,
     .expect = "null, a positive number or a list of 3 positive numbers"},
    BOOL("data.shuffle", data.shuffle, 1),
    INT("data.prefetch", data.prefetch, 2, 1, 64, "an integer in [1, 64]"),
    DBL("data.val_fraction", data.val_fraction, 0, 0, 0, 1, 1, "a number in [0, 1)"),
    INT("data.reader_threads", data.reader_threads, 1, 1, 256, "an integer in [1, 256]"),
    ENUM("data.crop_mode", data.crop_mode, 0, crop_mode_names, "fixed or random_resized"),
    INT("data.resize", data.resize, 0, 0, 8192, "an integer in [0, 8192]"),
    {.path = "data.channels",
     .kind = K_INT,
     .off = OFF(data.channels),
     .def = 0,
     .lo = 0,
     .hi = 3,
     .only = data_channels_only,
     .expect = "0 (as stored) or 3 (replicate gray)"},

    SECTION("train"),
    INT("train.batch_size", train.batch_size, 128, 1, 1 << 20, "an integer in [1, 1048576]"),
    INT("train.epochs", train.epochs, 90, 1, 1e6, "an integer in [1, 1000000]"),
    I64("train.max_steps", train.max_steps, 0, 0, "an integer >= 0"),
    ENUM("train.precision", train.precision, CFG_PRECISION_FP32, precision_names, "fp32 or bf16"),

    SECTION("optimizer"),
    ENUM("optimizer.type", optimizer.type, CFG_OPT_SGD, optimizer_names, "sgd or lars"),
    DBL("optimizer.lr", optimizer.lr, 0.01, 0, 1, BIG, 0, "a positive number"),
    DBL("optimizer.momentum", optimizer.momentum, 0.9, 0, 0, 1, 1, "a number in [0, 1)"),
    DBL("optimizer.weight_decay", optimizer.weight_decay, 5e-4, 0, 0, BIG, 0, "a number >= 0"),
    BOOL("optimizer.nesterov", optimizer.nesterov, 0),
    BOOL("optimizer.decay_bias", optimizer.decay_bias, 1),
    {.path = "optimizer.schedule", .kind = K_SECTION, .shorthand = "type"},
    ENUM("optimizer.schedule.type", optimizer.schedule.type, CFG_SCHED_STEP, schedule_names,
         "constant, step, multistep, cosine or poly"),
    INT("optimizer.schedule.step_epochs", optimizer.schedule.step_epochs, 30, 1, 1e6,
        "an integer in [1, 1000000]"),
    DBL("optimizer.schedule.gamma", optimizer.schedule.gamma, 0.1, 0, 1, 1, 0,
        "a number in (0, 1]"),
    {.path = "optimizer.schedule.milestones",
     .kind = K_MILESTONES,
     .off = OFF(optimizer.schedule.milestones),
     .aux = OFF(optimizer.schedule.num_milestones),
     .lo = 1,
     .hi = 1e6,
     .expect = "a list of epochs"},
    DBL("optimizer.schedule.power", optimizer.schedule.power, 1.0, 0, 1, BIG, 0,
        "a positive number"),
    DBL("optimizer.warmup_epochs", optimizer.warmup_epochs, 0, 0, 0, 1e6, 0, "a number >= 0"),
    DBL("optimizer.lars_eta", optimizer.lars_eta, 0.001, 0, 1, BIG, 0, "a positive number"),
    DBL("optimizer.lars_eps", optimizer.lars_eps, 1e-9, 0, 0, BIG, 0, "a number >= 0"),

    SECTION("dist"),
    DBL("dist.bucket_mb", dist.bucket_mb, 25, 0, 1, 1e6, 0, "a positive number"),
    BOOL("dist.overlap", dist.overlap, 1),
    ENUM("dist.compress", dist.compress, DIST_COMPRESS_NONE, compress_names,
         "none, bf16, fp16 or powersgd"),
    INT("dist.powersgd_rank", dist.powersgd_rank, 4, 1, 1024, "an integer in [1, 1024]"),
    I64("dist.powersgd_start_step", dist.powersgd_start_step, 1000, 0, "an integer >= 0"),
    ENUM("dist.hierarchical", dist.hierarchical, CFG_HIER_AUTO, hierarchical_names,
         "auto, on or off"),
    DBL("dist.timeout_s", dist.timeout_s, 300, 0, 0, 1e9, 0, "a number >= 0"),
    INT("dist.threads_per_rank", dist.threads_per_rank, 0, 0, 1024, "an integer in [0, 1024]"),

    SECTION("checkpoint"),
    STR("checkpoint.dir", checkpoint.dir, "a path"), /* default: derive_defaults */
    I64("checkpoint.every_steps", checkpoint.every_steps, 0, 0, "an integer >= 0"),
    INT("checkpoint.every_epochs", checkpoint.every_epochs, 1, 0, 1e6, "an integer >= 0"),
    INT("checkpoint.keep", checkpoint.keep, 3, 1, 1e6, "a positive integer"),
    {.path = "checkpoint.resume",
     .kind = K_RESUME,
     .off = OFF(checkpoint.resume),
     .aux = OFF(checkpoint.resume_path),
     .def = CFG_RESUME_AUTO,
     .expect = "auto, never or a checkpoint path"},
    STR("checkpoint.init", checkpoint.init, "a path or null"),

    SECTION("eval"),
    INT("eval.every_epochs", eval.every_epochs, 1, 0, 1e6, "an integer >= 0"),
    INT("eval.batch_size", eval.batch_size, 0, 0, 1 << 20, "an integer in [0, 1048576]"),
    BOOL("eval.ten_crop", eval.ten_crop, 0),

    SECTION("log"),
    INT("log.every_steps", log.every_steps, 10, 1, 1e9, "a positive integer"),
};

#define NUM_KEYS ((int)(sizeof keys / sizeof keys[0]))
_Static_assert(sizeof keys / sizeof keys[0] <= CFG_MAX_KEYS, "CFG_MAX_KEYS too small");

static int find_key(const char *path) {
  for (int i = 0; i < NUM_KEYS; i++)
    if (strcmp(keys[i].path, path) == 0) return i;
  return -1;
}

/* Index of a key that must exist (a compile-time name in this file). */
static int K(const char *path) {
  int k = find_key(path);
  if (k < 0) {
    fprintf(stderr, "config.c: internal error: no key %s\n", path);
    abort();
  }
  return k;
}

static void *field(cfg_config *c, size_t off) {
  return (char *)c + off;
}
static const void *cfield(const cfg_config *c, size_t off) {
  return (const char *)c + off;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

void cfg_sb_printf(cfg_strbuf *b, const char *fmt, ...) {
  if (b->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->failed = 1;
      return;
    }
    if (b->s && (size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->failed = 1;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
}

/* The code point of the UTF-8 sequence at s (at most max bytes) and its
 * length in *len, or -1 (with *len 1) for a byte that starts no well-formed
 * sequence. */
static long utf8_at(const unsigned char *s, size_t max, size_t *len) {
  static const long min[5] = {0, 0, 0x80, 0x800, 0x10000}; /* no overlong forms */
  size_t n = s[0] < 0x80         ? 1
             : (s[0] >> 5) == 6  ? 2
             : (s[0] >> 4) == 14 ? 3
             : (s[0] >> 3) == 30 ? 4
                                 : 0;
  *len = 1;
  if (n == 0 || n > max) return -1;
  long cp = n == 1 ? s[0] : s[0] & (0x7F >> n);
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  *len = n;
  return cp;
}

/* A code point YAML (libyaml's reader) would refuse as raw text or read back
 * as something else: controls, DEL and the C1 controls (U+0085 is a line
 * break to YAML and folds into a space), the BOM, the other line and
 * paragraph separators and the non-characters U+FFFE and U+FFFF. */
static int needs_escape(long cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF ||
         cp == 0xFFFE || cp == 0xFFFF;
}

/* A string value as YAML writes it: double-quoted, with every character
 * YAML would not read back as itself escaped, so that what was accepted
 * reloads byte-identical (issue 17: a run name with U+FFFE, accepted from
 * "\uFFFE", made the stored config unreadable; U+0085 reloaded as a space).
 * Strings read by libyaml are well-formed UTF-8; a byte that is not (a
 * string set by a program) is written as \xNN, which reads back as U+00NN. */
static void sb_quoted(cfg_strbuf *b, const char *s, size_t max) {
  const unsigned char *u = (const unsigned char *)s;
  cfg_sb_printf(b, "\"");
  for (size_t i = 0, len; i < max && u[i]; i += len) {
    long cp = utf8_at(u + i, max - i, &len);
    if (cp == '"' || cp == '\\')
      cfg_sb_printf(b, "\\%c", (int)cp);
    else if (cp < 0)
      cfg_sb_printf(b, "\\x%02x", u[i]);
    else if (needs_escape(cp) && cp <= 0xFF)
      cfg_sb_printf(b, "\\x%02lx", cp);
    else if (needs_escape(cp))
      cfg_sb_printf(b, "\\u%04lX", cp);
    else
      cfg_sb_printf(b, "%.*s", (int)len, s + i);
  }
  cfg_sb_printf(b, "\"");
}

/* The shortest text that reads back as the same double (or float when
 * as_float): whole numbers without exponent, others by the shortest %g. */
void cfg_fmt_number(char *buf, size_t len, double v, int as_float) {
  if (v == floor(v) && fabs(v) < 1e15) {
    snprintf(buf, len, "%.0f", v);
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, v);
    double back = strtod(buf, NULL);
    if (as_float ? (float)back == (float)v : back == v) break;
  }
}

static int levenshtein(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 99;
  int d[65][65];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
      d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
  return d[la][lb];
}

/* "(did you mean X?)" for a close candidate, else "(known: a, b, c)". */
void cfg_suggest(char *out, size_t len, const char *name, const char *const *cands, int n,
                 const char *prefix) {
  int best = -1, best_d = 3;
  for (int i = 0; i < n; i++) {
    int d = levenshtein(name, cands[i]);
    if (d < best_d && d < (int)strlen(cands[i])) {
      best = i;
      best_d = d;
    }
  }
  if (best >= 0) {
    snprintf(out, len, "(did you mean %s%s?)", prefix, cands[best]);
    return;
  }
  size_t used = (size_t)snprintf(out, len, "(known: ");
  for (int i = 0; i < n && used < len; i++)
    used += (size_t)snprintf(out + used, len - used, "%s%s", i ? ", " : "", cands[i]);
  if (used < len) snprintf(out + used, len - used, ")");
}

/* Names of the direct sub-keys of section `prefix` ("" = the top level). */
static int child_names(const char *prefix, const char **names, int max) {
  size_t pl = strlen(prefix);
  int n = 0;
  for (int i = 0; i < NUM_KEYS && n < max; i++) {
    const char *p = keys[i].path;
    if (pl) {
      if (strncmp(p, prefix, pl) != 0 || p[pl] != '.') continue;
      p += pl + 1;
    }
    if (!strchr(p, '.')) names[n++] = p;
  }
  return n;
}

/* ------------------------------------------------------------------------ */
/* Defaults                                                                  */

/* The run name a file gives by default: its base name without extension,
 * or "run" when that is empty or has unusual characters. */
static void default_run_name(const char *source, char *out, size_t len) {
  const char *base = strrchr(source, '/');
  base = base ? base + 1 : source;
  size_t n = strcspn(base, ".");
  int ok = n > 0 && n < len;
  for (size_t i = 0; ok && i < n; i++) {
    char ch = base[i];
    ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_' || ch == '-';
  }
  if (ok)
    snprintf(out, len, "%.*s", (int)n, base);
  else
    snprintf(out, len, "run");
}

static int is_default(const cfg_config *c, int k) {
  return c->origin[k].line == 0 && !c->origin[k].from_set;
}

/* run.name, run.dir and checkpoint.dir default to values derived from the
 * source and from each other; recomputed after every change so that
 * "--set run.name=x" also moves a default run.dir. */
static void derive_defaults(cfg_config *c) {
  if (is_default(c, K("run.name"))) {
    memset(c->run.name, 0, sizeof c->run.name);
    default_run_name(c->source, c->run.name, sizeof c->run.name);
  }
  if (is_default(c, K("run.dir"))) {
    memset(c->run.dir, 0, sizeof c->run.dir);
    if ((size_t)snprintf(c->run.dir, sizeof c->run.dir, "runs/%s", c->run.name) >=
        sizeof c->run.dir)
      memset(c->run.dir, 0, sizeof c->run.dir);
  }
  if (is_default(c, K("checkpoint.dir"))) {
    memset(c->checkpoint.dir, 0, sizeof c->checkpoint.dir);
    cfg_default_checkpoint_dir(c->run.dir, c->checkpoint.dir, sizeof c->checkpoint.dir);
  }
}

#define CHECKPOINTS_SUFFIX "/checkpoints" /* the default checkpoint.dir below run.dir */

int cfg_default_checkpoint_dir(const char *run_dir, char *out, size_t len) {
  if ((size_t)snprintf(out, len, "%s" CHECKPOINTS_SUFFIX, run_dir) < len) return 0;
  memset(out, 0, len);
  return -1;
}

void cfg_free(cfg_config *c) {
  if (!c) return;
  free(c->model.features);
  free(c->model.classifier);
  memset(c, 0, sizeof *c);
}

/* A deep copy (the layer arrays duplicated). Returns 0, or -1 out of memory. */
static int copy_config(cfg_config *dst, const cfg_config *src) {
  *dst = *src;
  dst->model.features = NULL;
  dst->model.classifier = NULL;
  size_t fb = (size_t)src->model.num_features * sizeof(nn_layer_spec);
  size_t cb = (size_t)src->model.num_classifier * sizeof(nn_layer_spec);
  if (fb && !(dst->model.features = malloc(fb))) goto cfg_fail;
  if (cb && !(dst->model.classifier = malloc(cb))) goto cfg_fail;
  if (fb) memcpy(dst->model.features, src->model.features, fb);
  if (cb) memcpy(dst->model.classifier, src->model.classifier, cb);
  return 0;
cfg_fail:
  free(dst->model.features);
  dst->model.features = NULL;
  dst->model.num_features = dst->model.num_classifier = 0;
  return -1;
}

const char *cfg_schedule_name(int type) {
  return type >= 0 && type <= CFG_SCHED_POLY ? schedule_names[type] : "?";
}

const char *cfg_compress_name(int compress) {
  return compress >= 0 && compress <= DIST_COMPRESS_POWERSGD ? compress_names[compress] : "?";
}

/* ------------------------------------------------------------------------ */
/* Reading the node tree                                                     */

int cfg_fail(cfg_walker *w, yaml_mark_t m, const char *path, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (w->from_set)
    util_errf(w->err, w->errlen, "--set: %s: %s", path, msg);
  else
    util_errf(w->err, w->errlen, "%s:%zu:%zu: %s%s%s", w->c->source, m.line + 1, m.column + 1, path,
              *path ? ": " : "", msg);
  return -1;
}

/* How a bad node looks in a message: a scalar quoted (shortened), or its kind. */
const char *cfg_describe(const yaml_node_t *n, char *buf, size_t len) {
  if (n->type == YAML_SEQUENCE_NODE) return "a list";
  if (n->type == YAML_MAPPING_NODE) return "a mapping";
  if (n->type != YAML_SCALAR_NODE) return "nothing";
  size_t used = 0, max = 60;
  buf[used++] = '"';
  size_t vlen = n->data.scalar.length;
  for (size_t i = 0; i < vlen && i < max && used + 6 < len; i++) {
    unsigned char ch = n->data.scalar.value[i];
    if (ch < 0x20 || ch == 0x7f)
      used += (size_t)snprintf(buf + used, len - used, "\\x%02x", ch);
    else if (ch == '"' || ch == '\\')
      used += (size_t)snprintf(buf + used, len - used, "\\%c", ch);
    else
      buf[used++] = (char)ch;
  }
  if (vlen > max && used + 4 < len) {
    memcpy(buf + used, "...", 3);
    used += 3;
  }
  buf[used++] = '"';
  buf[used] = '\0';
  return buf;
}

int cfg_fail_expect(cfg_walker *w, const yaml_node_t *n, const char *path, const char *expect) {
  char got[256];
  return cfg_fail(w, n->start_mark, path, "expected %s, got %s", expect,
                  cfg_describe(n, got, sizeof got));
}

const char *cfg_scalar(const yaml_node_t *n) {
  return (const char *)n->data.scalar.value;
}

int cfg_is_null(const yaml_node_t *n) {
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
  const char *s = cfg_scalar(n);
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* A plain (unquoted) scalar without NULs: what numbers and booleans must be. */
static int plain_scalar(const yaml_node_t *n) {
  return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
         strlen(cfg_scalar(n)) == n->data.scalar.length;
}

static int parse_i64(const yaml_node_t *n, int64_t *out) {
  if (!plain_scalar(n)) return -1;
  const char *s = cfg_scalar(n);
  if (!*s || strchr(" \t", *s)) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

int cfg_parse_int(const yaml_node_t *n, int *out) {
  int64_t v;
  if (parse_i64(n, &v) || v < INT_MIN || v > INT_MAX) return -1;
  *out = (int)v;
  return 0;
}

int cfg_parse_double(const yaml_node_t *n, double *out) {
  if (!plain_scalar(n)) return -1;
  const char *s = cfg_scalar(n);
  /* digits, sign, point and exponent only: no hex, inf or nan */
  if (!*s || strspn(s, "0123456789+-.eE") != strlen(s)) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || !isfinite(v) || (errno == ERANGE && fabs(v) > 1)) return -1;
  *out = v;
  return 0;
}

int cfg_parse_bool(const yaml_node_t *n, int *out) {
  if (!plain_scalar(n)) return -1;
  static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
  for (int i = 0; i < 3; i++) {
    if (!strcasecmp(cfg_scalar(n), yes[i])) return *out = 1, 0;
    if (!strcasecmp(cfg_scalar(n), no[i])) return *out = 0, 0;
  }
  return -1;
}

/* A string value (null = ""), refused if it contains NUL or does not fit cap. */
static int parse_string(const yaml_node_t *n, char *out, size_t cap) {
  if (n->type != YAML_SCALAR_NODE) return -1;
  if (cfg_is_null(n)) {
    memset(out, 0, cap);
    return 0;
  }
  size_t len = n->data.scalar.length;
  if (len >= cap || strlen(cfg_scalar(n)) != len) return -1;
  strncpy(out, cfg_scalar(n), cap); /* zero-fills the rest: equal configs compare equal bytewise */
  return 0;
}

static int parse_enum(const yaml_node_t *n, const char *const *names, int *out) {
  if (n->type != YAML_SCALAR_NODE) return -1;
  for (int i = 0; names[i]; i++)
    if (!strcmp(cfg_scalar(n), names[i])) return *out = i, 0;
  return -1;
}

yaml_node_t *cfg_node(cfg_walker *w, int id) {
  return yaml_document_get_node(w->doc, id);
}

static void record(cfg_walker *w, int k, const yaml_node_t *n) {
  cfg_origin *o = &w->c->origin[k];
  o->from_set = w->from_set;
  o->line = w->from_set ? 0 : (int)n->start_mark.line + 1;
  o->column = w->from_set ? 0 : (int)n->start_mark.column + 1;
}

/* ---- layer lists --------------------------------------------------------- */

/* An int, or [a, b] (count 2), or [a, b, c, d] when four_ok. Sets *count. */
int cfg_parse_int_list(const cfg_walker *w, const yaml_node_t *n, int *v, int *count, int four_ok) {
  if (cfg_parse_int(n, &v[0]) == 0) {
    *count = 1;
    return 0;
  }
  if (n->type != YAML_SEQUENCE_NODE) return -1;
  int items = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (items != 2 && !(four_ok && items == 4)) return -1;
  for (int i = 0; i < items; i++) {
    const yaml_node_t *it = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
    if (!it || cfg_parse_int(it, &v[i])) return -1;
  }
  *count = items;
  return 0;
}

/* ---- scalar keys --------------------------------------------------------- */

static int apply(cfg_walker *w, int k, const yaml_node_t *n);

/* Walks a section mapping: known keys, each once. */
static int walk_section(cfg_walker *w, const char *prefix, const yaml_node_t *map) {
  int seen_key[CFG_MAX_KEYS];
  const yaml_node_t *seen_node[CFG_MAX_KEYS];
  int nseen = 0;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const yaml_node_t *kn = cfg_node(w, p->key), *vn = cfg_node(w, p->value);
    if (kn->type != YAML_SCALAR_NODE)
      return cfg_fail_expect(w, kn, *prefix ? prefix : "(top level)", "a key name");
    char path[256];
    snprintf(path, sizeof path, "%s%s%.100s", prefix, *prefix ? "." : "", cfg_scalar(kn));
    int k = strlen(cfg_scalar(kn)) == kn->data.scalar.length ? find_key(path) : -1;
    if (k < 0 || strchr(cfg_scalar(kn), '.')) {
      const char *names[CFG_MAX_KEYS];
      int n = child_names(prefix, names, CFG_MAX_KEYS);
      char hint[1024], pre[256];
      snprintf(pre, sizeof pre, "%s%s", prefix, *prefix ? "." : "");
      cfg_suggest(hint, sizeof hint, cfg_scalar(kn), names, n, pre);
      return cfg_fail(w, kn->start_mark, path, "unknown key %s", hint);
    }
    for (int i = 0; i < nseen; i++)
      if (seen_key[i] == k) {
        if (w->from_set) return cfg_fail(w, kn->start_mark, path, "duplicate key");
        return cfg_fail(w, kn->start_mark, path, "duplicate key (first at line %zu)",
                        seen_node[i]->start_mark.line + 1);
      }
    seen_key[nseen] = k;
    seen_node[nseen++] = kn;
    if (apply(w, k, vn)) return -1;
  }
  return 0;
}

/* ---- loading -------------------------------------------------------------- */

/* libyaml's error as "<name>:<line>:<col>: invalid YAML: <problem> (<context>)", or
 * without name and positions when name is NULL (a one-line --set value). */
static void yaml_error(const yaml_parser_t *p, const char *name, char *err, size_t errlen) {
  const char *problem = p->problem ? p->problem : "cannot parse";
  if (!name) {
    util_errf(err, errlen, "%s%s%s%s", problem, p->context ? " (" : "",
              p->context ? p->context : "", p->context ? ")" : "");
  } else if (p->error == YAML_READER_ERROR) {
    util_errf(err, errlen, "%s: not a YAML text: %s at byte %zu", name, problem, p->problem_offset);
  } else if (p->error == YAML_MEMORY_ERROR) {
    util_errf(err, errlen, "%s: out of memory while parsing YAML", name);
  } else if (p->context) {
    util_errf(err, errlen, "%s:%zu:%zu: invalid YAML: %s (%s at line %zu, column %zu)", name,
              p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
              p->context_mark.line + 1, p->context_mark.column + 1);
  } else {
    util_errf(err, errlen, "%s:%zu:%zu: invalid YAML: %s", name, p->problem_mark.line + 1,
              p->problem_mark.column + 1, problem);
  }
}

/* Parses exactly one YAML document from text. Returns 0 with *doc to be
 * deleted by the caller, or -1 with a message naming `name` (NULL: no
 * name or positions, see yaml_error). */
static int parse_document(const char *text, size_t len, const char *name, yaml_document_t *doc,
                          char *err, size_t errlen) {
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) {
    util_errf(err, errlen, "out of memory while parsing YAML");
    return -1;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, doc)) {
    yaml_error(&parser, name, err, errlen);
    yaml_parser_delete(&parser);
    return -1;
  }
  yaml_document_t extra;
  if (yaml_document_get_root_node(doc)) {
    if (!yaml_parser_load(&parser, &extra)) {
      yaml_error(&parser, name, err, errlen);
      yaml_document_delete(doc);
      yaml_parser_delete(&parser);
      return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&extra);
    if (root) {
      if (name)
        util_errf(err, errlen, "%s:%zu:%zu: expected one YAML document, found a second one", name,
                  root->start_mark.line + 1, root->start_mark.column + 1);
      else
        util_errf(err, errlen, "expected one YAML document, found a second one");
      yaml_document_delete(&extra);
      yaml_document_delete(doc);
      yaml_parser_delete(&parser);
      return -1;
    }
    yaml_document_delete(&extra);
  }
  yaml_parser_delete(&parser);
  return 0;
}

int cfg_load_string(const char *yaml_text, const char *name_for_messages, cfg_config *c, char *err,
                    size_t errlen) {
  const char *name = name_for_messages ? name_for_messages : "config";
  cfg_init(c, name);
  size_t len = strlen(yaml_text);
  yaml_document_t doc;
  if (parse_document(yaml_text, len, name, &doc, err, errlen)) return -1;
  int rc = 0;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  cfg_walker w = {&doc, c, 0, err, errlen};
  if (root && root->type == YAML_MAPPING_NODE) {
    rc = walk_section(&w, "", root);
  } else if (root && !cfg_is_null(root)) {
    char got[256];
    rc = cfg_fail(&w, root->start_mark, "",
                  "expected a mapping of sections (run, model, data, train, optimizer, dist, "
                  "checkpoint, eval, log), got %s",
                  cfg_describe(root, got, sizeof got));
  }
  yaml_document_delete(&doc);
  if (rc != 0) { /* drop the layer lists of the keys before the refused one */
    cfg_free(c);
    cfg_init(c, name);
    return rc;
  }
  derive_defaults(c);
  return rc;
}

int cfg_load(const char *path, cfg_config *c, char *err, size_t errlen) {
  cfg_init(c, path);
  FILE *f = fopen(path, "rb");
  if (!f) {
    util_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  char *text = malloc(MAX_CONFIG_BYTES + 1);
  if (!text) {
    fclose(f);
    util_errf(err, errlen, "%s: out of memory", path);
    return -1;
  }
  size_t len = fread(text, 1, MAX_CONFIG_BYTES + 1, f);
  int read_error = ferror(f);
  int saved = errno;
  fclose(f);
  if (read_error) {
    free(text);
    util_errf(err, errlen, "%s: cannot read: %s", path, strerror(saved));
    return -1;
  }
  if (len > MAX_CONFIG_BYTES) {
    free(text);
    util_errf(err, errlen, "%s: larger than %u MiB; not a config file", path,
              MAX_CONFIG_BYTES >> 20);
    return -1;
  }
  if (memchr(text, '\0', len)) {
    free(text);
    util_errf(err, errlen, "%s: not a YAML text: contains a NUL byte", path);
    return -1;
  }
  text[len] = '\0';
  int rc = cfg_load_string(text, path, c, err, errlen);
  free(text);
  return rc;
}

int cfg_set(cfg_config *c, const char *assignment, char *err, size_t errlen) {
  const char *eq = strchr(assignment, '=');
  char path[256];
  size_t klen = eq ? (size_t)(eq - assignment) : 0;
  while (klen && assignment[klen - 1] == ' ') klen--;
  if (!eq || klen == 0 || klen >= sizeof path) {
    util_errf(err, errlen, "--set: expected key.path=value, got \"%.200s\"", assignment);
    return -1;
  }
  memcpy(path, assignment, klen);
  path[klen] = '\0';
  int k = find_key(path);
  if (k < 0) {
    /* Name the first unknown component and suggest among its siblings. */
    char prefix[256] = "", hint[1024], pre[260];
    const char *comp = path;
    for (const char *dot; (dot = strchr(comp, '.')) != NULL; comp = dot + 1) {
      char head[256];
      snprintf(head, sizeof head, "%.*s", (int)(dot - path), path);
      int hk = find_key(head);
      if (hk >= 0 && keys[hk].kind != K_SECTION) {
        util_errf(err, errlen, "--set: %s: unknown key (%s has no sub-keys)", path, head);
        return -1;
      }
      if (hk < 0) break;
      memcpy(prefix, head, strlen(head) + 1);
    }
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(comp, "."), comp);
    const char *names[CFG_MAX_KEYS];
    int n = child_names(prefix, names, CFG_MAX_KEYS);
    snprintf(pre, sizeof pre, "%s%s", prefix, *prefix ? "." : "");
    cfg_suggest(hint, sizeof hint, name, names, n, pre);
    util_errf(err, errlen, "--set: %s: unknown key %s", path, hint);
    return -1;
  }
  const char *value = eq + 1;
  while (*value == ' ') value++;
  yaml_document_t doc;
  char perr[1024];
  if (parse_document(value, strlen(value), NULL, &doc, perr, sizeof perr)) {
    util_errf(err, errlen, "--set: %s: invalid YAML value \"%.200s\": %s", path, value, perr);
    return -1;
  }
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (!root) { /* "key=" : an empty plain scalar, i.e. null */
    yaml_document_delete(&doc);
    yaml_document_initialize(&doc, NULL, NULL, NULL, 1, 1);
    int id = yaml_document_add_scalar(&doc, NULL, (yaml_char_t *)"", 0, YAML_PLAIN_SCALAR_STYLE);
    root = id ? yaml_document_get_node(&doc, id) : NULL;
    if (!root) {
      yaml_document_delete(&doc);
      util_errf(err, errlen, "--set: %s: out of memory", path);
      return -1;
    }
  }
  cfg_config copy;
  if (copy_config(&copy, c)) {
    yaml_document_delete(&doc);
    util_errf(err, errlen, "--set: %s: out of memory", path);
    return -1;
  }
  cfg_walker w = {&doc, &copy, 1, err, errlen};
  int rc = apply(&w, k, root);
  yaml_document_delete(&doc);
  if (rc) {
    cfg_free(&copy);
    return -1;
  }
  derive_defaults(&copy);
  cfg_free(c);
  *c = copy;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Validation                                                                */

/* "<file>:<line>:<col>", "--set" or "<file>" for key k. */
static const char *where(const cfg_config *c, int k, char *buf, size_t len) {
  const cfg_origin *o = &c->origin[k];
  if (o->from_set)
    snprintf(buf, len, "--set");
  else if (o->line > 0)
    snprintf(buf, len, "%s:%d:%d", c->source, o->line, o->column);
  else
    snprintf(buf, len, "%s", c->source);
  return buf;
}

/* Reports "<where of key>: <key>: <message>". Returns -1. */
static int invalid(const cfg_config *c, char *err, size_t errlen, const char *key, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));
static int invalid(const cfg_config *c, char *err, size_t errlen, const char *key, const char *fmt,
                   ...) {
  char msg[1024], loc[CFG_PATH_MAX + 32];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  util_errf(err, errlen, "%s: %s: %s", where(c, K(key), loc, sizeof loc), key, msg);
  return -1;
}

static int in_range(const key_desc *d, double v) {
  if (d->hi_open ? !(v < d->hi) : !(v <= d->hi)) return 0;
  if (d->lo_open ? !(v > d->lo) : !(v >= d->lo)) return 0;
  if (d->only) {
    for (const int *o = d->only; *o >= 0; o++)
      if (v == *o) return 1;
    return 0;
  }
  return 1;
}

static int check_layers(const cfg_config *c, const char *key, const nn_layer_spec *s, int n,
                        nn_section section, char *err, size_t errlen) {
  if (n > CFG_MAX_LAYERS)
    return invalid(c, err, errlen, key, "expected at most %d layers, got %d", CFG_MAX_LAYERS, n);
  for (int i = 0; i < n; i++) {
    char why[256];
    if (s[i].section != section)
      return invalid(c, err, errlen, key, "layer %d is in the wrong section", i);
    /* nn_net_build's rules, here to point at the list. The classifier
     * starts after the flatten, so its first item follows none of the
     * list's layers (prev NULL: "the start of the list"). */
    if (nn_layer_problem(&s[i], why, sizeof why) ||
        nn_layer_follows(i > 0 ? &s[i - 1] : NULL, &s[i], why, sizeof why))
      return invalid(c, err, errlen, key, "[%d] %s: %s", i, nn_kind_name(s[i].kind), why);
  }
  return 0;
}

static int check_model(const cfg_config *c, char *err, size_t errlen) {
  const int explicit_list = c->model.num_features > 0 || c->model.num_classifier > 0;
  if (c->model.arch[0] && explicit_list)
    return invalid(c, err, errlen, "model.arch",
                   "\"%s\" given together with an explicit layer list (model.features / "
                   "model.classifier); use one of them",
                   c->model.arch);
  if (!c->model.arch[0] && !explicit_list)
    return invalid(c, err, errlen, "model.arch",
                   "no model: set model.arch or an explicit model.features / model.classifier "
                   "list");
  if (!explicit_list && (c->model.avgpool_h || c->model.avgpool_w))
    return invalid(c, err, errlen, "model.avgpool",
                   "only for explicit layer lists (the presets have their own)");
  if (check_layers(c, "model.features", c->model.features, c->model.num_features, NN_FEATURES, err,
                   errlen) ||
      check_layers(c, "model.classifier", c->model.classifier, c->model.num_classifier,
                   NN_CLASSIFIER, err, errlen))
    return -1;
  if (c->model.arch[0]) {
    nn_layer_spec *specs = NULL;
    int count;
    nn_shape input;
    char why[512];
    nn_preset_opts o = {0};
    if (nn_preset(c->model.arch, &o, &specs, &count, &input, why, sizeof why))
      return invalid(c, err, errlen, "model.arch", "%s", why);
    free(specs);
  } else if (c->model.num_classes > 0 && c->model.num_classifier > 0) {
    const nn_layer_spec *last = &c->model.classifier[c->model.num_classifier - 1];
    if (last->kind == NN_LINEAR && last->out != c->model.num_classes)
      return invalid(c, err, errlen, "model.num_classes",
                     "%d does not match the %d outputs of the last layer", c->model.num_classes,
                     last->out);
  }
  int input = c->model.input_size ? c->model.input_size : c->data.crop;
  if (input != c->data.crop)
    return invalid(c, err, errlen, "model.input_size",
                   "%d does not match data.crop %d (the network sees the crops)", input,
                   c->data.crop);
  return 0;
}

static int check_data(const cfg_config *c, char *err, size_t errlen) {
  const int synthetic = c->data.synthetic.n > 0;
  if (synthetic && c->data.train[0])
    return invalid(c, err, errlen, "data.synthetic.n",
                   "synthetic data and data.train are both set; use one");
  if (!synthetic && !c->data.train[0])
    return invalid(c, err, errlen, "data.train",
                   "no training data: set data.train or data.synthetic.n");
  if (synthetic && c->data.val[0])
    return invalid(c, err, errlen, "data.val",
                   "not used with synthetic data (hold out with data.val_fraction)");
  if (c->data.val[0] && c->data.val_fraction > 0)
    return invalid(c, err, errlen, "data.val_fraction",
                   "%g together with data.val; hold out part of train only without a val file",
                   c->data.val_fraction);
  if (c->data.resize > 0 && c->data.resize < c->data.crop)
    return invalid(c, err, errlen, "data.resize",
                   "%d is smaller than data.crop %d (evaluation resizes the shorter side, then "
                   "crops the centre)",
                   c->data.resize, c->data.crop);
  if (synthetic && c->data.crop > c->data.synthetic.size)
    return invalid(c, err, errlen, "data.crop", "%d is larger than data.synthetic.size %d",
                   c->data.crop, c->data.synthetic.size);
  if (c->data.has_mean != c->data.has_std)
    return invalid(c, err, errlen, c->data.has_mean ? "data.mean" : "data.std",
                   "set data.mean and data.std together (or neither, to use the file's)");
  if (c->data.channels && c->data.channels != c->model.in_channels)
    return invalid(c, err, errlen, "data.channels", "%d does not match model.in_channels %d",
                   c->data.channels, c->model.in_channels);
  if (synthetic && !c->data.channels && c->data.synthetic.channels != c->model.in_channels)
    return invalid(c, err, errlen, "data.synthetic.channels",
                   "%d does not match model.in_channels %d", c->data.synthetic.channels,
                   c->model.in_channels);
  if (synthetic && c->model.num_classes && c->model.num_classes != c->data.synthetic.classes)
    return invalid(c, err, errlen, "model.num_classes",
                   "%d does not match data.synthetic.classes %d", c->model.num_classes,
                   c->data.synthetic.classes);
  return 0;
}

static int check_optimizer(const cfg_config *c, char *err, size_t errlen) {
  const char *ms = "optimizer.schedule.milestones";
  if (c->optimizer.schedule.type == CFG_SCHED_MULTISTEP &&
      c->optimizer.schedule.num_milestones == 0)
    return invalid(c, err, errlen, ms, "the multistep schedule needs at least one milestone");
  int n = c->optimizer.schedule.num_milestones;
  if (n < 0 || n > CFG_MAX_MILESTONES)
    return invalid(c, err, errlen, ms, "expected at most %d milestones, got %d", CFG_MAX_MILESTONES,
                   n);
  for (int i = 0; i < n; i++) {
    int m = c->optimizer.schedule.milestones[i];
    if (m <= 0 || (i > 0 && m <= c->optimizer.schedule.milestones[i - 1]))
      return invalid(c, err, errlen, ms,
                     "expected strictly increasing positive epochs, got %d at index %d", m, i);
  }
  if (c->optimizer.warmup_epochs > c->train.epochs)
    return invalid(c, err, errlen, "optimizer.warmup_epochs", "%g is more than train.epochs %d",
                   c->optimizer.warmup_epochs, c->train.epochs);
  if (c->optimizer.nesterov && c->optimizer.momentum <= 0)
    return invalid(c, err, errlen, "optimizer.nesterov", "needs optimizer.momentum > 0");
  if (c->optimizer.nesterov && c->optimizer.type == CFG_OPT_LARS)
    return invalid(c, err, errlen, "optimizer.nesterov",
                   "is not part of LARS (optimizer.type: lars); set it false");
  return 0;
}

static int check_ranges(const cfg_config *c, char *err, size_t errlen);

int cfg_validate(const cfg_config *c, char *err, size_t errlen) {
  if (check_ranges(c, err, errlen) || check_model(c, err, errlen) || check_data(c, err, errlen) ||
      check_optimizer(c, err, errlen))
    return -1;
  if (c->checkpoint.resume == CFG_RESUME_PATH && !c->checkpoint.resume_path[0])
    return invalid(c, err, errlen, "checkpoint.resume", "expected %s, got an empty path",
                   keys[K("checkpoint.resume")].expect);
  /* derive_defaults leaves a default that does not fit empty: name the key
   * whose length is the cause */
  size_t ckpt_len = strlen(c->run.dir) + strlen(CHECKPOINTS_SUFFIX);
  if (is_default(c, K("checkpoint.dir")) && ckpt_len >= sizeof c->checkpoint.dir)
    return invalid(c, err, errlen, "run.dir",
                   "%zu bytes is too long for the default checkpoint.dir <run.dir>/checkpoints "
                   "(at most %zu bytes): use a run.dir of at most %zu bytes, or set checkpoint.dir",
                   strlen(c->run.dir), sizeof c->checkpoint.dir - 1,
                   sizeof c->checkpoint.dir - 1 - strlen(CHECKPOINTS_SUFFIX));
  if (!c->run.dir[0]) return invalid(c, err, errlen, "run.dir", "expected a path, got \"\"");
  if (!c->checkpoint.dir[0])
    return invalid(c, err, errlen, "checkpoint.dir", "expected a path, got \"\"");
  return 0;
}

int cfg_check_ranks(const cfg_config *c, int ranks, char *err, size_t errlen) {
  if (ranks < 1) {
    util_errf(err, errlen, "%s: %d ranks", c->source, ranks);
    return -1;
  }
  if (c->train.batch_size % ranks)
    return invalid(c, err, errlen, "train.batch_size", "%d is not divisible by the %d ranks",
                   c->train.batch_size, ranks);
  if (c->eval.batch_size % ranks)
    return invalid(c, err, errlen, "eval.batch_size", "%d is not divisible by the %d ranks",
                   c->eval.batch_size, ranks);
  if (c->model.sync_batchnorm && ranks == 1)
    return invalid(c, err, errlen, "model.sync_batchnorm",
                   "true with one rank: there is nothing to synchronize (one rank's batch "
                   "statistics are the global batch's); set it false or run on more ranks");
  return 0;
}

static int check_file(const cfg_config *c, const char *key, const char *path, char *err,
                      size_t errlen) {
  struct stat st;
  if (stat(path, &st) != 0 || access(path, R_OK) != 0)
    return invalid(c, err, errlen, key, "cannot read \"%s\": %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return invalid(c, err, errlen, key, "\"%s\" is not a regular file", path);
  return 0;
}

/* Each path of a data key (one per line); a glob must match some file. */
static int check_data_files(const cfg_config *c, const char *key, const char *spec, char *err,
                            size_t errlen) {
  for (const char *p = spec; *p;) {
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char one[CFG_PATH_MAX];
    snprintf(one, sizeof one, "%.*s", (int)len, p);
    p += len + (e ? 1 : 0);
    struct stat st;
    if (stat(one, &st) != 0 && strpbrk(one, "*?[")) {
      glob_t g;
      int rc = glob(one, 0, NULL, &g);
      globfree(&g);
      if (rc != 0) return invalid(c, err, errlen, key, "no file matches \"%s\"", one);
      continue;
    }
    if (check_file(c, key, one, err, errlen)) return -1;
  }
  return 0;
}

int cfg_check_paths(const cfg_config *c, char *err, size_t errlen) {
  if (c->data.train[0] && check_data_files(c, "data.train", c->data.train, err, errlen)) return -1;
  if (c->data.val[0] && check_data_files(c, "data.val", c->data.val, err, errlen)) return -1;
  if (c->checkpoint.init[0] && check_file(c, "checkpoint.init", c->checkpoint.init, err, errlen))
    return -1;
  if (c->checkpoint.resume == CFG_RESUME_PATH &&
      check_file(c, "checkpoint.resume", c->checkpoint.resume_path, err, errlen))
    return -1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing YAML                                                              */

/* An int, or [a, b] when they differ. */
void cfg_sb_pair(cfg_strbuf *b, int a, int c) {
  if (a == c)
    cfg_sb_printf(b, "%d", a);
  else
    cfg_sb_printf(b, "[%d, %d]", a, c);
}

/* ------------------------------------------------------------------------ */
/* Key types: one set of functions each                                      */

/* Type checks while reading come first (ranges are cfg_validate's, so that
 * --set can repair a file before anything is judged). Each parser sets the
 * field of key d from node n, or returns -1 through fail(). */

static int parse_section_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  if (n->type == YAML_MAPPING_NODE) return walk_section(w, d->path, n);
  if (d->shorthand && n->type == YAML_SCALAR_NODE && !cfg_is_null(n)) {
    char sub[256];
    snprintf(sub, sizeof sub, "%s.%s", d->path, d->shorthand);
    return apply(w, K(sub), n);
  }
  if (cfg_is_null(n)) return 0; /* "section:" with nothing under it */
  return cfg_fail_expect(w, n, d->path,
                         d->shorthand ? "a mapping or a schedule name" : "a mapping");
}

static int parse_str_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  if (parse_string(n, field(w->c, d->off), d->aux)) {
    char what[128];
    snprintf(what, sizeof what, "%s of at most %zu bytes", d->expect, d->aux - 1);
    return cfg_fail_expect(w, n, d->path, what);
  }
  return 0;
}

/* A cfg_scalar, or a list of scalars joined one per line (data_dataset_open's form). */
static int parse_paths_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  char *out = field(w->c, d->off);
  char what[160];
  snprintf(what, sizeof what, "%s of at most %zu bytes", d->expect, d->aux - 1);
  if (n->type != YAML_SEQUENCE_NODE)
    return parse_string(n, out, d->aux) ? cfg_fail_expect(w, n, d->path, what) : 0;
  memset(out, 0, d->aux);
  size_t used = 0;
  for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
    const yaml_node_t *item = cfg_node(w, *it);
    char one[CFG_PATH_MAX];
    if (cfg_is_null(item) || parse_string(item, one, sizeof one) || !one[0] || strchr(one, '\n'))
      return cfg_fail_expect(w, item, d->path, what);
    size_t len = strlen(one);
    if (used + len + (used ? 1 : 0) >= d->aux) return cfg_fail_expect(w, n, d->path, what);
    if (used) out[used++] = '\n';
    memcpy(out + used, one, len);
    used += len;
  }
  return 0;
}

static int parse_bool_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  return cfg_parse_bool(n, field(w->c, d->off)) ? cfg_fail_expect(w, n, d->path, d->expect) : 0;
}

static int parse_int_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  return cfg_parse_int(n, field(w->c, d->off)) ? cfg_fail_expect(w, n, d->path, d->expect) : 0;
}

static int parse_i64_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  return parse_i64(n, field(w->c, d->off)) ? cfg_fail_expect(w, n, d->path, d->expect) : 0;
}

static int parse_u64_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  uint64_t v;
  char *end;
  errno = 0;
  if (!plain_scalar(n) || !isdigit((unsigned char)cfg_scalar(n)[0]) ||
      (v = strtoull(cfg_scalar(n), &end, 10), errno || *end))
    return cfg_fail_expect(w, n, d->path, d->expect);
  *(uint64_t *)field(w->c, d->off) = v;
  return 0;
}

static int parse_double_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  return cfg_parse_double(n, field(w->c, d->off)) ? cfg_fail_expect(w, n, d->path, d->expect) : 0;
}

static int parse_opt_double_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  double *f = field(w->c, d->off);
  if (cfg_is_null(n))
    *f = -1;
  else if (cfg_parse_double(n, f) || *f < 0)
    return cfg_fail_expect(w, n, d->path, d->expect);
  return 0;
}

static int parse_enum_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  return parse_enum(n, d->names, field(w->c, d->off)) ? cfg_fail_expect(w, n, d->path, d->expect)
                                                      : 0;
}

static int parse_vec3_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  double v[3];
  int *has = field(w->c, d->aux);
  if (cfg_is_null(n)) {
    *has = 0;
    memset(field(w->c, d->off), 0, sizeof v);
    return 0;
  }
  if (cfg_parse_double(n, &v[0]) == 0) {
    v[1] = v[2] = v[0];
  } else {
    long items = n->type == YAML_SEQUENCE_NODE
                     ? n->data.sequence.items.top - n->data.sequence.items.start
                     : 0;
    if (items != 3 && items != 1) return cfg_fail_expect(w, n, d->path, d->expect);
    for (long i = 0; i < items; i++)
      if (cfg_parse_double(cfg_node(w, n->data.sequence.items.start[i]), &v[i]))
        return cfg_fail_expect(w, n, d->path, d->expect);
    if (items == 1) v[1] = v[2] = v[0];
  }
  memcpy(field(w->c, d->off), v, sizeof v);
  *has = 1;
  return 0;
}

static int parse_milestones_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  int *count = field(w->c, d->aux);
  int v[CFG_MAX_MILESTONES], items = 0;
  if (n->type == YAML_SEQUENCE_NODE) {
    long total = n->data.sequence.items.top - n->data.sequence.items.start;
    if (total > CFG_MAX_MILESTONES)
      return cfg_fail(w, n->start_mark, d->path, "expected at most %d milestones, got %ld",
                      CFG_MAX_MILESTONES, total);
    for (items = 0; items < total; items++) {
      const yaml_node_t *it = cfg_node(w, n->data.sequence.items.start[items]);
      char sub[128];
      snprintf(sub, sizeof sub, "%s[%d]", d->path, items);
      if (cfg_parse_int(it, &v[items])) return cfg_fail_expect(w, it, sub, "an integer epoch");
    }
  } else if (!cfg_is_null(n)) {
    if (cfg_parse_int(n, &v[0])) return cfg_fail_expect(w, n, d->path, "a list of integer epochs");
    items = 1;
  }
  memcpy(field(w->c, d->off), v, (size_t)items * sizeof(int));
  *count = items;
  return 0;
}

static int parse_layers_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  nn_layer_spec **arr = field(w->c, d->off);
  int *count = field(w->c, d->aux);
  nn_layer_spec *specs = NULL;
  int items = 0;
  if (!cfg_is_null(n) && cfg_parse_layers(w, n, d->path, d->expect, d->section, &specs, &items))
    return -1;
  free(*arr);
  *arr = specs;
  *count = items;
  return 0;
}

static int parse_avgpool_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  int v[4], cnt;
  int *out_h = field(w->c, d->off), *out_w = field(w->c, d->aux);
  if (cfg_is_null(n)) {
    *out_h = *out_w = 0;
    return 0;
  }
  if (cfg_parse_int_list(w, n, v, &cnt, 0)) return cfg_fail_expect(w, n, d->path, d->expect);
  *out_h = v[0];
  *out_w = cnt == 2 ? v[1] : v[0];
  return 0;
}

static int parse_resume_key(cfg_walker *w, const key_desc *d, const yaml_node_t *n) {
  char path[CFG_PATH_MAX];
  if (cfg_is_null(n) || parse_string(n, path, sizeof path))
    return cfg_fail_expect(w, n, d->path, d->expect);
  int mode = !strcmp(path, "auto")    ? CFG_RESUME_AUTO
             : !strcmp(path, "never") ? CFG_RESUME_NEVER
                                      : CFG_RESUME_PATH;
  *(int *)field(w->c, d->off) = mode;
  char *dst = field(w->c, d->aux);
  memset(dst, 0, CFG_PATH_MAX);
  if (mode == CFG_RESUME_PATH) memcpy(dst, path, strlen(path));
  return 0;
}

/* Range checks: 0, or -1 with "<where>: <key>: expected ..., got ..." in err. */

/* "expected <expect>, got <got>" unless v is finite and in d's range. */
static int check_number(const cfg_config *c, const key_desc *d, double v, const char *got,
                        char *err, size_t errlen) {
  if (in_range(d, v) && isfinite(v)) return 0;
  return invalid(c, err, errlen, d->path, "expected %s, got %s", d->expect, got);
}

static int check_int_key(const cfg_config *c, const key_desc *d, char *err, size_t errlen) {
  int v = *(const int *)cfield(c, d->off);
  char got[32];
  snprintf(got, sizeof got, "%d", v);
  return check_number(c, d, v, got, err, errlen);
}

static int check_i64_key(const cfg_config *c, const key_desc *d, char *err, size_t errlen) {
  int64_t v = *(const int64_t *)cfield(c, d->off);
  char got[32];
  snprintf(got, sizeof got, "%" PRId64, v);
  return check_number(c, d, (double)v, got, err, errlen);
}

static int check_double_key(const cfg_config *c, const key_desc *d, char *err, size_t errlen) {
  double v = *(const double *)cfield(c, d->off);
  char got[64];
  if (d->kind == K_OPT_DOUBLE && v < 0) return 0; /* null */
  snprintf(got, sizeof got, "%g", v);
  return check_number(c, d, v, got, err, errlen);
}

static int check_enum_key(const cfg_config *c, const key_desc *d, char *err, size_t errlen) {
  int e = *(const int *)cfield(c, d->off), n = 0;
  while (d->names[n]) n++;
  if (e < 0 || e >= n) return invalid(c, err, errlen, d->path, "expected %s, got %d", d->expect, e);
  return 0;
}

static int check_vec3_key(const cfg_config *c, const key_desc *d, char *err, size_t errlen) {
  if (!*(const int *)cfield(c, d->aux)) return 0;
  for (int i = 0; i < 3; i++) {
    double v = ((const double *)cfield(c, d->off))[i];
    if (!in_range(d, v) || !isfinite(v))
      return invalid(c, err, errlen, d->path, "expected %s, got %g in channel %d", d->expect, v, i);
  }
  return 0;
}

static int check_avgpool_key(const cfg_config *c, const key_desc *d, char *err, size_t errlen) {
  int h = *(const int *)cfield(c, d->off), wd = *(const int *)cfield(c, d->aux);
  if ((h || wd) && (h < d->lo || h > d->hi || wd < d->lo || wd > d->hi))
    return invalid(c, err, errlen, d->path, "expected %s, got [%d, %d]", d->expect, h, wd);
  return 0;
}

/* YAML writers: the value after "key:", with its leading space. */

static void print_str_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  const char *s = cfield(c, d->off);
  cfg_sb_printf(b, " ");
  if (*s)
    sb_quoted(b, s, d->aux);
  else
    cfg_sb_printf(b, "null");
}

static void print_paths_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  const char *s = cfield(c, d->off);
  if (!strchr(s, '\n')) {
    print_str_key(b, c, d, depth);
    return;
  }
  cfg_sb_printf(b, " [");
  for (const char *p = s; *p;) {
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (p != s) cfg_sb_printf(b, ", ");
    sb_quoted(b, p, len);
    p += len + (e ? 1 : 0);
  }
  cfg_sb_printf(b, "]");
}

static void print_bool_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  cfg_sb_printf(b, " %s", *(const int *)cfield(c, d->off) ? "true" : "false");
}

static void print_int_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  cfg_sb_printf(b, " %d", *(const int *)cfield(c, d->off));
}

static void print_i64_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  cfg_sb_printf(b, " %" PRId64, *(const int64_t *)cfield(c, d->off));
}

static void print_u64_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  cfg_sb_printf(b, " %" PRIu64, *(const uint64_t *)cfield(c, d->off));
}

static void print_double_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  double v = *(const double *)cfield(c, d->off);
  char num[64];
  if (d->kind == K_OPT_DOUBLE && v < 0) {
    cfg_sb_printf(b, " null");
    return;
  }
  cfg_fmt_number(num, sizeof num, v, 0);
  cfg_sb_printf(b, " %s", num);
}

static void print_enum_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  int e = *(const int *)cfield(c, d->off), n = 0;
  while (d->names[n]) n++;
  cfg_sb_printf(b, " %s", e >= 0 && e < n ? d->names[e] : "?");
}

static void print_vec3_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  char num[64];
  if (!*(const int *)cfield(c, d->aux)) {
    cfg_sb_printf(b, " null");
    return;
  }
  for (int i = 0; i < 3; i++) {
    cfg_fmt_number(num, sizeof num, ((const double *)cfield(c, d->off))[i], 0);
    cfg_sb_printf(b, "%s%s", i ? ", " : " [", num);
  }
  cfg_sb_printf(b, "]");
}

static void print_milestones_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  int n = *(const int *)cfield(c, d->aux);
  cfg_sb_printf(b, " [");
  for (int i = 0; i < n && i < CFG_MAX_MILESTONES; i++)
    cfg_sb_printf(b, "%s%d", i ? ", " : "", ((const int *)cfield(c, d->off))[i]);
  cfg_sb_printf(b, "]");
}

static void print_layers_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  cfg_write_layers(b, *(nn_layer_spec *const *)cfield(c, d->off), *(const int *)cfield(c, d->aux),
                   2 * depth + 2);
}

static void print_avgpool_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  int h = *(const int *)cfield(c, d->off), wd = *(const int *)cfield(c, d->aux);
  if (!h && !wd) {
    cfg_sb_printf(b, " null");
  } else {
    cfg_sb_printf(b, " ");
    cfg_sb_pair(b, h, wd);
  }
}

static void print_resume_key(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth) {
  (void)depth;
  int mode = *(const int *)cfield(c, d->off);
  const char *path = cfield(c, d->aux);
  if (mode == CFG_RESUME_AUTO) {
    cfg_sb_printf(b, " auto");
  } else if (mode == CFG_RESUME_NEVER) {
    cfg_sb_printf(b, " never");
  } else {
    cfg_sb_printf(b, " ");
    /* a file literally named "auto" or "never" keeps its meaning as a path */
    if (!strcmp(path, "auto") || !strcmp(path, "never"))
      cfg_sb_printf(b, "\"./%s\"", path);
    else
      sb_quoted(b, path, CFG_PATH_MAX);
  }
}

/* Defaults: the row's `def` in the field (cfg_init zeroed the rest). */

static void init_int_key(cfg_config *c, const key_desc *d) {
  *(int *)field(c, d->off) = (int)d->def;
}
static void init_i64_key(cfg_config *c, const key_desc *d) {
  *(int64_t *)field(c, d->off) = (int64_t)d->def;
}
static void init_u64_key(cfg_config *c, const key_desc *d) {
  *(uint64_t *)field(c, d->off) = (uint64_t)d->def;
}
static void init_double_key(cfg_config *c, const key_desc *d) {
  *(double *)field(c, d->off) = d->def;
}

/* The functions of each key type; NULL = nothing to do (no default but zero,
 * no range, nothing to print). */
typedef struct {
  void (*init)(cfg_config *c, const key_desc *d);
  int (*parse)(cfg_walker *w, const key_desc *d, const yaml_node_t *n);
  int (*check)(const cfg_config *c, const key_desc *d, char *err, size_t errlen);
  void (*print)(cfg_strbuf *b, const cfg_config *c, const key_desc *d, int depth);
} key_type;

static const key_type key_types[K_TYPE_COUNT] = {
    [K_SECTION] = {NULL, parse_section_key, NULL, NULL},
    [K_STR] = {NULL, parse_str_key, NULL, print_str_key},
    [K_PATHS] = {NULL, parse_paths_key, NULL, print_paths_key},
    [K_BOOL] = {init_int_key, parse_bool_key, NULL, print_bool_key},
    [K_INT] = {init_int_key, parse_int_key, check_int_key, print_int_key},
    [K_I64] = {init_i64_key, parse_i64_key, check_i64_key, print_i64_key},
    [K_U64] = {init_u64_key, parse_u64_key, NULL, print_u64_key},
    [K_DOUBLE] = {init_double_key, parse_double_key, check_double_key, print_double_key},
    [K_OPT_DOUBLE] = {init_double_key, parse_opt_double_key, check_double_key, print_double_key},
    [K_ENUM] = {init_int_key, parse_enum_key, check_enum_key, print_enum_key},
    [K_VEC3] = {NULL, parse_vec3_key, check_vec3_key, print_vec3_key},
    [K_MILESTONES] = {NULL, parse_milestones_key, NULL, print_milestones_key},
    [K_LAYERS] = {NULL, parse_layers_key, NULL, print_layers_key},
    [K_AVGPOOL] = {NULL, parse_avgpool_key, check_avgpool_key, print_avgpool_key},
    [K_RESUME] = {init_int_key, parse_resume_key, NULL, print_resume_key},
};

/* Sets key k from node n (type checks only; ranges are cfg_validate's). */
static int apply(cfg_walker *w, int k, const yaml_node_t *n) {
  if (key_types[keys[k].kind].parse(w, &keys[k], n)) return -1;
  if (keys[k].kind != K_SECTION) record(w, k, n);
  return 0;
}

/* The range of every numeric key, the names of enums. */
static int check_ranges(const cfg_config *c, char *err, size_t errlen) {
  for (int k = 0; k < NUM_KEYS; k++)
    if (key_types[keys[k].kind].check && key_types[keys[k].kind].check(c, &keys[k], err, errlen))
      return -1;
  return 0;
}

void cfg_init(cfg_config *c, const char *source_name) {
  memset(c, 0, sizeof *c);
  snprintf(c->source, sizeof c->source, "%s", source_name ? source_name : "config");
  for (int k = 0; k < NUM_KEYS; k++)
    if (key_types[keys[k].kind].init) key_types[keys[k].kind].init(c, &keys[k]);
  derive_defaults(c);
}

char *cfg_to_yaml(const cfg_config *c) {
  cfg_strbuf b = {0};
  cfg_sb_printf(&b, "# effective alexnet-train config (from %s)\n", c->source);
  for (int k = 0; k < NUM_KEYS; k++) {
    const key_desc *d = &keys[k];
    int depth = 0;
    for (const char *p = d->path; *p; p++) depth += *p == '.';
    const char *leaf = strrchr(d->path, '.');
    leaf = leaf ? leaf + 1 : d->path;
    cfg_sb_printf(&b, "%*s%s:", 2 * depth, "", leaf);
    if (key_types[d->kind].print) key_types[d->kind].print(&b, c, d, depth);
    cfg_sb_printf(&b, "\n");
  }
  if (b.failed) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

/* ------------------------------------------------------------------------ */
/* Model and learning rate                                                   */

int cfg_model_specs(const cfg_config *c, nn_layer_spec **specs, int *count, nn_shape *input,
                    char *err, size_t errlen) {
  int size = c->model.input_size ? c->model.input_size : c->data.crop;
  int n;
  nn_layer_spec *s;
  if (c->model.arch[0]) {
    nn_preset_opts o = {0};
    o.num_classes = c->model.num_classes      ? c->model.num_classes
                    : c->data.synthetic.n > 0 ? c->data.synthetic.classes
                                              : 0;
    o.in_channels = c->model.in_channels;
    o.groups = c->model.groups;
    o.input_size = size;
    char why[512];
    if (nn_preset(c->model.arch, &o, &s, &n, input, why, sizeof why)) {
      char loc[CFG_PATH_MAX + 32];
      util_errf(err, errlen, "%s: model.arch: %s", where(c, K("model.arch"), loc, sizeof loc), why);
      return -1;
    }
  } else {
    int pool = c->model.avgpool_h > 0 || c->model.avgpool_w > 0;
    n = c->model.num_features + pool + c->model.num_classifier;
    s = calloc(n ? (size_t)n : 1, sizeof *s);
    if (!s) {
      util_errf(err, errlen, "%s: model: out of memory for %d layers", c->source, n);
      return -1;
    }
    if (c->model.num_features)
      memcpy(s, c->model.features, (size_t)c->model.num_features * sizeof *s);
    if (pool) {
      nn_layer_spec *p = &s[c->model.num_features];
      *p = nn_layer_defaults(NN_AVGPOOL, NN_AVGPOOL_SECTION);
      p->out_h = c->model.avgpool_h;
      p->out_w = c->model.avgpool_w;
    }
    if (c->model.num_classifier)
      memcpy(s + c->model.num_features + pool, c->model.classifier,
             (size_t)c->model.num_classifier * sizeof *s);
    *input = (nn_shape){c->model.in_channels, size, size};
  }
  /* A dropout override keeps the layers (as identities at 0) so that module
   * indices, hence parameter names, stay PyTorch's. */
  if (c->model.dropout >= 0)
    for (int i = 0; i < n; i++)
      if (s[i].kind == NN_DROPOUT) s[i].dropout_p = (float)c->model.dropout;
  *specs = s;
  *count = n;
  return 0;
}

int cfg_build_net(const cfg_config *c, nn_net *net, char *err, size_t errlen) {
  nn_layer_spec *specs;
  int count;
  nn_shape input;
  memset(net, 0, sizeof *net);
  if (cfg_model_specs(c, &specs, &count, &input, err, errlen)) return -1;
  char why[1024];
  int rc = nn_net_build(net, specs, count, input, why, sizeof why);
  free(specs);
  if (rc) util_errf(err, errlen, "%s: model: %s", c->source, why);
  return rc;
}

double cfg_lr_at(const cfg_config *c, double t) {
  const double lr = c->optimizer.lr, epochs = c->train.epochs;
  if (!(t > 0)) t = 0;
  double f = 1;
  switch (c->optimizer.schedule.type) {
    case CFG_SCHED_STEP:
      f = pow(c->optimizer.schedule.gamma, floor(floor(t) / c->optimizer.schedule.step_epochs));
      break;
    case CFG_SCHED_MULTISTEP: {
      int passed = 0;
      for (int i = 0; i < c->optimizer.schedule.num_milestones; i++)
        passed += c->optimizer.schedule.milestones[i] <= floor(t);
      f = pow(c->optimizer.schedule.gamma, passed);
      break;
    }
    case CFG_SCHED_COSINE:
      f = 0.5 * (1 + cos(M_PI * fmin(t, epochs) / epochs));
      break;
    case CFG_SCHED_POLY:
      f = pow(1 - fmin(t, epochs) / epochs, c->optimizer.schedule.power);
      break;
    default:
      break;
  }
  if (c->optimizer.warmup_epochs > 0 && t < c->optimizer.warmup_epochs)
    f *= t / c->optimizer.warmup_epochs;
  return lr * f;
}
