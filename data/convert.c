/*
 * data/convert.c: the converters behind alexnet-convert. Each reads a data
 * set people have (an ImageFolder tree of JPEG/PNG files, CIFAR-10/100
 * binaries, MNIST-style IDX files) or makes a synthetic one, and writes the
 * alexnet-hdf5 format through data_writer (atomically: "<out>.tmp", renamed
 * when complete).
 *
 * Decoding and resizing (imagefolder) and pattern drawing (synthetic) run on
 * all cores through an ordered pipeline: workers produce images in any order,
 * the calling thread writes them in index order, so the output is the same
 * whatever the thread count.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "internal.h"
#include "util.h"

#define MSG_LEN 512

/* ------------------------------------------------------------------------ */
/* Ordered parallel pipeline                                                 */

/* produce(job) fills a slot in any thread; returns 0, or -1 with msg (the job
 * is then passed to consume with status -1, e.g. an image to skip). consume
 * runs in the calling thread in job order; returning -1 stops everything. */
typedef int (*produce_fn)(void *ctx, int64_t job, uint8_t *slot, char *msg, size_t msglen);
typedef int (*consume_fn)(void *ctx, int64_t job, const uint8_t *slot, int status, const char *msg);

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv_free, cv_ready;
  int64_t n, next_job, consumed;
  int window, stop;
  size_t slot_bytes;
  uint8_t *slots;      /* (window, slot_bytes) */
  int *ready, *status; /* (window) */
  char *msgs;          /* (window, MSG_LEN) */
  produce_fn produce;
  void *ctx;
} pipeline;

static void *pipeline_worker(void *arg) {
  pipeline *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (!p->stop && p->next_job < p->n && p->next_job - p->consumed >= p->window)
      pthread_cond_wait(&p->cv_free, &p->mu);
    if (p->stop || p->next_job >= p->n) {
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    int64_t job = p->next_job++;
    pthread_mutex_unlock(&p->mu);
    int s = (int)(job % p->window);
    char *msg = p->msgs + (size_t)s * MSG_LEN;
    msg[0] = '\0';
    int rc = p->produce(p->ctx, job, p->slots + (size_t)s * p->slot_bytes, msg, MSG_LEN);
    pthread_mutex_lock(&p->mu);
    p->status[s] = rc;
    p->ready[s] = 1;
    pthread_cond_broadcast(&p->cv_ready);
    pthread_mutex_unlock(&p->mu);
  }
}

static int pipeline_run(int64_t n, int threads, size_t slot_bytes, produce_fn produce,
                        consume_fn consume, void *ctx, char *err, size_t errlen) {
  if (n <= 0) return 0;
  if (threads <= 0) threads = util_cpu_count();
  if (threads > 256) threads = 256;
  pipeline p;
  memset(&p, 0, sizeof p);
  p.n = n;
  p.window = 4 * threads;
  p.slot_bytes = slot_bytes;
  p.produce = produce;
  p.ctx = ctx;
  p.slots = malloc((size_t)p.window * slot_bytes);
  p.ready = calloc((size_t)p.window, sizeof(int));
  p.status = calloc((size_t)p.window, sizeof(int));
  p.msgs = calloc((size_t)p.window, MSG_LEN);
  pthread_t *tids = calloc((size_t)threads, sizeof(pthread_t));
  if (!p.slots || !p.ready || !p.status || !p.msgs || !tids) {
    free(p.slots), free(p.ready), free(p.status), free(p.msgs), free(tids);
    return util_errf(err, errlen, "out of memory for %d decoding buffers", p.window);
  }
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.cv_free, NULL);
  pthread_cond_init(&p.cv_ready, NULL);
  int started = 0;
  for (; started < threads; started++)
    if (pthread_create(&tids[started], NULL, pipeline_worker, &p) != 0) break;
  int rc = 0;
  if (started == 0) rc = util_errf(err, errlen, "cannot start a decoding thread");
  for (int64_t job = 0; rc == 0 && job < n; job++) {
    int s = (int)(job % p.window);
    pthread_mutex_lock(&p.mu);
    while (!p.ready[s]) pthread_cond_wait(&p.cv_ready, &p.mu);
    pthread_mutex_unlock(&p.mu);
    if (consume(ctx, job, p.slots + (size_t)s * slot_bytes, p.status[s],
                p.msgs + (size_t)s * MSG_LEN) != 0)
      rc = -1;
    pthread_mutex_lock(&p.mu);
    p.ready[s] = 0;
    p.consumed++;
    if (rc != 0) p.stop = 1;
    pthread_cond_broadcast(&p.cv_free);
    pthread_mutex_unlock(&p.mu);
  }
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  pthread_cond_destroy(&p.cv_ready);
  pthread_cond_destroy(&p.cv_free);
  pthread_mutex_destroy(&p.mu);
  free(p.slots), free(p.ready), free(p.status), free(p.msgs), free(tids);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Progress                                                                  */

typedef struct {
  int enabled, tty;
  const char *what;
  int64_t total;
  double t0, last;
} progress;

static void fmt_duration(double s, char *out, size_t len) {
  if (!(s >= 0) || s > 1e7) {
    snprintf(out, len, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(out, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(out, len, "%ld:%02ld", t / 60, t % 60);
}

static void progress_begin(progress *p, int enabled, const char *what, int64_t total) {
  p->enabled = enabled;
  p->tty = enabled && isatty(STDERR_FILENO);
  p->what = what;
  p->total = total;
  p->t0 = util_now();
  p->last = p->t0;
}

static void progress_draw(progress *p, int64_t done, double t) {
  double rate = t > p->t0 ? (double)done / (t - p->t0) : 0;
  char eta[32];
  fmt_duration(rate > 0 ? (double)(p->total - done) / rate : -1, eta, sizeof eta);
  double frac = p->total > 0 ? (double)done / (double)p->total : 1;
  if (p->tty) {
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r%s [%s] %lld/%lld %5.1f%%  %.1f images/s  ETA %s ", p->what, bar,
            (long long)done, (long long)p->total, 100 * frac, rate, eta);
  } else {
    fprintf(stderr, "%s: %lld/%lld images (%.1f%%), %.1f images/s, ETA %s\n", p->what,
            (long long)done, (long long)p->total, 100 * frac, rate, eta);
  }
  fflush(stderr);
}

static void progress_update(progress *p, int64_t done) {
  if (!p->enabled) return;
  double t = util_now();
  if (t - p->last < (p->tty ? 0.1 : 10.0)) return;
  p->last = t;
  progress_draw(p, done, t);
}

static void progress_end(progress *p, int64_t done) {
  if (!p->enabled) return;
  progress_draw(p, done, util_now());
  if (p->tty) fputc('\n', stderr);
}

static void fill_stats(const data_convert_opts *o, int64_t written, int64_t written_val,
                       int64_t skipped, double t0) {
  if (!o || !o->stats) return;
  o->stats->written = written;
  o->stats->written_val = written_val;
  o->stats->skipped = skipped;
  o->stats->seconds = util_now() - t0;
}

/* ------------------------------------------------------------------------ */
/* Growable string lists                                                     */

typedef struct {
  char **s;
  int64_t n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s) {
  if (l->n == l->cap) {
    int64_t cap = l->cap ? 2 * l->cap : 64;
    char **p = realloc(l->s, (size_t)cap * sizeof *p);
    if (!p) return -1;
    l->s = p;
    l->cap = cap;
  }
  l->s[l->n] = strdup(s);
  if (!l->s[l->n]) return -1;
  l->n++;
  return 0;
}

static void strlist_free(strlist *l) {
  for (int64_t i = 0; i < l->n; i++) free(l->s[i]);
  free(l->s);
  memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strlist_sort(strlist *l) {
  if (l->n > 1) qsort(l->s, (size_t)l->n, sizeof(char *), cmp_str);
}

/* "a/b", malloc'd; NULL out of memory. */
static char *path_join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *p = malloc(la + lb + 2);
  if (!p) return NULL;
  memcpy(p, a, la);
  p[la] = '/';
  memcpy(p + la + 1, b, lb + 1);
  return p;
}

static int is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Entries of dir (no "." or ".."), sorted; dirs_only selects directories,
 * else regular files. Returns -1 if dir cannot be read. */
static int list_dir(const char *dir, int dirs_only, strlist *out) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *e;
  int rc = 0;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char *path = path_join(dir, e->d_name);
    struct stat sb;
    if (!path) {
      rc = -1;
    } else if (stat(path, &sb) == 0 && /* else a dangling link */
               (dirs_only ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode))) {
      rc = strlist_add(out, e->d_name);
    }
    free(path);
  }
  closedir(d);
  strlist_sort(out);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* imagefolder                                                               */

static int has_ext(const char *name, const char *const *exts) {
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  for (int i = 0; exts[i]; i++)
    if (strcasecmp(dot + 1, exts[i]) == 0) return 1;
  return 0;
}

static const char *const decodable_exts[] = {"jpg", "jpeg", "png", NULL};
/* torchvision's other image extensions: listed as skipped, not silently ignored */
static const char *const other_image_exts[] = {"ppm", "bmp", "pgm", "tif", "tiff", "webp", NULL};

/* Directories already walked, by (device, inode): a symbolic link back up
 * the tree (or two links to ".") would otherwise be walked again and again,
 * writing the same images many times, or for ever. */
typedef struct {
  struct {
    dev_t dev;
    ino_t ino;
  } * at;
  int64_t n, cap;
} dir_set;

/* 1 if dir was walked already, else records it and returns 0; -1 out of memory. */
static int dir_seen(dir_set *v, const char *dir) {
  struct stat sb;
  if (stat(dir, &sb) != 0) return 1; /* gone or unreadable: nothing to walk */
  for (int64_t i = 0; i < v->n; i++)
    if (v->at[i].dev == sb.st_dev && v->at[i].ino == sb.st_ino) return 1;
  if (v->n == v->cap) {
    int64_t cap = v->cap ? 2 * v->cap : 64;
    void *p = realloc(v->at, (size_t)cap * sizeof *v->at);
    if (!p) return -1;
    v->at = p;
    v->cap = cap;
  }
  v->at[v->n].dev = sb.st_dev;
  v->at[v->n].ino = sb.st_ino;
  v->n++;
  return 0;
}

/* Every directory under root (root included), each real directory once
 * (symbolic links are followed, cycles cut by `seen`), depth-limited, sorted
 * by full path as torchvision's sorted(os.walk(root)). */
static int walk_dirs(const char *root, int depth, dir_set *seen, strlist *dirs) {
  int s = dir_seen(seen, root);
  if (s != 0) return s < 0 ? -1 : 0;
  if (strlist_add(dirs, root) != 0) return -1;
  if (depth >= 32) return 0;
  strlist sub = {0};
  if (list_dir(root, 1, &sub) != 0) {
    strlist_free(&sub);
    return 0; /* unreadable subfolder: nothing in it */
  }
  int rc = 0;
  for (int64_t i = 0; rc == 0 && i < sub.n; i++) {
    char *path = path_join(root, sub.s[i]);
    rc = path ? walk_dirs(path, depth + 1, seen, dirs) : -1;
    free(path);
  }
  strlist_free(&sub);
  return rc;
}

typedef struct {
  strlist files;   /* image paths, in output order */
  int32_t *labels; /* (files.n) */
  int64_t cap;
  strlist classes;
  strlist skipped; /* "path: reason" */
  int size, jpeg, quality;
  int64_t lo; /* the pipeline's job j is listed image lo + j (a shard's range) */
  data_writer *wr, *wr_val;
  uint8_t *held; /* (files.n): 1 = goes to val */
  int64_t written, written_val, shard_written;
  progress prog;
  char err[1024]; /* why consume stopped the pipeline */
} folder_job;

/* A JPEG-encoded image in a pipeline slot (the bytes are malloc'd). */
typedef struct {
  uint8_t *bytes;
  size_t len;
  int h, w;
  uint64_t sum[3], sumsq[3];
} encoded_image;

/* Appends a listed image with its label. */
static int folder_add(folder_job *fj, const char *path, int32_t label) {
  if (fj->files.n == fj->cap) {
    int64_t cap = fj->cap ? 2 * fj->cap : 1024;
    int32_t *l = realloc(fj->labels, (size_t)cap * sizeof *l);
    if (!l) return -1;
    fj->labels = l, fj->cap = cap;
  }
  fj->labels[fj->files.n] = label;
  return strlist_add(&fj->files, path);
}

static int folder_list(const char *dir, folder_job *fj, char *err, size_t errlen) {
  if (!is_dir(dir)) return util_errf(err, errlen, "%s: not a directory", dir);
  if (list_dir(dir, 1, &fj->classes) != 0)
    return util_errf(err, errlen, "%s: cannot read: %s", dir, strerror(errno));
  if (fj->classes.n == 0)
    return util_errf(err, errlen, "%s: no class subfolders (expected DIR/<class>/<image>)", dir);
  for (int64_t c = 0; c < fj->classes.n; c++) {
    char *cdir = path_join(dir, fj->classes.s[c]);
    strlist dirs = {0};
    dir_set seen = {0};
    int rc = cdir ? walk_dirs(cdir, 0, &seen, &dirs) : -1;
    free(seen.at);
    if (rc == 0) strlist_sort(&dirs);
    for (int64_t d = 0; rc == 0 && d < dirs.n; d++) {
      strlist names = {0};
      list_dir(dirs.s[d], 0, &names);
      for (int64_t i = 0; rc == 0 && i < names.n; i++) {
        char *path = path_join(dirs.s[d], names.s[i]);
        if (!path) {
          rc = -1;
        } else if (has_ext(names.s[i], other_image_exts)) {
          char *msg = malloc(strlen(path) + 64);
          if (msg) sprintf(msg, "%s: unsupported image format (JPEG and PNG only)", path);
          rc = msg ? strlist_add(&fj->skipped, msg) : -1;
          free(msg);
        } else if (has_ext(names.s[i], decodable_exts)) {
          rc = folder_add(fj, path, (int32_t)c);
        }
        free(path);
      }
      strlist_free(&names);
    }
    strlist_free(&dirs);
    free(cdir);
    if (rc != 0) return util_errf(err, errlen, "%s: out of memory listing the images", dir);
  }
  if (fj->files.n == 0)
    return util_errf(err, errlen, "%s: no .jpg, .jpeg or .png images in its %lld class folders",
                     dir, (long long)fj->classes.n);
  return 0;
}

static int64_t read_names_file(const char *path, strlist *out);

/* The flat folder of --labels: DIR's images, each named by a line of the
 * labels file ("filename label-or-class" or LOC_val_solution.csv's
 * "ImageId,CLASS x y x y ..."; a name may omit the extension). Labels all
 * numbers: classes 0..max (names from class_names if given); else the
 * sorted distinct class names. Any mismatch is an error. */
static int labels_list(const char *dir, const char *labels, const char *class_names, folder_job *fj,
                       char *err, size_t errlen) {
  if (!is_dir(dir)) return util_errf(err, errlen, "%s: not a directory", dir);
  strlist names = {0}, tokens = {0};
  if (list_dir(dir, 0, &names) != 0) {
    strlist_free(&names);
    return util_errf(err, errlen, "%s: cannot read: %s", dir, strerror(errno));
  }
  FILE *f = fopen(labels, "r");
  if (!f) {
    strlist_free(&names);
    return util_errf(err, errlen, "%s: cannot open: %s", labels, strerror(errno));
  }
  int64_t *line_of = NULL; /* (names.n): the labels line naming it, 0 = none */
  int64_t *entry_of = NULL;
  int rc = 0, numeric = 1;
  char line[8192];
  int64_t lineno = 0;
  line_of = calloc((size_t)names.n + 1, sizeof *line_of);
  entry_of = calloc((size_t)names.n + 1, sizeof *entry_of);
  if (!line_of || !entry_of) rc = util_errf(err, errlen, "%s: out of memory", labels);
  while (rc == 0 && fgets(line, sizeof line, f)) {
    lineno++;
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    if (n == 0 || line[0] == '#') continue;
    if (lineno == 1 && strncmp(line, "ImageId,", 8) == 0) continue; /* the CSV's header */
    char *name = line, *cls = NULL;
    char *comma = strchr(line, ',');
    if (comma) { /* ImageId,CLASS x y x y ... */
      *comma = 0;
      cls = strtok(comma + 1, " \t");
    } else {
      name = strtok(line, " \t");
      cls = name ? strtok(NULL, " \t") : NULL;
    }
    if (!name || !cls) {
      rc = util_errf(err, errlen, "%s:%lld: expected 'filename label-or-class'", labels,
                     (long long)lineno);
      break;
    }
    /* the file: the exact name, else the name plus an image extension */
    static const char *const tries[] = {"", ".JPEG", ".jpg", ".jpeg", ".png", ".JPG", ".PNG", NULL};
    int64_t hit = -1;
    for (int t = 0; tries[t] && hit < 0; t++) {
      char want[4200];
      snprintf(want, sizeof want, "%s%s", name, tries[t]);
      const char *key = want;
      char **p = names.n ? bsearch(&key, names.s, (size_t)names.n, sizeof(char *), cmp_str) : NULL;
      if (p && has_ext(*p, decodable_exts)) hit = p - names.s;
    }
    if (hit < 0) {
      rc = util_errf(err, errlen, "%s:%lld: %s: no such image (.jpg, .jpeg or .png) in %s", labels,
                     (long long)lineno, name, dir);
      break;
    }
    if (line_of[hit]) {
      rc = util_errf(err, errlen, "%s:%lld: %s is already labelled on line %lld", labels,
                     (long long)lineno, names.s[hit], (long long)line_of[hit]);
      break;
    }
    line_of[hit] = lineno;
    entry_of[hit] = tokens.n;
    char *end;
    long v = strtol(cls, &end, 10);
    if (*end || end == cls || v < 0 || v > (1 << 24)) numeric = 0;
    if (strlist_add(&tokens, cls) != 0) rc = util_errf(err, errlen, "%s: out of memory", labels);
  }
  fclose(f);
  for (int64_t i = 0; rc == 0 && i < names.n; i++) {
    if (has_ext(names.s[i], decodable_exts) && !line_of[i])
      rc = util_errf(err, errlen, "%s/%s has no line in %s", dir, names.s[i], labels);
  }
  if (rc == 0 && tokens.n == 0) rc = util_errf(err, errlen, "%s: no labels", labels);
  /* the classes */
  if (rc == 0 && numeric) {
    long maxl = 0;
    for (int64_t k = 0; k < tokens.n; k++) {
      long v = strtol(tokens.s[k], NULL, 10);
      maxl = v > maxl ? v : maxl;
    }
    if (class_names) {
      if (read_names_file(class_names, &fj->classes) < 0)
        rc = util_errf(err, errlen, "%s: cannot open: %s", class_names, strerror(errno));
      else if (fj->classes.n <= maxl)
        rc = util_errf(err, errlen, "%s: %lld class names, but %s has label %ld", class_names,
                       (long long)fj->classes.n, labels, maxl);
    } else {
      char s[32];
      for (long k = 0; rc == 0 && k <= maxl; k++) {
        snprintf(s, sizeof s, "%ld", k);
        if (strlist_add(&fj->classes, s) != 0) rc = util_errf(err, errlen, "out of memory");
      }
    }
  } else if (rc == 0) {
    for (int64_t k = 0; rc == 0 && k < tokens.n; k++)
      if (strlist_add(&fj->classes, tokens.s[k]) != 0) rc = util_errf(err, errlen, "out of memory");
    strlist_sort(&fj->classes);
    int64_t u = 0; /* distinct */
    for (int64_t k = 0; k < fj->classes.n; k++) {
      if (u > 0 && strcmp(fj->classes.s[u - 1], fj->classes.s[k]) == 0) {
        free(fj->classes.s[k]);
        continue;
      }
      fj->classes.s[u++] = fj->classes.s[k];
    }
    fj->classes.n = u;
  }
  for (int64_t i = 0; rc == 0 && i < names.n; i++) {
    char *path = path_join(dir, names.s[i]);
    if (!path) {
      rc = util_errf(err, errlen, "out of memory");
    } else if (has_ext(names.s[i], other_image_exts)) {
      char *msg = malloc(strlen(path) + 64);
      if (msg) sprintf(msg, "%s: unsupported image format (JPEG and PNG only)", path);
      if (!msg || strlist_add(&fj->skipped, msg) != 0) rc = util_errf(err, errlen, "out of memory");
      free(msg);
    } else if (line_of[i]) {
      const char *cls = tokens.s[entry_of[i]];
      int32_t label;
      if (numeric) {
        label = (int32_t)strtol(cls, NULL, 10);
      } else {
        const char *key = cls;
        char **p = bsearch(&key, fj->classes.s, (size_t)fj->classes.n, sizeof(char *), cmp_str);
        label = (int32_t)(p - fj->classes.s);
      }
      if (folder_add(fj, path, label) != 0) rc = util_errf(err, errlen, "out of memory");
    }
    free(path);
  }
  free(line_of);
  free(entry_of);
  strlist_free(&names);
  strlist_free(&tokens);
  if (rc == 0 && fj->files.n == 0)
    rc = util_errf(err, errlen, "%s: no .jpg, .jpeg or .png images", dir);
  return rc;
}

static int folder_produce(void *ctx, int64_t job, uint8_t *slot, char *msg, size_t msglen) {
  folder_job *fj = ctx;
  data_image img;
  const char *path = fj->files.s[fj->lo + job];
  if (fj->jpeg) memset(slot, 0, sizeof(encoded_image)); /* consume frees its bytes */
  if (data_image_load(path, fj->size, &img, msg, msglen) != 0) return -1;
  if (!fj->jpeg) {
    data_image_resize_center_crop(&img, fj->size, slot);
    data_image_free(&img);
    return 0;
  }
  /* JPEG storage: the shorter side to size, the aspect ratio kept */
  encoded_image *e = (encoded_image *)slot;
  memset(e, 0, sizeof *e);
  int fw = img.full_w > 0 ? img.full_w : img.w, fh = img.full_h > 0 ? img.full_h : img.h;
  data_resize_shape(fw, fh, fj->size, &e->w, &e->h);
  uint8_t *px = malloc((size_t)e->w * e->h * 3);
  if (!px) {
    data_image_free(&img);
    return util_errf(msg, msglen, "%s: out of memory resizing to %dx%d", path, e->w, e->h);
  }
  data_image_resize(&img, e->w, e->h, px);
  data_image_free(&img);
  data_pixel_sums(px, (size_t)e->w * e->h, 3, e->sum, e->sumsq);
  int rc = data_jpeg_encode(px, e->w, e->h, 3, fj->quality, path, &e->bytes, &e->len, msg, msglen);
  free(px);
  return rc;
}

static int folder_consume(void *ctx, int64_t job, const uint8_t *slot, int status,
                          const char *msg) {
  folder_job *fj = ctx;
  int64_t k = fj->lo + job;
  int rc = 0;
  if (status != 0) {
    if (strlist_add(&fj->skipped, msg) != 0)
      rc = util_errf(fj->err, sizeof fj->err, "out of memory");
  } else {
    int val = fj->held && fj->held[k];
    data_writer *wr = val ? fj->wr_val : fj->wr;
    if (fj->jpeg) {
      const encoded_image *e = (const encoded_image *)slot;
      rc = data_writer_append_jpeg(wr, e->bytes, e->len, e->h, e->w, e->sum, e->sumsq,
                                   fj->labels[k], fj->err, sizeof fj->err);
    } else {
      rc = data_writer_append(wr, slot, fj->labels[k], fj->err, sizeof fj->err);
    }
    if (rc == 0) val ? fj->written_val++ : (fj->written++, fj->shard_written++);
  }
  if (fj->jpeg) free(((encoded_image *)slot)->bytes);
  if (rc == 0) progress_update(&fj->prog, k + 1);
  return rc;
}

/* Prints the skipped list on stderr when o->progress. */
static void report_skipped(const data_convert_opts *o, const strlist *skipped) {
  if (!o->progress || skipped->n == 0) return;
  fprintf(stderr, "skipped %lld unreadable image(s):\n", (long long)skipped->n);
  for (int64_t i = 0; i < skipped->n; i++) fprintf(stderr, "  %s\n", skipped->s[i]);
}

/* Writes listed images [lo, hi) to out (and the held-out ones to val_out).
 * Leaves complete "<file>.tmp" files if keep_tmp, else commits them. */
static int folder_write(folder_job *fj, const data_convert_opts *o, const char *what,
                        const char *out, const char *val_out, int64_t lo, int64_t hi, char *err,
                        size_t errlen) {
  const char *const *names = (const char *const *)fj->classes.s;
  int nc = (int)fj->classes.n, size = fj->size;
  fj->wr = fj->wr_val = NULL;
  fj->lo = lo;
  fj->shard_written = 0;
  int64_t val_before = fj->written_val;
  int rc = fj->jpeg ? data_writer_create_jpeg(out, 3, nc, names, &fj->wr, err, errlen)
                    : data_writer_create(out, size, size, 3, nc, names, o->compress, &fj->wr, err,
                                         errlen);
  if (rc == 0 && fj->held)
    rc = fj->jpeg ? data_writer_create_jpeg(val_out, 3, nc, names, &fj->wr_val, err, errlen)
                  : data_writer_create(val_out, size, size, 3, nc, names, o->compress, &fj->wr_val,
                                       err, errlen);
  if (rc == 0) {
    char perr[1024] = "";
    size_t slot = fj->jpeg ? sizeof(encoded_image) : (size_t)size * size * 3;
    rc = pipeline_run(hi - lo, o->threads, slot, folder_produce, folder_consume, fj, perr,
                      sizeof perr);
    if (rc != 0) util_errf(err, errlen, "%s", perr[0] ? perr : fj->err);
  }
  if (rc == 0 && fj->shard_written + (fj->written_val - val_before) == 0)
    rc = util_errf(err, errlen, "%s: none of the %lld images could be read (see the list above)",
                   what, (long long)(hi - lo));
  if (rc == 0 && fj->wr_val) {
    rc = o->keep_tmp ? data_writer_finish_tmp(fj->wr_val, err, errlen)
                     : data_writer_finish(fj->wr_val, err, errlen);
    fj->wr_val = NULL;
  }
  if (rc == 0) {
    rc = o->keep_tmp ? data_writer_finish_tmp(fj->wr, err, errlen)
                     : data_writer_finish(fj->wr, err, errlen);
    fj->wr = NULL;
  }
  data_writer_abort(fj->wr);
  data_writer_abort(fj->wr_val);
  fj->wr = fj->wr_val = NULL;
  return rc;
}

int data_convert_imagefolder(const char *dir, const char *out, const data_convert_opts *o,
                             char *err, size_t errlen) {
  double t0 = util_now();
  data_convert_opts defaults;
  memset(&defaults, 0, sizeof defaults);
  if (!o) o = &defaults;
  int size = o->size > 0 ? o->size : 256;
  if (size > 65535) return util_errf(err, errlen, "--size %d is too large", size);
  if (!(o->val_fraction >= 0 && o->val_fraction < 1))
    return util_errf(err, errlen, "--val-fraction %g is not in [0, 1)", o->val_fraction);
  if (o->val_fraction > 0 && (!o->val_out || !*o->val_out))
    return util_errf(err, errlen, "--val-fraction %g needs --val-out", o->val_fraction);
  int shards = o->shards > 1 ? o->shards : 1;
  if (shards > 1 && o->val_fraction > 0)
    return util_errf(err, errlen,
                     "--val-fraction with --shards %d: convert the validation images on their own",
                     shards);
  if (o->encode != DATA_ENCODING_RAW && o->encode != DATA_ENCODING_JPEG)
    return util_errf(err, errlen, "encoding %d is not raw or jpeg", o->encode);
  int quality = o->quality > 0 ? o->quality : 90;
  if (quality > 100) return util_errf(err, errlen, "--quality %d is not in 1..100", quality);
  int ranks = o->shard_ranks > 0 ? o->shard_ranks : 1, rank = o->shard_rank;
  if (rank < 0 || rank >= ranks)
    return util_errf(err, errlen, "shard rank %d is not in [0, %d)", rank, ranks);
  folder_job fj;
  memset(&fj, 0, sizeof fj);
  fj.size = size;
  fj.jpeg = o->encode == DATA_ENCODING_JPEG;
  fj.quality = quality;
  int rc = o->labels ? labels_list(dir, o->labels, o->class_names, &fj, err, errlen)
                     : folder_list(dir, &fj, err, errlen);
  if (rc == 0 && shards > fj.files.n)
    rc = util_errf(err, errlen, "--shards %d is more than the %lld images", shards,
                   (long long)fj.files.n);
  if (rc == 0 && o->val_fraction > 0) {
    fj.held = malloc((size_t)fj.files.n);
    if (!fj.held || data_holdout_mask(fj.files.n, o->val_fraction, o->seed, fj.held) != 0)
      rc = util_errf(err, errlen, "out of memory splitting %lld images", (long long)fj.files.n);
  }
  /* Every shard is finished as "<file>.tmp" first and renamed only when all
   * of this process's are complete: a failure leaves none of them. */
  data_convert_opts ot = *o;
  ot.keep_tmp = 1;
  if (rc == 0) progress_begin(&fj.prog, o->progress, "imagefolder", fj.files.n);
  int last = rank - ranks; /* the last shard written */
  for (int sh = rank; rc == 0 && sh < shards; sh += ranks) {
    int64_t lo = sh * fj.files.n / shards, hi = (sh + 1) * fj.files.n / shards;
    char path[4200];
    if (shards > 1)
      data_shard_path(out, sh, shards, path, sizeof path);
    else
      snprintf(path, sizeof path, "%s", out);
    rc = folder_write(&fj, &ot, shards > 1 ? path : dir, path, o->val_out, lo, hi, err, errlen);
    if (rc == 0) last = sh;
  }
  for (int sh = rank; sh <= last; sh += ranks) {
    char path[4200], tmp[4300];
    if (shards > 1)
      data_shard_path(out, sh, shards, path, sizeof path);
    else
      snprintf(path, sizeof path, "%s", out);
    for (int v = 0; v < (fj.held ? 2 : 1); v++) {
      const char *p = v ? o->val_out : path;
      snprintf(tmp, sizeof tmp, "%s.tmp", p);
      if (rc != 0)
        unlink(tmp);
      else if (!o->keep_tmp && data_commit_tmp(p, err, errlen) != 0)
        rc = -1;
    }
  }
  if (rc == 0) progress_end(&fj.prog, fj.files.n);
  report_skipped(o, &fj.skipped);
  if (rc == 0) fill_stats(o, fj.written, fj.written_val, fj.skipped.n, t0);
  strlist_free(&fj.files);
  strlist_free(&fj.classes);
  strlist_free(&fj.skipped);
  free(fj.labels);
  free(fj.held);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* CIFAR-10 / CIFAR-100 binary                                               */

static const char *const cifar10_names[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};
static const char *const cifar100_names[100] = {
    "apple",       "aquarium_fish", "baby",      "bear",       "beaver",       "bed",
    "bee",         "beetle",        "bicycle",   "bottle",     "bowl",         "boy",
    "bridge",      "bus",           "butterfly", "camel",      "can",          "castle",
    "caterpillar", "cattle",        "chair",     "chimpanzee", "clock",        "cloud",
    "cockroach",   "couch",         "crab",      "crocodile",  "cup",          "dinosaur",
    "dolphin",     "elephant",      "flatfish",  "forest",     "fox",          "girl",
    "hamster",     "house",         "kangaroo",  "keyboard",   "lamp",         "lawn_mower",
    "leopard",     "lion",          "lizard",    "lobster",    "man",          "maple_tree",
    "motorcycle",  "mountain",      "mouse",     "mushroom",   "oak_tree",     "orange",
    "orchid",      "otter",         "palm_tree", "pear",       "pickup_truck", "pine_tree",
    "plain",       "plate",         "poppy",     "porcupine",  "possum",       "rabbit",
    "raccoon",     "ray",           "road",      "rocket",     "rose",         "sea",
    "seal",        "shark",         "shrew",     "skunk",      "skyscraper",   "snail",
    "snake",       "spider",        "squirrel",  "streetcar",  "sunflower",    "sweet_pepper",
    "table",       "tank",          "telephone", "television", "tiger",        "tractor",
    "train",       "trout",         "tulip",     "turtle",     "wardrobe",     "whale",
    "willow_tree", "wolf",          "woman",     "worm"};

/* Reads a names file (one per line, blank lines ignored) into out. Returns
 * the count, or -1 if it cannot be opened. */
static int64_t read_names_file(const char *path, strlist *out) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
      line[--n] = 0;
    if (n > 0) strlist_add(out, line);
  }
  fclose(f);
  return out->n;
}

int data_convert_cifar(const char *dir, int cifar100, const char *which, const char *out,
                       const data_convert_opts *o, char *err, size_t errlen) {
  double t0 = util_now();
  data_convert_opts defaults;
  memset(&defaults, 0, sizeof defaults);
  if (!o) o = &defaults;
  int train = strcmp(which, "train") == 0;
  if (!train && strcmp(which, "test") != 0)
    return util_errf(err, errlen, "--split '%s': expected train or test", which);
  /* The tarballs unpack to a subfolder: accept its parent too. */
  char base[4096];
  snprintf(base, sizeof base, "%s/%s", dir, cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin");
  if (!is_dir(base)) snprintf(base, sizeof base, "%s", dir);
  if (!is_dir(base)) return util_errf(err, errlen, "%s: not a directory", dir);
  int classes = cifar100 ? 100 : 10;
  size_t rec = cifar100 ? 3074 : 3073;
  strlist names = {0};
  char path[8192];
  snprintf(path, sizeof path, "%s/%s", base,
           cifar100 ? "fine_label_names.txt" : "batches.meta.txt");
  int64_t got = read_names_file(path, &names);
  if (got >= 0 && got != classes) {
    strlist_free(&names);
    return util_errf(err, errlen, "%s: %lld class names, expected %d", path, (long long)got,
                     classes);
  }
  if (got < 0)
    for (int i = 0; i < classes; i++)
      strlist_add(&names, cifar100 ? cifar100_names[i] : cifar10_names[i]);
  const char *files10[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", NULL};
  const char *test10[] = {"test_batch.bin", NULL};
  const char *train100[] = {"train.bin", NULL};
  const char *test100[] = {"test.bin", NULL};
  const char *const *files = cifar100 ? (train ? train100 : test100) : (train ? files10 : test10);
  data_writer *wr = NULL;
  int rc = data_writer_create(out, 32, 32, 3, classes, (const char *const *)names.s, o->compress,
                              &wr, err, errlen);
  strlist_free(&names);
  progress prog;
  progress_begin(&prog, rc == 0 && o->progress, cifar100 ? "cifar100" : "cifar10",
                 train ? 50000 : 10000);
  uint8_t r[3074], img[3072];
  int64_t written = 0;
  for (int fi = 0; rc == 0 && files[fi]; fi++) {
    snprintf(path, sizeof path, "%s/%s", base, files[fi]);
    FILE *f = fopen(path, "rb");
    if (!f) {
      rc = util_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
      break;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size == 0 || (size_t)sb.st_size % rec != 0) {
      rc = util_errf(err, errlen,
                     "%s: size %lld is not a positive multiple of the %zu-byte %s record "
                     "(truncated?)",
                     path, (long long)sb.st_size, rec, cifar100 ? "CIFAR-100" : "CIFAR-10");
      fclose(f);
      break;
    }
    int64_t nrec = (int64_t)((size_t)sb.st_size / rec);
    for (int64_t i = 0; rc == 0 && i < nrec; i++) {
      if (fread(r, 1, rec, f) != rec) {
        rc = util_errf(err, errlen, "%s: read error at record %lld", path, (long long)i);
        break;
      }
      int label = cifar100 ? r[1] : r[0]; /* CIFAR-100: coarse, then fine label */
      if (label >= classes) {
        rc = util_errf(err, errlen, "%s: record %lld has label %d, out of range [0, %d)", path,
                       (long long)i, label, classes);
        break;
      }
      const uint8_t *planes = r + (cifar100 ? 2 : 1); /* (3, 32, 32) -> (32, 32, 3) */
      for (int p = 0; p < 1024; p++)
        for (int c = 0; c < 3; c++) img[p * 3 + c] = planes[c * 1024 + p];
      rc = data_writer_append(wr, img, label, err, errlen);
      written++;
      progress_update(&prog, written);
    }
    fclose(f);
  }
  prog.total = written;
  progress_end(&prog, written);
  if (rc == 0) {
    rc = data_writer_finish(wr, err, errlen);
    wr = NULL;
  }
  data_writer_abort(wr);
  if (rc == 0) fill_stats(o, written, 0, 0, t0);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* IDX (MNIST, Fashion-MNIST)                                                */

static const char *const fashion_names[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                              "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                              "Bag",         "Ankle boot"};

/* Reads an IDX header: uint8 data of rank ndim_min..ndim_max. dims has 4. */
static int idx_header(gzFile f, const char *path, int ndim_min, int ndim_max, uint32_t *dims,
                      int *ndim, char *err, size_t errlen) {
  uint8_t h[4];
  if (gzread(f, h, 4) != 4)
    return util_errf(err, errlen, "%s: not an IDX file (shorter than its header)", path);
  if (h[0] != 0 || h[1] != 0 || h[2] != 0x08)
    return util_errf(err, errlen, "%s: not an unsigned-byte IDX file (magic %02x%02x%02x%02x)",
                     path, h[0], h[1], h[2], h[3]);
  if (h[3] < ndim_min || h[3] > ndim_max)
    return util_errf(err, errlen, "%s: IDX of rank %d, expected %d..%d", path, h[3], ndim_min,
                     ndim_max);
  *ndim = h[3];
  for (int i = 0; i < *ndim; i++) {
    uint8_t b[4];
    if (gzread(f, b, 4) != 4) return util_errf(err, errlen, "%s: truncated IDX header", path);
    dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  }
  return 0;
}

static int contains_ci(const char *s, const char *needle) {
  size_t n = strlen(needle);
  for (; *s; s++)
    if (strncasecmp(s, needle, n) == 0) return 1;
  return 0;
}

int data_convert_idx(const char *images, const char *labels, const char *out,
                     const data_convert_opts *o, char *err, size_t errlen) {
  double t0 = util_now();
  data_convert_opts defaults;
  memset(&defaults, 0, sizeof defaults);
  if (!o) o = &defaults;
  gzFile fi = gzopen(images, "rb"), fl = NULL;
  if (!fi) return util_errf(err, errlen, "%s: cannot open: %s", images, strerror(errno));
  fl = gzopen(labels, "rb");
  if (!fl) {
    gzclose(fi);
    return util_errf(err, errlen, "%s: cannot open: %s", labels, strerror(errno));
  }
  uint32_t di[4] = {0}, dl[4] = {0};
  int ni = 0, nl = 0;
  uint8_t *lab = NULL, *img = NULL;
  strlist names = {0};
  data_writer *wr = NULL;
  int rc = idx_header(fi, images, 3, 4, di, &ni, err, errlen);
  if (rc == 0) rc = idx_header(fl, labels, 1, 1, dl, &nl, err, errlen);
  int c = ni == 4 ? (int)di[3] : 1;
  if (rc == 0 && (c != 1 && c != 3))
    rc = util_errf(err, errlen, "%s: images with %d channels, expected 1 or 3", images, c);
  if (rc == 0 && (di[1] == 0 || di[2] == 0 || di[1] > 65535 || di[2] > 65535))
    rc = util_errf(err, errlen, "%s: images of %ux%u", images, di[1], di[2]);
  if (rc == 0 && di[0] != dl[0])
    rc = util_errf(err, errlen, "%s has %u images but %s has %u labels", images, di[0], labels,
                   dl[0]);
  if (rc == 0 && di[0] == 0) rc = util_errf(err, errlen, "%s: zero images", images);
  int64_t n = di[0];
  if (rc == 0) {
    lab = malloc((size_t)n);
    if (!lab) rc = util_errf(err, errlen, "%s: out of memory", labels);
  }
  if (rc == 0 && gzread(fl, lab, (unsigned)n) != (int)n)
    rc = util_errf(err, errlen, "%s: truncated (fewer than %lld labels)", labels, (long long)n);
  int classes = 0;
  if (rc == 0) {
    if (o->class_names) {
      if (read_names_file(o->class_names, &names) < 0)
        rc = util_errf(err, errlen, "%s: cannot open: %s", o->class_names, strerror(errno));
      else if (names.n == 0)
        rc = util_errf(err, errlen, "%s: no class names", o->class_names);
    } else if (contains_ci(images, "fashion")) {
      for (int i = 0; i < 10; i++) strlist_add(&names, fashion_names[i]);
    } else {
      int maxl = 0;
      for (int64_t i = 0; i < n; i++) maxl = lab[i] > maxl ? lab[i] : maxl;
      char s[16];
      for (int i = 0; i <= maxl; i++) {
        snprintf(s, sizeof s, "%d", i);
        strlist_add(&names, s);
      }
    }
    classes = (int)names.n;
  }
  for (int64_t i = 0; rc == 0 && i < n; i++)
    if (lab[i] >= classes)
      rc = util_errf(err, errlen, "%s: label[%lld] = %d is out of range [0, %d)", labels,
                     (long long)i, lab[i], classes);
  size_t isz = (size_t)di[1] * di[2] * (size_t)c;
  if (rc == 0) {
    img = malloc(isz);
    if (!img) rc = util_errf(err, errlen, "%s: out of memory", images);
  }
  if (rc == 0)
    rc = data_writer_create(out, (int)di[1], (int)di[2], c, classes, (const char *const *)names.s,
                            o->compress, &wr, err, errlen);
  progress prog;
  progress_begin(&prog, rc == 0 && o->progress, "idx", n);
  for (int64_t i = 0; rc == 0 && i < n; i++) {
    if (gzread(fi, img, (unsigned)isz) != (int)isz) {
      rc = util_errf(err, errlen, "%s: truncated at image %lld of %lld", images, (long long)i,
                     (long long)n);
      break;
    }
    rc = data_writer_append(wr, img, lab[i], err, errlen);
    progress_update(&prog, i + 1);
  }
  if (rc == 0) {
    progress_end(&prog, n);
    rc = data_writer_finish(wr, err, errlen);
    wr = NULL;
  }
  data_writer_abort(wr);
  if (rc == 0) fill_stats(o, n, 0, 0, t0);
  gzclose(fi);
  gzclose(fl);
  free(lab);
  free(img);
  strlist_free(&names);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Synthetic                                                                 */

typedef struct {
  int size, channels, classes;
  uint64_t seed;
  data_writer *wr;
  progress prog;
  char err[1024]; /* why consume stopped the pipeline */
} synth_job;

/* Class k's pattern, the same for every seed (train and val files made with
 * different seeds share classes): a colour spread around the hue circle by
 * the golden ratio, a stripe orientation and a stripe frequency. */
static void synth_class(int k, double rgb[3], double *angle, double *cycles) {
  double hue = fmod(0.11 + 0.6180339887 * k, 1.0) * 6.0;
  int sector = (int)hue;
  double f = hue - sector, v = 0.95, s = 0.85;
  double p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double tab[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
  for (int c = 0; c < 3; c++) rgb[c] = tab[sector % 6][c];
  *angle = 3.14159265358979 * fmod(0.25 + 0.7548776662 * k, 1.0);
  *cycles = 3.0 + 1.5 * (k % 5);
}

static int synth_produce(void *ctx, int64_t job, uint8_t *slot, char *msg, size_t msglen) {
  (void)msg, (void)msglen;
  synth_job *sj = ctx;
  int k = (int)(job % sj->classes), S = sj->size, C = sj->channels;
  double rgb[3], angle, cycles;
  synth_class(k, rgb, &angle, &cycles);
  if (C == 1) rgb[0] = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
  data_rng r = data_rng_key(sj->seed, DATA_STREAM_SYNTH, (uint64_t)job, 0);
  double phase = 6.283185307179586 * data_rng_uniform(&r);
  double contrast = 0.6 + 0.4 * data_rng_uniform(&r);
  double bright = 0.2 * data_rng_uniform(&r) - 0.1;
  double w = 6.283185307179586 * cycles / S;
  double sx = sin(w * cos(angle)), cx = cos(w * cos(angle)); /* rotation per x step */
  uint64_t bits = 0;
  int nbits = 0;
  for (int y = 0; y < S; y++) {
    double t0 = w * sin(angle) * y + phase;
    double zs = sin(t0), zc = cos(t0); /* sin/cos of the stripe argument, rotated along x */
    uint8_t *row = slot + (size_t)y * S * C;
    for (int x = 0; x < S; x++) {
      double stripe = 0.6 + 0.4 * contrast * zs;
      for (int c = 0; c < C; c++) {
        if (nbits == 0) {
          bits = data_rng_next(&r);
          nbits = 4;
        }
        /* triangular noise in [-0.08, 0.08] from two random bytes */
        double noise =
            ((double)(bits & 0xFF) + (double)((bits >> 8) & 0xFF) - 255.0) * (0.08 / 255);
        bits >>= 16;
        nbits--;
        double v = 0.15 + 0.7 * rgb[c] * stripe + bright + noise;
        long q = lrint(v * 255.0);
        row[x * C + c] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
      }
      double ns = zs * cx + zc * sx, nc = zc * cx - zs * sx;
      zs = ns, zc = nc;
    }
  }
  return 0;
}

static int synth_consume(void *ctx, int64_t job, const uint8_t *slot, int status, const char *msg) {
  (void)status, (void)msg;
  synth_job *sj = ctx;
  if (data_writer_append(sj->wr, slot, (int32_t)(job % sj->classes), sj->err, sizeof sj->err) != 0)
    return -1;
  progress_update(&sj->prog, job + 1);
  return 0;
}

int data_convert_synthetic(const char *out, int64_t n, int size, int channels, int classes,
                           const data_convert_opts *o, char *err, size_t errlen) {
  double t0 = util_now();
  data_convert_opts defaults;
  memset(&defaults, 0, sizeof defaults);
  if (!o) o = &defaults;
  if (n <= 0) return util_errf(err, errlen, "synthetic: --n %lld must be > 0", (long long)n);
  if (size <= 0 || size > 65535)
    return util_errf(err, errlen, "synthetic: --size %d is not in 1..65535", size);
  if (channels != 1 && channels != 3)
    return util_errf(err, errlen, "synthetic: --channels %d, expected 1 or 3", channels);
  if (classes <= 0) return util_errf(err, errlen, "synthetic: --classes %d must be > 0", classes);
  strlist names = {0};
  char s[32];
  for (int i = 0; i < classes; i++) {
    snprintf(s, sizeof s, "class_%d", i);
    if (strlist_add(&names, s) != 0) {
      strlist_free(&names);
      return util_errf(err, errlen, "synthetic: out of memory");
    }
  }
  synth_job sj;
  memset(&sj, 0, sizeof sj);
  sj.size = size, sj.channels = channels, sj.classes = classes, sj.seed = o->seed;
  int rc = data_writer_create(out, size, size, channels, classes, (const char *const *)names.s,
                              o->compress, &sj.wr, err, errlen);
  strlist_free(&names);
  if (rc != 0) return rc;
  progress_begin(&sj.prog, o->progress, "synthetic", n);
  char perr[1024] = "";
  rc = pipeline_run(n, o->threads, (size_t)size * size * channels, synth_produce, synth_consume,
                    &sj, perr, sizeof perr);
  progress_end(&sj.prog, n);
  if (rc != 0) {
    util_errf(err, errlen, "%s", perr[0] ? perr : sj.err);
    data_writer_abort(sj.wr);
    return -1;
  }
  rc = data_writer_finish(sj.wr, err, errlen);
  if (rc == 0) fill_stats(o, n, 0, 0, t0);
  return rc;
}

int data_write_synthetic(const char *out, int64_t n, int size, int channels, int classes,
                         uint64_t seed, char *err, size_t errlen) {
  data_convert_opts o;
  memset(&o, 0, sizeof o);
  o.seed = seed;
  return data_convert_synthetic(out, n, size, channels, classes, &o, err, errlen);
}
