#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

int tu_run_all(void) {
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned failed_suites = CU_get_number_of_suites_failed();
  CU_cleanup_registry();
  return (failed || failed_suites) ? 1 : 0;
}

int tu_run_all_ranks(int rank) {
  if (rank == 0) return tu_run_all();
  CU_basic_set_mode(CU_BRM_SILENT);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned failed_suites = CU_get_number_of_suites_failed();
  if (failed || failed_suites) {
    printf("\n[rank %d] failures:\n", rank);
    CU_basic_show_failures(CU_get_failure_list());
    printf("\n");
  }
  CU_cleanup_registry();
  return (failed || failed_suites) ? 1 : 0;
}

void tu_add_suite(const char *name, const tu_test *tests) {
  if (CU_get_registry() == NULL && CU_initialize_registry() != CUE_SUCCESS) {
    fprintf(stderr, "CUnit: cannot initialize the registry\n");
    exit(2);
  }
  CU_pSuite suite = CU_add_suite(name, NULL, NULL);
  if (!suite) {
    fprintf(stderr, "CUnit: cannot add suite %s\n", name);
    exit(2);
  }
  for (const tu_test *t = tests; t->name; t++) {
    if (!CU_add_test(suite, t->name, t->fn)) {
      fprintf(stderr, "CUnit: cannot add test %s\n", t->name);
      exit(2);
    }
  }
}

const char *tu_scratch_dir(const char *name) {
  static char path[4096];
  snprintf(path, sizeof path, "%s/%s", ALEXNET_TEST_TMP, name);
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", path, path);
  if (system(cmd) != 0) {
    fprintf(stderr, "cannot create scratch dir %s\n", path);
    exit(2);
  }
  return path;
}

int tu_run_cmd(const char *cmd, char *out, size_t outlen) {
  char full[8192];
  snprintf(full, sizeof full, "( %s ) 2>&1", cmd);
  FILE *p = popen(full, "r");
  if (!p) {
    snprintf(out, outlen, "popen failed: %s", strerror(errno));
    return -1;
  }
  size_t used = 0;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) {
    if (outlen > 1 && used < outlen - 1) {
      size_t take = got < outlen - 1 - used ? got : outlen - 1 - used;
      memcpy(out + used, buf, take);
      used += take;
    }
  }
  if (outlen) out[used] = '\0';
  int status = pclose(p);
  if (status == -1) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void tu_mark_fault(const char *what) {
  fprintf(stderr, "fault injected at %lld: %s\n", (long long)time(NULL), what);
  fflush(stderr);
}

const char *tu_bin(const char *name) {
  static char path[4096];
  snprintf(path, sizeof path, "%s/%s", ALEXNET_BIN_DIR, name);
  return path;
}

double tu_max_rel_err(const float *a, const float *b, size_t n, double floor, size_t *where) {
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double denom = fabs((double)b[i]);
    if (denom < floor) denom = floor;
    double e = fabs((double)a[i] - (double)b[i]) / denom;
    if (!(e <= worst)) { /* also catches NaN */
      worst = isnan(e) ? INFINITY : e;
      at = i;
    }
  }
  if (where) *where = at;
  return worst;
}
