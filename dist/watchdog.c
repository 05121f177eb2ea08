/*
 * watchdog.c: a collective that does not complete within the timeout ends the
 * job instead of hanging it. A blocked MPI collective cannot be cancelled, so
 * the only way out is MPI_Abort (with Open MPI's mpirun it kills every rank).
 *
 * Every collective of dist arms a deadline in a slot before the call and
 * disarms it after; one thread sleeps on a condition variable until the
 * earliest deadline. When one passes it prints what was stuck, then probes
 * the peers on a communicator of its own: every rank whose watchdog also
 * fired answers (its main or communication thread is stuck in the same
 * collective, so it is alive and reachable); the ranks that do not answer
 * within the probe window are named as gone, stuck elsewhere or unreachable.
 * Then MPI_Abort. A reaper thread makes sure the process ends even if the
 * probe or MPI_Abort itself blocks.
 *
 * A peer process that dies is usually noticed first by mpirun, which aborts
 * the job and names it; the watchdog is for what mpirun cannot see: a rank
 * stuck in a loop or a sleep, a cut network link.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"
#include "internal.h"
#include "util.h"

/* Concurrent collectives: the main thread's and each reducer's thread. */
#define WD_SLOTS 16
/* How long the probe waits for the peers' answers, at most and at least. */
#define WD_PROBE_MAX_S 2.0
#define WD_PROBE_MIN_S 0.5
/* The reaper ends the process this long after the probe window. */
#define WD_REAPER_GRACE_S 5.0
/* Ranks named one by one in the message; the rest are counted. */
#define WD_NAMED_RANKS 16

typedef struct {
  int used;
  double deadline; /* util_now() seconds */
  double timeout;  /* the timeout in force when armed, for the message */
  char what[192];  /* the collective, e.g. "allreduce of bucket 3 (25.0 MB)" */
} wd_slot;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC */
  pthread_t thread;
  int running, stop;
  double timeout; /* seconds, 0 = none */
  MPI_Comm probe;
  wd_slot slot[WD_SLOTS];
} wd = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *reaper_main(void *arg) {
  double after = *(const double *)arg;
  struct timespec ts = {(time_t)after, (long)((after - (double)(time_t)after) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
  fprintf(stderr, "[rank %d] dist: MPI_Abort did not end the process; exiting\n", dist_rank());
  fflush(stderr);
  _exit(1);
  return NULL;
}

/* Asks every peer whether it is alive and also waiting (see the file's
 * comment); writes the ranks that did not answer into list. Returns how many. */
static int probe_peers(double window, char *list, size_t listlen) {
  int rank = dist_rank(), size = dist_size();
  list[0] = '\0';
  if (size < 2) return 0;
  MPI_Request *req = calloc(2 * (size_t)size, sizeof *req);
  int *in = calloc((size_t)size, sizeof *in);
  int *idx = calloc((size_t)size, sizeof *idx);
  char *answered = calloc((size_t)size, 1);
  if (!req || !in || !idx || !answered) {
    snprintf(list, listlen, "(no memory to probe the peers)");
    return -1;
  }
  int out = rank, n = 0;
  for (int p = 0; p < size; p++) {
    if (p == rank) continue;
    /* Errors here would only hide the original problem: ignore them. */
    MPI_Irecv(&in[p], 1, MPI_INT, p, 1, wd.probe, &req[n]);
    idx[n++] = p;
  }
  int nrecv = n;
  for (int p = 0; p < size; p++)
    if (p != rank) MPI_Isend(&out, 1, MPI_INT, p, 1, wd.probe, &req[n++]);
  int pending = nrecv;
  double end = util_now() + window;
  int *done = calloc((size_t)nrecv, sizeof *done);
  while (pending > 0 && done && util_now() < end) {
    int outcount = 0;
    if (MPI_Testsome(nrecv, req, &outcount, done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) break;
    if (outcount == MPI_UNDEFINED) break;
    for (int i = 0; i < outcount; i++) answered[idx[done[i]]] = 1;
    pending -= outcount;
    if (pending > 0) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  int silent = 0;
  size_t used = 0;
  for (int p = 0; p < size; p++) {
    if (p == rank || answered[p]) continue;
    if (silent < WD_NAMED_RANKS && used < listlen)
      used += (size_t)snprintf(list + used, listlen - used, "%s%d", silent ? ", " : "", p);
    silent++;
  }
  if (silent > WD_NAMED_RANKS && used < listlen)
    snprintf(list + used, listlen - used, " and %d more", silent - WD_NAMED_RANKS);
  /* The requests stay pending: the process is about to abort. */
  return silent;
}

static void fire(const wd_slot *s) __attribute__((noreturn));
static void fire(const wd_slot *s) {
  int rank = dist_rank();
  fprintf(stderr,
          "[rank %d] dist: %s did not complete within %.1f s: a peer rank is gone or stuck; "
          "aborting the job\n",
          rank, s->what, s->timeout);
  fflush(stderr);

  double window = s->timeout;
  if (window > WD_PROBE_MAX_S) window = WD_PROBE_MAX_S;
  if (window < WD_PROBE_MIN_S) window = WD_PROBE_MIN_S;
  static double reaper_after;
  reaper_after = window + WD_REAPER_GRACE_S;
  pthread_t reaper;
  if (pthread_create(&reaper, NULL, reaper_main, &reaper_after) == 0) pthread_detach(reaper);

  char list[512];
  int silent = probe_peers(window, list, sizeof list);
  if (silent > 0)
    fprintf(stderr,
            "[rank %d] dist: no answer within %.1f s from rank%s %s (gone, stuck outside the "
            "collective, or unreachable)\n",
            rank, window, silent > 1 ? "s" : "", list);
  else if (silent == 0 && dist_size() > 1)
    fprintf(stderr,
            "[rank %d] dist: every rank answered within %.1f s, so all are alive and waiting: "
            "the network between them is broken or the ranks called different collectives\n",
            rank, window);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  _exit(1);
}

static void *watchdog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&wd.mu);
  while (!wd.stop) {
    int first = -1;
    for (int i = 0; i < WD_SLOTS; i++)
      if (wd.slot[i].used && (first < 0 || wd.slot[i].deadline < wd.slot[first].deadline))
        first = i;
    if (first < 0) {
      pthread_cond_wait(&wd.cv, &wd.mu);
      continue;
    }
    double deadline = wd.slot[first].deadline;
    if (util_now() >= deadline) {
      wd_slot s = wd.slot[first];
      pthread_mutex_unlock(&wd.mu);
      fire(&s);
    }
    struct timespec ts = {(time_t)deadline, (long)((deadline - (double)(time_t)deadline) * 1e9)};
    pthread_cond_timedwait(&wd.cv, &wd.mu, &ts);
  }
  pthread_mutex_unlock(&wd.mu);
  return NULL;
}

void dist_watchdog_start(MPI_Comm probe) {
  pthread_mutex_lock(&wd.mu);
  if (wd.running) {
    pthread_mutex_unlock(&wd.mu);
    return;
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&wd.cv, &attr);
  pthread_condattr_destroy(&attr);
  wd.probe = probe;
  wd.stop = 0;
  memset(wd.slot, 0, sizeof wd.slot);
  if (pthread_create(&wd.thread, NULL, watchdog_main, NULL) != 0) {
    pthread_mutex_unlock(&wd.mu);
    dist_abort(1, "dist: cannot start the watchdog thread");
  }
  wd.running = 1;
  pthread_mutex_unlock(&wd.mu);
}

void dist_watchdog_stop(void) {
  pthread_mutex_lock(&wd.mu);
  if (!wd.running) {
    pthread_mutex_unlock(&wd.mu);
    return;
  }
  wd.stop = 1;
  pthread_cond_signal(&wd.cv);
  pthread_mutex_unlock(&wd.mu);
  pthread_join(wd.thread, NULL);
  pthread_cond_destroy(&wd.cv);
  wd.running = 0;
}

void dist_set_timeout(double seconds) {
  pthread_mutex_lock(&wd.mu);
  wd.timeout = seconds > 0 ? seconds : 0;
  pthread_mutex_unlock(&wd.mu);
}

int dist_watchdog_arm(const char *fmt, ...) {
  pthread_mutex_lock(&wd.mu);
  if (!wd.running || wd.timeout <= 0) {
    pthread_mutex_unlock(&wd.mu);
    return -1;
  }
  int i = 0;
  while (i < WD_SLOTS && wd.slot[i].used) i++;
  if (i == WD_SLOTS) {
    pthread_mutex_unlock(&wd.mu);
    dist_abort(1, "dist: more than %d collectives at once under the watchdog", WD_SLOTS);
  }
  /* The thread only needs waking when this deadline is the new earliest. */
  double deadline = util_now() + wd.timeout;
  int wake = 1;
  for (int j = 0; j < WD_SLOTS; j++)
    if (wd.slot[j].used && wd.slot[j].deadline <= deadline) wake = 0;
  wd_slot *s = &wd.slot[i];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->what, sizeof s->what, fmt, ap);
  va_end(ap);
  s->timeout = wd.timeout;
  s->deadline = deadline;
  s->used = 1;
  if (wake) pthread_cond_signal(&wd.cv);
  pthread_mutex_unlock(&wd.mu);
  return i;
}

void dist_watchdog_disarm(int slot) {
  if (slot < 0 || slot >= WD_SLOTS) return;
  pthread_mutex_lock(&wd.mu);
  wd.slot[slot].used = 0;
  pthread_mutex_unlock(&wd.mu);
}
