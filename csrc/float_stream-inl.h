// Float32 kernels written once for the SIMD units: the scans that stream corpus rows from memory
// (one or two queries, and the row square sums of the cosine scan) and the vector step of every
// many-query micro-kernel (micro_step, over a level's vector operations: Ymm here, Zmm in the
// AVX-512 unit). They are compiled into each per-ISA translation unit with that unit's flags: kernels_avx2.cpp and kernels_avx512.cpp include this file at file scope, and everything
// here has internal linkage (an anonymous namespace), so each unit keeps its own instantiation and
// no AVX-512 code can stand in for the AVX2 unit's at link time.
//
// Only AVX + FMA instructions on 256-bit vectors are used. Every AVX2 and AVX-512 float kernel
// computes a pair's score one way: 16-float steps as two 8-float halves (lane l of half h takes
// elements 16 s + 8 h + l, step after step; a 16-lane accumulator folded to 8 lanes is the same),
// the halves added, then reduce4's tree. So tiling, batch size and the level (avx2, avx512,
// avx512_vpopcnt) never change a float score.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace embedcore {
namespace {

#define EC_INLINE inline __attribute__((always_inline))

constexpr int kHalves = 2;  // 8-float halves per 16-float step

// Software prefetch distance of the streams. Rows are read one after another (every load of a
// stream is the next 64-byte line), the pattern hardware prefetchers follow best; the software
// prefetch runs this far ahead of the loads.
constexpr int64_t kStreamPrefetchBytes = 4096;

// maskload masks: kMaskTable + 8 - rem selects the first `rem` lanes.
alignas(64) constexpr int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

EC_INLINE __m256i tail_mask8(int64_t rem) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - rem));
}

// The first `rem` (0..8) floats at p, zeros after them; nothing past them is read.
EC_INLINE __m256 load8_tail(const float* p, int64_t rem) {
  return rem >= 8 ? _mm256_loadu_ps(p) : rem <= 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(p, tail_mask8(rem));
}

// Prefetches (T0) the line `bytes` past p. The address is formed as an integer: the caller checked
// that it lies inside the corpus, and no pointer past it is ever made.
EC_INLINE void prefetch_bytes(const void* p, int64_t bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)), _MM_HINT_T0);
}

// Prefetches element t of row r of c (stride d), the row after the caller's checked rows.
template <typename CT>
EC_INLINE void prefetch_row(const CT* c, int64_t d, int64_t r, int64_t t) {
  prefetch_bytes(c, (r * d + t) * int64_t(sizeof(CT)));
}

// Sums of four 8-lane vectors, [sum(a), sum(b), sum(c), sum(d)], by one fixed tree of lane
// additions. A single sum is reduce4(a, 0, 0, 0)[0]: the same tree, so a score never depends on
// its neighbours.
EC_INLINE __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Stores the 4-tree sums of RN (4 or 1) 8-lane accumulators to out[0 .. RN).
template <int RN>
EC_INLINE void store_sums(const __m256 (&f)[RN], float* out) {
  if constexpr (RN == 4) {
    _mm_storeu_ps(out, reduce4(f[0], f[1], f[2], f[3]));
  } else {
    static_assert(RN == 1, "4 rows or 1");
    const __m256 zero = _mm256_setzero_ps();
    out[0] = _mm_cvtss_f32(reduce4(f[0], zero, zero, zero));
  }
}

// Float vector operations of a level: the AVX2 unit and the streams use Ymm; the AVX-512 unit adds
// its 16-lane Zmm with the same members.
struct Ymm {
  using V = __m256;
  static EC_INLINE V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static EC_INLINE V sub(V a, V b) { return _mm256_sub_ps(a, b); }
};

// One pair's step: acc + qv * cv (dot) or acc + (qv - cv)^2 (l2), lane by lane.
template <typename Ops, bool L2>
EC_INLINE typename Ops::V pair_step(typename Ops::V acc, typename Ops::V qv, typename Ops::V cv) {
  if constexpr (L2) {
    const typename Ops::V diff = Ops::sub(qv, cv);
    return Ops::fmadd(diff, diff, acc);
  } else {
    return Ops::fmadd(qv, cv, acc);
  }
}

// One step (one vector of elements from offset t) of a QN x RN micro-kernel with one accumulator
// per pair: every row's vector is loaded once (cload: float32, or int8 codes widened in registers)
// and every query's once (qload); unmasked and masked loads give the same values, so the same
// arithmetic. Always inlined: GCC keeps the accumulators in registers only then.
template <typename Ops, int QN, int RN, bool L2, bool kStream, typename CT, typename QLoad, typename CLoad>
EC_INLINE void micro_step(typename Ops::V (&acc)[QN][RN], const float* q, const CT* c, int64_t d, int64_t t,
                          QLoad qload, CLoad cload) {
  typename Ops::V cv[RN];
  for (int b = 0; b < RN; ++b) {
    cv[b] = cload(c + b * d + t);
    // Several queries streaming rows from memory: one load per row and step. Folded into each FMA,
    // a load that misses would be repeated QN times, taking load-queue entries from other misses.
    if constexpr (kStream && QN > 1) asm("" : "+v"(cv[b]));
  }
  for (int a = 0; a < QN; ++a) {
    const typename Ops::V qv = qload(q + a * d + t);
    for (int b = 0; b < RN; ++b) acc[a][b] = pair_step<Ops, L2>(acc[a][b], qv, cv[b]);
  }
}

// QN queries (1 or 2) against RN consecutive rows, read row after row: out[a * ld + b]. Each row
// load serves both queries. With `pf`, every 64-byte line loaded has the line kStreamPrefetchBytes
// further prefetched (the caller checked that it lies inside the corpus).
template <int QN, int RN, bool L2>
EC_INLINE void stream_rows(const float* q, const float* c, int64_t d, float* out, int64_t ld, bool pf) {
  constexpr int64_t kStep = 8 * kHalves;
  const int64_t dfull = d - d % kStep;
  __m256 f[QN][RN];
  for (int b = 0; b < RN; ++b) {
    const float* row = c + b * d;
    __m256 acc[QN][kHalves];
    for (int a = 0; a < QN; ++a)
      for (int h = 0; h < kHalves; ++h) acc[a][h] = _mm256_setzero_ps();
    for (int64_t t = 0; t < dfull; t += kStep) {
      if (pf) prefetch_bytes(row + t, kStreamPrefetchBytes);  // one per 64-byte step
      for (int h = 0; h < kHalves; ++h) {
        const __m256 cv = _mm256_loadu_ps(row + t + 8 * h);
        for (int a = 0; a < QN; ++a) acc[a][h] = pair_step<Ymm, L2>(acc[a][h], _mm256_loadu_ps(q + a * d + t + 8 * h), cv);
      }
    }
    if (d > dfull)  // masked tail: zeros past d add nothing, and nothing past the row is read
      for (int h = 0; h < kHalves; ++h) {
        const int64_t rem = d - dfull - 8 * h;
        const __m256 cv = load8_tail(row + dfull + 8 * h, rem);
        for (int a = 0; a < QN; ++a) acc[a][h] = pair_step<Ymm, L2>(acc[a][h], load8_tail(q + a * d + dfull + 8 * h, rem), cv);
      }
    for (int a = 0; a < QN; ++a) f[a][b] = _mm256_add_ps(acc[a][0], acc[a][1]);
  }
  for (int a = 0; a < QN; ++a) store_sums<RN>(f[a], out + a * ld);
}

// One or two queries against nr float rows (a memory stream): out[a * nr + j]. `ahead` rows follow
// the tile in memory and may be prefetched.
template <int QN, bool L2>
__attribute__((noinline)) void stream_f32(const float* q, const float* c, int64_t nr, int64_t d, float* out,
                                          int64_t ahead) {
  const int64_t row_bytes = d * int64_t(sizeof(float));
  int64_t j = 0;
  for (; j + 4 <= nr; j += 4)
    stream_rows<QN, 4, L2>(q, c + j * d, d, out + j, nr, (nr + ahead - j - 4) * row_bytes >= kStreamPrefetchBytes);
  for (; j < nr; ++j) stream_rows<QN, 1, L2>(q, c + j * d, d, out + j, nr, false);
}

// One query (kDot) against RN rows, and each row's square sum: the cosine scan reads a row once.
// A row's square sum takes the same steps whichever RN and kDot (sq_norms_f32 too).
template <int RN, bool kDot>
EC_INLINE void dot_norm_rows(const float* q, const float* c, int64_t d, float* out, float* norm2, bool pf) {
  constexpr int64_t kStep = 8 * kHalves;
  const int64_t dfull = d - d % kStep;
  __m256 f[RN], g[RN];
  for (int b = 0; b < RN; ++b) {
    const float* row = c + b * d;
    __m256 acc[kHalves], nacc[kHalves];
    for (int h = 0; h < kHalves; ++h) acc[h] = nacc[h] = _mm256_setzero_ps();
    for (int64_t t = 0; t < dfull; t += kStep) {
      if (pf) prefetch_bytes(row + t, kStreamPrefetchBytes);  // one per 64-byte step
      for (int h = 0; h < kHalves; ++h) {
        const __m256 cv = _mm256_loadu_ps(row + t + 8 * h);
        if constexpr (kDot) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + t + 8 * h), cv, acc[h]);
        nacc[h] = _mm256_fmadd_ps(cv, cv, nacc[h]);
      }
    }
    if (d > dfull)
      for (int h = 0; h < kHalves; ++h) {
        const int64_t rem = d - dfull - 8 * h;
        const __m256 cv = load8_tail(row + dfull + 8 * h, rem);
        if constexpr (kDot) acc[h] = _mm256_fmadd_ps(load8_tail(q + dfull + 8 * h, rem), cv, acc[h]);
        nacc[h] = _mm256_fmadd_ps(cv, cv, nacc[h]);
      }
    f[b] = _mm256_add_ps(acc[0], acc[1]);
    g[b] = _mm256_add_ps(nacc[0], nacc[1]);
  }
  if constexpr (kDot) store_sums<RN>(f, out);
  store_sums<RN>(g, norm2);
}

template <bool kDot>
void dot_norms(const float* q, const float* c, int64_t nr, int64_t d, float* out, float* norm2, int64_t ahead) {
  const int64_t row_bytes = d * int64_t(sizeof(float));
  int64_t j = 0;
  for (; j + 4 <= nr; j += 4)
    dot_norm_rows<4, kDot>(q, c + j * d, d, kDot ? out + j : nullptr, norm2 + j,
                              kDot && (nr + ahead - j - 4) * row_bytes >= kStreamPrefetchBytes);
  for (; j < nr; ++j) dot_norm_rows<1, kDot>(q, c + j * d, d, kDot ? out + j : nullptr, norm2 + j, false);
}

// Squared norms of nr rows: out[j] = sum_t c[j * d + t]^2.
inline void sq_norms_f32_impl(const float* c, int64_t nr, int64_t d, float* out) {
  dot_norms<false>(nullptr, c, nr, d, nullptr, out, 0);
}

}  // namespace
}  // namespace embedcore
