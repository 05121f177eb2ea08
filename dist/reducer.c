/*
 * reducer.c: bucketed, overlapped averaging of the flat gradient buffer.
 *
 * The buffer of n floats is cut into buckets of bucket_mb MiB from its END:
 * bucket 0 is the last floats, bucket 1 the ones before, ..., and the last
 * bucket, at offset 0, holds the remainder. Backward finishes the last layers
 * first, so buckets fill in that order. The boundaries are a pure function of
 * (n, bucket_mb): every rank and every run reduce the same pieces in the same
 * order, which makes the result bitwise reproducible for a fixed rank count
 * and identical with overlap on or off.
 *
 * dist_reducer_ready counts the floats reported for each bucket; buckets are
 * released strictly in order 0, 1, 2, ... as soon as each is complete (so all
 * ranks issue the same sequence of collectives whatever the order of the
 * reports). With overlap on, a persistent communication thread, sleeping on a
 * condition variable, reduces the released buckets one by one with a
 * blocking MPI_Allreduce while backward goes on: Open MPI's non-blocking
 * collectives only progress inside MPI calls, so an MPI_Iallreduce started by
 * the main thread would mostly wait for dist_reducer_finish. With overlap off
 * the same buckets are reduced in the same order inside finish.
 *
 * Over a network (algorithm RING, the default when the ranks span several
 * nodes) the communication thread does not call MPI_Allreduce: it runs its
 * own ring, a reduce-scatter then an allgather of size - 1 steps each, with
 * MPI_Irecv/MPI_Isend to the neighbours, and keeps up to RING_WINDOW
 * buckets in flight, each at its own step. A step of one bucket can start
 * only when the previous one has arrived and been summed; with one bucket at
 * a time every such hand-over idles the link until both ranks are scheduled
 * again, which on a loaded machine or a slow link cost as much as the
 * transfer itself (docs/multinode.md, "Why the reducer was slow"). With
 * several buckets in flight the other buckets' messages fill those gaps.
 * The ring adds the chunks in a fixed order (chunk c's sum starts at rank
 * c + 1 and goes around), so results stay bitwise reproducible for a fixed
 * rank count, overlap on or off.
 *
 * Compression: bf16 and fp16 convert a bucket into a 16-bit buffer (allocated
 * once, one bucket long), allreduce it with a user-defined MPI_Op that adds
 * element by element in float and rounds back, and convert back. The 1/size
 * scale is folded into the conversion to 16 bits (so the wire carries the
 * average, which also keeps fp16 sums in range). fp16 also multiplies each
 * bucket by a power of two agreed by all ranks (allreduce MAX of |g|), that
 * puts the largest magnitude near 2^15: small gradients keep fp16's relative
 * precision instead of flushing to zero; being a power of two it is exact.
 */
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "internal.h"
#include "util.h"

#define DEFAULT_BUCKET_MB 25.0
/* Largest bucket: its count must fit an MPI int with room to spare. */
#define MAX_BUCKET_MB 4096.0
/* Bucket sizes are a multiple of this many floats (64 bytes). */
#define BUCKET_ALIGN 16
/* fp16 scales each bucket so that its largest |value| is at most 2^15. */
#define FP16_TARGET_EXP 15
/* Buckets the ring keeps in flight at once: while one bucket waits for its
 * hand-over between steps, the other's messages keep the link busy; each
 * costs a receive buffer of bucket / size floats (and a 16-bit copy of the
 * bucket). Measured on quiet emulated clusters, 244 MB in 25 MiB buckets
 * (docs/multinode.md): 1 left a 2-host 1 Gbit/s ring at 3773 ms, 2 gave
 * 2861, 3 gave 2746; but on 2 hosts at 10 Gbit/s 3 took 307-345 ms, 1.2x
 * one MPI_Allreduce, where 2 took 282 and 1 took 250 (three buckets in
 * flight compete for the cache and the memory bus). -DRING_WINDOW=N
 * overrides it for such measurements. */
#ifndef RING_WINDOW
#define RING_WINDOW 2
#endif
/* The ring's pause between two polls of its messages, microseconds
 * (-DRING_POLL_US=N overrides it: 10, 30 and 100 gave the same times on 2
 * hosts at 10 Gbit/s). */
#ifndef RING_POLL_US
#define RING_POLL_US 100
#endif

/* One bucket in flight on the ring. */
typedef struct {
  int b;        /* bucket, -1 when the slot is free */
  int step;     /* -1: fp16's MAX; 0 .. size-2: reduce-scatter; size-1 .. 2 size-3:
                   allgather */
  size_t count; /* elements of the bucket */
  char *wire;   /* (count) the bucket as sent: grads + lo, or a 16-bit copy */
  char *tmp;    /* (count / size + 1) what a reduce-scatter step receives */
  float max;    /* fp16: the largest |g| of the bucket over all ranks */
  float down;   /* fp16: the 2^-e that undoes the bucket's scale */
  int wd;       /* watchdog slot */
} ring_slot;

struct dist_reducer {
  float *grads; /* (n) averaged in place, not owned */
  size_t n;
  size_t bucket; /* floats per bucket; the one at offset 0 may be shorter */
  int nb;        /* number of buckets */
  size_t *ready; /* (nb) floats of each bucket reported this pass */
  int released;  /* buckets 0..released-1 are complete (main thread) */
  int in_pass;   /* between begin and finish */
  int overlap;
  dist_compress compress; /* the buckets' wire format (NONE under POWERSGD) */
  dist_powersgd *psgd;    /* POWERSGD, else NULL */
  int64_t psgd_start;     /* passes before PowerSGD takes over */
  int64_t passes;         /* finished passes */
  dist_algorithm algo;    /* MPI or RING (AUTO resolved at create) */
  uint16_t *half;         /* (bucket) 16-bit wire copy, bf16 or fp16 bits;
                             RING: (RING_WINDOW * bucket), one per slot */
  int rank;
  /* The ring's ranks: the world's, or under HIER the nodes' leaders (none
   * on the others: ring_comm MPI_COMM_NULL). */
  MPI_Comm ring_comm;
  int ring_size, ring_rank;
  /* HIER: the node's ranks, once for the reduces into the leader and once
   * for the broadcasts back (those are issued in another order, and
   * collectives on one communicator must be issued in the same order). */
  MPI_Comm local, local_bc;
  int leader;              /* this rank is its node's first */
  MPI_Request *bc_req;     /* (nb) the broadcast of each bucket */
  unsigned char *bc_ready; /* (nb) leader: around the ring, broadcast not posted */
  int bc_next;             /* leader: next bucket to broadcast */
  size_t esz;              /* bytes per element on the wire: 4 or 2 */
  ring_slot slot[RING_WINDOW];
  char *ring_tmp;                   /* (RING_WINDOW * (bucket / size + 1) * esz) */
  MPI_Request req[2 * RING_WINDOW]; /* slot i: [2i] receive, [2i+1] send */
  MPI_Comm comm;                    /* the reducer's own duplicate of MPI_COMM_WORLD */
  MPI_Op op16;                      /* sums bf16 or fp16 in float, MPI_OP_NULL for none */
  int size;
  float inv_size; /* 1 / ranks, the same float the plain average uses */

  /* The communication thread (overlap on and more than one rank). */
  int has_thread;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work; /* main -> thread: issued grew, or stop */
  pthread_cond_t done; /* thread -> main: reduced grew */
  int issued;          /* buckets handed to the thread this pass (under mu) */
  int reduced;         /* buckets the thread finished this pass (under mu) */
  int stop;
};

/* ------------------------------------------------------------------------ */
/* 16-bit formats                                                           */

static inline uint16_t bf16_from_float(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
  return (uint16_t)(u >> 16);
}

static inline float bf16_to_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *type) {
  (void)type;
  const uint16_t *a = in;
  uint16_t *b = inout;
  for (int i = 0; i < *len; i++) b[i] = bf16_from_float(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

/* fp16 scalar conversions, round to nearest even (F. Giesen's method; the
 * subnormal case lets the FPU round). They give the same bits as F16C's
 * vcvtps2ph/vcvtph2ps, which the array loops below use where the compiler
 * targets it; only NaN payloads may differ. */
static inline uint16_t fp16_from_float(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t h;
  if (x >= 0x47800000u) { /* >= 2^16: Inf, or NaN kept quiet */
    h = x > 0x7f800000u ? 0x7e00 : 0x7c00;
  } else if (x < 0x38800000u) { /* below 2^-14: subnormal or zero */
    float v;
    memcpy(&v, &x, sizeof v);
    v += 0.5f; /* aligns the 10 mantissa bits at the bottom, rounding */
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    h = (uint16_t)(u - 0x3f000000u);
  } else {
    uint32_t odd = (x >> 13) & 1u;
    x += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    h = (uint16_t)(x >> 13);
  }
  return (uint16_t)(h | (sign >> 16));
}

static inline float fp16_to_float(uint16_t h) {
  uint32_t em = h & 0x7fffu, u;
  if (em > 0x7c00u) { /* NaN, made quiet as F16C does */
    u = 0x7fc00000u | ((em & 0x3ffu) << 13);
  } else if (em == 0x7c00u) {
    u = 0x7f800000u;
  } else if (em >= 0x0400u) { /* normal */
    u = (em << 13) + ((uint32_t)(127 - 15) << 23);
  } else { /* subnormal or zero: em * 2^-24, exact */
    float f = (float)em * 0x1p-24f;
    memcpy(&u, &f, sizeof u);
  }
  u |= (uint32_t)(h & 0x8000u) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void fp16_from_floats(const float *g, uint16_t *h, int n, float mult) {
  int i = 0;
#if defined(__F16C__) && defined(__AVX__)
  const __m256 m = _mm256_set1_ps(mult);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_mul_ps(_mm256_loadu_ps(g + i), m);
    _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; i++) h[i] = fp16_from_float(g[i] * mult);
}

static void fp16_to_floats(const uint16_t *h, float *g, int n, float mult) {
  int i = 0;
#if defined(__F16C__) && defined(__AVX__)
  const __m256 m = _mm256_set1_ps(mult);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(x, m));
  }
#endif
  for (; i < n; i++) g[i] = fp16_to_float(h[i]) * mult;
}

static void sum_fp16(void *in, void *inout, int *len, MPI_Datatype *type) {
  (void)type;
  const uint16_t *a = in;
  uint16_t *b = inout;
  int i = 0, n = *len;
#if defined(__F16C__) && defined(__AVX__)
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));
    __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
    _mm_storeu_si128((__m128i *)(b + i),
                     _mm256_cvtps_ph(_mm256_add_ps(x, y), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; i++) b[i] = fp16_from_float(fp16_to_float(a[i]) + fp16_to_float(b[i]));
}

/* The largest |g[i]| (NaNs skipped), compared as bit patterns: for
 * non-negative floats integer order is float order, and the loop vectorizes. */
static float max_abs(const float *g, int n) {
  uint32_t m = 0;
  for (int i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &g[i], sizeof u);
    u &= 0x7fffffffu;
    u = u > 0x7f800000u ? 0 : u;
    m = u > m ? u : m;
  }
  float f;
  memcpy(&f, &m, sizeof f);
  return f;
}

/* ------------------------------------------------------------------------ */
/* Buckets                                                                  */

static size_t bucket_hi(const dist_reducer *r, int b) {
  return r->n - (size_t)b * r->bucket;
}
static size_t bucket_lo(const dist_reducer *r, int b) {
  size_t hi = bucket_hi(r, b);
  return hi > r->bucket ? hi - r->bucket : 0;
}

/* Averages bucket b over the ranks, in place. Called by exactly one thread. */
static void reduce_bucket(dist_reducer *r, int b) {
  size_t lo = bucket_lo(r, b);
  int count = (int)(bucket_hi(r, b) - lo);
  float *g = r->grads + lo;
  int slot = dist_watchdog_arm("allreduce of bucket %d (%.3g MB, floats [%zu, %zu))", b,
                               (double)count * sizeof(float) / 1e6, lo, lo + (size_t)count);
  switch (r->compress) {
    case DIST_COMPRESS_POWERSGD: /* its buckets travel as NONE */
    case DIST_COMPRESS_NONE: {
      DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, g, count, MPI_FLOAT, MPI_SUM, r->comm));
      const float s = r->inv_size;
      for (int i = 0; i < count; i++) g[i] *= s;
      break;
    }
    case DIST_COMPRESS_BF16: {
      uint16_t *h = r->half;
      const float s = r->inv_size;
      for (int i = 0; i < count; i++) h[i] = bf16_from_float(g[i] * s);
      DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, h, count, MPI_UINT16_T, r->op16, r->comm));
      for (int i = 0; i < count; i++) g[i] = bf16_to_float(h[i]);
      break;
    }
    case DIST_COMPRESS_FP16: {
      float m = max_abs(g, count);
      DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, &m, 1, MPI_FLOAT, MPI_MAX, r->comm));
      int e = 0;
      if (m > 0 && isfinite(m)) {
        int k;
        frexpf(m, &k); /* m < 2^k */
        e = FP16_TARGET_EXP - k;
        e = e > 100 ? 100 : e < -100 ? -100 : e;
      }
      const float up = ldexpf(1.0f, e) * r->inv_size, down = ldexpf(1.0f, -e);
      fp16_from_floats(g, r->half, count, up);
      DIST_CHECK(MPI_Allreduce(MPI_IN_PLACE, r->half, count, MPI_UINT16_T, r->op16, r->comm));
      fp16_to_floats(r->half, g, count, down);
      break;
    }
  }
  dist_watchdog_disarm(slot);
}

/* ------------------------------------------------------------------------ */
/* The ring                                                                 */

/* First element of chunk c of a bucket of count elements cut into size. */
static size_t chunk_lo(const dist_reducer *r, size_t count, int c) {
  return count * (size_t)c / (size_t)r->ring_size;
}

/* dst[i] += src[i] in the wire format, for n elements. */
static void wire_add(const dist_reducer *r, char *dst, const char *src, int n) {
  switch (r->compress) {
    case DIST_COMPRESS_POWERSGD: /* its buckets travel as NONE */
    case DIST_COMPRESS_NONE: {
      float *d = (float *)dst;
      const float *a = (const float *)src;
      for (int i = 0; i < n; i++) d[i] += a[i];
      break;
    }
    case DIST_COMPRESS_BF16:
      sum_bf16((void *)src, dst, &n, NULL);
      break;
    case DIST_COMPRESS_FP16:
      sum_fp16((void *)src, dst, &n, NULL);
      break;
  }
}

/* The chunk a rank sends and the one it receives at a step. */
static void step_chunks(const dist_reducer *r, int step, int *send, int *recv) {
  int p = r->ring_size, k = r->ring_rank;
  if (step < p - 1) { /* reduce-scatter: pass on what was just summed */
    *send = ((k - step) % p + p) % p;
    *recv = ((k - step - 1) % p + p) % p;
  } else { /* allgather: rank k starts with chunk k + 1, complete */
    int t = step - (p - 1);
    *send = ((k + 1 - t) % p + p) % p;
    *recv = ((k - t) % p + p) % p;
  }
}

/* Posts slot i's messages of its current step. */
static void ring_post(dist_reducer *r, int i) {
  ring_slot *s = &r->slot[i];
  int send, recv;
  step_chunks(r, s->step, &send, &recv);
  size_t slo = chunk_lo(r, s->count, send), shi = chunk_lo(r, s->count, send + 1);
  size_t rlo = chunk_lo(r, s->count, recv), rhi = chunk_lo(r, s->count, recv + 1);
  char *into = s->step < r->ring_size - 1 ? s->tmp : s->wire + rlo * r->esz;
  MPI_Datatype t = r->compress == DIST_COMPRESS_NONE ? MPI_FLOAT : MPI_UINT16_T;
  int left = (r->ring_rank + r->ring_size - 1) % r->ring_size,
      right = (r->ring_rank + 1) % r->ring_size;
  /* The tag is the bucket: messages of one bucket between two ranks arrive
   * in the order sent, so its steps match up. */
  DIST_CHECK(MPI_Irecv(into, (int)(rhi - rlo), t, left, s->b, r->ring_comm, &r->req[2 * i]));
  DIST_CHECK(MPI_Isend(s->wire + slo * r->esz, (int)(shi - slo), t, right, s->b, r->ring_comm,
                       &r->req[2 * i + 1]));
}

/* Puts bucket b in free slot i: converts it to the wire format and posts
 * its first step (under HIER, first sums the node's ranks into it). */
static void ring_start(dist_reducer *r, int i, int b) {
  ring_slot *s = &r->slot[i];
  size_t lo = bucket_lo(r, b);
  int count = (int)(bucket_hi(r, b) - lo);
  float *g = r->grads + lo;
  s->b = b;
  s->step = 0;
  s->count = (size_t)count;
  s->wd = dist_watchdog_arm("ring allreduce of bucket %d (%.3g MB, floats [%zu, %zu))", b,
                            (double)count * sizeof(float) / 1e6, lo, lo + (size_t)count);
  if (r->local != MPI_COMM_NULL)
    DIST_CHECK(MPI_Reduce(MPI_IN_PLACE, g, count, MPI_FLOAT, MPI_SUM, 0, r->local));
  const float inv = r->inv_size;
  uint16_t *h = r->half + (size_t)i * (r->n < r->bucket ? r->n : r->bucket);
  switch (r->compress) {
    case DIST_COMPRESS_POWERSGD: /* its buckets travel as NONE */
    case DIST_COMPRESS_NONE:
      s->wire = (char *)g;
      break;
    case DIST_COMPRESS_BF16:
      for (int k = 0; k < count; k++) h[k] = bf16_from_float(g[k] * inv);
      s->wire = (char *)h;
      break;
    case DIST_COMPRESS_FP16:
      /* The scale needs every rank's largest |g|: a non-blocking MAX first
       * (step -1). A blocking one here could deadlock: a rank inside it
       * posts no ring message that a rank still at an earlier bucket waits
       * for. Buckets start in the same order on every rank, as the standard
       * requires of collectives. */
      s->max = max_abs(g, count);
      s->step = -1;
      s->wire = (char *)h;
      DIST_CHECK(MPI_Iallreduce(MPI_IN_PLACE, &s->max, 1, MPI_FLOAT, MPI_MAX, r->ring_comm,
                                &r->req[2 * i]));
      return;
  }
  ring_post(r, i);
}

/* fp16, once the MAX is in: scales the bucket into 16 bits, posts step 0. */
static void ring_start_fp16(dist_reducer *r, int i) {
  ring_slot *s = &r->slot[i];
  int e = 0;
  if (s->max > 0 && isfinite(s->max)) {
    int k;
    frexpf(s->max, &k); /* max < 2^k */
    e = FP16_TARGET_EXP - k;
    e = e > 100 ? 100 : e < -100 ? -100 : e;
  }
  s->down = ldexpf(1.0f, -e);
  fp16_from_floats(r->grads + bucket_lo(r, s->b), (uint16_t *)s->wire, (int)s->count,
                   ldexpf(1.0f, e) * r->inv_size);
  s->step = 0;
  if (r->ring_size > 1) ring_post(r, i);
}

/* Slot i's bucket has been around the ring: back to floats, averaged. */
static void ring_finish(dist_reducer *r, int i) {
  ring_slot *s = &r->slot[i];
  float *g = r->grads + bucket_lo(r, s->b);
  int count = (int)s->count;
  const uint16_t *h = (const uint16_t *)s->wire;
  switch (r->compress) {
    case DIST_COMPRESS_POWERSGD: /* its buckets travel as NONE */
    case DIST_COMPRESS_NONE: {
      const float inv = r->inv_size;
      for (int k = 0; k < count; k++) g[k] *= inv;
      break;
    }
    case DIST_COMPRESS_BF16:
      for (int k = 0; k < count; k++) g[k] = bf16_to_float(h[k]);
      break;
    case DIST_COMPRESS_FP16:
      fp16_to_floats(h, g, count, s->down);
      break;
  }
  dist_watchdog_disarm(s->wd);
  if (r->local != MPI_COMM_NULL) { /* back to the node, in bucket order */
    r->bc_ready[s->b] = 1;
    while (r->bc_next < r->nb && r->bc_ready[r->bc_next]) {
      int c = r->bc_next++;
      size_t clo = bucket_lo(r, c);
      DIST_CHECK(MPI_Ibcast(r->grads + clo, (int)(bucket_hi(r, c) - clo), MPI_FLOAT, 0, r->local_bc,
                            &r->bc_req[c]));
    }
  }
  s->b = -1;
}

/* HIER: waits (polling, as the ring) for this pass's broadcasts, then tells
 * finish that every bucket is done. */
static void hier_wait_broadcasts(dist_reducer *r) {
  for (;;) {
    int all = 0;
    DIST_CHECK(MPI_Testall(r->nb, r->bc_req, &all, MPI_STATUSES_IGNORE));
    if (all) break;
    struct timespec ts = {0, RING_POLL_US * 1000};
    nanosleep(&ts, NULL);
  }
  memset(r->bc_ready, 0, (size_t)r->nb);
  r->bc_next = 0;
  if (r->has_thread) {
    pthread_mutex_lock(&r->mu);
    r->reduced = r->nb;
    pthread_cond_signal(&r->done);
    pthread_mutex_unlock(&r->mu);
  }
}

/* Buckets handed over so far; with block, first waits until there are more
 * than next (the ring has nothing in flight). */
static int ring_available(dist_reducer *r, int next, int block) {
  if (!r->has_thread) return r->nb;
  pthread_mutex_lock(&r->mu);
  while (block && !r->stop && r->issued <= next) {
    if (r->local == MPI_COMM_NULL) {
      pthread_cond_wait(&r->work, &r->mu);
      continue;
    }
    /* HIER: the broadcasts of earlier buckets progress only while some
     * thread is inside MPI; look at them every millisecond. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 1000 * 1000;
    if (ts.tv_nsec >= 1000 * 1000 * 1000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000 * 1000 * 1000;
    }
    pthread_cond_timedwait(&r->work, &r->mu, &ts);
    pthread_mutex_unlock(&r->mu);
    int all;
    DIST_CHECK(MPI_Testall(r->nb, r->bc_req, &all, MPI_STATUSES_IGNORE));
    pthread_mutex_lock(&r->mu);
  }
  int n = r->stop ? r->nb : r->issued;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* Reduces every bucket of this pass around the ring, starting each as soon
 * as it is handed over and a slot is free. */
static void ring_pass(dist_reducer *r) {
  int next = 0, done = 0, active = 0;
  while (done < r->nb) {
    int avail = ring_available(r, next, active == 0);
    for (int i = 0; i < RING_WINDOW && active < RING_WINDOW && next < avail; i++)
      if (r->slot[i].b < 0) {
        ring_start(r, i, next++);
        active++;
        if (r->ring_size == 1) { /* HIER on one node: no other leader */
          if (r->slot[i].step < 0) {
            DIST_CHECK(MPI_Wait(&r->req[2 * i], MPI_STATUS_IGNORE));
            ring_start_fp16(r, i);
          }
          ring_finish(r, i);
          active--;
          done++;
        }
      }
    if (active == 0) continue;
    /* Poll, and sleep a little between polls: Open MPI's MPI_Waitsome spins
     * a core for the whole transfer, which on a node whose cores also run
     * backward (or, emulated, the other hosts and their TCP stacks) takes
     * the CPU that the transfer needs. RING_POLL_US at 10 Gbit/s is 125 KB,
     * far less than a TCP socket buffer holds, so the link stays busy. */
    int outcount, idx[2 * RING_WINDOW];
    DIST_CHECK(MPI_Testsome(2 * RING_WINDOW, r->req, &outcount, idx, MPI_STATUSES_IGNORE));
    if (outcount == 0) {
      struct timespec ts = {0, RING_POLL_US * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    for (int i = 0; i < RING_WINDOW; i++) {
      ring_slot *s = &r->slot[i];
      if (s->b < 0 || r->req[2 * i] != MPI_REQUEST_NULL || r->req[2 * i + 1] != MPI_REQUEST_NULL)
        continue;
      if (s->step < 0) {
        ring_start_fp16(r, i);
        continue;
      }
      if (s->step < r->ring_size - 1) {
        int send, recv;
        step_chunks(r, s->step, &send, &recv);
        size_t lo = chunk_lo(r, s->count, recv), hi = chunk_lo(r, s->count, recv + 1);
        wire_add(r, s->wire + lo * r->esz, s->tmp, (int)(hi - lo));
      }
      if (++s->step < 2 * (r->ring_size - 1)) {
        ring_post(r, i);
        continue;
      }
      ring_finish(r, i);
      active--;
      done++;
      if (r->has_thread && r->local == MPI_COMM_NULL) {
        pthread_mutex_lock(&r->mu);
        r->reduced++;
        pthread_cond_signal(&r->done);
        pthread_mutex_unlock(&r->mu);
      }
    }
  }
  if (r->local != MPI_COMM_NULL) hier_wait_broadcasts(r);
}

/* HIER, a rank that is not its node's leader: sums each bucket into the
 * leader as soon as backward hands it over, and receives the average back. */
static void hier_member_pass(dist_reducer *r) {
  for (int b = 0; b < r->nb; b++) {
    ring_available(r, b, 1);
    size_t lo = bucket_lo(r, b);
    int count = (int)(bucket_hi(r, b) - lo);
    int slot = dist_watchdog_arm("reduce of bucket %d into this node's first rank", b);
    DIST_CHECK(MPI_Reduce(r->grads + lo, NULL, count, MPI_FLOAT, MPI_SUM, 0, r->local));
    dist_watchdog_disarm(slot);
    DIST_CHECK(MPI_Ibcast(r->grads + lo, count, MPI_FLOAT, 0, r->local_bc, &r->bc_req[b]));
  }
  int slot = dist_watchdog_arm("broadcasts of the buckets from this node's first rank");
  hier_wait_broadcasts(r);
  dist_watchdog_disarm(slot);
}

/* The pass of the ring algorithms (RING, HIER) on this rank. */
static void ring_or_hier_pass(dist_reducer *r) {
  if (r->algo == DIST_ALGO_HIER && !r->leader)
    hier_member_pass(r);
  else
    ring_pass(r);
}

static void *comm_thread_main(void *arg) {
  dist_reducer *r = arg;
  pthread_mutex_lock(&r->mu);
  if (r->algo == DIST_ALGO_RING || r->algo == DIST_ALGO_HIER) {
    /* One pass at a time: a new one starts when finish has collected the
     * last (issued and reduced back to 0) and backward hands over again. */
    for (;;) {
      while (!r->stop && !(r->issued > 0 && r->reduced == 0)) pthread_cond_wait(&r->work, &r->mu);
      if (r->stop) break;
      pthread_mutex_unlock(&r->mu);
      ring_or_hier_pass(r);
      pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
  }
  for (;;) {
    while (!r->stop && r->reduced == r->issued) pthread_cond_wait(&r->work, &r->mu);
    if (r->stop) break;
    int b = r->reduced;
    pthread_mutex_unlock(&r->mu);
    reduce_bucket(r, b);
    pthread_mutex_lock(&r->mu);
    r->reduced++;
    pthread_cond_signal(&r->done);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* Is this pass PowerSGD's (after its uncompressed start)? */
static int psgd_active(const dist_reducer *r) {
  return r->psgd && r->passes >= r->psgd_start;
}

/* Hands buckets [0, upto) to the communication thread. */
static void issue(dist_reducer *r, int upto) {
  pthread_mutex_lock(&r->mu);
  if (upto > r->issued) {
    r->issued = upto;
    pthread_cond_signal(&r->work);
  }
  pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------------------ */
/* Public                                                                   */

dist_reducer *dist_reducer_create(float *grads, size_t n, const dist_reducer_opts *o) {
  double mb = o && o->bucket_mb != 0 ? o->bucket_mb : DEFAULT_BUCKET_MB;
  if (!(mb > 0 && mb <= MAX_BUCKET_MB))
    dist_abort(1, "dist: bucket_mb %g is out of range (0, %g]", mb, MAX_BUCKET_MB);
  dist_compress compress = o ? o->compress : DIST_COMPRESS_NONE;
  if (compress != DIST_COMPRESS_NONE && compress != DIST_COMPRESS_BF16 &&
      compress != DIST_COMPRESS_FP16 && compress != DIST_COMPRESS_POWERSGD)
    dist_abort(1, "dist: unknown gradient compression %d", (int)compress);
  if (!grads && n > 0) dist_abort(1, "dist: reducer over %zu floats with no buffer", n);
  dist_algorithm algo = o ? o->algorithm : DIST_ALGO_AUTO;
  if (algo != DIST_ALGO_AUTO && algo != DIST_ALGO_MPI && algo != DIST_ALGO_RING &&
      algo != DIST_ALGO_HIER)
    dist_abort(1, "dist: unknown allreduce algorithm %d", (int)algo);
  /* The same answer on every rank. Not HIER: on 2 emulated hosts x 2 ranks
   * it measured slower than the flat ring (docs/multinode.md). */
  if (algo == DIST_ALGO_AUTO)
    algo = dist_local_size() == dist_size() ? DIST_ALGO_MPI : DIST_ALGO_RING;

  dist_reducer *r = calloc(1, sizeof *r);
  if (!r) dist_abort(1, "dist: out of memory for a reducer");
  r->grads = grads;
  r->n = n;
  size_t bucket = (size_t)(mb * (1024.0 * 1024.0 / sizeof(float)));
  bucket = (bucket + BUCKET_ALIGN - 1) / BUCKET_ALIGN * BUCKET_ALIGN;
  r->bucket = bucket;
  r->nb = (int)((n + bucket - 1) / bucket);
  r->overlap = o ? o->overlap != 0 : 1;
  r->compress = compress == DIST_COMPRESS_POWERSGD ? DIST_COMPRESS_NONE : compress;
  if (compress == DIST_COMPRESS_POWERSGD && o->powersgd_start_step < 0)
    dist_abort(1, "dist: powersgd_start_step %lld must be at least 0",
               (long long)o->powersgd_start_step);
  compress = r->compress;
  r->size = dist_size();
  r->inv_size = 1.0f / (float)r->size;
  r->op16 = MPI_OP_NULL;
  r->algo = algo;
  r->rank = dist_rank();
  r->esz = compress == DIST_COMPRESS_NONE ? sizeof(float) : sizeof(uint16_t);
  size_t longest = n < bucket ? n : bucket;
  int ringlike = algo == DIST_ALGO_RING || algo == DIST_ALGO_HIER;
  size_t copies = ringlike ? RING_WINDOW : 1;
  r->ready = calloc(r->nb > 0 ? (size_t)r->nb : 1, sizeof *r->ready);
  if (compress != DIST_COMPRESS_NONE)
    r->half = malloc((longest ? longest : 1) * copies * sizeof(uint16_t));
  r->local = r->local_bc = r->ring_comm = MPI_COMM_NULL;
  r->ring_size = r->size;
  r->ring_rank = r->rank;
  r->leader = 1;
  if (algo == DIST_ALGO_HIER) {
    DIST_CHECK(
        MPI_Comm_split_type(dist_comm(), MPI_COMM_TYPE_SHARED, r->rank, MPI_INFO_NULL, &r->local));
    DIST_CHECK(MPI_Comm_dup(r->local, &r->local_bc));
    int lr;
    DIST_CHECK(MPI_Comm_rank(r->local, &lr));
    r->leader = lr == 0;
    DIST_CHECK(MPI_Comm_split(dist_comm(), r->leader ? 0 : MPI_UNDEFINED, r->rank, &r->ring_comm));
    if (r->leader) {
      DIST_CHECK(MPI_Comm_size(r->ring_comm, &r->ring_size));
      DIST_CHECK(MPI_Comm_rank(r->ring_comm, &r->ring_rank));
    }
    r->bc_req = malloc((r->nb > 0 ? (size_t)r->nb : 1) * sizeof *r->bc_req);
    r->bc_ready = calloc(r->nb > 0 ? (size_t)r->nb : 1, 1);
    if (!r->bc_req || !r->bc_ready) dist_abort(1, "dist: out of memory for a reducer");
    for (int b = 0; b < r->nb; b++) r->bc_req[b] = MPI_REQUEST_NULL;
  }
  if (ringlike) {
    size_t tmp = (longest / (size_t)r->ring_size + 1) * r->esz;
    r->ring_tmp = malloc(tmp * RING_WINDOW);
    for (int i = 0; i < RING_WINDOW; i++) {
      r->slot[i].b = -1;
      r->slot[i].tmp = r->ring_tmp ? r->ring_tmp + (size_t)i * tmp : NULL;
    }
  }
  for (int i = 0; i < 2 * RING_WINDOW; i++) r->req[i] = MPI_REQUEST_NULL;
  if (!r->ready || (compress != DIST_COMPRESS_NONE && !r->half) || (ringlike && !r->ring_tmp))
    dist_abort(1, "dist: out of memory for a reducer of %zu floats", n);

  DIST_CHECK(MPI_Comm_dup(dist_comm(), &r->comm));
  if (algo != DIST_ALGO_HIER) r->ring_comm = r->comm;
  if (o && o->compress == DIST_COMPRESS_POWERSGD) {
    r->psgd = dist_powersgd_create(grads, n, o->matrices, o->nmatrices, o->powersgd_rank,
                                   o->powersgd_min_ratio, r->comm);
    r->psgd_start = o->powersgd_start_step;
  }
  if (compress == DIST_COMPRESS_BF16) DIST_CHECK(MPI_Op_create(sum_bf16, 1, &r->op16));
  if (compress == DIST_COMPRESS_FP16) DIST_CHECK(MPI_Op_create(sum_fp16, 1, &r->op16));

  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->work, NULL);
  pthread_cond_init(&r->done, NULL);
  if (r->overlap && r->size > 1 && r->nb > 0) {
    if (pthread_create(&r->thread, NULL, comm_thread_main, r) != 0)
      dist_abort(1, "dist: cannot start the communication thread");
    r->has_thread = 1;
  }
  return r;
}

void dist_reducer_free(dist_reducer *r) {
  if (!r) return;
  if (r->has_thread) {
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->work);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
  }
  pthread_cond_destroy(&r->done);
  pthread_cond_destroy(&r->work);
  pthread_mutex_destroy(&r->mu);
  if (r->op16 != MPI_OP_NULL) DIST_CHECK(MPI_Op_free(&r->op16));
  dist_powersgd_free(r->psgd);
  if (r->algo == DIST_ALGO_HIER) {
    if (r->ring_comm != MPI_COMM_NULL) DIST_CHECK(MPI_Comm_free(&r->ring_comm));
    DIST_CHECK(MPI_Comm_free(&r->local));
    DIST_CHECK(MPI_Comm_free(&r->local_bc));
  }
  DIST_CHECK(MPI_Comm_free(&r->comm));
  free(r->bc_req);
  free(r->bc_ready);
  free(r->ring_tmp);
  free(r->half);
  free(r->ready);
  free(r);
}

dist_algorithm dist_reducer_algorithm(const dist_reducer *r) {
  return r->algo;
}

const char *dist_algorithm_name(dist_algorithm a) {
  return a == DIST_ALGO_MPI    ? "mpi"
         : a == DIST_ALGO_RING ? "ring"
         : a == DIST_ALGO_HIER ? "hier"
                               : "auto";
}

void dist_reducer_begin(dist_reducer *r) {
  if (r->in_pass)
    dist_abort(1, "dist: dist_reducer_begin called twice without dist_reducer_finish");
  r->in_pass = 1;
}

void dist_reducer_ready(dist_reducer *r, size_t offset, size_t count) {
  if (!r->in_pass)
    dist_abort(1, "dist: dist_reducer_ready called outside dist_reducer_begin/finish");
  if (offset > r->n || count > r->n - offset)
    dist_abort(1, "dist: gradients [%zu, %zu) reported ready are outside the buffer of %zu floats",
               offset, offset + count, r->n);
  if (count == 0) return;
  size_t end = offset + count;
  int first = (int)((r->n - end) / r->bucket), last = (int)((r->n - 1 - offset) / r->bucket);
  for (int b = first; b <= last; b++) {
    size_t lo = bucket_lo(r, b), hi = bucket_hi(r, b);
    size_t from = offset > lo ? offset : lo, to = end < hi ? end : hi;
    r->ready[b] += to - from;
    if (r->ready[b] > hi - lo)
      dist_abort(1,
                 "dist: gradients [%zu, %zu) reported ready overlap floats already reported "
                 "in this backward pass (bucket %d, floats [%zu, %zu))",
                 offset, end, b, lo, hi);
  }
  int upto = r->released;
  while (upto < r->nb && r->ready[upto] == bucket_hi(r, upto) - bucket_lo(r, upto)) upto++;
  if (upto == r->released) return;
  r->released = upto;
  /* PowerSGD reduces everything in finish, after backward. */
  if (r->has_thread && !psgd_active(r)) issue(r, upto);
}

double dist_reducer_finish(dist_reducer *r) {
  double t0 = util_now();
  if (psgd_active(r)) {
    dist_powersgd_reduce(r->psgd); /* also on one rank: the same step on any count */
  } else if (r->has_thread) {
    issue(r, r->nb);
    pthread_mutex_lock(&r->mu);
    while (r->reduced < r->nb) pthread_cond_wait(&r->done, &r->mu);
    r->issued = r->reduced = 0;
    pthread_mutex_unlock(&r->mu);
  } else if (r->size > 1 && (r->algo == DIST_ALGO_RING || r->algo == DIST_ALGO_HIER)) {
    ring_or_hier_pass(r);
  } else if (r->size > 1) {
    for (int b = 0; b < r->nb; b++) reduce_bucket(r, b);
  }
  memset(r->ready, 0, (size_t)r->nb * sizeof *r->ready);
  r->released = 0;
  r->in_pass = 0;
  r->passes++;
  return 1e3 * (util_now() - t0);
}

size_t dist_reducer_wire_floats(const dist_reducer *r) {
  return r->psgd ? dist_powersgd_wire_floats(r->psgd) : r->n;
}

int dist_reducer_compressed_matrices(const dist_reducer *r) {
  return r->psgd ? dist_powersgd_matrices(r->psgd) : 0;
}

size_t dist_reducer_state_floats(const dist_reducer *r) {
  return r->psgd ? dist_powersgd_state_floats(r->psgd) : 0;
}

size_t dist_reducer_error_floats(const dist_reducer *r) {
  return r->psgd ? dist_powersgd_error_floats(r->psgd) : 0;
}

void dist_reducer_state_copy(dist_reducer *r, float *buf, size_t offset, size_t count, int to_buf) {
  size_t total = dist_reducer_state_floats(r);
  if (offset > total || count > total - offset)
    dist_abort(1, "dist: reducer state [%zu, %zu) is outside its %zu floats", offset,
               offset + count, total);
  if (!to_buf && r->in_pass) dist_abort(1, "dist: reducer state written during a backward pass");
  if (r->psgd && count > 0) dist_powersgd_state(r->psgd, buf, offset, count, to_buf);
}

int64_t dist_reducer_passes(const dist_reducer *r) {
  return r->passes;
}

void dist_reducer_set_passes(dist_reducer *r, int64_t passes) {
  if (r->in_pass) dist_abort(1, "dist: dist_reducer_set_passes called during a backward pass");
  if (passes < 0) dist_abort(1, "dist: reducer passes %lld must be at least 0", (long long)passes);
  r->passes = passes;
}

void dist_reducer_get_state(const dist_reducer *r, float *state, int64_t *passes) {
  dist_reducer_state_copy((dist_reducer *)r, state, 0, dist_reducer_state_floats(r), 1);
  *passes = r->passes;
}

void dist_reducer_set_state(dist_reducer *r, const float *state, int64_t passes) {
  if (r->in_pass) dist_abort(1, "dist: dist_reducer_set_state called during a backward pass");
  dist_reducer_state_copy(r, (float *)state, 0, dist_reducer_state_floats(r), 0);
  r->passes = passes;
}
