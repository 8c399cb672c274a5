// AVX2 + FMA + POPCNT kernels. Compiled with -mavx2 -mfma -mpopcnt; only called after
// cpu_features.cpp has confirmed the CPU supports them.
#include <immintrin.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "float_stream-inl.h"
#include "kernels.h"
#include "tile_grid.h"

namespace embedcore {
namespace {

inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline int32_t hsum256_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

float dot_f32(const float* a, const float* b, size_t d) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= d; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = hsum256(_mm256_add_ps(acc0, acc1));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

float l2sq_f32(const float* a, const float* b, size_t d) {
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    acc = _mm256_fmadd_ps(t, t, acc);
  }
  float s = hsum256(acc);
  for (; i < d; ++i) {
    const float t = a[i] - b[i];
    s += t * t;
  }
  return s;
}

int32_t dot_i8(const int8_t* a, const int8_t* b, size_t d) {
  // Sign-extend 16 bytes to 16 int16 lanes, then madd pairs into int32: exact.
  __m256i acc = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    const __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
  }
  int32_t s = hsum256_epi32(acc);
  for (; i < d; ++i) s += int32_t(a[i]) * int32_t(b[i]);
  return s;
}

uint32_t hamming(const uint8_t* a, const uint8_t* b, size_t nbytes) {
  uint64_t s = 0;
  size_t i = 0;
  for (; i + 8 <= nbytes; i += 8) {
    uint64_t x, y;
    __builtin_memcpy(&x, a + i, 8);
    __builtin_memcpy(&y, b + i, 8);
    s += uint64_t(_mm_popcnt_u64(x ^ y));
  }
  for (; i < nbytes; ++i) s += uint64_t(_mm_popcnt_u32(unsigned(a[i] ^ b[i])));
  return uint32_t(s);
}


// ---- search tiles -------------------------------------------------------------------------------
// A micro-kernel scores QN queries against RN corpus rows with one accumulator per pair: the same
// sequence of instructions for a pair whatever QN and RN are, so tiling never changes a score.

// [sum(a), sum(b), sum(c), sum(d)] of four vectors of 8 int32 lanes.
inline __m128i reduce4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// Rows are float32, or int8 codes widened to float32 in registers.
inline __m256 load_row(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load_row(const int8_t* p) {
  int64_t raw;
  __builtin_memcpy(&raw, p, 8);
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(raw)));
}
inline __m256 load_row_tail(const float* p, int64_t rem) { return load8_tail(p, rem); }

// The first `rem` (any count; at most 8 are used) codes at p widened, zeros after them.
inline __m256 load_row_tail(const int8_t* p, int64_t rem) {
  if (rem >= 8) return load_row(p);
  int64_t raw = 0;  // bytes past the row stay zero
  if (rem > 0) __builtin_memcpy(&raw, p, size_t(rem));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(raw)));
}

// Half h of every pair of a micro-kernel: elements 16 s + 8 h + l into lane l of acc, step after
// step, then the masked half of the tail step (zeros past d; all zeros when the tail is shorter).
// Loops written out (no lambda capturing the accumulators, which would keep them in memory).
template <int QN, int RN, bool L2, bool PF, typename CT>
EC_INLINE void half_pass(__m256 (&acc)[QN][RN], const float* q, const CT* c, int64_t d, int64_t h, bool pf) {
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm256_setzero_ps();
  const int64_t dfull = d & ~int64_t(15);
  for (int64_t t = 8 * h; t < dfull; t += 16) {
    if (pf && (t * int64_t(sizeof(CT)) & 63) == 0)  // one prefetch per 64-byte line
      for (int b = 0; b < RN; ++b) prefetch_row(c, d, RN + b, t);
    micro_step<Ymm, QN, RN, L2, PF>(acc, q, c, d, t, [](const float* p) { return _mm256_loadu_ps(p); },
                                    [](const CT* p) { return load_row(p); });
  }
  if (d > dfull) {  // masked tail: no read past the end
    const int64_t rem = d - dfull - 8 * h;
    micro_step<Ymm, QN, RN, L2, PF>(acc, q, c, d, dfull + 8 * h,
                                    [rem](const float* p) { return load8_tail(p, rem); },
                                    [rem](const CT* p) { return load_row_tail(p, rem); });
  }
}

// QN queries x RN rows with the AVX-512 levels' arithmetic on 8-lane registers: a pair takes
// 16-float steps as two 8-float halves (lane l of half h: elements 16 s + 8 h + l) whose sum goes
// through the 4-sum tree, as float_stream-inl.h's streams and the 16-lane kernels of
// kernels_avx512.cpp do: float scores agree bit for bit between AVX2 and AVX-512. The halves are
// two passes over the rows (the second reads them from L1), so the 4 x 3 walk keeps its 12
// accumulators per pass. PF: the micro-kernel streams its rows from memory and prefetches the RN
// rows after them, at the same offset, when at least RN rows (`ahead`) follow its own.
template <int QN, int RN, bool L2, bool PF, typename CT>
inline void micro_f32(const float* q, const CT* c, int64_t d, float* out, int64_t ld, int64_t ahead) {
  __m256 lo[QN][RN], acc[QN][RN];
  const bool pf = PF && ahead >= RN;
  half_pass<QN, RN, L2, PF>(lo, q, c, d, 0, pf);
  half_pass<QN, RN, L2, PF>(acc, q, c, d, 1, pf);
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm256_add_ps(lo[a][b], acc[a][b]);
  const __m256 zero = _mm256_setzero_ps();
  for (int a = 0; a < QN; ++a) {
    if constexpr (RN % 4 == 0) {
      for (int b = 0; b < RN; b += 4)
        _mm_storeu_ps(out + a * ld + b, reduce4(acc[a][b], acc[a][b + 1], acc[a][b + 2], acc[a][b + 3]));
    } else if constexpr (RN == 3) {  // the 4-sum tree with a zero fourth: each row keeps its own tree
      alignas(16) float r[4];
      _mm_store_ps(r, reduce4(acc[a][0], acc[a][1], acc[a][2], zero));
      for (int b = 0; b < 3; ++b) out[a * ld + b] = r[b];
    } else {
      static_assert(RN == 1, "4k, 3 or 1 rows");
      out[a * ld] = _mm_cvtss_f32(reduce4(acc[a][0], zero, zero, zero));
    }
  }
}

// One query over int8 codes: a memory stream of 4 rows per micro-kernel, the next rows prefetched
// (8 rows ran 1.5x faster from memory but 1.4x slower from L3, 10k rows). Kept out of tile_f32:
// inlined there, it cost the 4 x 3 walk registers (18% slower).
__attribute__((noinline)) void stream_i8(const float* q, const int8_t* c, int64_t nr, int64_t d, float* out,
                                         int64_t ahead) {
  int64_t j = 0;
  for (; j + 4 <= nr; j += 4) micro_f32<1, 4, false, true>(q, c + j * d, d, out + j, nr, nr + ahead - j - 4);
  for (; j < nr; ++j) micro_f32<1, 1, false, false>(q, c + j * d, d, out + j, nr, 0);
}

// Many queries walk the tile as 4 queries x 3 rows: 12 accumulators, 3 rows and a query fill the
// 16 ymm registers (7 loads per 12 multiply-adds). One or two float queries stream (float_stream-inl.h);
// two queries over int8 codes keep the walk (the stream was slower there).
template <bool L2, typename CT>
void tile_f32(const float* q, int64_t nq, const CT* c, int64_t nr, int64_t d, float* out, int64_t ahead) {
  if constexpr (std::is_same_v<CT, float>) {
    if (nq <= 2)
      return nq == 1 ? stream_f32<1, L2>(q, c, nr, d, out, ahead) : stream_f32<2, L2>(q, c, nr, d, out, ahead);
  } else if (nq == 1) {
    return stream_i8(q, c, nr, d, out, ahead);
  }
  for_each_micro<4, 3>(nq, nr, [&](auto qn, auto rn, int64_t i, int64_t j) {
    constexpr int QN = decltype(qn)::value, RN = decltype(rn)::value;
    // A lone query's rows are the next group's: prefetch them for it.
    micro_f32<QN, RN, L2, QN == 1 && RN == 3>(q + i * d, c + j * d, d, out + i * nr + j, nr, nr + ahead - j - RN);
  });
}

void tile_dot_f32_i8(const float* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, float* out,
                     int64_t ahead) {
  tile_f32<false>(q, nq, c, nr, d, out, ahead);
}

void tile_dot_f32(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out,
                  int64_t ahead) {
  tile_f32<false>(q, nq, c, nr, d, out, ahead);
}

void tile_l2_f32(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out,
                 int64_t ahead) {
  tile_f32<true>(q, nq, c, nr, d, out, ahead);
}

void sq_norms_f32(const float* c, int64_t nr, int64_t d, float* out) { sq_norms_f32_impl(c, nr, d, out); }

void tile_dot_norms_f32(const float* q, const float* c, int64_t nr, int64_t d, float* out, float* norm2,
                        int64_t ahead) {
  dot_norms<true>(q, c, nr, d, out, norm2, ahead);
}

// int8: sign-extend 16 bytes to int16 lanes and madd pairs into int32 (exact); scalar tail.
template <int QN, int RN>
inline void micro_i8(const int8_t* q, const int8_t* c, int64_t d, int32_t* out, int64_t ld) {
  __m256i acc[QN][RN];
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm256_setzero_si256();
  const int64_t dfull = d & ~int64_t(15);
  for (int64_t t = 0; t < dfull; t += 16) {
    __m256i cv[RN];
    for (int b = 0; b < RN; ++b)
      cv[b] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + b * d + t)));
    for (int a = 0; a < QN; ++a) {
      const __m256i qv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + a * d + t)));
      for (int b = 0; b < RN; ++b) acc[a][b] = _mm256_add_epi32(acc[a][b], _mm256_madd_epi16(qv, cv[b]));
    }
  }
  for (int a = 0; a < QN; ++a) {
    if constexpr (RN == 4)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + a * ld),
                       reduce4_epi32(acc[a][0], acc[a][1], acc[a][2], acc[a][3]));
    else
      out[a * ld] = hsum256_epi32(acc[a][0]);
    for (int b = 0; b < RN; ++b)
      for (int64_t t = dfull; t < d; ++t) out[a * ld + b] += int32_t(q[a * d + t]) * int32_t(c[b * d + t]);
  }
}

void tile_dot_i8(const int8_t* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, int32_t* out) {
  // 2 queries x 4 rows here: 4 x 3 spilled (the widened query needs a register of its own).
  for_each_micro(nq, nr, [&](auto qn, auto rn, int64_t i, int64_t j) {
    micro_i8<decltype(qn)::value, decltype(rn)::value>(q + i * d, c + j * d, d, out + i * nr + j, nr);
  });
}

// Hamming: 64-bit POPCNT over words, four corpus rows per query word load; exact. NW > 0 fixes the
// width at NW words (nb == 8 NW): the loop unrolls fully, without its counter and branch per word.
template <int RN, int NW = 0>
inline void micro_hamming(const uint8_t* q, const uint8_t* c, int64_t nb, int32_t* out) {
  if constexpr (NW > 0) nb = 8 * NW;
  uint64_t acc[RN] = {};
  int64_t t = 0;
  for (; t + 8 <= nb; t += 8) {
    uint64_t x;
    __builtin_memcpy(&x, q + t, 8);
    for (int b = 0; b < RN; ++b) {
      uint64_t y;
      __builtin_memcpy(&y, c + b * nb + t, 8);
      acc[b] += uint64_t(_mm_popcnt_u64(x ^ y));
    }
  }
  for (; t < nb; ++t)
    for (int b = 0; b < RN; ++b) acc[b] += uint64_t(_mm_popcnt_u32(unsigned(q[t] ^ c[b * nb + t])));
  for (int b = 0; b < RN; ++b) out[b] = int32_t(acc[b]);
}

// Set bits of each byte of x (0..8): two VPSHUFB lookups of its nibbles in a 16-entry table. Inlined
// into loops, the table and mask constants stay in registers.
inline __m256i byte_popcounts(__m256i x) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                       2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                         _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
}

// Two rows of NW words: VPSHUFB nibble counts over the 32-byte chunks, POPCNT over the words left.
// Beside micro_hamming on other rows it keeps the vector units busy as well as the integer ones.
template <int NW>
inline void micro_hamming_vec2(const uint8_t* q, const uint8_t* c, int32_t* out) {
  static_assert(NW >= 4 && NW < 128, "byte counts of NW / 4 chunks stay below 256");
  constexpr int64_t nb = 8 * NW;
  const __m256i zero = _mm256_setzero_si256();
  __m256i b0 = zero, b1 = zero;
  for (int64_t t = 0; t + 32 <= nb; t += 32) {
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + t));
    b0 = _mm256_add_epi8(b0, byte_popcounts(_mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + t)))));
    b1 = _mm256_add_epi8(
        b1, byte_popcounts(_mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + nb + t)))));
  }
  const __m256i s0 = _mm256_sad_epu8(b0, zero), s1 = _mm256_sad_epu8(b1, zero);
  const __m256i t2 = _mm256_add_epi64(_mm256_unpacklo_epi64(s0, s1), _mm256_unpackhi_epi64(s0, s1));
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(t2), _mm256_extracti128_si256(t2, 1));
  uint64_t acc0 = uint64_t(_mm_cvtsi128_si64(s)), acc1 = uint64_t(_mm_extract_epi64(s, 1));
  for (int64_t t = 32 * (NW / 4); t < nb; t += 8) {
    uint64_t x, y0, y1;
    __builtin_memcpy(&x, q + t, 8);
    __builtin_memcpy(&y0, c + t, 8);
    __builtin_memcpy(&y1, c + nb + t, 8);
    acc0 += uint64_t(_mm_popcnt_u64(x ^ y0));
    acc1 += uint64_t(_mm_popcnt_u64(x ^ y1));
  }
  out[0] = int32_t(acc0);
  out[1] = int32_t(acc1);
}

template <int NW>
void tile_hamming_popcnt(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nb, int32_t* out) {
  for (int64_t i = 0; i < nq; ++i) {
    int64_t j = 0;
    if constexpr (NW >= 4)
      for (; j + 4 <= nr; j += 4) {
        micro_hamming<2, NW>(q + i * nb, c + j * nb, nb, out + i * nr + j);
        micro_hamming_vec2<NW>(q + i * nb, c + (j + 2) * nb, out + i * nr + j + 2);
      }
    for (; j + 4 <= nr; j += 4) micro_hamming<4, NW>(q + i * nb, c + j * nb, nb, out + i * nr + j);
    for (; j < nr; ++j) micro_hamming<1, NW>(q + i * nb, c + j * nb, nb, out + i * nr + j);
  }
}

// Hamming for a block of queries over a transposed tile: the corpus words are regrouped so one ymm
// holds word w of 4 rows, a query word is broadcast and XORed with it, the nibble table (VPSHUFB)
// counts the bits per byte, byte counts add up over up to 31 words and VPSADBW folds them into one
// 64-bit count per row lane: no horizontal reduction per pair. Rows and queries are zero-padded to
// whole words (zero bytes XOR to zero), so every count is exact.
constexpr int64_t kHamMinQueries = 4;  // fewer queries do not repay the transposition

struct HammingScratch {
  std::vector<uint64_t> rows, queries;  // (groups, words, 4) and (nq, words)
};

inline uint64_t padded_word(const uint8_t* p, int64_t nbytes) {
  uint64_t w = 0;
  __builtin_memcpy(&w, p, size_t(nbytes < 8 ? nbytes : 8));
  return w;
}

// Counts for 1 query x 8 rows (two groups of 4) over nw words; out8 gets the 8 counts.
inline void micro_hamming_t(const uint64_t* qw, const uint64_t* t0, const uint64_t* t1, int64_t nw,
                            int32_t* out8) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc0 = zero, acc1 = zero;
  for (int64_t w0 = 0; w0 < nw; w0 += 31) {  // byte counts stay <= 31 * 8 = 248
    const int64_t w1 = w0 + 31 < nw ? w0 + 31 : nw;
    __m256i b0 = zero, b1 = zero;
    for (int64_t w = w0; w < w1; ++w) {
      const __m256i qv = _mm256_set1_epi64x(int64_t(qw[w]));
      b0 = _mm256_add_epi8(b0, byte_popcounts(_mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t0 + 4 * w)))));
      b1 = _mm256_add_epi8(b1, byte_popcounts(_mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t1 + 4 * w)))));
    }
    acc0 = _mm256_add_epi64(acc0, _mm256_sad_epu8(b0, zero));
    acc1 = _mm256_add_epi64(acc1, _mm256_sad_epu8(b1, zero));
  }
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out8), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(acc0, even)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out8 + 4),
                   _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(acc1, even)));
}

void tile_hamming_transposed(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nb, int32_t* out) {
  thread_local HammingScratch s;
  const int64_t nw = (nb + 7) / 8;
  const int64_t groups = 2 * ((nr + 7) / 8);  // whole pairs of 4-row groups; rows past nr are zero
  s.rows.assign(size_t(groups * nw * 4), 0);
  for (int64_t j = 0; j < nr; ++j)
    for (int64_t w = 0; w < nw; ++w)
      s.rows[size_t(((j / 4) * nw + w) * 4 + j % 4)] = padded_word(c + j * nb + 8 * w, nb - 8 * w);
  s.queries.resize(size_t(nq * nw));
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t w = 0; w < nw; ++w) s.queries[size_t(i * nw + w)] = padded_word(q + i * nb + 8 * w, nb - 8 * w);
  alignas(32) int32_t counts[8];
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t g = 0; g < groups; g += 2) {
      micro_hamming_t(s.queries.data() + i * nw, s.rows.data() + g * nw * 4, s.rows.data() + (g + 1) * nw * 4, nw,
                      counts);
      const int64_t j0 = 4 * g, len = nr - j0 < 8 ? nr - j0 : 8;
      for (int64_t b = 0; b < len; ++b) out[i * nr + j0 + b] = counts[b];
    }
}

void tile_hamming(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nb, int32_t* out) {
  if (nq >= kHamMinQueries) {
    tile_hamming_transposed(q, nq, c, nr, nb, out);
    return;
  }
  switch (nb) {  // common code widths: 256, 384, 512, 768 and 1024 bits
    case 32: return tile_hamming_popcnt<4>(q, nq, c, nr, nb, out);
    case 48: return tile_hamming_popcnt<6>(q, nq, c, nr, nb, out);
    case 64: return tile_hamming_popcnt<8>(q, nq, c, nr, nb, out);
    case 96: return tile_hamming_popcnt<12>(q, nq, c, nr, nb, out);
    case 128: return tile_hamming_popcnt<16>(q, nq, c, nr, nb, out);
    default: return tile_hamming_popcnt<0>(q, nq, c, nr, nb, out);
  }
}

// Fast-scan Hamming (many queries), layout in kernels.h: per nibble position one VPSHUFB looks up
// the 32 rows' nibbles in the query's table of bit counts; byte sums need no horizontal reduction.

// Row j's 16-byte chunk starting at byte b, zero-padded past the row (or the tile: j >= nr).
inline __m128i row_chunk(const uint8_t* c, int64_t j, int64_t nr, int64_t nb, int64_t b) {
  if (j >= nr) return _mm_setzero_si128();
  const uint8_t* p = c + j * nb + b;
  if (nb - b >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  alignas(16) uint8_t tail[16] = {};
  __builtin_memcpy(tail, p, size_t(nb - b));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
}

void hamming_nibble_rows(const uint8_t* c, int64_t nr, int64_t nb, uint8_t* nib) {
  const int64_t npos = hamming_nibble_positions(nb);
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t g = 0; g * 32 < nr; ++g) {
    // The next tile's rows (prefetches past the corpus do not fault; integer addresses keep the
    // pointer arithmetic defined): the chunk order below jumps between rows, which the hardware
    // prefetchers follow late.
    const uintptr_t next = reinterpret_cast<uintptr_t>(c) + uintptr_t((32 * g + 64) * nb);
    for (int64_t off = 0; off < 32 * nb; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(next + uintptr_t(off)), _MM_HINT_T0);
    for (int64_t b = 0; b < nb; b += 16) {
      // Lane 0 holds rows 0..15 of the group, lane 1 rows 16..31: four rounds of in-lane unpacks
      // transpose both 16 x 16 byte blocks at once, leaving byte bitrev(m) of every row in x[m].
      __m256i x[16];
      for (int m = 0; m < 16; ++m)
        x[m] = _mm256_set_m128i(row_chunk(c, 32 * g + 16 + m, nr, nb, b), row_chunk(c, 32 * g + m, nr, nb, b));
      for (int round = 0; round < 4; ++round) {
        __m256i y[16];
        for (int i = 0; i < 8; ++i) {
          const __m256i a = x[2 * i], d = x[2 * i + 1];
          switch (round) {
            case 0: y[i] = _mm256_unpacklo_epi8(a, d); y[i + 8] = _mm256_unpackhi_epi8(a, d); break;
            case 1: y[i] = _mm256_unpacklo_epi16(a, d); y[i + 8] = _mm256_unpackhi_epi16(a, d); break;
            case 2: y[i] = _mm256_unpacklo_epi32(a, d); y[i + 8] = _mm256_unpackhi_epi32(a, d); break;
            default: y[i] = _mm256_unpacklo_epi64(a, d); y[i + 8] = _mm256_unpackhi_epi64(a, d); break;
          }
        }
        for (int m = 0; m < 16; ++m) x[m] = y[m];
      }
      for (int m = 0; m < 16; ++m) {
        const int byte = ((m & 1) << 3) | ((m & 2) << 1) | ((m & 4) >> 1) | ((m & 8) >> 3);
        uint8_t* dst = nib + (g * npos + 2 * (b + byte)) * 32;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_and_si256(x[m], low));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32), _mm256_and_si256(_mm256_srli_epi16(x[m], 4), low));
      }
    }
  }
}

// Distances of Q queries (tables tab + i * tab_stride) to G groups of 32 rows: out[i * ldo + 32 * g + r],
// and bit 32 g + r of cand[i] set when that distance is <= bound[i]. Each row load serves Q queries
// and each table load G groups. Byte sums take at most 63 positions (4 bits each: <= 252) before
// they are widened into the 16-bit sums lo and hi.
template <int Q, int G>
inline void micro_hamming_nibbles(const uint8_t* tab, int64_t tab_stride, const uint8_t* nib, int64_t npos,
                                  const int32_t* bound, int32_t* out, int64_t ldo, uint64_t* cand) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i lo[Q][G], hi[Q][G];
  for (int i = 0; i < Q; ++i)
    for (int g = 0; g < G; ++g) lo[i][g] = hi[i][g] = zero;
  for (int64_t p0 = 0; p0 < npos; p0 += 63) {
    const int64_t p1 = p0 + 63 < npos ? p0 + 63 : npos;
    __m256i acc[Q][G];
    for (int i = 0; i < Q; ++i)
      for (int g = 0; g < G; ++g) acc[i][g] = zero;
    for (int64_t p = p0; p < p1; ++p) {
      __m256i v[G];
      for (int g = 0; g < G; ++g)
        v[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nib + (g * npos + p) * 32));
      for (int i = 0; i < Q; ++i) {
        const __m256i t = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(tab + i * tab_stride + 16 * p)));
        for (int g = 0; g < G; ++g) acc[i][g] = _mm256_add_epi8(acc[i][g], _mm256_shuffle_epi8(t, v[g]));
      }
    }
    for (int i = 0; i < Q; ++i)
      for (int g = 0; g < G; ++g) {
        lo[i][g] = _mm256_add_epi16(lo[i][g], _mm256_unpacklo_epi8(acc[i][g], zero));
        hi[i][g] = _mm256_add_epi16(hi[i][g], _mm256_unpackhi_epi8(acc[i][g], zero));
      }
  }
  // lo holds rows 0..7 and 16..23 of a group, hi rows 8..15 and 24..31: the signed pack of their
  // (0 / -1) comparisons lists rows 0..31 in order. Distances fit in 16 bits (kMaxNibbleBytes).
  for (int i = 0; i < Q; ++i) {
    const __m256i b = _mm256_set1_epi16(int16_t(uint16_t(bound[i] < 0 ? 0 : bound[i] > 0xffff ? 0xffff : bound[i])));
    uint64_t bits = 0;
    for (int g = 0; g < G; ++g) {
      const __m256i le_lo = _mm256_cmpeq_epi16(_mm256_min_epu16(lo[i][g], b), lo[i][g]);
      const __m256i le_hi = _mm256_cmpeq_epi16(_mm256_min_epu16(hi[i][g], b), hi[i][g]);
      bits |= uint64_t(uint32_t(_mm256_movemask_epi8(_mm256_packs_epi16(le_lo, le_hi)))) << (32 * g);
      __m256i* o = reinterpret_cast<__m256i*>(out + i * ldo + 32 * g);
      _mm256_storeu_si256(o, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(lo[i][g])));
      _mm256_storeu_si256(o + 1, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi[i][g])));
      _mm256_storeu_si256(o + 2, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(lo[i][g], 1)));
      _mm256_storeu_si256(o + 3, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi[i][g], 1)));
    }
    cand[i] = bits;
  }
}

void tile_hamming_nibbles(const uint8_t* tables, int64_t nq, const uint8_t* nib, int64_t nr, int64_t nb,
                          const int32_t* bound, int32_t* out, uint64_t* cand) {
  const int64_t npos = hamming_nibble_positions(nb), ts = npos * 16;
  if (nr == 64) {  // a whole tile straight into out, four queries at a time
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4)
      micro_hamming_nibbles<4, 2>(tables + i * ts, ts, nib, npos, bound + i, out + i * nr, nr, cand + i);
    for (; i < nq; ++i)
      micro_hamming_nibbles<1, 2>(tables + i * ts, ts, nib, npos, bound + i, out + i * nr, nr, cand + i);
    return;
  }
  // A partial tile through a buffer; rows past nr were padded with zeros and are not flagged.
  alignas(32) int32_t part[32];
  for (int64_t i = 0; i < nq; ++i) {
    cand[i] = 0;
    for (int64_t j = 0; j < nr; j += 32) {
      uint64_t bits;
      micro_hamming_nibbles<1, 1>(tables + i * ts, ts, nib + j * npos, npos, bound + i, part, 32, &bits);
      const int64_t len = nr - j < 32 ? nr - j : 32;
      for (int64_t b = 0; b < len; ++b) out[i * nr + j + b] = part[b];
      cand[i] |= (bits & ((uint64_t(1) << len) - 1)) << j;
    }
  }
}

__attribute__((target("f16c"))) void rows_f16_to_f32(const uint16_t* src, int64_t nr, int64_t d, float* dst) {
  const int64_t n = nr * d;
  int64_t t = 0;
  for (; t + 8 <= n; t += 8)
    _mm256_storeu_ps(dst + t, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t))));
  for (; t < n; ++t) dst[t] = _cvtsh_ss(src[t]);
}

void rows_bf16_to_f32(const uint16_t* src, int64_t nr, int64_t d, float* dst) {
  const int64_t n = nr * d;
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t)));
    _mm256_storeu_ps(dst + t, _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
  }
  for (; t < n; ++t) {
    const uint32_t bits = uint32_t(src[t]) << 16;
    __builtin_memcpy(dst + t, &bits, 4);
  }
}

void rows_i8_affine_to_f32(const int8_t* src, int64_t nr, int64_t d, const float* offset, const float* scale,
                           float* dst) {
  for (int64_t j = 0; j < nr; ++j) {
    const int8_t* s = src + j * d;
    float* o = dst + j * d;
    int64_t t = 0;
    for (; t + 8 <= d; t += 8) {
      int64_t raw;
      __builtin_memcpy(&raw, s + t, 8);
      const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(raw)));
      _mm256_storeu_ps(o + t, _mm256_fmadd_ps(_mm256_loadu_ps(scale + t), x, _mm256_loadu_ps(offset + t)));
    }
    for (; t < d; ++t) o[t] = offset[t] + scale[t] * float(s[t]);
  }
}

}  // namespace

const KernelTable& avx2_kernels() {
  static const KernelTable table{Isa::kAvx2,     dot_f32,         l2sq_f32,         dot_i8,
                                 hamming,        tile_dot_f32,    tile_l2_f32,      tile_dot_f32_i8,
                                 tile_dot_i8,    tile_hamming,    rows_f16_to_f32,  rows_bf16_to_f32,
                                 rows_i8_affine_to_f32, hamming_nibble_rows, tile_hamming_nibbles,
                                 sq_norms_f32,   tile_dot_norms_f32};
  return table;
}

}  // namespace embedcore
