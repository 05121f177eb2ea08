/*
 * testutil: what every CUnit test executable shares: running the registered
 * suites, scratch directories, running a command and capturing its output,
 * and comparing float arrays.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>
#include <stddef.h>

/* Runs every registered suite (basic mode, verbose) and returns the process
 * exit status: 0 if all passed, 1 otherwise. Call from main after adding suites. */
int tu_run_all(void);

/* For MPI tests, where every rank runs the same suites: rank 0 runs them as
 * tu_run_all does, the other ranks print only their failures, under a
 * "[rank R]" line. Returns this rank's exit status (mpiexec fails if any does). */
int tu_run_all_ranks(int rank);

/* Adds a suite with the given tests (NULL-terminated name/function pairs). */
typedef struct {
  const char *name;
  void (*fn)(void);
} tu_test;
void tu_add_suite(const char *name, const tu_test *tests);

/* A fresh, empty directory under the build's test-tmp named after `name`;
 * returns a static buffer path (valid until the next call). */
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
#define TU_ASSERT_CONTAINS(haystack, needle)                                              \
  do {                                                                                    \
    int tu_found_ = strstr((haystack), (needle)) != NULL;                                 \
    if (!tu_found_)                                                                       \
      fprintf(stderr, "\n  expected to find \"%s\" in:\n%s\n", (needle), (haystack));     \
    CU_ASSERT(tu_found_);                                                                 \
  } while (0)

#endif
