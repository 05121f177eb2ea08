/*
 * dist: everything that crosses between MPI ranks. The gradient of a whole
 * network is one flat float buffer; dist averages it over the ranks by
 * allreduce in buckets of bucket_mb, each started by a communication thread as
 * soon as backward has finished it (last layers first), so that communication
 * overlaps the rest of backward. Also: broadcast of the initial weights,
 * reductions of metrics, agreement on errors, and a watchdog that aborts the
 * job when a collective does not complete within timeout_s.
 *
 * Errors in MPI calls are fatal: dist prints the call, the rank and MPI's
 * message, then aborts the whole job (MPI_Abort), so nothing hangs.
 */
#ifndef DIST_DIST_H
#define DIST_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Initializes MPI (MPI_Init_thread, MPI_THREAD_MULTIPLE) and this module,
 * starts the watchdog thread. Works without mpirun (a singleton, 1 rank).
 * Aborts with a message if MPI does not provide MPI_THREAD_MULTIPLE. */
void dist_init(int *argc, char ***argv);
/* Stops the watchdog and finalizes MPI (if dist_init initialized it).
 * Free every reducer first. */
void dist_finalize(void);

int dist_rank(void);
int dist_size(void);
/* Ranks on this node (MPI_COMM_TYPE_SHARED) and this rank's index among them. */
int dist_local_size(void);
int dist_local_rank(void);
/* Threads this rank should use: online cores of the node / ranks on the
 * node, >= 1. */
int dist_default_threads(void);

/* Collectives on (a duplicate of) the world communicator, under the
 * watchdog; the main thread's. A bad root aborts with MPI's message. */
void dist_bcast_floats(float *buf, size_t n, int root);
void dist_bcast_bytes(void *buf, size_t n, int root);
void dist_allreduce_sum_doubles(double *buf, int n);
void dist_allreduce_sum_int64(int64_t *buf, int n);
void dist_barrier(void);
/* Moves n floats from rank `from`'s buf into rank `to`'s buf (a send and a
 * receive on the world communicator, under the watchdog); every other rank,
 * and every rank when from == to, returns at once. */
void dist_move_floats(float *buf, size_t n, int from, int to);

/* Agreement on failure: every rank passes its local error (0 = fine) and a
 * message; returns 0 on every rank if all were fine, else the lowest failing
 * rank + 1 on every rank, and copies that rank's message into msg (msglen). */
int dist_agree(int local_error, char *msg, size_t msglen);

/* Prints "[rank R] message" to stderr and aborts every rank with code. */
void dist_abort(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Watchdog: a collective started under dist that does not complete within
 * seconds aborts the job (MPI_Abort) naming the collective, this rank, and
 * the ranks that did not answer a probe sent by the watchdog (those gone,
 * stuck outside the collective, or unreachable). 0 = no limit (the default).
 * Applies to collectives started after the call. */
void dist_set_timeout(double seconds);

/* ------------------------------------------------------------------------ */
/* Bucketed, overlapped gradient averaging                                   */

/* NONE, BF16 and FP16 are wire formats of the buckets; POWERSGD replaces
 * the weight matrices by rank-r approximations (dist/powersgd.c) from the
 * pass powersgd_start_step on, and averages plainly before. */
typedef enum {
  DIST_COMPRESS_NONE,
  DIST_COMPRESS_BF16,
  DIST_COMPRESS_FP16,
  DIST_COMPRESS_POWERSGD
} dist_compress;

/* A weight gradient as a matrix: grads[offset, offset + rows cols),
 * row-major (rows, cols) = (out, in/groups kh kw) for a conv or linear. */
typedef struct {
  size_t offset, rows, cols;
} dist_matrix;

/* How a bucket is summed over the ranks.
 *   AUTO  RING when the ranks span more than one node, else MPI
 *   MPI   one blocking MPI_Allreduce per bucket (Open MPI's choice of
 *         algorithm); the fastest in shared memory
 *   RING  dist's own ring reduce-scatter + allgather with non-blocking
 *         point-to-point messages, several buckets in flight at once, so
 *         that a network link never waits for a rank to start the next
 *         step (docs/distributed.md, "Over a network")
 *   HIER  hierarchical: the ranks of a node sum into its first rank through
 *         shared memory (MPI_Reduce), those leaders run the ring, and each
 *         broadcasts the average back to its node (MPI_Ibcast). Fewer bytes
 *         cross the network, but AUTO does not pick it: on 2 emulated hosts
 *         x 2 ranks it measured slower than RING (docs/multinode.md). On
 *         one node it works (one leader, no ring) but only adds a step. */
typedef enum { DIST_ALGO_AUTO, DIST_ALGO_MPI, DIST_ALGO_RING, DIST_ALGO_HIER } dist_algorithm;

typedef struct {
  double bucket_mb;         /* bucket size in MiB (2^20 bytes), (0, 4096]; 0 = 25 */
  int overlap;              /* 1: a communication thread reduces buckets during backward */
  dist_compress compress;   /* 16-bit wire format for slow networks */
  dist_algorithm algorithm; /* AUTO (0) unless a test or benchmark forces one */
  /* POWERSGD only: */
  int powersgd_rank;           /* >= 1 */
  double powersgd_min_ratio;   /* compress a matrix (n, m) at rank r only if
                                  n m >= ratio (n + m) r (PyTorch's
                                  min_compression_rate, 2); 0: every matrix */
  int64_t powersgd_start_step; /* passes averaged uncompressed first */
  const dist_matrix *matrices; /* the weight matrices (copied); other floats */
  int nmatrices;               /* of the buffer are averaged uncompressed */
} dist_reducer_opts;

typedef struct dist_reducer dist_reducer;

/* Prepares to average grads[0, n) in place; collective (every rank, same n
 * and opts). Buckets are cut from the end of the buffer and their boundaries
 * depend only on (n, bucket_mb), so results are bitwise reproducible for a
 * fixed rank count, overlap on or off. Allocates everything here (and starts
 * the communication thread); nothing per step. Aborts the job with a message
 * on bad options or no memory. o == NULL means all defaults. */
dist_reducer *dist_reducer_create(float *grads, size_t n, const dist_reducer_opts *o);
/* Stops the communication thread and frees; collective. NULL is ignored. */
void dist_reducer_free(dist_reducer *r);
/* Marks the start of a backward pass (before any dist_reducer_ready). */
void dist_reducer_begin(dist_reducer *r);
/* grads[offset, offset+count) are final (called by nn_backward's callback,
 * offsets falling). The reports of one pass must not overlap; buckets are
 * handed to the communication thread in order (0 = the end of the buffer) as
 * soon as each is complete. Aborts with a message on a range outside the
 * buffer, one reported twice, or a call outside begin/finish. */
void dist_reducer_ready(dist_reducer *r, size_t offset, size_t count);
/* Reduces what is left (everything when nothing was reported or overlap is
 * off), waits for every bucket and divides by the rank count (one rank:
 * leaves the buffer as is). Returns the exposed wait in ms (time this call
 * blocked). */
double dist_reducer_finish(dist_reducer *r);
/* Floats each rank puts into allreduces per pass once compression is on:
 * n for NONE, n (of 16 bits) for BF16 and FP16, for POWERSGD the
 * uncompressed floats plus the P and Q of every matrix. */
size_t dist_reducer_wire_floats(const dist_reducer *r);
/* POWERSGD: matrices compressed (the others are too small to gain). */
int dist_reducer_compressed_matrices(const dist_reducer *r);

/* What a resumed run needs to continue bitwise: the passes so far (PowerSGD
 * takes over at powersgd_start_step of them) and, for POWERSGD, a state of
 * dist_reducer_state_floats floats (0 otherwise): first every compressed
 * matrix's error feedback E (rows, cols), in buffer order, this rank's own
 * (dist_reducer_error_floats of them); then every compressed matrix's warm
 * start Q transposed (r, cols), r = min(powersgd_rank, rows, cols), in the
 * same order: an average over the ranks, so after the same passes the same
 * on every rank. Not collective. */
size_t dist_reducer_state_floats(const dist_reducer *r);
size_t dist_reducer_error_floats(const dist_reducer *r);
/* Copies state[offset, offset + count) into buf (to_buf) or from buf into
 * the reducer (never during a pass): pieces of a bounded buffer, for a
 * checkpoint. Aborts with a message on a range outside the state. */
void dist_reducer_state_copy(dist_reducer *r, float *buf, size_t offset, size_t count, int to_buf);
int64_t dist_reducer_passes(const dist_reducer *r);
void dist_reducer_set_passes(dist_reducer *r, int64_t passes);
/* The whole state and the passes at once (state: dist_reducer_state_floats). */
void dist_reducer_get_state(const dist_reducer *r, float *state, int64_t *passes);
void dist_reducer_set_state(dist_reducer *r, const float *state, int64_t passes);

/* The algorithm a reducer resolved AUTO to (MPI or RING); the same on
 * every rank. */
dist_algorithm dist_reducer_algorithm(const dist_reducer *r);
/* "auto", "mpi", "ring" or "hier". */
const char *dist_algorithm_name(dist_algorithm a);
/* The same average without buckets or threads, for tests and the baseline:
 * one MPI_Allreduce over the whole buffer. Returns its time in ms. */
double dist_allreduce_average_plain(float *grads, size_t n);

#endif
