#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

/* The runner: CUnit runs the cases, these handlers report them, as CUnit's
 * verbose basic mode does plus a third outcome, SKIPPED (tu_skip), which
 * CUnit does not know and would count as passed. */
static struct {
  int quiet;      /* print failures only (ranks other than 0) */
  int rank;       /* for the quiet mode's lines */
  char why[1024]; /* the running case's skip reason, "" if none */
  unsigned passed, failed, skipped, setups_failed;
  char skipped_list[8192]; /* one "suite: case: why" line per skip */
  size_t skipped_len;
} run;

void tu_skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(run.why, sizeof run.why, fmt, ap);
  va_end(ap);
  if (!run.why[0]) snprintf(run.why, sizeof run.why, "(no reason given)");
}

static void on_suite_start(const CU_pSuite suite) {
  if (!run.quiet) printf("\nSuite: %s\n", suite->pName);
}

static void on_test_start(const CU_pTest test, const CU_pSuite suite) {
  (void)suite;
  run.why[0] = '\0';
  if (!run.quiet) {
    printf("  Test: %s ...", test->pName);
    fflush(stdout);
  }
}

static void on_test_complete(const CU_pTest test, const CU_pSuite suite,
                             const CU_pFailureRecord failure) {
  if (failure) {
    run.failed++;
    if (run.quiet) printf("\n[rank %d] %s: %s ...", run.rank, suite->pName, test->pName);
    printf("FAILED\n");
    int k = 1;
    for (CU_pFailureRecord f = failure; f && f->pTest == test; f = f->pNext)
      printf("    %d. %s:%u  - %s\n", k++, f->strFileName ? f->strFileName : "", f->uiLineNumber,
             f->strCondition ? f->strCondition : "");
  } else if (run.why[0]) {
    run.skipped++;
    if (!run.quiet) printf("SKIPPED: %s\n", run.why);
    if (run.skipped_len < sizeof run.skipped_list)
      run.skipped_len += (size_t)snprintf(run.skipped_list + run.skipped_len,
                                          sizeof run.skipped_list - run.skipped_len,
                                          "  %s: %s: %s\n", suite->pName, test->pName, run.why);
  } else {
    run.passed++;
    if (!run.quiet) printf("passed\n");
  }
  fflush(stdout);
}

static void on_setup_failure(const CU_pSuite suite) {
  run.setups_failed++;
  if (run.quiet) printf("\n[rank %d]", run.rank);
  printf("\nSuite %s: its set-up FAILED, none of its %u case(s) ran\n", suite->pName,
         suite->uiNumberOfTests);
}

static void on_teardown_failure(const CU_pSuite suite) {
  run.setups_failed++;
  printf("\nSuite %s: its tear-down FAILED\n", suite->pName);
}

/* Cases added because ALEXNET_TEST_ONLY named them. */
static unsigned only_matched;

/* Runs the registry; returns the exit status: 1 on a failure (a case, a
 * set-up, or a case named in ALEXNET_TEST_ONLY that does not exist, so that
 * a ctest entry never passes by running nothing), else TU_SKIPPED if a case
 * was skipped, else 0. */
static int run_registry(int quiet, int rank) {
  run.quiet = quiet;
  run.rank = rank;
  CU_set_suite_start_handler(on_suite_start);
  CU_set_test_start_handler(on_test_start);
  CU_set_test_complete_handler(on_test_complete);
  CU_set_suite_init_failure_handler(on_setup_failure);
  CU_set_suite_cleanup_failure_handler(on_teardown_failure);
  CU_run_all_tests();
  unsigned failed = run.failed + run.setups_failed;
  const char *only = getenv("ALEXNET_TEST_ONLY");
  if (only) {
    unsigned names = 1;
    for (const char *p = only; *p; p++) names += *p == '|';
    if (only_matched != names) {
      printf("\nALEXNET_TEST_ONLY=\"%s\" names %u case(s), of which %u exist\n", only, names,
             only_matched);
      failed++;
    }
  }
  /* Assertions outside any case (in a set-up) count too. */
  CU_pRunSummary sum = CU_get_run_summary();
  if (!quiet) {
    printf(
        "\nRun summary: %u case(s): %u passed, %u FAILED, %u SKIPPED; %u suite set-up(s) "
        "failed; %u asserts, %u failed; %.3f s\n",
        run.passed + run.failed + run.skipped, run.passed, run.failed, run.skipped,
        run.setups_failed, sum->nAsserts, sum->nAssertsFailed, sum->ElapsedTime);
    if (run.skipped)
      printf("SKIPPED (not passed; exit status %d unless something failed):\n%s", TU_SKIPPED,
             run.skipped_list);
  }
  if (failed || sum->nAssertsFailed) return 1;
  return run.skipped ? TU_SKIPPED : 0;
}

int tu_run_all(void) {
  int rc = run_registry(0, 0);
  CU_cleanup_registry();
  return rc;
}

int tu_run_all_ranks(int rank) {
  int rc = run_registry(rank != 0, rank);
  CU_cleanup_registry();
  return rc;
}

/* 1 when name is one of the '|'-separated names of list. */
static int listed(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *end = strchr(p, '|');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return 1;
    if (!end) break;
    p = end + 1;
  }
  return 0;
}

void tu_add_suite_with(const char *name, int (*setup)(void), int (*teardown)(void),
                       const tu_test *tests) {
  if (CU_get_registry() == NULL && CU_initialize_registry() != CUE_SUCCESS) {
    fprintf(stderr, "CUnit: cannot initialize the registry\n");
    exit(2);
  }
  const char *only = getenv("ALEXNET_TEST_ONLY");
  const char *exclude = getenv("ALEXNET_TEST_EXCLUDE");
  int any = 0;
  for (const tu_test *t = tests; t->name; t++)
    any |= (!only || listed(only, t->name)) && !(exclude && listed(exclude, t->name));
  if (!any) return; /* no set-up for a suite none of whose cases runs */
  CU_pSuite suite = CU_add_suite(name, setup, teardown);
  if (!suite) {
    fprintf(stderr, "CUnit: cannot add suite %s\n", name);
    exit(2);
  }
  for (const tu_test *t = tests; t->name; t++) {
    if (only && !listed(only, t->name)) continue;
    if (exclude && listed(exclude, t->name)) continue;
    only_matched += only != NULL;
    if (!CU_add_test(suite, t->name, t->fn)) {
      fprintf(stderr, "CUnit: cannot add test %s\n", t->name);
      exit(2);
    }
  }
}

void tu_add_suite(const char *name, const tu_test *tests) {
  tu_add_suite_with(name, NULL, NULL, tests);
}

const char *tu_scratch_dir(const char *name) {
  static char path[4096];
  /* An entry split off by alexnet_env_cases runs beside its parent: its
   * scratch directories go under a folder of its own. */
  const char *own = getenv("ALEXNET_TEST_SCRATCH");
  if (own && *own)
    snprintf(path, sizeof path, "%s/%s/%s", ALEXNET_TEST_TMP, own, name);
  else
    snprintf(path, sizeof path, "%s/%s", ALEXNET_TEST_TMP, name);
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", path, path);
  if (system(cmd) != 0) {
    fprintf(stderr, "cannot create scratch dir %s\n", path);
    exit(2);
  }
  return path;
}

/* The first line of each sanitizer's report: a leak, a memory error, and
 * UBSan's (which has no "ERROR:" line). */
static const char *const sanitizer_reports[] = {"ERROR: LeakSanitizer", "ERROR: AddressSanitizer",
                                                ": runtime error: "};
enum { REPORT_TAIL = 32 }; /* longer than every entry above */

/* Whether `tail` (what came before buf, at most REPORT_TAIL - 1 bytes,
 * NUL-terminated) followed by buf[0..n) holds a sanitizer's report; leaves
 * the last bytes in tail for the next call. */
static int saw_report(char tail[2 * REPORT_TAIL], const char *buf, size_t n) {
  for (size_t at = 0; at < n; at += REPORT_TAIL) {
    size_t have = strlen(tail), take = n - at < REPORT_TAIL ? n - at : REPORT_TAIL;
    memcpy(tail + have, buf + at, take);
    tail[have + take] = '\0';
    for (size_t i = 0; i < sizeof sanitizer_reports / sizeof *sanitizer_reports; i++)
      if (strstr(tail, sanitizer_reports[i])) return 1;
    size_t len = strlen(tail), keep = len < REPORT_TAIL - 1 ? len : REPORT_TAIL - 1;
    memmove(tail, tail + len - keep, keep + 1);
  }
  return 0;
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
  char buf[4096], tail[2 * REPORT_TAIL] = "";
  size_t got;
  int report = 0;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) {
    if (!report) report = saw_report(tail, buf, got);
    if (outlen > 1 && used < outlen - 1) {
      size_t take = got < outlen - 1 - used ? got : outlen - 1 - used;
      memcpy(out + used, buf, take);
      used += take;
    }
  }
  if (outlen) out[used] = '\0';
  int status = pclose(p);
  /* A sanitizer's finding fails the case whatever status the caller
   * expects: a leak at exit turns an expected exit 1 into exit 1. */
  if (report) {
    fprintf(stderr, "\n$ %s\n%s\n", cmd, outlen ? out : "");
    CU_FAIL("a sanitizer reported in the output of a command (printed above)");
  }
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
