/*
 * data/internal.h: what the files of data/ share and nobody else needs: the
 * counter-based random numbers (data must not link nn), error formatting,
 * the HDF5 error-stack silencer, a clock.
 *
 * Randomness: every random decision is a pure function of a key (seed, a
 * stream tag, and counters such as epoch and sample index), never of thread
 * timing or rank count. data_rng_key hashes the key to a 64-bit state and
 * data_rng_next walks a splitmix64 sequence from it.
 */
#ifndef DATA_INTERNAL_H
#define DATA_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Stream tags: keep different uses of one seed independent. */
enum {
  DATA_STREAM_PERM = 1,  /* epoch permutation: (seed, epoch) */
  DATA_STREAM_AUG = 2,   /* augmentation: (seed, epoch, sample index) */
  DATA_STREAM_SPLIT = 3, /* hold-out split: (seed) */
  DATA_STREAM_SYNTH = 4, /* synthetic samples: (seed, sample index) */
  DATA_STREAM_CLASS = 5  /* synthetic class patterns: (class) only */
};

typedef struct {
  uint64_t s;
} data_rng;

/* A generator whose sequence depends only on (a, b, c, d). */
data_rng data_rng_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
uint64_t data_rng_next(data_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double data_rng_uniform(data_rng *r);
/* Uniform integer in [0, n); n > 0. */
uint64_t data_rng_below(data_rng *r, uint64_t n);
/* Standard normal (Box-Muller, one value per call). */
double data_rng_normal(data_rng *r);

/* Marks the samples of [0, n) held out for validation: exactly
 * data_holdout_count(n, fraction) of them, chosen by seed alone (a partial
 * Fisher-Yates draw). held_out has n bytes. Returns 0, or -1 out of memory. */
int data_holdout_mask(int64_t n, double fraction, uint64_t seed, uint8_t *held_out);

/* Per-channel mean and std of pixels scaled to [0, 1] from exact sums over
 * cnt pixels (a constant channel gets std 1): the writer's attributes, and
 * shards' combined ones, computed alike so they agree bit for bit. */
void data_stats_from_sums(const uint64_t *sum, const uint64_t *sumsq, double cnt, int c,
                          float *mean, float *sd);

#endif
