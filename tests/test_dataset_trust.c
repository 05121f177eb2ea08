/*
 * Dataset files that cannot be read as they claim (issue 17, item 7), each
 * refused at open with a message naming the file and the reason, instead
 * of failing mid-run or training on zeros:
 *   - /images compressed with a filter this HDF5 cannot decode (h5py's lzf);
 *   - images declared huge with no storage (20000x20000, sparse): bounded
 *     by DATA_MAX_IMAGE_PIXELS before any reader allocates one;
 *   - /images only partly written (a sparse or unfinished file);
 * while an h5py file written whole (gzip, vlen strings) is still accepted.
 * And: a file overwritten in place at the same size while open is noticed
 * at the next read; the synthetic set a config without data generates
 * depends on run.seed (its file name says the seed).
 *
 * The h5py files need Debian's python3-h5py (launch/install-deps): without
 * it the test is skipped (exit 77).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "testutil.h"

static char dir[4200];

/* Writes an alexnet-hdf5 file with h5py: images of `shape`, `chunks`,
 * compression `comp` (a Python expression), `fill` = "all", "first" (only
 * image 0) or "none". */
static void h5py_file(const char *name, const char *shape, const char *chunks, const char *comp,
                      const char *fill) {
  char cmd[8192], out[8192];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 - <<'EOF'\n"
           "import h5py, numpy as np\n"
           "with h5py.File('%s/%s', 'w') as f:\n"
           "    d = f.create_dataset('images', shape=%s, dtype='u1', chunks=%s, "
           "compression=%s)\n"
           "    fill = '%s'\n"
           "    if fill == 'all': d[...] = np.arange(d.size, dtype=np.uint64).astype('u1')"
           ".reshape(d.shape)\n"
           "    if fill == 'first': d[0] = 7\n"
           "    f['labels'] = np.zeros(d.shape[0], 'i4')\n"
           "    f['classes'] = np.array(['a', 'b'], dtype=h5py.string_dtype())\n"
           "    f.attrs['format'] = 'alexnet-hdf5'\n"
           "    f.attrs['version'] = 1\n"
           "    f.attrs['num_classes'] = 2\n"
           "    f.attrs['mean'] = np.full(3, 0.5, 'f4')\n"
           "    f.attrs['std'] = np.full(3, 0.25, 'f4')\n"
           "EOF\n",
           dir, name, shape, chunks, comp, fill);
  int rc = tu_run_cmd(cmd, out, sizeof out);
  if (rc != 0) fprintf(stderr, "\n%s\n%s\n", cmd, out);
  CU_ASSERT_FATAL(rc == 0);
}

/* data_dataset_open's message for dir/name, or "" when it opens. */
static const char *open_msg(const char *name) {
  static char err[4096];
  char path[4300];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  data_dataset ds;
  err[0] = '\0';
  if (data_dataset_open(path, &ds, err, sizeof err) == 0) data_dataset_close(&ds);
  return err;
}

static void test_h5py_files(void) {
  h5py_file("gzip.h5", "(8, 16, 16, 3)", "(1, 16, 16, 3)", "'gzip'", "all");
  CU_ASSERT_STRING_EQUAL(open_msg("gzip.h5"), "");

  h5py_file("lzf.h5", "(8, 16, 16, 3)", "(1, 16, 16, 3)", "'lzf'", "all");
  TU_ASSERT_CONTAINS(open_msg("lzf.h5"),
                     "lzf.h5: /images is stored with HDF5 filter 32000 "
                     "('lzf'), which this build of HDF5 cannot decode");

  h5py_file("huge.h5", "(2, 20000, 20000, 3)", "(1, 64, 64, 3)", "None", "none");
  TU_ASSERT_CONTAINS(open_msg("huge.h5"),
                     "huge.h5: /images are 20000x20000, more than the "
                     "67108864 pixels per image this build reads");

  h5py_file("sparse.h5", "(4, 16, 16, 3)", "(1, 16, 16, 3)", "None", "first");
  TU_ASSERT_CONTAINS(open_msg("sparse.h5"),
                     "sparse.h5: /images is not all written (a sparse "
                     "or unfinished file");

  h5py_file("unwritten.h5", "(4, 16, 16, 3)", "None", "None", "none");
  TU_ASSERT_CONTAINS(open_msg("unwritten.h5"), "/images is not all written");
}

/* Overwritten in place, same size, while open: the next read says so. */
static void test_overwritten(void) {
  char a[4300], b[4300], err[4096];
  snprintf(a, sizeof a, "%s/a.h5", dir);
  snprintf(b, sizeof b, "%s/b.h5", dir);
  CU_ASSERT_FATAL(data_write_synthetic(a, 16, 12, 3, 4, 1, err, sizeof err) == 0);
  CU_ASSERT_FATAL(data_write_synthetic(b, 16, 12, 3, 4, 2, err, sizeof err) == 0);
  struct stat sa, sb;
  CU_ASSERT_FATAL(stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_size == sb.st_size);
  data_dataset ds;
  CU_ASSERT_FATAL(data_dataset_open(a, &ds, err, sizeof err) == 0);
  uint8_t px[12 * 12 * 3];
  CU_ASSERT(data_dataset_read(&ds, 3, px, err, sizeof err) == 0);
  nanosleep(&(struct timespec){0, 30000000}, NULL); /* past the clock's granularity */
  FILE *in = fopen(b, "rb");
  int fd = open(a, O_WRONLY); /* no O_TRUNC: written over, as a copy in place would */
  char buf[65536];
  size_t got;
  while (in && fd >= 0 && (got = fread(buf, 1, sizeof buf, in)) > 0)
    CU_ASSERT(write(fd, buf, got) == (ssize_t)got);
  if (in) fclose(in);
  if (fd >= 0) close(fd);
  CU_ASSERT(data_dataset_read(&ds, 4, px, err, sizeof err) != 0);
  TU_ASSERT_CONTAINS(err,
                     "a.h5: the file was modified after it was opened (written over in "
                     "place) when reading sample 4 of /images");
  data_dataset_close(&ds);
}

/* The synthetic set of a config without data is a function of run.seed: two
 * seeds, two files (before, the second run reused the first one's images).
 * Both runs share run.dir (where the sets are written) but not a checkpoint
 * directory: a fresh run refuses another run's checkpoints. */
static void test_synthetic_seed(void) {
  char run[4300], cmd[16384], out[1 << 14];
  snprintf(run, sizeof run, "%s/run", dir);
  for (int seed = 1; seed <= 2; seed++) {
    snprintf(cmd, sizeof cmd,
             "%s %s/configs/debug.yaml --set run.dir=%s --set run.seed=%d "
             "--set checkpoint.dir=%s/checkpoints-seed%d "
             "--set train.max_steps=1 --set checkpoint.every_steps=0 --set checkpoint.resume=never "
             "--set dist.threads_per_rank=1",
             tu_bin("alexnet-train"), ALEXNET_SOURCE_DIR, run, seed, run, seed);
    int rc = tu_run_cmd(cmd, out, sizeof out);
    if (rc != 0) fprintf(stderr, "\n$ %s\n%s\n", cmd, out);
    CU_ASSERT(rc == 0);
  }
  char p1[4400], p2[4400];
  snprintf(p1, sizeof p1, "%s/synthetic-train-512-40-4-3-seed1.h5", run);
  snprintf(p2, sizeof p2, "%s/synthetic-train-512-40-4-3-seed2.h5", run);
  CU_ASSERT(access(p1, R_OK) == 0);
  CU_ASSERT(access(p2, R_OK) == 0);
  data_dataset d1, d2;
  char err[4096];
  if (data_dataset_open(p1, &d1, err, sizeof err) == 0) {
    if (data_dataset_open(p2, &d2, err, sizeof err) == 0) {
      uint8_t x[40 * 40 * 3], y[40 * 40 * 3];
      CU_ASSERT(data_dataset_read(&d1, 0, x, err, sizeof err) == 0);
      CU_ASSERT(data_dataset_read(&d2, 0, y, err, sizeof err) == 0);
      CU_ASSERT(memcmp(x, y, sizeof x) != 0);
      data_dataset_close(&d2);
    }
    data_dataset_close(&d1);
  }
}

int main(void) {
  char out[4096];
  if (tu_run_cmd("/usr/bin/python3 -c 'import h5py'", out, sizeof out) != 0) {
    printf("SKIPPED: /usr/bin/python3 cannot import h5py (apt-get install python3-h5py): %s\n",
           out);
    return 77;
  }
  snprintf(dir, sizeof dir, "%s", tu_scratch_dir("dataset_trust"));
  tu_add_suite("dataset_trust", (tu_test[]){{"files h5py wrote", test_h5py_files},
                                            {"overwritten in place while open", test_overwritten},
                                            {"synthetic set follows run.seed", test_synthetic_seed},
                                            {NULL, NULL}});
  return tu_run_all();
}
