/*
 * testutil: what every CUnit test executable shares: running the registered
 * suites, scratch directories, running a command and capturing its output,
 * and comparing float arrays.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Exit status of a test executable whose only "failures" were skips; ctest
 * reports it as skipped (SKIP_RETURN_CODE 77, tests/CMakeLists.txt). */
#define TU_SKIPPED 77

/* Runs every registered suite (basic mode, verbose) and returns the process
 * exit status: 1 if a case or a suite's set-up failed, else TU_SKIPPED if a
 * case was skipped (tu_skip), else 0. Call from main after adding suites. */
int tu_run_all(void);

/* For MPI tests, where every rank runs the same suites: rank 0 runs them as
 * tu_run_all does, the other ranks print only their failures, each after a
 * "[rank R] suite: case" line. Returns this rank's exit status (mpiexec fails if any does). */
int tu_run_all_ranks(int rank);

/* Adds a suite with the given tests (NULL-terminated name/function pairs).
 * The environment can narrow what is added (tests/CMakeLists.txt,
 * alexnet_env_cases): ALEXNET_TEST_ONLY="case|case..." adds only those cases,
 * ALEXNET_TEST_EXCLUDE="case|case..." all but those. */
typedef struct {
  const char *name;
  void (*fn)(void);
} tu_test;
void tu_add_suite(const char *name, const tu_test *tests);

/* The same with a suite set-up, run once before the suite's first case, and a
 * tear-down after its last (either may be NULL). They return 0 on success; a
 * set-up that fails (after printing why) fails the suite and runs none of its
 * cases. What a set-up prepares for the cases (a trained checkpoint, files)
 * lives in the test file's fixture, written only by the set-up. */
void tu_add_suite_with(const char *name, int (*setup)(void), int (*teardown)(void),
                       const tu_test *tests);

/* Marks the running case as skipped because the machine cannot run it (a
 * tool, a data set or a privilege is missing): it is reported "SKIPPED: <why>"
 * instead of "passed" (unless it also failed an assertion), the summary lists
 * it and the executable exits TU_SKIPPED unless something failed. The case
 * should return right after (TU_SKIP does both). */
void tu_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define TU_SKIP(...)      \
  do {                    \
    tu_skip(__VA_ARGS__); \
    return;               \
  } while (0)

/* A fresh, empty directory under the build's test-tmp named after `name`
 * (under test-tmp/$ALEXNET_TEST_SCRATCH/ when that is set); returns a static
 * buffer path (valid until the next call). */
const char *tu_scratch_dir(const char *name);

/* Runs a shell command, captures stdout+stderr (up to outlen bytes) and
 * returns its exit status (or 128+signal). */
int tu_run_cmd(const char *cmd, char *out, size_t outlen);

/* For fault tests timed by tests/dist.cmake: prints "fault injected at <Unix
 * seconds>: <what>" to stderr, so that the time to die is measured from the
 * fault, not from a start-up whose length on a loaded machine is no promise. */
void tu_mark_fault(const char *what);

/* Path of an executable built by this project: ALEXNET_BIN_DIR/<name>. */
const char *tu_bin(const char *name);

/* Largest |a-b| / max(|b|, floor) over n elements; *where receives its index. */
double tu_max_rel_err(const float *a, const float *b, size_t n, double floor, size_t *where);

/* Asserts that haystack contains needle; prints both when it does not. */
#define TU_ASSERT_CONTAINS(haystack, needle)                                          \
  do {                                                                                \
    int tu_found_ = strstr((haystack), (needle)) != NULL;                             \
    if (!tu_found_)                                                                   \
      fprintf(stderr, "\n  expected to find \"%s\" in:\n%s\n", (needle), (haystack)); \
    CU_ASSERT(tu_found_);                                                             \
  } while (0)

#endif
