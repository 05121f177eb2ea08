/*
 * dist/internal.h: what the files of dist/ share and nobody else sees: the
 * checked-MPI-call macro, the communicator dist uses for the main thread's
 * collectives, and the watchdog's arm/disarm around every collective.
 */
#ifndef DIST_INTERNAL_H
#define DIST_INTERNAL_H

#include <mpi.h>

#include "dist.h"

/* Every MPI call of dist goes through this: on failure it prints the call,
 * file:line, the rank and MPI_Error_string, then aborts the whole job. */
#define DIST_CHECK(call)                                                               \
  do {                                                                                 \
    int dist_rc_ = (call);                                                             \
    if (dist_rc_ != MPI_SUCCESS) dist_mpi_failed(dist_rc_, #call, __FILE__, __LINE__); \
  } while (0)

/* Prints "[rank R] dist: <call> failed at file:line: <MPI's message>" and
 * aborts the job. Never returns. */
void dist_mpi_failed(int rc, const char *call, const char *file, int line)
    __attribute__((noreturn));

/* dist's duplicate of MPI_COMM_WORLD for the main thread's collectives
 * (errors returned, not fatal inside MPI). Valid between init and finalize. */
MPI_Comm dist_comm(void);

/* Starts the watchdog thread; probe is a communicator of its own, used only
 * when a deadline passes to ask the peers whether they are alive. */
void dist_watchdog_start(MPI_Comm probe);
/* Stops and joins the watchdog thread (no deadline may be armed). */
void dist_watchdog_stop(void);
/* Arms a deadline of the current timeout for the collective described by
 * fmt; returns a slot for dist_watchdog_disarm, or -1 when there is no
 * timeout. Thread-safe: the main and the communication thread both arm. */
int dist_watchdog_arm(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void dist_watchdog_disarm(int slot);

/* PowerSGD (powersgd.c) over grads[0, n): the reducer's, on its comm.
 * create aborts with a message on rank <= 0 or a bad matrix. */
typedef struct dist_powersgd dist_powersgd;
dist_powersgd *dist_powersgd_create(float *grads, size_t n, const dist_matrix *mats, int nmats,
                                    int rank, double min_ratio, MPI_Comm comm);
void dist_powersgd_free(dist_powersgd *p);
/* One compressed average of the whole buffer, in place; collective. */
void dist_powersgd_reduce(dist_powersgd *p);
size_t dist_powersgd_wire_floats(const dist_powersgd *p);
size_t dist_powersgd_plain_floats(const dist_powersgd *p);
int dist_powersgd_matrices(const dist_powersgd *p);
size_t dist_powersgd_state_floats(const dist_powersgd *p);
size_t dist_powersgd_error_floats(const dist_powersgd *p);
/* Copies state[offset, offset + count) to buf (to_buf) or from it; the
 * range lies inside the state (the reducer checks). Layout in dist.h. */
void dist_powersgd_state(dist_powersgd *p, float *buf, size_t offset, size_t count, int to_buf);

#endif
