/*
 * nn/bf16_portable.h: the 22 AVX-512F/BW/BF16 intrinsics and the 6 AMX ones
 * nn/bf16.c uses, written out in portable C from the Intel Intrinsics Guide's
 * and the SDM's operation pseudo-code, so that a test build of nn/bf16.c
 * (NN_BF16_PORTABLE, tests/bf16.cmake) runs the avx512_bf16 and amx kernels'
 * packing and micro-kernels on any CPU. Never part of the library: there the
 * real instructions run.
 *
 * Why: a session's machine may have no AVX512-BF16 (AMD Zen 3) or no AMX, and
 * then the real kernel's test is skipped; this build still checks every index,
 * mask, transpose and tile shape of that code against the same references. What it cannot check is
 * the hardware's own arithmetic, which is modelled here as the manuals give
 * it: vcvtne2ps2bf16 and vdpbf16ps round to nearest even, treat denormal
 * inputs as zero and flush denormal results (they ignore MXCSR); vdpbf16ps
 * adds the odd pair's product before the even one's, each rounded once (the
 * products of two bf16 are exact in float32).
 *
 * The vector types are GCC vector types, so that nn/bf16.c's casts between
 * them compile as they do with <immintrin.h>. Masked loads never touch the
 * masked-off elements (the kernel relies on it at the end of a buffer).
 */
#ifndef NN_BF16_PORTABLE_H
#define NN_BF16_PORTABLE_H

#include <stdint.h>
#include <string.h>

typedef float nnp_ps __attribute__((vector_size(64), may_alias));
typedef long long nnp_si __attribute__((vector_size(64), may_alias));
typedef short nnp_bh __attribute__((vector_size(64), may_alias));
typedef long long nnp_si256 __attribute__((vector_size(32), may_alias));
typedef short nnp_bh256 __attribute__((vector_size(32), may_alias));
#define __m512 nnp_ps
#define __m512i nnp_si
#define __m512bh nnp_bh
#define __m256i nnp_si256
#define __m256bh nnp_bh256
#define __mmask16 uint16_t

/* Element views: 16 dwords (or floats), 32 words, 8 qwords of a 512-bit value. */
typedef union {
  float f[16];
  uint32_t d[16];
  uint16_t w[32];
  uint64_t q[8];
} nnp_lanes;

static inline nnp_lanes nnp_of(const void *v) {
  nnp_lanes l;
  memcpy(&l, v, sizeof l);
  return l;
}
/* The lanes as a vector; a cast makes it any other 512-bit vector type. */
static inline __m512 nnp_ps_of(nnp_lanes l) {
  __m512 r;
  memcpy(&r, &l, sizeof r);
  return r;
}

static inline float nnp_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static inline uint32_t nnp_u32(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
/* Denormals to signed zero (DAZ on inputs, FTZ on results). */
static inline float nnp_flush(float f) {
  uint32_t u = nnp_u32(f);
  return (u & 0x7F800000u) == 0 ? nnp_f32(u & 0x80000000u) : f;
}
/* float32 to bf16: round to nearest even; NaN quiet, denormal inputs zero. */
static inline uint16_t nnp_bf16(float f) {
  uint32_t u = nnp_u32(nnp_flush(f));
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline __m512 _mm512_setzero_ps(void) {
  return (__m512){0};
}
static inline __m512i _mm512_setzero_si512(void) {
  return (__m512i){0};
}
static inline __m512i _mm512_set1_epi32(int v) {
  nnp_lanes l;
  for (int i = 0; i < 16; i++) l.d[i] = (uint32_t)v;
  return (__m512i)nnp_ps_of(l);
}
static inline __m512 _mm512_loadu_ps(const void *p) {
  __m512 r;
  memcpy(&r, p, sizeof r);
  return r;
}
static inline __m512i _mm512_load_si512(const void *p) {
  __m512i r;
  memcpy(&r, p, sizeof r);
  return r;
}
static inline __m512 _mm512_maskz_loadu_ps(__mmask16 k, const void *p) {
  nnp_lanes l;
  const float *f = p;
  for (int i = 0; i < 16; i++) l.f[i] = (k >> i) & 1 ? f[i] : 0.0f;
  return nnp_ps_of(l);
}
static inline void _mm512_storeu_ps(void *p, __m512 v) {
  memcpy(p, &v, sizeof v);
}
static inline void _mm512_storeu_si512(void *p, __m512i v) {
  memcpy(p, &v, sizeof v);
}
static inline void _mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 v) {
  nnp_lanes l = nnp_of(&v);
  float *f = p;
  for (int i = 0; i < 16; i++)
    if ((k >> i) & 1) f[i] = l.f[i];
}
static inline void _mm512_mask_storeu_epi32(void *p, __mmask16 k, __m512i v) {
  nnp_lanes l = nnp_of(&v);
  uint32_t *d = p;
  for (int i = 0; i < 16; i++)
    if ((k >> i) & 1) d[i] = l.d[i];
}
static inline __m512 _mm512_add_ps(__m512 a, __m512 b) {
  return a + b;
}
static inline __m512i _mm512_or_si512(__m512i a, __m512i b) {
  return a | b;
}
static inline __m512i _mm512_slli_epi32(__m512i a, unsigned n) {
  nnp_lanes l = nnp_of(&a);
  for (int i = 0; i < 16; i++) l.d[i] = n > 31 ? 0 : l.d[i] << n;
  return (__m512i)nnp_ps_of(l);
}
static inline __m512i _mm512_cvtepu16_epi32(__m256i a) {
  uint16_t w[16];
  memcpy(w, &a, sizeof w);
  nnp_lanes l;
  for (int i = 0; i < 16; i++) l.d[i] = w[i];
  return (__m512i)nnp_ps_of(l);
}

/* In each 128-bit lane: a0 b0 a1 b1 (lo), a2 b2 a3 b3 (hi). */
static inline __m512i nnp_unpack32(__m512i a, __m512i b, int hi) {
  nnp_lanes x = nnp_of(&a), y = nnp_of(&b), r;
  for (int lane = 0; lane < 4; lane++)
    for (int i = 0; i < 2; i++) {
      r.d[4 * lane + 2 * i] = x.d[4 * lane + 2 * hi + i];
      r.d[4 * lane + 2 * i + 1] = y.d[4 * lane + 2 * hi + i];
    }
  return (__m512i)nnp_ps_of(r);
}
static inline __m512i _mm512_unpacklo_epi32(__m512i a, __m512i b) {
  return nnp_unpack32(a, b, 0);
}
static inline __m512i _mm512_unpackhi_epi32(__m512i a, __m512i b) {
  return nnp_unpack32(a, b, 1);
}
/* In each 128-bit lane: a's and b's low qwords (lo) or high qwords (hi). */
static inline __m512i nnp_unpack64(__m512i a, __m512i b, int hi) {
  nnp_lanes x = nnp_of(&a), y = nnp_of(&b), r;
  for (int lane = 0; lane < 4; lane++) {
    r.q[2 * lane] = x.q[2 * lane + hi];
    r.q[2 * lane + 1] = y.q[2 * lane + hi];
  }
  return (__m512i)nnp_ps_of(r);
}
static inline __m512i _mm512_unpacklo_epi64(__m512i a, __m512i b) {
  return nnp_unpack64(a, b, 0);
}
static inline __m512i _mm512_unpackhi_epi64(__m512i a, __m512i b) {
  return nnp_unpack64(a, b, 1);
}
/* Lanes 0, 1 from a and 2, 3 from b, each picked by two bits of imm. */
static inline __m512i _mm512_shuffle_i32x4(__m512i a, __m512i b, int imm) {
  nnp_lanes x = nnp_of(&a), y = nnp_of(&b), r;
  for (int lane = 0; lane < 4; lane++) {
    const int pick = (imm >> (2 * lane)) & 3;
    memcpy(&r.d[4 * lane], lane < 2 ? &x.d[4 * pick] : &y.d[4 * pick], 16);
  }
  return (__m512i)nnp_ps_of(r);
}

/* Words 0-15 from b, 16-31 from a. */
static inline __m512bh _mm512_cvtne2ps_pbh(__m512 a, __m512 b) {
  nnp_lanes x = nnp_of(&a), y = nnp_of(&b), r;
  for (int i = 0; i < 16; i++) {
    r.w[i] = nnp_bf16(y.f[i]);
    r.w[16 + i] = nnp_bf16(x.f[i]);
  }
  return (__m512bh)nnp_ps_of(r);
}
static inline __m256bh _mm512_cvtneps_pbh(__m512 a) {
  nnp_lanes x = nnp_of(&a);
  uint16_t w[16];
  for (int i = 0; i < 16; i++) w[i] = nnp_bf16(x.f[i]);
  __m256bh r;
  memcpy(&r, w, sizeof r);
  return r;
}
/* dst[j] = src[j] + a[2j+1] b[2j+1] + a[2j] b[2j], in that order. */
static inline __m512 _mm512_dpbf16_ps(__m512 src, __m512bh a, __m512bh b) {
  nnp_lanes s = nnp_of(&src), x = nnp_of(&a), y = nnp_of(&b);
  for (int j = 0; j < 16; j++) {
    float t = nnp_flush(s.f[j]);
    for (int h = 1; h >= 0; h--) {
      const float p = nnp_flush(nnp_f32((uint32_t)x.w[2 * j + h] << 16)) *
                      nnp_flush(nnp_f32((uint32_t)y.w[2 * j + h] << 16));
      t = nnp_flush(t + p);
    }
    s.f[j] = t;
  }
  return nnp_ps_of(s);
}

/* ---- AMX: 8 tiles of up to 16 rows x 64 bytes, per thread ---------------- */
/* The hardware faults (#UD) on a tile shape an instruction cannot use; the
 * model aborts with the reason instead, so a test run reports it. */

typedef struct {
  int configured;
  uint8_t rows[8];
  uint16_t colsb[8];
  uint8_t data[8][16][64];
} nnp_tiles;
static _Thread_local nnp_tiles nnp_tile;

#include <stdio.h>
#include <stdlib.h>
static inline void nnp_tile_fault(const char *what) {
  fprintf(stderr, "bf16_portable.h: AMX fault: %s\n", what);
  abort();
}
static inline void nnp_tile_check(int t) {
  if (!nnp_tile.configured) nnp_tile_fault("tile instruction before ldtilecfg");
  if (t < 0 || t > 7 || nnp_tile.rows[t] == 0) nnp_tile_fault("tile not configured");
}

/* ldtilecfg: palette 1, start_row 0, colsb (u16) at byte 16, rows at 48. */
static inline void _tile_loadconfig(const void *config) {
  const uint8_t *c = config;
  if (c[0] != 1) nnp_tile_fault("palette is not 1");
  if (c[1] != 0) nnp_tile_fault("start_row is not 0");
  for (int i = 2; i < 16; i++)
    if (c[i]) nnp_tile_fault("reserved config bytes are not 0");
  for (int t = 0; t < 8; t++) {
    memcpy(&nnp_tile.colsb[t], c + 16 + 2 * t, 2);
    nnp_tile.rows[t] = c[48 + t];
    if (nnp_tile.rows[t] > 16 || nnp_tile.colsb[t] > 64 || nnp_tile.colsb[t] % 4)
      nnp_tile_fault("tile larger than 16 rows x 64 bytes");
  }
  memset(nnp_tile.data, 0, sizeof nnp_tile.data);
  nnp_tile.configured = 1;
}
static inline void _tile_release(void) {
  memset(&nnp_tile, 0, sizeof nnp_tile);
}
/* tileloadd: row r from base + r * stride, colsb bytes; the rest zero. */
static inline void nnp_tile_loadd(int t, const void *base, long stride) {
  nnp_tile_check(t);
  memset(nnp_tile.data[t], 0, sizeof nnp_tile.data[t]);
  for (int r = 0; r < nnp_tile.rows[t]; r++)
    memcpy(nnp_tile.data[t][r], (const uint8_t *)base + r * stride, nnp_tile.colsb[t]);
}
static inline void nnp_tile_stored(int t, void *base, long stride) {
  nnp_tile_check(t);
  for (int r = 0; r < nnp_tile.rows[t]; r++)
    memcpy((uint8_t *)base + r * stride, nnp_tile.data[t][r], nnp_tile.colsb[t]);
}
static inline void nnp_tile_zero(int t) {
  nnp_tile_check(t);
  memset(nnp_tile.data[t], 0, sizeof nnp_tile.data[t]);
}
/* tdpbf16ps c, a, b: c (M x N float32) += a (M x K/2 pairs of bf16) times b
 * (K/2 rows x N pairs): for each pair k, the even products then the odd ones,
 * each added with one rounding. Shapes: a.colsb / 4 == b.rows, c.rows ==
 * a.rows, c.colsb == b.colsb. */
static inline void nnp_tile_dpbf16ps(int c, int a, int b) {
  nnp_tile_check(c), nnp_tile_check(a), nnp_tile_check(b);
  if (nnp_tile.colsb[a] / 4 != nnp_tile.rows[b] || nnp_tile.rows[c] != nnp_tile.rows[a] ||
      nnp_tile.colsb[c] != nnp_tile.colsb[b])
    nnp_tile_fault("tdpbf16ps tile shapes do not match");
  const int rows = nnp_tile.rows[c], pairs = nnp_tile.colsb[a] / 4, cols = nnp_tile.colsb[c] / 4;
  /* The operands widened to float32 once (bf16 is float32's top half). */
  float x[16][32], y[16][32], acc[16][16];
  for (int m = 0; m < rows; m++)
    for (int i = 0; i < 2 * pairs; i++) {
      uint16_t w;
      memcpy(&w, &nnp_tile.data[a][m][2 * i], 2);
      x[m][i] = nnp_flush(nnp_f32((uint32_t)w << 16));
    }
  for (int k = 0; k < pairs; k++)
    for (int i = 0; i < 2 * cols; i++) {
      uint16_t w;
      memcpy(&w, &nnp_tile.data[b][k][2 * i], 2);
      y[k][i] = nnp_flush(nnp_f32((uint32_t)w << 16));
    }
  memcpy(acc, nnp_tile.data[c], sizeof acc);
  for (int m = 0; m < rows; m++)
    for (int k = 0; k < pairs; k++)
      for (int h = 0; h < 2; h++)
        for (int n = 0; n < cols; n++)
          acc[m][n] = nnp_flush(acc[m][n] + x[m][2 * k + h] * y[k][2 * n + h]);
  memcpy(nnp_tile.data[c], acc, sizeof acc);
}
#define _tile_loadd(t, base, stride) nnp_tile_loadd(t, base, stride)
#define _tile_stored(t, base, stride) nnp_tile_stored(t, base, stride)
#define _tile_zero(t) nnp_tile_zero(t)
#define _tile_dpbf16ps(c, a, b) nnp_tile_dpbf16ps(c, a, b)

#endif
