/*
 * data/rng.c: the counter-based random numbers of data/ (see internal.h),
 * the deterministic epoch permutation and hold-out split every rank computes
 * alike.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "internal.h"
#include "util.h"

/* splitmix64's output function: a bijective 64-bit mixer. */
static uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

data_rng data_rng_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t h = mix64(a + 0x9E3779B97F4A7C15ull);
  h = mix64(h ^ (b + 0xD1B54A32D192ED03ull));
  h = mix64(h ^ (c + 0x8CB92BA72F3D8DD7ull));
  h = mix64(h ^ (d + 0xABC98388FB8FAC03ull));
  data_rng r = {h};
  return r;
}

uint64_t data_rng_next(data_rng *r) {
  r->s += 0x9E3779B97F4A7C15ull;
  return mix64(r->s);
}

double data_rng_uniform(data_rng *r) {
  return (double)(data_rng_next(r) >> 11) * 0x1.0p-53;
}

/* The modulo bias is below n / 2^64: immaterial for any n we see. */
uint64_t data_rng_below(data_rng *r, uint64_t n) {
  return data_rng_next(r) % n;
}

double data_rng_normal(data_rng *r) {
  double u1 = 1.0 - data_rng_uniform(r); /* (0, 1]: log is finite */
  double u2 = data_rng_uniform(r);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void data_epoch_permutation(int64_t n, uint64_t seed, int64_t epoch, int shuffle, int64_t *perm) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  if (!shuffle) return;
  data_rng r = data_rng_key(seed, DATA_STREAM_PERM, (uint64_t)epoch, 0);
  for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int64_t j = (int64_t)data_rng_below(&r, (uint64_t)i + 1);
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

int64_t data_holdout_count(int64_t n, double fraction) {
  if (!(fraction > 0)) return 0;
  if (fraction >= 1) return n;
  int64_t k = (int64_t)llround(fraction * (double)n);
  if (k == 0) k = 1; /* a requested hold-out is never silently empty */
  return k > n ? n : k;
}

int data_holdout_mask(int64_t n, double fraction, uint64_t seed, uint8_t *held_out) {
  memset(held_out, 0, (size_t)n);
  int64_t k = data_holdout_count(n, fraction);
  if (k == 0) return 0;
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  if (!perm) return -1;
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  data_rng r = data_rng_key(seed, DATA_STREAM_SPLIT, 0, 0);
  for (int64_t i = 0; i < k; i++) { /* partial Fisher-Yates: the first k are the sample */
    int64_t j = i + (int64_t)data_rng_below(&r, (uint64_t)(n - i));
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
    held_out[perm[i]] = 1;
  }
  free(perm);
  return 0;
}

int data_holdout_split(int64_t n, double fraction, uint64_t seed, int64_t **keep, int64_t *num_keep,
                       int64_t **held, int64_t *num_held, char *err, size_t errlen) {
  *keep = *held = NULL;
  *num_keep = *num_held = 0;
  if (n <= 0) return util_errf(err, errlen, "hold-out split of %lld samples", (long long)n);
  if (!(fraction >= 0 && fraction < 1))
    return util_errf(err, errlen, "hold-out fraction %g is not in [0, 1)", fraction);
  uint8_t *mask = malloc((size_t)n);
  int64_t nh = data_holdout_count(n, fraction);
  int64_t *k = malloc((size_t)(n - nh + 1) * sizeof *k);
  int64_t *h = malloc((size_t)(nh + 1) * sizeof *h);
  if (!mask || !k || !h) {
    free(mask), free(k), free(h);
    return util_errf(err, errlen, "out of memory splitting %lld samples", (long long)n);
  }
  if (data_holdout_mask(n, fraction, seed, mask) != 0) {
    free(mask), free(k), free(h);
    return util_errf(err, errlen, "out of memory splitting %lld samples", (long long)n);
  }
  int64_t a = 0, b = 0;
  for (int64_t i = 0; i < n; i++) {
    if (mask[i])
      h[b++] = i;
    else
      k[a++] = i;
  }
  free(mask);
  *keep = k, *num_keep = a, *held = h, *num_held = b;
  return 0;
}
