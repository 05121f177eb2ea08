/*
 * Byte-flip fuzzing of the files a run reads (issue 17, "how it is judged"):
 * a dataset file and a checkpoint, each with one byte changed at a random
 * offset, are opened by the library entry points the tools use, each case in
 * its own process (fork) with a time limit. Every case must end with the
 * file accepted or refused with a message naming it (exit statuses 10 and
 * 11: a sanitizer's finding exits with 1); never a signal (a crash, an
 * abort), a sanitizer report, a hang, or a refusal without a message.
 *
 *   dataset:    data_dataset_open, every sample read, a loader's whole epoch
 *               (what alexnet-train and alexnet-eval do with data.train/val)
 *   checkpoint: predict_load_model (alexnet-predict and alexnet-eval: the
 *               network rebuilt from the stored config, weights verified),
 *               then ckpt_load with the momentum (a resume)
 *
 * A few cases of each also run through the binaries (alexnet-eval on a
 * flipped dataset and on a flipped checkpoint, alexnet-predict on a flipped
 * checkpoint): exit 0, 1 or 2, no signal.
 *
 * The files are small (16 images of 12x12, a network of a few hundred
 * parameters), so most offsets land in HDF5's metadata, attributes and
 * strings rather than in pixels or weights. The offsets and byte values come
 * from a seed: ALEXNET_BYTEFLIP_SEED (default 17) and ALEXNET_BYTEFLIP_CASES
 * (default 300 per file, 120 under the sanitizers) reproduce or widen a run;
 * the seed is printed, and
 * every failing case is printed with its offset and value.
 */
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "data.h"
#include "nn.h"
#include "predict_core.h"
#include "testutil.h"

#define CASE_SECONDS 20 /* a case taking longer is a hang */

static uint64_t seed = 17;
#if defined(__SANITIZE_ADDRESS__)
static int cases = 120; /* each case costs about 5 times more: the suite's time */
#else
static int cases = 300;
#endif
static char dataset_path[4200], ckpt_path[4200], config_path[4200], run_dir[4200];

static uint64_t next_rand(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)n);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static int write_all(const char *path, const unsigned char *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int ok = fwrite(buf, 1, len, f) == len;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* What a case process does with a flipped file                              */

/* A case process's exit status: distinct from 1, which is also how the
 * sanitizers exit on a finding. */
enum { ACCEPTED = 10, REFUSED = 11, REFUSED_SILENTLY = 13 };

static int refused(const char *err, const char *path) {
  if (!err[0] || !strstr(err, path)) {
    fprintf(stderr, "\n  refused without naming the file: \"%s\"\n", err);
    return REFUSED_SILENTLY;
  }
  return REFUSED;
}

static int open_dataset(const char *path) {
  char err[8192] = "";
  data_dataset ds;
  if (data_dataset_open(path, &ds, err, sizeof err) != 0) return refused(err, path);
  uint8_t *px = malloc((size_t)ds.h * ds.w * ds.c);
  int rc = 0;
  for (int64_t i = 0; rc == 0 && i < ds.n; i++)
    if (data_dataset_read(&ds, i, px, err, sizeof err) != 0) rc = refused(err, path);
  int crop = ds.h < ds.w ? ds.h : ds.w;
  free(px);
  data_dataset_close(&ds);
  if (rc != 0) return rc;
  data_loader_opts o;
  memset(&o, 0, sizeof o);
  o.path = path;
  o.ranks = 1;
  o.global_batch = 4;
  o.train = 1;
  o.shuffle = 1;
  o.seed = 3;
  o.crop = crop < 8 ? crop : 8;
  o.mirror = 1;
  data_loader *ld;
  if (data_loader_open(&o, &ld, err, sizeof err) != 0) return refused(err, path);
  if (data_loader_start_epoch(ld, 0, 0, err, sizeof err) != 0) rc = refused(err, path);
  data_batch b;
  int got;
  while (rc == 0 && (got = data_loader_next(ld, &b, err, sizeof err)) != 0)
    if (got < 0) rc = refused(err, path);
  data_loader_close(ld);
  return rc == 0 ? ACCEPTED : rc;
}

static int open_checkpoint(const char *path) {
  char err[8192] = "";
  nn_net net;
  ckpt_meta meta;
  if (predict_load_model(path, &net, &meta, err, sizeof err) != 0) return refused(err, path);
  float *mom = calloc(net.num_params, sizeof(float));
  int rc = ckpt_load(path, &net, mom, NULL, err, sizeof err) == 0 ? 0 : refused(err, path);
  free(mom);
  nn_net_free(&net);
  ckpt_meta_free(&meta);
  return rc == 0 ? ACCEPTED : rc;
}

/* Runs fn on a copy of `orig` with byte `at` xor'ed with `x` (non-zero), in a
 * child; returns its exit status, 128 + signal when killed. */
static int run_case(int (*fn)(const char *), const unsigned char *orig, size_t len, size_t at,
                    unsigned x, const char *path) {
  unsigned char *buf = malloc(len);
  memcpy(buf, orig, len);
  buf[at] ^= (unsigned char)x;
  int w = write_all(path, buf, len);
  free(buf);
  if (w != 0) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(CASE_SECONDS);
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) dup2(fd, 2); /* HDF5 or a loader thread may print; the status says it all */
    exit(fn(path));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The byte ranges of the file holding datasets' raw data (pixels, labels,
 * weights): 3 flips in 4 are drawn outside them, into HDF5's metadata, the
 * attributes and the strings, where a flip tests more than a checksum. */
typedef struct {
  uint64_t at[64][2];
  int n;
} raw_ranges;

static herr_t add_range(hid_t obj, const char *name, const H5O_info_t *info, void *op) {
  raw_ranges *r = op;
  if (info->type != H5O_TYPE_DATASET || r->n >= 64) return 0;
  hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
  if (d < 0) return 0;
  haddr_t off = H5Dget_offset(d);
  hsize_t size = H5Dget_storage_size(d);
  if (off != HADDR_UNDEF && size > 0) {
    r->at[r->n][0] = off;
    r->at[r->n][1] = off + size;
    r->n++;
  } else {
    hid_t fs = H5Dget_space(d);
    hsize_t nchunks = 0;
    if (fs >= 0 && H5Dget_num_chunks(d, fs, &nchunks) >= 0)
      for (hsize_t i = 0; i < nchunks && r->n < 64; i++) {
        hsize_t coff[8], csize;
        unsigned mask;
        haddr_t a;
        if (H5Dget_chunk_info(d, fs, i, coff, &mask, &a, &csize) >= 0) {
          r->at[r->n][0] = a;
          r->at[r->n][1] = a + csize;
          r->n++;
        }
      }
    if (fs >= 0) H5Sclose(fs);
  }
  H5Dclose(d);
  return 0;
}

static void find_raw(const char *path, raw_ranges *r) {
  memset(r, 0, sizeof *r);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return;
  H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_NATIVE, add_range, r, H5O_INFO_BASIC);
  H5Fclose(f);
}

static int in_raw(const raw_ranges *r, uint64_t at) {
  for (int i = 0; i < r->n; i++)
    if (at >= r->at[i][0] && at < r->at[i][1]) return 1;
  return 0;
}

/* `cases` flips of `orig`, each checked; prints failing cases, returns their count. */
static int flip_file(const char *what, const char *orig_path, int (*fn)(const char *),
                     uint64_t stream) {
  size_t len = 0;
  unsigned char *orig = read_all(orig_path, &len);
  CU_ASSERT_FATAL(orig != NULL && len > 0);
  char path[4300];
  snprintf(path, sizeof path, "%s/flipped-%s.h5", run_dir, what);
  /* The unflipped file must be accepted, or the test proves nothing. */
  CU_ASSERT_FATAL(run_case(fn, orig, len, 0, 0, path) == ACCEPTED);
  raw_ranges raw;
  find_raw(orig_path, &raw);
  uint64_t s = seed ^ stream;
  int counts[3] = {0, 0, 0}, bad = 0;
  for (int i = 0; i < cases; i++) {
    size_t at = (size_t)(next_rand(&s) % len);
    for (int tries = 0; i % 4 != 0 && in_raw(&raw, at) && tries < 100; tries++)
      at = (size_t)(next_rand(&s) % len);
    unsigned x = (unsigned)(next_rand(&s) % 255) + 1;
    int st = run_case(fn, orig, len, at, x, path);
    if (st == ACCEPTED || st == REFUSED) {
      counts[st - ACCEPTED]++;
    } else {
      bad++;
      fprintf(stderr, "\n  %s case %d (seed %llu): byte %zu ^= 0x%02x -> %s %d", what, i,
              (unsigned long long)seed, at, x, st > 128 ? "signal" : "exit status",
              st > 128 ? st - 128 : st);
      if (st == 128 + SIGALRM) fprintf(stderr, " (a hang: more than %d s)", CASE_SECONDS);
    }
  }
  fprintf(stderr, " [seed %llu, %d flips of %zu bytes: accepted %d, refused %d, failed %d] ",
          (unsigned long long)seed, cases, len, counts[0], counts[1], bad);
  free(orig);
  return bad;
}

/* ------------------------------------------------------------------------ */

/* A tiny run: 16 images of 12x12, conv 4 + pool + linear 4, 2 steps. */
static const char config_text[] =
    "run: {name: byteflip, seed: 1}\n"
    "model:\n"
    "  in_channels: 3\n"
    "  num_classes: 4\n"
    "  features:\n"
    "    - {conv: {out: 4, kernel: 3, padding: 1}}\n"
    "    - relu\n"
    "    - {maxpool: {kernel: 2}}\n"
    "  classifier:\n"
    "    - {linear: 4}\n"
    "data:\n"
    "  synthetic: {n: 16, size: 12, classes: 4, channels: 3}\n"
    "  crop: 8\n"
    "train: {batch_size: 4, epochs: 1, max_steps: 2}\n"
    "optimizer: {lr: 0.01, momentum: 0.9}\n"
    "checkpoint: {every_steps: 2}\n"
    "dist: {threads_per_rank: 1}\n";

static void make_files(void) {
  snprintf(run_dir, sizeof run_dir, "%s", tu_scratch_dir("byteflip"));
  snprintf(config_path, sizeof config_path, "%s/tiny.yaml", run_dir);
  FILE *f = fopen(config_path, "w");
  CU_ASSERT_FATAL(f != NULL);
  fputs(config_text, f);
  fclose(f);
  char cmd[8192], out[1 << 14];
  snprintf(cmd, sizeof cmd, "%s %s --set run.dir=%s", tu_bin("alexnet-train"), config_path,
           run_dir);
  int rc = tu_run_cmd(cmd, out, sizeof out);
  if (rc != 0) fprintf(stderr, "\n$ %s\n%s\n", cmd, out);
  CU_ASSERT_FATAL(rc == 0);
  snprintf(ckpt_path, sizeof ckpt_path, "%s/checkpoints/step-00000002.h5", run_dir);
  CU_ASSERT_FATAL(access(ckpt_path, R_OK) == 0);
  snprintf(dataset_path, sizeof dataset_path, "%s/data.h5", run_dir);
  char err[1024];
  CU_ASSERT_FATAL(data_write_synthetic(dataset_path, 16, 12, 3, 4, 5, err, sizeof err) == 0);
}

static void test_dataset(void) {
  if (!ckpt_path[0]) make_files();
  CU_ASSERT(flip_file("dataset", dataset_path, open_dataset, 1) == 0);
}

static void test_checkpoint(void) {
  if (!ckpt_path[0]) make_files();
  CU_ASSERT(flip_file("checkpoint", ckpt_path, open_checkpoint, 2) == 0);
}

/* A few flips through the binaries: exit 0, 1 or 2, never a signal. */
static void test_binaries(void) {
  if (!ckpt_path[0]) make_files();
  size_t dlen, clen;
  unsigned char *data = read_all(dataset_path, &dlen), *ckpt = read_all(ckpt_path, &clen);
  CU_ASSERT_FATAL(data && ckpt);
  char fdata[4300], fckpt[4300], cmd[16384], out[1 << 14];
  snprintf(fdata, sizeof fdata, "%s/bin-data.h5", run_dir);
  snprintf(fckpt, sizeof fckpt, "%s/bin-ckpt.h5", run_dir);
  char img[4300];
  snprintf(img, sizeof img, "%s/tests/fuzz/corpus/image/cut.jpg", ALEXNET_SOURCE_DIR);
  uint64_t s = seed ^ 3;
  int bad = 0, n = cases / 30 > 0 ? cases / 30 : 1;
  for (int i = 0; i < n; i++) {
    size_t at = (size_t)(next_rand(&s) % dlen), ct = (size_t)(next_rand(&s) % clen);
    unsigned x = (unsigned)(next_rand(&s) % 255) + 1;
    data[at] ^= (unsigned char)x;
    ckpt[ct] ^= (unsigned char)x;
    CU_ASSERT_FATAL(write_all(fdata, data, dlen) == 0 && write_all(fckpt, ckpt, clen) == 0);
    data[at] ^= (unsigned char)x;
    ckpt[ct] ^= (unsigned char)x;
    const char *what[3] = {"eval, flipped dataset", "eval, flipped checkpoint",
                           "predict, flipped checkpoint"};
    for (int k = 0; k < 3; k++) {
      if (k == 0)
        snprintf(cmd, sizeof cmd,
                 "timeout -s KILL %d %s %s --set run.dir=%s --checkpoint %s --data %s",
                 CASE_SECONDS * 3, tu_bin("alexnet-eval"), config_path, run_dir, ckpt_path, fdata);
      else if (k == 1)
        snprintf(
            cmd, sizeof cmd, "timeout -s KILL %d %s %s --set run.dir=%s --checkpoint %s --data %s",
            CASE_SECONDS * 3, tu_bin("alexnet-eval"), config_path, run_dir, fckpt, dataset_path);
      else
        snprintf(cmd, sizeof cmd, "timeout -s KILL %d %s --checkpoint %s --threads 1 %s",
                 CASE_SECONDS * 3, tu_bin("alexnet-predict"), fckpt, img);
      int rc = tu_run_cmd(cmd, out, sizeof out);
      if (rc < 0 || rc > 2 || strstr(out, "signal") || strstr(out, "Sanitizer") ||
          strstr(out, "runtime error")) {
        bad++;
        fprintf(stderr,
                "\n  %s (seed %llu, case %d: dataset byte %zu, checkpoint byte %zu ^= "
                "0x%02x): exit %d\n$ %s\n%s\n",
                what[k], (unsigned long long)seed, i, at, ct, x, rc, cmd, out);
      }
    }
  }
  fprintf(stderr, " [seed %llu, %d flips x 3 runs] ", (unsigned long long)seed, n);
  CU_ASSERT(bad == 0);
  free(data);
  free(ckpt);
}

int main(void) {
  const char *s = getenv("ALEXNET_BYTEFLIP_SEED"), *n = getenv("ALEXNET_BYTEFLIP_CASES");
  if (s && *s) seed = strtoull(s, NULL, 10);
  if (n && *n) cases = atoi(n) > 0 ? atoi(n) : cases;
  printf("byteflip: seed %llu, %d flips per file (ALEXNET_BYTEFLIP_SEED, ALEXNET_BYTEFLIP_CASES)\n",
         (unsigned long long)seed, cases);
  tu_add_suite("byteflip", (tu_test[]){{"dataset file", test_dataset},
                                       {"checkpoint file", test_checkpoint},
                                       {"through the binaries", test_binaries},
                                       {NULL, NULL}});
  return tu_run_all();
}
