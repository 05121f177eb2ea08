/*
 * nn/bf16.c: the bf16 matrix product of the mixed-precision mode: C (float32)
 * = A B with A and B float32 in memory, rounded to bfloat16 (round to nearest
 * even) while they are packed, and multiplied with float32 accumulation. It
 * serves every GEMM of the convolutions (im2col and Winograd) and of the
 * linear layers when a network runs in bf16.
 *
 * bfloat16 keeps float32's 8-bit exponent and the top 8 bits of its
 * significand (7 stored): rounding moves an operand by at most half an ulp,
 * 2^-8 of itself, so a product by at most about 2^-7; products of two bf16 are
 * exact in float32 and the sums are float32. A dot product's error is thus at
 * most 2^-7 sum |a_k b_k| and, errors of independent terms adding like a
 * random walk, typically 2-4e-3 of its value (tests/bf16_kernels.c).
 *
 * Packing. AVX512-BF16's vdpbf16ps multiplies 16 pairs of bf16 per lane
 * group: lane j of the float32 accumulator gets a[2j] b[2j] + a[2j+1] b[2j+1].
 * So both operands are packed as pairs along K, one 32-bit word holding the
 * bf16 of (k, k+1) (k's in the low half):
 *   A, per block of KC along K and MR rows: (KC/2, MR) words, a panel;
 *   B, per block of KC along K and NR columns: (KC/2, NR) words, a strip.
 * The micro-kernel keeps an MR x NR tile of C in 24 zmm registers and, for
 * each pair of K, loads a strip row (two zmm) and broadcasts the panel's MR
 * words from memory. Blocking: a strip (KC x NR, 16 KiB) stays in L1 while
 * the kernel sweeps the panels of an A block (MC x KC, 192 KiB, in L2).
 * Operands are read through (row stride, column stride), so the transposes
 * the convolution and linear layers need cost only the packing.
 *
 * Kernels, chosen at run time (nn_bf16_select):
 *   avx512_bf16  vdpbf16ps (CPUs with AVX512-BF16: Intel Cooper Lake, Sapphire
 *                Rapids and later, AMD Zen 4 and later);
 *   amx          tile multiplies (Sapphire Rapids and later), only when
 *                ALEXNET_BF16_KERNEL=amx forces it (see "AMX" below);
 *   emulated     the same packed operands, widened to float32 and multiplied
 *                with float32 FMAs (AVX2 where the CPU has it, else plain C,
 *                the same bits), for CPUs without bf16 instructions and for
 *                tests.
 * The avx512_bf16 and amx code is also compiled against portable C versions
 * of its intrinsics (nn/bf16_portable.h, ctest nn_bf16_*_portable), so that
 * its packing and kernels are tested on CPUs without those instructions too.
 *
 * Packing buffers: one slice per thread, reserved by nn_bf16_reserve (called
 * by nn_net_alloc), so the products never allocate.
 */
#ifdef NN_BF16_PORTABLE
#include "bf16_portable.h" /* a test build: see that header */
#else
#include <immintrin.h>
#endif
#include <cpuid.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "layers.h"

enum {
  MR = 12,   /* rows of a C tile (A panel) */
  NR = 32,   /* columns of a C tile (B strip): two zmm */
  KC = 256,  /* K per block (even) */
  MC = 384,  /* rows of an A block: 32 panels */
  NC = 2048, /* columns of a B block: 64 strips */
};
_Static_assert(MR <= 16, "an A panel's row pair must fit one zmm of words (pack_pairs_avx512)");
/* 32-bit words of one thread's packing slice: an A block and a B block. */
#define PACK_WORDS ((size_t)MC * (KC / 2) + (size_t)NC * (KC / 2))

/* ------------------------------------------------------------------------ */
/* Rounding and kernel choice                                                */

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* The bf16 of f (round to nearest even) in the low 16 bits; NaNs stay NaNs. */
static inline uint32_t bf16_of(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u >> 16) | 0x40u;
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

float nn_bf16_round(float f) {
  return bits_f32(bf16_of(f) << 16);
}

const char *nn_bf16_kernel_name(nn_bf16_kernel k) {
  switch (k) {
    case NN_BF16_FP32:
      return "fp32";
    case NN_BF16_EMULATED:
      return "emulated";
    case NN_BF16_AVX512:
      return "avx512_bf16";
    case NN_BF16_AMX:
      return "amx";
  }
  return "?";
}

int nn_bf16_cpu_has_avx512bf16(void) {
#ifdef NN_BF16_PORTABLE
  return 1; /* the test build's portable intrinsics run anywhere */
#endif
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f");
}

int nn_bf16_cpu_has_amx(void) {
#ifdef NN_BF16_PORTABLE
  return 1; /* the test build's portable tiles run anywhere */
#endif
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
  /* CPUID.(7, 0).EDX: bit 22 AMX-BF16, bit 24 AMX-TILE; the packing is AVX-512. */
  return (edx >> 22 & 1u) && (edx >> 24 & 1u) && nn_bf16_cpu_has_avx512bf16();
}

/* Linux hands out the 8 KiB tile data state only to a process that asks for
 * it (since 5.16); a tile instruction without it is killed with SIGILL. */
static int amx_request(char *err, size_t errlen) {
#ifdef NN_BF16_PORTABLE
  (void)err, (void)errlen;
  return 0;
#else
  enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) return 0;
  snprintf(err, errlen,
           "ALEXNET_BF16_KERNEL=amx: Linux refused the AMX tile state (arch_prctl "
           "ARCH_REQ_XCOMP_PERM: %s; Linux 5.16 or later grants it); use avx512_bf16",
           strerror(errno));
  return -1;
#endif
}

int nn_bf16_select(nn_bf16_kernel *kernel, char *err, size_t errlen) {
  const char *force = getenv("ALEXNET_BF16_KERNEL");
  int has = nn_bf16_cpu_has_avx512bf16();
  /* auto never picks amx yet: its code has only run on the portable tile
   * model (tests/bf16.cmake), not on an AMX CPU; docs/performance.md. */
  if (!force || !*force || strcmp(force, "auto") == 0) {
    *kernel = has ? NN_BF16_AVX512 : NN_BF16_EMULATED;
    return 0;
  }
  if (strcmp(force, "emulated") == 0) {
    *kernel = NN_BF16_EMULATED;
    return 0;
  }
  if (strcmp(force, "avx512_bf16") == 0) {
    if (!has) {
      snprintf(err, errlen,
               "ALEXNET_BF16_KERNEL=avx512_bf16: this CPU lacks the AVX512-BF16 instructions "
               "(cpuid avx512_bf16); unset it or use emulated");
      return -1;
    }
    *kernel = NN_BF16_AVX512;
    return 0;
  }
  if (strcmp(force, "amx") == 0) {
    if (!nn_bf16_cpu_has_amx()) {
      snprintf(err, errlen,
               "ALEXNET_BF16_KERNEL=amx: this CPU lacks the AMX-BF16 tile instructions (cpuid "
               "amx_bf16, amx_tile) or AVX512-BF16; unset it or use avx512_bf16 or emulated");
      return -1;
    }
    if (amx_request(err, errlen) != 0) return -1;
    *kernel = NN_BF16_AMX;
    return 0;
  }
  snprintf(err, errlen, "ALEXNET_BF16_KERNEL=%s: unknown kernel (auto, avx512_bf16, emulated, amx)",
           force);
  return -1;
}

/* 1 when AVX2 and FMA are present: the emulation's kernel and packing use
 * them; -1 until the first nn_bf16_reserve has looked. */
static int emulated_avx2 = -1;

int nn_bf16_emulated_simd(int on) {
  const int was = emulated_avx2 > 0;
#ifndef NN_BF16_PORTABLE
  __builtin_cpu_init();
  emulated_avx2 = on && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  (void)on;
  emulated_avx2 = 0;
#endif
  return was;
}

/* ------------------------------------------------------------------------ */
/* Packing buffers                                                           */

static uint32_t *pack_pool;
static int pack_threads;

int nn_bf16_reserve(int threads) {
  if (emulated_avx2 < 0) nn_bf16_emulated_simd(1);
  if (threads < 1) threads = 1;
  if (threads <= pack_threads) return 0;
  size_t bytes = (size_t)threads * PACK_WORDS * sizeof(uint32_t);
  uint32_t *p = aligned_alloc(64, bytes);
  if (!p) return -1;
  free(pack_pool);
  pack_pool = p;
  pack_threads = threads;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                   */

/* An operand in float32: element (r, c) at p[r * rs + c * cs]. */
typedef struct {
  const float *p;
  size_t rs, cs;
} operand;

static inline float at(const operand *o, size_t r, size_t c) {
  return o->p[r * o->rs + c * o->cs];
}

/* ---- AVX512-BF16 packing: vcvtne2ps2bf16 rounds 32 floats at once ---- */

#ifdef NN_BF16_PORTABLE
#define BF16_TARGET
#else
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
#endif

/* Transposes 16 vectors of 16 words in place: r[i] word j <-> r[j] word i. */
BF16_TARGET static inline void transpose16(__m512i r[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int p = 0; p < 8; p++) {
    t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) {
    r[4 * q] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
    r[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
    r[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
    r[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
  }
  /* Now r[4q + i] holds, in 128-bit lane L, column 4L + i of rows 4q..4q+3. */
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0xdd);
    t[8 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0xdd);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
    r[4 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0x88);
    r[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xdd);
    r[12 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0xdd);
  }
}

/* 16 words of pairs from up to 32 floats of a run along K (k past kc: 0). */
BF16_TARGET static inline __m512i pairs_of_run(const float *p, int left) {
  if (left >= 32) return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p));
  const __mmask16 m0 = left >= 16 ? 0xFFFF : (__mmask16)((1u << (left > 0 ? left : 0)) - 1);
  const __mmask16 m1 = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, p + 16),
                                      _mm512_maskz_loadu_ps(m0, p));
}

/* 16 words pairing 16 floats of row r0 (low halves) with row r1 (high). */
BF16_TARGET static inline __m512i pairs_of_rows(const float *r0, const float *r1, __mmask16 m) {
  __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r0)));
  if (!r1) return lo;
  __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r1)));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* Rows whose K runs are contiguous (rs apart): `rows` (<= 16) runs of kc floats
 * into dst[kp * ld + row], kp < (kc + 1) / 2. */
BF16_TARGET static void pack_runs_avx512(const float *p, size_t rs, int rows, int kc, uint32_t *dst,
                                         size_t ld) {
  const int kp_n = (kc + 1) / 2;
  const __mmask16 store = (__mmask16)((1u << rows) - 1);
  for (int kp0 = 0; kp0 < kp_n; kp0 += 16) {
    __m512i r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
      r[i] = i < rows ? pairs_of_run(p + (size_t)i * rs + 2 * (size_t)kp0, kc - 2 * kp0)
                      : _mm512_setzero_si512();
    transpose16(r);
    const int n = kp_n - kp0 < 16 ? kp_n - kp0 : 16;
    for (int i = 0; i < n; i++) _mm512_mask_storeu_epi32(dst + (size_t)(kp0 + i) * ld, store, r[i]);
  }
}

/* Columns contiguous (cs = 1) along a row, K rows rs apart: pairs of rows for
 * `cols` columns into dst[kp * ld + col]. */
BF16_TARGET static void pack_rows_avx512(const float *p, size_t rs, int cols, int kc, uint32_t *dst,
                                         size_t ld, int pad) {
  const int kp_n = (kc + 1) / 2;
  for (int kp = 0; kp < kp_n; kp++) {
    const float *r0 = p + 2 * (size_t)kp * rs;
    const float *r1 = 2 * kp + 1 < kc ? r0 + rs : NULL;
    uint32_t *d = dst + (size_t)kp * ld;
    for (int j = 0; j < pad; j += 16) {
      const int left = cols - j;
      const __mmask16 m = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
      _mm512_storeu_si512(d + j, pairs_of_rows(r0 + j, r1 ? r1 + j : NULL, m));
    }
  }
}

/* One panel of MR rows contiguous in memory, K rows ks apart: dst[kp][MR] gets
 * the pairs of K rows (2kp, 2kp+1) for `rows` (<= MR) rows, zeros past them
 * and past kc. */
BF16_TARGET static void pack_pairs_avx512(const float *p, size_t ks, int rows, int kc,
                                          uint32_t *dst) {
  const int kp_n = (kc + 1) / 2;
  const __mmask16 load = (__mmask16)((1u << rows) - 1), store = (__mmask16)((1u << MR) - 1);
  for (int kp = 0; kp < kp_n; kp++) {
    const float *r0 = p + 2 * (size_t)kp * ks;
    const float *r1 = 2 * kp + 1 < kc ? r0 + ks : NULL;
    _mm512_mask_storeu_epi32(dst + (size_t)kp * MR, store, pairs_of_rows(r0, r1, load));
  }
}

/* ---- AVX2 packing for the emulation (CPUs without AVX-512) ---- */

#ifndef NN_BF16_PORTABLE
#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* bf16_of on 8 floats at once, the same bits, in the low halves of the lanes. */
AVX2_TARGET static inline __m256i bf16_of_avx2(__m256 f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                         _mm256_set1_epi32(0x7F800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

/* d[j] = pair (r0[j], r1[j]) for j < n; r1 NULL: high halves zero. */
AVX2_TARGET static void pairs_of_rows_avx2(const float *r0, const float *r1, int n, uint32_t *d) {
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i w = bf16_of_avx2(_mm256_loadu_ps(r0 + j));
    if (r1) w = _mm256_or_si256(w, _mm256_slli_epi32(bf16_of_avx2(_mm256_loadu_ps(r1 + j)), 16));
    _mm256_storeu_si256((__m256i *)(d + j), w);
  }
  for (; j < n; j++) d[j] = bf16_of(r0[j]) | (r1 ? bf16_of(r1[j]) << 16 : 0u);
}

/* A run of kc floats along K: d[kp * ld] = pair (p[2kp], p[2kp + 1]). */
AVX2_TARGET static void pairs_of_run_avx2(const float *p, int kc, uint32_t *d, size_t ld) {
  int kp = 0;
  for (; 2 * kp + 16 <= kc; kp += 8) {
    /* 16 floats: bf16 in the low halves of two vectors, packed to 16-bit
     * words (packus works per 128-bit lane: a0-3 b0-3 a4-7 b4-7), lanes put
     * back in order, so 32-bit word i is the pair (2i, 2i + 1). */
    const __m256i lo = bf16_of_avx2(_mm256_loadu_ps(p + 2 * kp));
    const __m256i hi = bf16_of_avx2(_mm256_loadu_ps(p + 2 * kp + 8));
    uint32_t w[8];
    _mm256_storeu_si256((__m256i *)w, _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8));
    for (int i = 0; i < 8; i++) d[(size_t)(kp + i) * ld] = w[i];
  }
  for (; 2 * kp < kc; kp++)
    d[(size_t)kp * ld] = bf16_of(p[2 * kp]) | (2 * kp + 1 < kc ? bf16_of(p[2 * kp + 1]) << 16 : 0u);
}
#endif

/* ---- packing any operand, the same for A and B ---- */
/* A panel is `panel` rows (of A, or of B^T: B's columns) by pairs of K; pack_b
 * passes B^T, its strides swapped, so both read an operand (rows, K). */

/* The emulation's panel on AVX2: rows [r0, r0 + rows) of o, K [k0, k0 + kc)
 * into d[kp][panel], zeros in rows past `rows`. Returns 0, having done
 * nothing, without AVX2 or when neither stride is 1. */
static int pack_panel_avx2(const operand *o, size_t r0, int rows, int panel, size_t k0, int kc,
                           uint32_t *d) {
#ifdef NN_BF16_PORTABLE
  (void)o, (void)r0, (void)rows, (void)panel, (void)k0, (void)kc, (void)d;
  return 0;
#else
  if (emulated_avx2 <= 0 || (o->cs != 1 && o->rs != 1)) return 0;
  const int kp_n = (kc + 1) / 2;
  if (rows < panel)
    for (int kp = 0; kp < kp_n; kp++)
      for (int r = rows; r < panel; r++) d[(size_t)kp * (size_t)panel + (size_t)r] = 0;
  if (o->cs == 1)
    for (int r = 0; r < rows; r++)
      pairs_of_run_avx2(o->p + (r0 + (size_t)r) * o->rs + k0, kc, d + r, (size_t)panel);
  else
    for (int kp = 0; kp < kp_n; kp++) {
      const float *p0 = o->p + (k0 + 2 * (size_t)kp) * o->cs + r0;
      pairs_of_rows_avx2(p0, 2 * kp + 1 < kc ? p0 + o->cs : NULL, rows,
                         d + (size_t)kp * (size_t)panel);
    }
  return 1;
#endif
}

/* Any strides, one bf16_of at a time: the pair (2kp, 2kp + 1) of row r of
 * rows [r0, r0 + rows), K from k0, at d[r * row_step + kp * kp_step], for
 * r < panel and kp < kp_cols; zeros past `rows` and past kc. */
static void pack_panel_scalar(const operand *o, size_t r0, int rows, int panel, size_t k0, int kc,
                              int kp_cols, uint32_t *d, size_t row_step, size_t kp_step) {
  const int kp_n = (kc + 1) / 2;
  for (int r = 0; r < panel; r++)
    for (int kp = 0; kp < kp_cols; kp++) {
      const size_t k = k0 + 2 * (size_t)kp;
      uint32_t w = 0;
      if (r < rows && kp < kp_n) {
        w = bf16_of(at(o, r0 + (size_t)r, k));
        if (2 * kp + 1 < kc) w |= bf16_of(at(o, r0 + (size_t)r, k + 1)) << 16;
      }
      d[(size_t)r * row_step + (size_t)kp * kp_step] = w;
    }
}

/* A rows [m0, m0 + mc), K [k0, k0 + kc) into panels: dst[panel][kp][MR].
 * Rows past mc and K past kc are zeros (rows M.., K.. of the matrix). */
static void pack_a(nn_bf16_kernel kern, const operand *a, size_t m0, int mc, size_t k0, int kc,
                   uint32_t *dst) {
  const int kp_n = (kc + 1) / 2, panels = (mc + MR - 1) / MR;
  for (int pnl = 0; pnl < panels; pnl++) {
    uint32_t *d = dst + (size_t)pnl * (size_t)kp_n * MR;
    const int rows = mc - pnl * MR < MR ? mc - pnl * MR : MR;
    const size_t m = m0 + (size_t)pnl * MR;
    if (kern == NN_BF16_AVX512 && a->cs == 1) {
      if (rows < MR)
        for (size_t i = 0; i < (size_t)kp_n * MR; i++) d[i] = 0;
      pack_runs_avx512(a->p + m * a->rs + k0, a->rs, rows, kc, d, MR);
      continue;
    }
    if (kern == NN_BF16_AVX512 && a->rs == 1) {
      /* A transposed (W^T of a convolution's dx, dy^T of a linear layer's
       * dW): the panel's rows are contiguous in memory, so each pair of K is
       * one masked row pair, rows past `rows` loading as zeros. */
      pack_pairs_avx512(a->p + k0 * a->cs + m, a->cs, rows, kc, d);
      continue;
    }
    if (kern == NN_BF16_EMULATED && pack_panel_avx2(a, m, rows, MR, k0, kc, d)) continue;
    pack_panel_scalar(a, m, rows, MR, k0, kc, kp_n, d, 1, MR);
  }
}

/* B K [k0, k0 + kc), columns [n0, n0 + nc) into strips: dst[strip][kp][NR],
 * kp < kp_rows (>= (kc + 1) / 2: amx rounds it up to whole tiles); columns
 * past nc and K past kc are zeros. amx packs B as avx512_bf16 does. */
static void pack_b(nn_bf16_kernel kern, const operand *b, size_t k0, int kc, size_t n0, int nc,
                   int kp_rows, uint32_t *dst) {
  const int kp_n = (kc + 1) / 2, strips = (nc + NR - 1) / NR;
  const operand bt = {b->p, b->cs, b->rs}; /* B^T (N, K): a strip is a panel of it */
  for (int s = 0; s < strips; s++) {
    uint32_t *d = dst + (size_t)s * (size_t)kp_rows * NR;
    memset(d + (size_t)kp_n * NR, 0, (size_t)(kp_rows - kp_n) * NR * sizeof *d);
    const int j_n = nc - s * NR < NR ? nc - s * NR : NR;
    const size_t n = n0 + (size_t)s * NR;
    if (kern != NN_BF16_EMULATED && b->cs == 1) {
      pack_rows_avx512(b->p + k0 * b->rs + n, b->rs, j_n, kc, d, NR, NR);
      continue;
    }
    if (kern != NN_BF16_EMULATED && b->rs == 1) {
      for (int h = 0; h < NR; h += 16) {
        const int cols = j_n - h < 0 ? 0 : j_n - h < 16 ? j_n - h : 16;
        if (cols < 16)
          for (int kp = 0; kp < kp_n; kp++)
            for (int j = cols; j < 16; j++) d[(size_t)kp * NR + (size_t)h + (size_t)j] = 0;
        if (cols) pack_runs_avx512(b->p + (n + (size_t)h) * b->cs + k0, b->cs, cols, kc, d + h, NR);
      }
      continue;
    }
    if (kern == NN_BF16_EMULATED && pack_panel_avx2(&bt, n, j_n, NR, k0, kc, d)) continue;
    pack_panel_scalar(&bt, n, j_n, NR, k0, kc, kp_n, d, 1, NR);
  }
}

/* ------------------------------------------------------------------------ */
/* Micro-kernels: C tile (mv <= MR rows, nv <= NR columns, ldc) = (acc ? C : 0)
 * + panel a (kp_n, MR) x strip b (kp_n, NR).                                */

BF16_TARGET static void kernel_avx512(int kp_n, const uint32_t *a, const uint32_t *b, float *c,
                                      size_t ldc, int acc, int mv, int nv) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int kp = 0; kp < kp_n; kp++) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);
      c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
    }
    a += MR;
    b += NR;
  }
  if (mv == MR && nv == NR) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      float *cr = c + (size_t)r * ldc;
      if (acc) {
        c0[r] = _mm512_add_ps(c0[r], _mm512_loadu_ps(cr));
        c1[r] = _mm512_add_ps(c1[r], _mm512_loadu_ps(cr + 16));
      }
      _mm512_storeu_ps(cr, c0[r]);
      _mm512_storeu_ps(cr + 16, c1[r]);
    }
    return;
  }
  const __mmask16 k0 = nv >= 16 ? 0xFFFF : (__mmask16)((1u << nv) - 1);
  const __mmask16 k1 = nv >= 32 ? 0xFFFF : nv <= 16 ? 0 : (__mmask16)((1u << (nv - 16)) - 1);
  for (int r = 0; r < mv; r++) {
    float *cr = c + (size_t)r * ldc;
    if (acc) {
      c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(k0, cr));
      c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(k1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, k0, c0[r]);
    _mm512_mask_storeu_ps(cr + 16, k1, c1[r]);
  }
}

/* The emulation adds each pair's two products to the float32 sum one at a
 * time, the odd one first, as the SDM's pseudo-code of vdpbf16ps does: a
 * product of two bf16 is exact in float32, so each addition rounds once,
 * whether written as a multiply and an add or as an FMA. The AVX2 kernel and
 * the plain C one therefore give the same bits (by the pseudo-code, also
 * vdpbf16ps's but for its flushing of denormals: not yet compared on a CPU). */
static void kernel_emulated_c(int kp_n, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                              int acc, int mv, int nv) {
  float t[MR][NR];
  memset(t, 0, sizeof t);
  for (int kp = 0; kp < kp_n; kp++) {
    float b0[NR], b1[NR];
    for (int j = 0; j < NR; j++) {
      b0[j] = bits_f32(b[j] << 16);
      b1[j] = bits_f32(b[j] & 0xFFFF0000u);
    }
    for (int r = 0; r < MR; r++) {
      const float a0 = bits_f32(a[r] << 16), a1 = bits_f32(a[r] & 0xFFFF0000u);
      for (int j = 0; j < NR; j++) {
        t[r][j] += a1 * b1[j];
        t[r][j] += a0 * b0[j];
      }
    }
    a += MR;
    b += NR;
  }
  for (int r = 0; r < mv; r++) {
    float *cr = c + (size_t)r * ldc;
    for (int j = 0; j < nv; j++) cr[j] = acc ? cr[j] + t[r][j] : t[r][j];
  }
}

#ifndef NN_BF16_PORTABLE
/* AVX2 + FMA (16 ymm registers): the 12 x 32 tile as 3 x 2 blocks of 4 rows x
 * 16 columns, 8 accumulators each. The panel's words are widened once into
 * (even, odd) float pairs so that each row costs a broadcast from memory; a
 * strip row's 16 words are widened in registers (shift for the even halves,
 * mask for the odd) and serve the block's 4 rows. */
__attribute__((target("avx2,fma"))) static void kernel_emulated_avx2(int kp_n, const uint32_t *a,
                                                                     const uint32_t *b, float *c,
                                                                     size_t ldc, int acc, int mv,
                                                                     int nv) {
  float aw[KC / 2][MR][2]; /* (even, odd) of the panel's words */
  for (int kp = 0; kp < kp_n; kp++)
    for (int r = 0; r < MR; r++) {
      aw[kp][r][0] = bits_f32(a[(size_t)kp * MR + r] << 16);
      aw[kp][r][1] = bits_f32(a[(size_t)kp * MR + r] & 0xFFFF0000u);
    }
  const __m256i odd_mask = _mm256_set1_epi32((int)0xFFFF0000u);
  for (int r0 = 0; r0 < MR; r0 += 4)
    for (int j0 = 0; j0 < NR; j0 += 16) {
      __m256 t[4][2];
      for (int r = 0; r < 4; r++) t[r][0] = t[r][1] = _mm256_setzero_ps();
      const uint32_t *bp = b + j0;
      for (int kp = 0; kp < kp_n; kp++, bp += NR) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)bp);
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(bp + 8));
        const __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(w0, 16));
        const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16));
        const __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(w0, odd_mask));
        const __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(w1, odd_mask));
        for (int r = 0; r < 4; r++) {
          const __m256 ae = _mm256_broadcast_ss(&aw[kp][r0 + r][0]);
          const __m256 ao = _mm256_broadcast_ss(&aw[kp][r0 + r][1]);
          t[r][0] = _mm256_fmadd_ps(ae, e0, _mm256_fmadd_ps(ao, o0, t[r][0]));
          t[r][1] = _mm256_fmadd_ps(ae, e1, _mm256_fmadd_ps(ao, o1, t[r][1]));
        }
      }
      for (int r = 0; r < 4 && r0 + r < mv; r++) {
        float *cr = c + (size_t)(r0 + r) * ldc + j0;
        float row[16];
        _mm256_storeu_ps(row, t[r][0]);
        _mm256_storeu_ps(row + 8, t[r][1]);
        for (int j = 0; j < 16 && j0 + j < nv; j++) cr[j] = acc ? cr[j] + row[j] : row[j];
      }
    }
}
#endif

static void kernel_emulated(int kp_n, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                            int acc, int mv, int nv) {
#ifndef NN_BF16_PORTABLE
  if (emulated_avx2 > 0) {
    kernel_emulated_avx2(kp_n, a, b, c, ldc, acc, mv, nv);
    return;
  }
#endif
  kernel_emulated_c(kp_n, a, b, c, ldc, acc, mv, nv);
}

/* ------------------------------------------------------------------------ */
/* AMX: C += A B by tile multiplies (tdpbf16ps: a 16 x 16 float32 tile of C
 * += a 16 x 32 bf16 tile of A times a 32 x 16 bf16 tile of B, 8192
 * multiply-adds per instruction).
 *
 * A 32 x 32 block of C lives in 4 tiles (tmm0 rows 0-15 x columns 0-15, tmm1
 * rows 0-15 x 16-31, tmm2 rows 16-31 x 0-15, tmm3 rows 16-31 x 16-31); per 16
 * pairs of K the kernel loads two A tiles (tmm4 rows 0-15, tmm5 rows 16-31)
 * and two B tiles (tmm6 columns 0-15, tmm7 16-31) and does 4 multiplies, so
 * each tile loaded serves two of them. Packing:
 *   A: panels of AM = 32 rows, row-major: panel[row][kp], kp_pad words a row
 *      (pairs of K, k's in the low half, as everywhere here), so a tile is 16
 *      rows of 64 bytes, kp_pad * 4 bytes apart;
 *   B: avx512_bf16's strips (kp, NR = 32 words), a tile being 16 rows of one
 *      half of a strip, 128 bytes apart.
 * K is padded with zero pairs to kp_pad, a multiple of KT = 16 pairs; rows past
 * M and columns past N are zeros too, and a C block that is not whole goes
 * through a 32 x 32 buffer. gemm_serial runs the blocks. */

enum { AM = 32, KT = 16 };
_Static_assert(MC % AM == 0 && (KC / 2) % KT == 0, "amx panels and tiles must fill the blocks");
_Static_assert(NR == 32, "a B strip is two tiles of 16 columns");

#ifdef NN_BF16_PORTABLE
#define AMX_TARGET
#else
#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
#endif
/* The tile intrinsics are asm statements that do not name the memory they
 * read: this keeps the packing's stores before them and C's reads after. */
#define AMX_MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

/* ldtilecfg's 64 bytes: palette 1; tiles 0-7 of 16 rows x 64 bytes. */
static const struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} __attribute__((aligned(64)))
amx_config = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
_Static_assert(sizeof amx_config == 64, "ldtilecfg reads 64 bytes");

/* Rows with contiguous K (rs apart): row r's pairs [kp0, kp0 + 16) are one
 * vcvtne2ps2bf16 of 32 floats, stored as they come. Rows past `rows`, pairs
 * past kc: zeros. */
BF16_TARGET static void pack_runs_amx(const float *p, size_t rs, int rows, int kc, int kp_pad,
                                      uint32_t *dst) {
  for (int r = 0; r < AM; r++)
    for (int kp0 = 0; kp0 < kp_pad; kp0 += 16) {
      const __m512i v = r < rows ? pairs_of_run(p + (size_t)r * rs + 2 * (size_t)kp0, kc - 2 * kp0)
                                 : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + (size_t)r * (size_t)kp_pad + (size_t)kp0, v);
    }
}

/* 16 rows contiguous in memory, K rows ks apart (A transposed): 16 pairs of
 * K give 16 vectors of the rows' words, transposed into the rows' runs of
 * pairs. rows may be <= 0 (all zeros) or past 16 (16 are packed). */
BF16_TARGET static void pack_pairs_amx(const float *p, size_t ks, int rows, int kc, int kp_pad,
                                       uint32_t *dst) {
  const int kp_n = (kc + 1) / 2;
  const __mmask16 load = rows >= 16 ? 0xFFFF : rows <= 0 ? 0 : (__mmask16)((1u << rows) - 1);
  for (int kp0 = 0; kp0 < kp_pad; kp0 += 16) {
    __m512i r[16];
    for (int i = 0; i < 16; i++) {
      const int kp = kp0 + i;
      const float *r0 = p + 2 * (size_t)kp * ks;
      r[i] = kp < kp_n ? pairs_of_rows(r0, 2 * kp + 1 < kc ? r0 + ks : NULL, load)
                       : _mm512_setzero_si512();
    }
    transpose16(r);
    for (int j = 0; j < 16; j++)
      _mm512_storeu_si512(dst + (size_t)j * (size_t)kp_pad + (size_t)kp0, r[j]);
  }
}

/* A rows [m0, m0 + mc), K [k0, k0 + kc) into AM-row panels:
 * dst[panel][row][kp], kp < kp_pad. */
static void pack_a_amx(const operand *a, size_t m0, int mc, size_t k0, int kc, int kp_pad,
                       uint32_t *dst) {
  const int panels = (mc + AM - 1) / AM;
  for (int pnl = 0; pnl < panels; pnl++) {
    uint32_t *d = dst + (size_t)pnl * AM * (size_t)kp_pad;
    const int rows = mc - pnl * AM < AM ? mc - pnl * AM : AM;
    const size_t m = m0 + (size_t)pnl * AM;
    if (a->cs == 1) {
      pack_runs_amx(a->p + m * a->rs + k0, a->rs, rows, kc, kp_pad, d);
      continue;
    }
    if (a->rs == 1) {
      for (int g = 0; g < AM; g += 16)
        pack_pairs_amx(a->p + k0 * a->cs + m + (size_t)g, a->cs, rows - g, kc, kp_pad,
                       d + (size_t)g * (size_t)kp_pad);
      continue;
    }
    pack_panel_scalar(a, m, rows, AM, k0, kc, kp_pad, d, (size_t)kp_pad, 1);
  }
}

/* The C block (mv <= AM rows, nv <= NR columns, ldc) = (acc ? C : 0) + panel
 * a (AM, kp_pad) x strip b (kp_pad, NR). Tiles configured by the caller. */
AMX_TARGET static void kernel_amx(int kp_pad, const uint32_t *a, const uint32_t *b, float *c,
                                  size_t ldc, int acc, int mv, int nv) {
  float part[AM * NR] __attribute__((aligned(64)));
  const int whole = mv == AM && nv == NR;
  float *blk = whole ? c : part;
  const size_t ld = whole ? ldc : NR;
  if (!whole && acc)
    for (int r = 0; r < mv; r++) memcpy(part + (size_t)r * NR, c + (size_t)r * ldc, nv * sizeof *c);
  AMX_MEMORY_BARRIER();
  const long ldb = (long)(ld * sizeof(float)), lda = (long)kp_pad * 4;
  if (acc) {
    _tile_loadd(0, blk, ldb);
    _tile_loadd(1, blk + 16, ldb);
    _tile_loadd(2, blk + 16 * ld, ldb);
    _tile_loadd(3, blk + 16 * ld + 16, ldb);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int kt = 0; kt < kp_pad; kt += KT) {
    _tile_loadd(4, a + kt, lda);
    _tile_loadd(5, a + (size_t)16 * (size_t)kp_pad + (size_t)kt, lda);
    _tile_loadd(6, b + (size_t)kt * NR, NR * 4);
    _tile_loadd(7, b + (size_t)kt * NR + 16, NR * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, blk, ldb);
  _tile_stored(1, blk + 16, ldb);
  _tile_stored(2, blk + 16 * ld, ldb);
  _tile_stored(3, blk + 16 * ld + 16, ldb);
  AMX_MEMORY_BARRIER();
  if (!whole)
    for (int r = 0; r < mv; r++) memcpy(c + (size_t)r * ldc, part + (size_t)r * NR, nv * sizeof *c);
}

/* A thread's tiles: 8 of 16 rows x 64 bytes, before its first tile
 * instruction; released after, so that Linux need not save them. */
AMX_TARGET static void amx_begin(void) {
  _tile_loadconfig(&amx_config);
}
AMX_TARGET static void amx_end(void) {
  _tile_release();
}

/* ------------------------------------------------------------------------ */
/* The product                                                               */

/* C (M, N) (+)= A (M, K) B (K, N) on one thread with packing slice ws. amx
 * packs A its own way, in panels of AM rows, and pads K to whole tiles. */
static void gemm_serial(nn_bf16_kernel kern, int M, int N, int K, const operand *a,
                        const operand *b, int accumulate, float *c, size_t ldc, uint32_t *ws) {
  const int amx = kern == NN_BF16_AMX, pr = amx ? AM : MR; /* rows of an A panel */
  uint32_t *apack = ws, *bpack = ws + (size_t)MC * (KC / 2);
  if (amx) amx_begin();
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = K - k0 < KC ? K - k0 : KC, kp_n = (kc + 1) / 2;
    const int kp_rows = amx ? (kp_n + KT - 1) / KT * KT : kp_n;
    const int acc = accumulate || k0 > 0;
    for (int n0 = 0; n0 < N; n0 += NC) {
      const int nc = N - n0 < NC ? N - n0 : NC;
      pack_b(kern, b, (size_t)k0, kc, (size_t)n0, nc, kp_rows, bpack);
      for (int m0 = 0; m0 < M; m0 += MC) {
        const int mc = M - m0 < MC ? M - m0 : MC;
        if (amx)
          pack_a_amx(a, (size_t)m0, mc, (size_t)k0, kc, kp_rows, apack);
        else
          pack_a(kern, a, (size_t)m0, mc, (size_t)k0, kc, apack);
        for (int s = 0; s * NR < nc; s++) {
          const uint32_t *bs = bpack + (size_t)s * (size_t)kp_rows * NR;
          const int nv = nc - s * NR < NR ? nc - s * NR : NR;
          for (int p = 0; p * pr < mc; p++) {
            const int mv = mc - p * pr < pr ? mc - p * pr : pr;
            float *ct = c + (size_t)(m0 + p * pr) * ldc + (size_t)n0 + (size_t)s * NR;
            const uint32_t *ap = apack + (size_t)p * (size_t)pr * (size_t)kp_rows;
            if (kern == NN_BF16_AVX512)
              kernel_avx512(kp_n, ap, bs, ct, ldc, acc, mv, nv);
            else if (amx)
              kernel_amx(kp_rows, ap, bs, ct, ldc, acc, mv, nv);
            else
              kernel_emulated(kp_n, ap, bs, ct, ldc, acc, mv, nv);
          }
        }
      }
    }
  }
  if (amx) amx_end();
}

void nn_bgemm(nn_bf16_kernel kern, int trans_a, int trans_b, int M, int N, int K, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (beta == 0.0f)
      for (int m = 0; m < M; m++) memset(C + (size_t)m * (size_t)ldc, 0, sizeof(float) * (size_t)N);
    return;
  }
  /* Row-major op(A) (M, K): A is (M, lda) or, transposed, (K, lda). */
  const operand a = {A, trans_a ? 1 : (size_t)lda, trans_a ? (size_t)lda : 1};
  const operand b = {B, trans_b ? 1 : (size_t)ldb, trans_b ? (size_t)ldb : 1};
  const int acc = beta != 0.0f; /* beta is 0 or 1 (layers.h) */
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads > pack_threads) threads = pack_threads;
  /* Enough work per thread, else one thread. */
  if ((double)M * N * K < 4e6 * threads) threads = 1;
  if (threads <= 1) {
    const int t = omp_in_parallel() ? omp_get_thread_num() : 0;
    gemm_serial(kern, M, N, K, &a, &b, acc, C, (size_t)ldc, pack_pool + (size_t)t * PACK_WORDS);
    return;
  }
  /* Split the longer side between the threads, in whole panels or strips. */
  const int split_n = N >= M;
  const int unit = split_n ? NR : kern == NN_BF16_AMX ? AM : MR, len = split_n ? N : M;
  const int units = (len + unit - 1) / unit;
  if (threads > units) threads = units;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int u0 = (int)((long)units * t / nt), u1 = (int)((long)units * (t + 1) / nt);
    const int lo = u0 * unit, hi = u1 * unit < len ? u1 * unit : len;
    uint32_t *ws = pack_pool + (size_t)t * PACK_WORDS;
    if (hi > lo) {
      if (split_n) {
        const operand bt = {b.p + (size_t)lo * b.cs, b.rs, b.cs};
        gemm_serial(kern, M, hi - lo, K, &a, &bt, acc, C + lo, (size_t)ldc, ws);
      } else {
        const operand at_ = {a.p + (size_t)lo * a.rs, a.rs, a.cs};
        gemm_serial(kern, hi - lo, N, K, &at_, &b, acc, C + (size_t)lo * (size_t)ldc, (size_t)ldc,
                    ws);
      }
    }
  }
}
