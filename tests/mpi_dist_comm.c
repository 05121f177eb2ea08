/*
 * mpi_dist_comm: dist's small collectives under mpiexec (every rank runs the
 * same suites): ranks and node-local ranks, default threads, broadcasts,
 * reductions, agreement on errors, a watchdog that stays quiet when nothing
 * is stuck.
 *
 * With "--fault <mode>" it instead plays one failure for tests/dist.cmake,
 * which checks the message, the exit status and the time to die:
 *   watchdog-barrier  the last rank sleeps instead of joining a barrier
 *   abort             the last rank calls dist_abort(3, ...)
 *   mpi-error         a broadcast from a root that does not exist
 *   kill              the last rank dies by SIGKILL while the others wait
 */
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"
#include "testutil.h"

static void test_ranks(void) {
  int r = dist_rank(), s = dist_size(), mr = -1, ms = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &mr);
  MPI_Comm_size(MPI_COMM_WORLD, &ms);
  CU_ASSERT_EQUAL(r, mr);
  CU_ASSERT_EQUAL(s, ms);
  /* ctest runs every rank on this one node. */
  CU_ASSERT_EQUAL(dist_local_size(), s);
  CU_ASSERT(dist_local_rank() >= 0 && dist_local_rank() < dist_local_size());
  int64_t sum[2] = {dist_local_rank(), 1};
  dist_allreduce_sum_int64(sum, 2);
  CU_ASSERT_EQUAL(sum[0], (int64_t)s * (s - 1) / 2); /* local ranks are 0..s-1 */
  CU_ASSERT_EQUAL(sum[1], s);
}

static void test_default_threads(void) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  long want = cores / dist_local_size();
  if (want < 1) want = 1;
  CU_ASSERT_EQUAL(dist_default_threads(), want);
  CU_ASSERT(dist_default_threads() >= 1);
}

static void test_bcast(void) {
  int s = dist_size(), r = dist_rank();
  for (int root = 0; root<s; root += s - 1> 0 ? s - 1 : 1) {
    float f[1001];
    for (int i = 0; i < 1001; i++) f[i] = r == root ? 0.25f * (float)i + (float)root : -1.0f;
    dist_bcast_floats(f, 1001, root);
    int ok = 1;
    for (int i = 0; i < 1001; i++) ok &= f[i] == 0.25f * (float)i + (float)root;
    CU_ASSERT(ok);

    char b[37];
    for (int i = 0; i < 37; i++) b[i] = r == root ? (char)('a' + i % 26) : 0;
    dist_bcast_bytes(b, sizeof b, root);
    ok = 1;
    for (int i = 0; i < 37; i++) ok &= b[i] == (char)('a' + i % 26);
    CU_ASSERT(ok);
  }
  float none = 7.0f; /* an empty broadcast is a valid no-op */
  dist_bcast_floats(&none, 0, 0);
  CU_ASSERT_EQUAL(none, 7.0f);
}

static void test_allreduce(void) {
  int s = dist_size(), r = dist_rank();
  double d[3] = {r, 1.5, -0.25 * r};
  dist_allreduce_sum_doubles(d, 3);
  CU_ASSERT_EQUAL(d[0], s * (s - 1) / 2.0);
  CU_ASSERT_EQUAL(d[1], 1.5 * s);
  CU_ASSERT_EQUAL(d[2], -0.25 * s * (s - 1) / 2.0);
  int64_t i[2] = {(int64_t)(r + 1) << 40, -1};
  dist_allreduce_sum_int64(i, 2);
  CU_ASSERT_EQUAL(i[0], ((int64_t)s * (s + 1) / 2) << 40);
  CU_ASSERT_EQUAL(i[1], -s);
  dist_barrier();
}

static void test_agree_all_fine(void) {
  char msg[64] = "untouched";
  CU_ASSERT_EQUAL(dist_agree(0, msg, sizeof msg), 0);
  CU_ASSERT_STRING_EQUAL(msg, "untouched");
}

/* Ranks for which fails(rank) is true report an error naming themselves;
 * every rank must get the lowest of them and its message. */
static void agree_case(int (*fails)(int rank, int size)) {
  int s = dist_size(), r = dist_rank(), lowest = -1;
  for (int k = s - 1; k >= 0; k--)
    if (fails(k, s)) lowest = k;
  char msg[128];
  snprintf(msg, sizeof msg, "rank %d: NaN loss at step 12", r);
  int got = dist_agree(fails(r, s), msg, sizeof msg);
  CU_ASSERT_EQUAL(got, lowest + 1);
  char want[128];
  if (lowest >= 0)
    snprintf(want, sizeof want, "rank %d: NaN loss at step 12", lowest);
  else
    snprintf(want, sizeof want, "rank %d: NaN loss at step 12", r);
  CU_ASSERT_STRING_EQUAL(msg, want);
}
static int fails_odd(int rank, int size) {
  return (void)size, rank % 2 == 1;
}
static int fails_last(int rank, int size) {
  return rank == size - 1;
}
static int fails_all(int rank, int size) {
  return (void)rank, (void)size, 1;
}
static void test_agree_lowest_odd(void) {
  agree_case(fails_odd);
}
static void test_agree_last(void) {
  agree_case(fails_last);
}
static void test_agree_all_fail(void) {
  agree_case(fails_all);
}

static void test_agree_long_message(void) {
  int s = dist_size(), r = dist_rank();
  static char msg[3000];
  memset(msg, 'x', sizeof msg - 1);
  msg[sizeof msg - 1] = '\0';
  msg[0] = (char)('0' + r % 10);
  int got = dist_agree(r == s - 1, msg, sizeof msg);
  CU_ASSERT_EQUAL(got, s);
  /* The message travels in a fixed buffer: at most 1023 characters. */
  CU_ASSERT_EQUAL(strlen(msg), 1023);
  CU_ASSERT_EQUAL(msg[0], (char)('0' + (s - 1) % 10));

  /* Rank 0 fails with a long message; the others' buffers hold 8 bytes. */
  char big[32] = "r0-abcdefghijkl", small[8] = "";
  got = dist_agree(r == 0, r == 0 ? big : small, r == 0 ? sizeof big : sizeof small);
  CU_ASSERT_EQUAL(got, 1);
  CU_ASSERT_STRING_EQUAL(r == 0 ? big : small, r == 0 ? "r0-abcdefghijkl" : "r0-abcd");
}

static void test_timeout_quiet(void) {
  /* Collectives that complete must not trip the watchdog (armed and disarmed
   * 400 times: more than its slots, so a slot not freed would show). 20 s,
   * not less: with 4 ranks on 2 busy cores one collective can take seconds. */
  dist_set_timeout(20.0);
  for (int k = 0; k < 200; k++) {
    double d = 1;
    dist_allreduce_sum_doubles(&d, 1);
    CU_ASSERT_EQUAL(d, dist_size());
    dist_barrier();
  }
  dist_set_timeout(0);
}

static int run_fault(const char *mode) {
  int s = dist_size(), r = dist_rank();
  if (!strcmp(mode, "watchdog-barrier")) {
    dist_set_timeout(1.0);
    if (r == s - 1) {
      tu_mark_fault("the last rank sleeps instead of joining the barrier");
      sleep(60); /* stuck outside the collective; mpirun ends us */
    } else
      dist_barrier();
    fprintf(stderr, "[rank %d] the barrier completed: the watchdog did not fire\n", r);
    return 0;
  }
  if (!strcmp(mode, "abort")) {
    if (r == s - 1) dist_abort(3, "test abort from the last rank, code %d", 3);
    dist_barrier(); /* the others wait; the abort must end them */
    return 0;
  }
  if (!strcmp(mode, "kill")) {
    dist_set_timeout(5.0); /* mpirun should be faster; the watchdog backs it up */
    if (r == s - 1) {
      tu_mark_fault("the last rank raises SIGKILL");
      raise(SIGKILL);
    }
    dist_barrier();
    return 0;
  }
  if (!strcmp(mode, "mpi-error")) {
    float f = 1;
    dist_bcast_floats(&f, 1, s); /* no such root */
    return 0;
  }
  fprintf(stderr, "mpi_dist_comm: unknown fault mode %s\n", mode);
  return 2;
}

int main(int argc, char **argv) {
  dist_init(&argc, &argv);
  if (argc == 3 && !strcmp(argv[1], "--fault")) {
    int rc = run_fault(argv[2]);
    dist_finalize();
    return rc;
  }
  static const tu_test tests[] = {{"ranks and node-local ranks", test_ranks},
                                  {"default threads = cores / local ranks", test_default_threads},
                                  {"broadcast floats and bytes from each end", test_bcast},
                                  {"allreduce doubles and int64", test_allreduce},
                                  {"agree: all fine", test_agree_all_fine},
                                  {"agree: lowest of the odd ranks", test_agree_lowest_odd},
                                  {"agree: only the last rank", test_agree_last},
                                  {"agree: every rank fails", test_agree_all_fail},
                                  {"agree: long messages are truncated", test_agree_long_message},
                                  {"watchdog quiet when collectives complete", test_timeout_quiet},
                                  {NULL, NULL}};
  tu_add_suite("dist collectives", tests);
  int rc = tu_run_all_ranks(dist_rank());
  dist_finalize();
  return rc;
}
