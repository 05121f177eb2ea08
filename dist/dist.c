/*
 * dist.c: MPI start and stop, who is where (ranks, node-local ranks, threads),
 * the small collectives of the main thread (broadcasts, metric reductions,
 * agreement on errors) and the fatal-error paths. Every collective runs under
 * the watchdog (watchdog.c); every MPI call is checked by DIST_CHECK.
 *
 * Thread level: dist needs MPI_THREAD_MULTIPLE, because the communication
 * thread of a reducer and the watchdog call MPI while the main thread may be
 * inside MPI too. Open MPI (since 3.0), MPICH and Intel MPI all provide it;
 * an MPI that does not is refused at dist_init with a message.
 */
#include "dist.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "util.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* Largest count dist passes to one MPI call; larger buffers go in pieces. */
#define DIST_MAX_COUNT ((size_t)1 << 30)
/* dist_agree broadcasts the failing rank's message in a buffer of this size. */
#define DIST_AGREE_MSG 1024

static struct {
  int initialized; /* dist_init done, dist_finalize not yet */
  int we_init_mpi; /* MPI was initialized by dist_init (so we finalize it) */
  int rank, size;
  int local_rank, local_size;
  MPI_Comm comm;  /* dup of MPI_COMM_WORLD for the main thread's collectives */
  MPI_Comm probe; /* dup of MPI_COMM_WORLD for the watchdog's probe */
} g = {.size = 1, .local_size = 1};

static const char *thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "an unknown thread level";
  }
}

void dist_init(int *argc, char ***argv) {
  if (g.initialized) return;
  int already = 0, provided = MPI_THREAD_SINGLE;
  MPI_Initialized(&already);
  if (!already) {
#if defined(__SANITIZE_ADDRESS__)
    /* Components Open MPI opens, queries and unloads inside MPI_Init leave
     * allocations no frame of which LeakSanitizer can name: not ours. */
    __lsan_disable();
#endif
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
#if defined(__SANITIZE_ADDRESS__)
    __lsan_enable();
#endif
    if (rc != MPI_SUCCESS) {
      fprintf(stderr, "dist: MPI_Init_thread failed with error %d\n", rc);
      exit(1);
    }
    g.we_init_mpi = 1;
  } else {
    MPI_Query_thread(&provided);
  }
  /* From here on MPI errors come back to DIST_CHECK instead of killing the
   * process inside MPI without saying which call. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  DIST_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g.rank));
  DIST_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &g.size));
  if (provided < MPI_THREAD_MULTIPLE)
    dist_abort(1,
               "dist: the MPI library provides only %s, but dist needs MPI_THREAD_MULTIPLE "
               "(its communication and watchdog threads call MPI while the main thread may); "
               "use an MPI built with thread support",
               thread_level_name(provided));

  MPI_Comm local;
  DIST_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &local));
  DIST_CHECK(MPI_Comm_rank(local, &g.local_rank));
  DIST_CHECK(MPI_Comm_size(local, &g.local_size));
  DIST_CHECK(MPI_Comm_free(&local));

  DIST_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &g.comm));
  DIST_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &g.probe));
  g.initialized = 1;
  dist_watchdog_start(g.probe);
}

void dist_finalize(void) {
  if (!g.initialized) return;
  dist_watchdog_stop();
  DIST_CHECK(MPI_Comm_free(&g.probe));
  DIST_CHECK(MPI_Comm_free(&g.comm));
  g.initialized = 0;
  if (g.we_init_mpi) {
#if defined(__SANITIZE_ADDRESS__)
    /* The sanitizer build's leak check runs here, not at exit: MPI_Finalize
     * drops memory Open MPI never frees and unloads the components that
     * allocated it, whose frames LeakSanitizer then cannot name, let alone
     * suppress. A block unreachable now can never be freed later, so nothing
     * of ours escapes the check (it then skips the one at exit). */
    __lsan_do_leak_check();
#endif
    MPI_Finalize();
    g.we_init_mpi = 0;
  }
}

int dist_rank(void) {
  return g.rank;
}
int dist_size(void) {
  return g.size;
}
int dist_local_size(void) {
  return g.local_size;
}
int dist_local_rank(void) {
  return g.local_rank;
}

int dist_default_threads(void) {
  long cores = util_cpu_count();
  long per_rank = cores / (g.local_size > 0 ? g.local_size : 1);
  return per_rank >= 1 ? (int)per_rank : 1;
}

MPI_Comm dist_comm(void) {
  return g.comm;
}

/* ------------------------------------------------------------------------ */
/* Fatal errors                                                              */

void dist_mpi_failed(int rc, const char *call, const char *file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
    snprintf(msg, sizeof msg, "MPI error code %d", rc);
  const char *base = strrchr(file, '/');
  dist_abort(1, "dist: %s failed at %s:%d: %s", call, base ? base + 1 : file, line, msg);
}

void dist_abort(int code, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[rank %d] %s\n", g.rank, msg);
  fflush(stderr);
  fflush(stdout);
  int mpi_up = 0, mpi_down = 0;
  MPI_Initialized(&mpi_up);
  MPI_Finalized(&mpi_down);
  if (mpi_up && !mpi_down) MPI_Abort(MPI_COMM_WORLD, code);
  exit(code);
}

/* ------------------------------------------------------------------------ */
/* Collectives of the main thread                                            */

static void bcast_chunked(void *buf, size_t n, size_t elem, MPI_Datatype type, int root,
                          const char *what) {
  int slot = dist_watchdog_arm("broadcast of %zu %s from rank %d", n, what, root);
  char *p = buf;
  size_t done = 0;
  do { /* at least one call, so that a bad root is reported even for n == 0 */
    size_t take = n - done < DIST_MAX_COUNT ? n - done : DIST_MAX_COUNT;
    DIST_CHECK(MPI_Bcast(p + done * elem, (int)take, type, root, g.comm));
    done += take;
  } while (done < n);
  dist_watchdog_disarm(slot);
}

void dist_bcast_floats(float *buf, size_t n, int root) {
  bcast_chunked(buf, n, sizeof(float), MPI_FLOAT, root, "floats");
}

void dist_bcast_bytes(void *buf, size_t n, int root) {
  bcast_chunked(buf, n, 1, MPI_BYTE, root, "bytes");
}

void dist_allreduce_sum_doubles(double *buf, int n) {
  int slot = dist_watchdog_arm("allreduce of %d doubles", n);
  DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, g.comm));
  dist_watchdog_disarm(slot);
}

void dist_allreduce_sum_int64(int64_t *buf, int n) {
  int slot = dist_watchdog_arm("allreduce of %d int64s", n);
  DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_INT64_T, MPI_SUM, g.comm));
  dist_watchdog_disarm(slot);
}

void dist_barrier(void) {
  int slot = dist_watchdog_arm("barrier");
  DIST_CHECK(MPI_Barrier(g.comm));
  dist_watchdog_disarm(slot);
}

void dist_move_floats(float *buf, size_t n, int from, int to) {
  if (from == to || (g.rank != from && g.rank != to)) return;
  int slot = g.rank == from ? dist_watchdog_arm("send of %zu floats to rank %d", n, to)
                            : dist_watchdog_arm("receive of %zu floats from rank %d", n, from);
  for (size_t done = 0; done < n;) {
    size_t take = n - done < DIST_MAX_COUNT ? n - done : DIST_MAX_COUNT;
    if (g.rank == from)
      DIST_CHECK(MPI_Send(buf + done, (int)take, MPI_FLOAT, to, 0, g.comm));
    else
      DIST_CHECK(MPI_Recv(buf + done, (int)take, MPI_FLOAT, from, 0, g.comm, MPI_STATUS_IGNORE));
    done += take;
  }
  dist_watchdog_disarm(slot);
}

int dist_agree(int local_error, char *msg, size_t msglen) {
  int mine = local_error ? g.rank : g.size, lowest = g.size;
  int slot = dist_watchdog_arm("agreement on errors (allreduce)");
  DIST_CHECK(MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, g.comm));
  dist_watchdog_disarm(slot);
  if (lowest >= g.size) return 0;

  char buf[DIST_AGREE_MSG] = "";
  if (g.rank == lowest && msg && msglen)
    snprintf(buf, sizeof buf, "%.*s", (int)strnlen(msg, msglen), msg);
  slot = dist_watchdog_arm("agreement on errors (broadcast of rank %d's message)", lowest);
  DIST_CHECK(MPI_Bcast(buf, (int)sizeof buf, MPI_CHAR, lowest, g.comm));
  dist_watchdog_disarm(slot);
  buf[sizeof buf - 1] = '\0';
  if (msg && msglen) snprintf(msg, msglen, "%s", buf);
  return lowest + 1;
}

double dist_allreduce_average_plain(float *grads, size_t n) {
  double t0 = util_now();
  if (g.size > 1) {
    int slot = dist_watchdog_arm("plain allreduce of %zu floats", n);
    for (size_t done = 0; done < n;) {
      size_t take = n - done < DIST_MAX_COUNT ? n - done : DIST_MAX_COUNT;
      DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, grads + done, (int)take, MPI_FLOAT, MPI_SUM, g.comm));
      done += take;
    }
    dist_watchdog_disarm(slot);
    const float scale = 1.0f / (float)g.size;
    for (size_t i = 0; i < n; i++) grads[i] *= scale;
  }
  return 1e3 * (util_now() - t0);
}
