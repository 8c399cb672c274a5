// AVX-512 kernels. The unit is compiled with AVX-512 F, BW and VL (what the "avx512" level requires);
// the popcount kernels take VPOPCNTDQ and the int8 kernels VNNI per function, and are handed out
// only when the CPU has them (the "avx512_vpopcnt" level; VNNI chosen at run time).
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "float_stream-inl.h"
#include "kernels.h"
#include "tile_grid.h"

#define EC_VPOPCNT __attribute__((target("avx512vpopcntdq")))
#define EC_VNNI __attribute__((target("avx512vnni")))

namespace embedcore {
namespace {

float dot_f32(const float* a, const float* b, size_t d) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  acc0 = _mm512_add_ps(acc0, acc1);
  if (i + 16 <= d) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    i += 16;
  }
  if (i < d) {  // masked tail: no scalar loop, no read past the end
    const __mmask16 m = __mmask16((1u << (d - i)) - 1u);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(acc0);
}

float l2sq_f32(const float* a, const float* b, size_t d) {
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 t = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    acc = _mm512_fmadd_ps(t, t, acc);
  }
  if (i < d) {
    const __mmask16 m = __mmask16((1u << (d - i)) - 1u);
    const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    acc = _mm512_fmadd_ps(t, t, acc);
  }
  return _mm512_reduce_add_ps(acc);
}

int32_t dot_i8(const int8_t* a, const int8_t* b, size_t d) {
  __m512i acc = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    const __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)));
    const __m512i y = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i)));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, y));
  }
  if (i < d) {
    const __mmask32 m = __mmask32((uint64_t(1) << (d - i)) - 1u);
    const __m512i x = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, a + i));
    const __m512i y = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, b + i));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, y));
  }
  return _mm512_reduce_add_epi32(acc);
}

EC_VPOPCNT uint32_t hamming(const uint8_t* a, const uint8_t* b, size_t nbytes) {
  __m512i acc = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= nbytes; i += 64) {
    const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  if (i < nbytes) {
    const __mmask64 m = (nbytes - i >= 64) ? ~__mmask64(0) : ((__mmask64(1) << (nbytes - i)) - 1);
    const __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, a + i), _mm512_maskz_loadu_epi8(m, b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  return uint32_t(_mm512_reduce_add_epi64(acc));
}


// ---- search tiles -------------------------------------------------------------------------------
// A micro-kernel scores QN queries against RN corpus rows with one accumulator per pair: the same
// sequence of instructions for a pair whatever QN and RN are, so tiling never changes a score.

inline __mmask16 tail_mask16(int64_t rem) { return __mmask16((1u << rem) - 1u); }

// The 4-sum tree of reduce4 after the fold of each vector to its low plus its high 256 bits.
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  auto fold = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  return reduce4(fold(a), fold(b), fold(c), fold(d));
}

// The 16-lane vector operations of micro_step (float_stream-inl.h).
struct Zmm {
  using V = __m512;
  static EC_INLINE V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static EC_INLINE V sub(V a, V b) { return _mm512_sub_ps(a, b); }
};

inline __m512 widen_i8(__m128i x) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x)); }

// PF: the micro-kernel streams its rows (one or two queries) and prefetches the RN rows after them,
// at the same offset, when at least RN rows (`ahead`) follow its own.
template <int QN, int RN, bool L2, bool PF, typename CT>
inline void micro_f32(const float* q, const CT* c, int64_t d, float* out, int64_t ld, int64_t ahead) {
  if constexpr (PF)  // the check outside the loop: the prefetch-free kernel near the corpus end
    if (ahead < RN) return micro_f32<QN, RN, L2, false>(q, c, d, out, ld, 0);
  __m512 acc[QN][RN];
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm512_setzero_ps();
  const int64_t dfull = d & ~int64_t(15);
  auto qload = [](const float* p) { return _mm512_loadu_ps(p); };
  for (int64_t t = 0; t < dfull; t += 16) {
    if (PF && (sizeof(CT) == 4 || (t & 63) == 0))  // one prefetch per 64-byte line
      for (int b = 0; b < RN; ++b) prefetch_row(c, d, RN + b, t);
    if constexpr (std::is_same_v<CT, float>)
      micro_step<Zmm, QN, RN, L2, PF>(acc, q, c, d, t, qload, qload);
    else
      micro_step<Zmm, QN, RN, L2, PF>(acc, q, c, d, t, qload, [](const int8_t* p) {
        return widen_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      });
  }
  if (d > dfull) {
    const __mmask16 m = tail_mask16(d - dfull);
    auto qmasked = [m](const float* p) { return _mm512_maskz_loadu_ps(m, p); };
    if constexpr (std::is_same_v<CT, float>)
      micro_step<Zmm, QN, RN, L2, PF>(acc, q, c, d, dfull, qmasked, qmasked);
    else
      micro_step<Zmm, QN, RN, L2, PF>(acc, q, c, d, dfull, qmasked,
                           [m](const int8_t* p) { return widen_i8(_mm_maskz_loadu_epi8(m, p)); });
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int a = 0; a < QN; ++a) {
    if constexpr (RN % 4 == 0)
      for (int b = 0; b < RN; b += 4)
        _mm_storeu_ps(out + a * ld + b, reduce4(acc[a][b], acc[a][b + 1], acc[a][b + 2], acc[a][b + 3]));
    else
      out[a * ld] = _mm_cvtss_f32(reduce4(acc[a][0], zero, zero, zero));
  }
}

// One or two queries over int8 codes: a memory stream of 8 rows per micro-kernel (16-byte loads;
// 1 query: 1.9x faster than 4 rows from memory), the next 8 rows prefetched.
template <int QN, bool L2>
__attribute__((noinline)) void stream_i8(const float* q, const int8_t* c, int64_t nr, int64_t d, float* out,
                                         int64_t ahead) {
  int64_t j = 0;
  for (; j + 8 <= nr; j += 8) micro_f32<QN, 8, L2, true>(q, c + j * d, d, out + j, nr, nr + ahead - j - 8);
  for (; j < nr; ++j) micro_f32<QN, 1, L2, false>(q, c + j * d, d, out + j, nr, 0);
}

template <bool L2, typename CT>
void tile_f32(const float* q, int64_t nq, const CT* c, int64_t nr, int64_t d, float* out, int64_t ahead) {
  // Float rows of whole lines stream by 256-bit halves (rows that are not 64-byte aligned, as
  // numpy's are not, split one load in two instead of every load across two cache lines); others
  // (100 dims: 1 query 7-10%, 2 queries 5-19% slower by halves from memory) keep whole vectors.
  if constexpr (std::is_same_v<CT, float>) {
    if (nq <= 2 && d % 16 == 0)
      return nq == 1 ? stream_f32<1, L2>(q, c, nr, d, out, ahead) : stream_f32<2, L2>(q, c, nr, d, out, ahead);
  } else if (nq <= 2) {
    return nq == 1 ? stream_i8<1, L2>(q, c, nr, d, out, ahead) : stream_i8<2, L2>(q, c, nr, d, out, ahead);
  }
  for_each_micro<4>(nq, nr, [&](auto qn, auto rn, int64_t i, int64_t j) {
    constexpr int QN = decltype(qn)::value, RN = decltype(rn)::value;
    // A lone query's rows are the next group's: prefetch them for it.
    micro_f32<QN, RN, L2, QN == 1 && RN == 4>(q + i * d, c + j * d, d, out + i * nr + j, nr, nr + ahead - j - RN);
  });
}

void tile_dot_f32_i8(const float* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, float* out,
                     int64_t ahead) {
  tile_f32<false>(q, nq, c, nr, d, out, ahead);
}

void tile_dot_f32(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out, int64_t ahead) {
  tile_f32<false>(q, nq, c, nr, d, out, ahead);
}

void tile_l2_f32(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out, int64_t ahead) {
  tile_f32<true>(q, nq, c, nr, d, out, ahead);
}

void sq_norms_f32(const float* c, int64_t nr, int64_t d, float* out) { sq_norms_f32_impl(c, nr, d, out); }

void tile_dot_norms_f32(const float* q, const float* c, int64_t nr, int64_t d, float* out, float* norm2,
                        int64_t ahead) {
  dot_norms<true>(q, c, nr, d, out, norm2, ahead);
}

inline __mmask32 tail_mask32(int64_t rem) { return __mmask32((uint64_t(1) << rem) - 1u); }
inline __mmask64 tail_mask64(int64_t rem) {
  return rem >= 64 ? ~__mmask64(0) : __mmask64((uint64_t(1) << rem) - 1u);
}

// int8 dot without VNNI: sign-extend 32 bytes to int16, madd pairs into int32 (exact).
template <int QN, int RN>
inline void micro_i8(const int8_t* q, const int8_t* c, int64_t d, int32_t* out, int64_t ld) {
  __m512i acc[QN][RN];
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm512_setzero_si512();
  for (int64_t t = 0; t < d; t += 32) {
    const __mmask32 m = d - t >= 32 ? ~__mmask32(0) : tail_mask32(d - t);
    __m512i cv[RN];
    for (int b = 0; b < RN; ++b) cv[b] = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, c + b * d + t));
    for (int a = 0; a < QN; ++a) {
      const __m512i qv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, q + a * d + t));
      for (int b = 0; b < RN; ++b) acc[a][b] = _mm512_add_epi32(acc[a][b], _mm512_madd_epi16(qv, cv[b]));
    }
  }
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) out[a * ld + b] = _mm512_reduce_add_epi32(acc[a][b]);
}

// [sum(a), sum(b), sum(c), sum(d)] of four vectors of 16 int32 lanes.
inline __m128i reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
  auto fold = [](__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); };
  const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(fold(a), fold(b)), _mm256_hadd_epi32(fold(c), fold(d)));
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// int8 dot with VNNI: dpbusd multiplies unsigned by signed bytes, so the corpus bytes are shifted
// to c + 128 (an XOR of the sign bit, shared by all queries of the micro-kernel) and 128 * sum(q),
// computed once per query and tile, is subtracted at the end (exact in int32).
template <int QN, int RN, typename Load>
EC_VNNI EC_INLINE void step_i8_vnni(__m512i (&acc)[QN][RN], const int8_t* q,
                                                                  const int8_t* c, int64_t d, int64_t t,
                                                                  Load load) {
  const __m512i sign = _mm512_set1_epi8(char(0x80));
  __m512i cv[RN];
  for (int b = 0; b < RN; ++b) cv[b] = _mm512_xor_si512(load(c + b * d + t), sign);
  for (int a = 0; a < QN; ++a) {
    const __m512i qv = load(q + a * d + t);
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm512_dpbusd_epi32(acc[a][b], cv[b], qv);
  }
}

template <int QN, int RN>
EC_VNNI inline void micro_i8_vnni(const int8_t* q, const int8_t* c, int64_t d,
                                                                const int32_t* qshift, int32_t* out,
                                                                int64_t ld) {
  __m512i acc[QN][RN];
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < RN; ++b) acc[a][b] = _mm512_setzero_si512();
  const int64_t dfull = d & ~int64_t(63);
  for (int64_t t = 0; t < dfull; t += 64)
    step_i8_vnni<QN, RN>(acc, q, c, d, t, [](const int8_t* p) { return _mm512_loadu_si512(p); });
  if (d > dfull) {  // masked tail: zero query bytes add nothing
    const __mmask64 m = tail_mask64(d - dfull);
    step_i8_vnni<QN, RN>(acc, q, c, d, dfull, [m](const int8_t* p) { return _mm512_maskz_loadu_epi8(m, p); });
  }
  for (int a = 0; a < QN; ++a) {
    if constexpr (RN == 4)  // four sums per transposed reduction instead of one
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + a * ld),
                       _mm_sub_epi32(reduce4_epi32(acc[a][0], acc[a][1], acc[a][2], acc[a][3]),
                                     _mm_set1_epi32(qshift[a])));
    else
      out[a * ld] = _mm512_reduce_add_epi32(acc[a][0]) - qshift[a];
  }
}

// 128 * sum(q) for `nq` int8 query rows (the VNNI shift correction).
EC_VNNI void query_shifts(const int8_t* q, int64_t nq, int64_t d, int32_t* shift) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < nq; ++i) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t t = 0; t < d; t += 64)
      acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(tail_mask64(d - t), q + i * d + t));
    shift[i] = 128 * _mm512_reduce_add_epi32(acc);
  }
}

void tile_dot_i8(const int8_t* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, int32_t* out) {
  for_each_micro(nq, nr, [&](auto qn, auto rn, int64_t i, int64_t j) {
    micro_i8<decltype(qn)::value, decltype(rn)::value>(q + i * d, c + j * d, d, out + i * nr + j, nr);
  });
}

EC_VNNI void tile_dot_i8_vnni(const int8_t* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, int32_t* out) {
  constexpr int64_t kChunk = 64;
  int32_t shift[kChunk];
  for (int64_t i0 = 0; i0 < nq; i0 += kChunk) {  // queries in chunks of kChunk shift corrections
    const int64_t nqc = nq - i0 < kChunk ? nq - i0 : kChunk;
    const int8_t* qc = q + i0 * d;
    query_shifts(qc, nqc, d, shift);
    for_each_micro<4>(nqc, nr, [&](auto qn, auto rn, int64_t i, int64_t j) EC_VNNI {
      micro_i8_vnni<decltype(qn)::value, decltype(rn)::value>(qc + i * d, c + j * d, d, shift + i,
                                                              out + (i0 + i) * nr + j, nr);
    });
  }
}

// [sum(v[0]), ..., sum(v[7])] of eight vectors of eight int64 lanes, by a transposing add tree.
inline __m512i reduce8_epi64(const __m512i* v) {
  auto pair = [](__m512i a, __m512i b) {  // 128-bit lane l: [a(2l) + a(2l+1), b(2l) + b(2l+1)]
    return _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
  };
  auto halves = [](__m512i a, __m512i b) {  // lanes 0, 2 of a and b plus lanes 1, 3 of a and b
    return _mm512_add_epi64(_mm512_shuffle_i64x2(a, b, 0x88), _mm512_shuffle_i64x2(a, b, 0xDD));
  };
  const __m512i q0123 = halves(pair(v[0], v[1]), pair(v[2], v[3]));
  const __m512i q4567 = halves(pair(v[4], v[5]), pair(v[6], v[7]));
  return halves(q0123, q4567);
}

// QN queries x 8 rows: XOR + VPOPCNTQ per 64-byte chunk, one transposed reduction per query.
// Unmasked row loads (kMaskedRows false) may read up to 63 bytes past a row: the caller guarantees
// they stay inside the tile, and `keep` clears the bytes past the row after the XOR. Byte-masked
// loads of rows streamed from memory ran at half the speed here, so only the tile's end uses them.
template <int QN, bool kMaskedRows>
EC_VPOPCNT inline void micro_hamming8(const uint8_t* q, const uint8_t* c, int64_t nb, int32_t* out, int64_t ld) {
  __m512i acc[QN][8];
  for (int a = 0; a < QN; ++a)
    for (int b = 0; b < 8; ++b) acc[a][b] = _mm512_setzero_si512();
  for (int64_t t = 0; t < nb; t += 64) {
    const __mmask64 m = tail_mask64(nb - t);
    const __m512i keep = _mm512_movm_epi8(m);
    __m512i cv[8];
    for (int b = 0; b < 8; ++b)
      cv[b] = kMaskedRows ? _mm512_maskz_loadu_epi8(m, c + b * nb + t) : _mm512_loadu_si512(c + b * nb + t);
    for (int a = 0; a < QN; ++a) {
      const __m512i qv = _mm512_maskz_loadu_epi8(m, q + a * nb + t);
      for (int b = 0; b < 8; ++b) {
        const __m512i x = _mm512_and_si512(_mm512_xor_si512(qv, cv[b]), keep);
        acc[a][b] = _mm512_add_epi64(acc[a][b], _mm512_popcnt_epi64(x));
      }
    }
  }
  for (int a = 0; a < QN; ++a)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + a * ld), _mm512_cvtepi64_epi32(reduce8_epi64(acc[a])));
}

// Several queries over short codes: the tile is transposed so that one vector holds word w of 8
// rows; a query's word is broadcast (an embedded-broadcast XOR), and VPOPCNTQ + add leave the 8
// distances in the 8 lanes: no horizontal reduction at all. Codes are zero-padded to whole words on
// both sides, so the padding adds nothing.
constexpr int64_t kTransposedMaxWords = 32;  // codes up to 256 bytes
constexpr int64_t kTransposedMaxRows = 64;   // the search's tile height

inline uint64_t load_word(const uint8_t* p, int64_t nb, int64_t w) {
  uint64_t x = 0;
  if (nb - 8 * w >= 8) {
    __builtin_memcpy(&x, p + 8 * w, 8);  // a constant size: one load, no memcpy call
  } else {
    for (int64_t t = 8 * w; t < nb; ++t) x |= uint64_t(p[t]) << (8 * (t - 8 * w));
  }
  return x;
}

EC_VPOPCNT void tile_hamming_transposed(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nb,
                             int32_t* out) {
  const int64_t words = (nb + 7) / 8, groups = (nr + 7) / 8;
  alignas(64) uint64_t rows[kTransposedMaxRows / 8][kTransposedMaxWords][8];
  alignas(64) uint64_t qw[kTransposedMaxWords];
  for (int64_t j = 0; j < groups * 8; ++j)
    for (int64_t w = 0; w < words; ++w) rows[j / 8][w][j % 8] = j < nr ? load_word(c + j * nb, nb, w) : 0;
  alignas(32) int32_t dist[8];
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t w = 0; w < words; ++w) qw[w] = load_word(q + i * nb, nb, w);
    for (int64_t g = 0; g < groups; ++g) {
      __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
      int64_t w = 0;
      for (; w + 2 <= words; w += 2) {  // two chains: popcnt latency overlaps
        acc0 = _mm512_add_epi64(acc0, _mm512_popcnt_epi64(_mm512_xor_si512(
                                          _mm512_load_si512(rows[g][w]), _mm512_set1_epi64(int64_t(qw[w])))));
        acc1 = _mm512_add_epi64(acc1, _mm512_popcnt_epi64(_mm512_xor_si512(
                                          _mm512_load_si512(rows[g][w + 1]), _mm512_set1_epi64(int64_t(qw[w + 1])))));
      }
      if (w < words)
        acc0 = _mm512_add_epi64(acc0, _mm512_popcnt_epi64(_mm512_xor_si512(
                                          _mm512_load_si512(rows[g][w]), _mm512_set1_epi64(int64_t(qw[w])))));
      const __m256i d8 = _mm512_cvtepi64_epi32(_mm512_add_epi64(acc0, acc1));
      const int64_t len = nr - g * 8 < 8 ? nr - g * 8 : 8;
      if (len == 8) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i * nr + g * 8), d8);
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i*>(dist), d8);
        for (int64_t r = 0; r < len; ++r) out[i * nr + g * 8 + r] = dist[r];
      }
    }
  }
}

EC_VPOPCNT void tile_hamming(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nb,
                             int32_t* out) {
  // Transposing costs about one pass over the tile: worth it from a few queries on.
  if (nq >= 4 && nb <= 8 * kTransposedMaxWords && nr <= kTransposedMaxRows) {
    tile_hamming_transposed(q, nq, c, nr, nb, out);
    return;
  }
  auto group = [&](auto masked, int64_t j) EC_VPOPCNT {
    int64_t i = 0;
    for (; i + 2 <= nq; i += 2)
      micro_hamming8<2, decltype(masked)::value>(q + i * nb, c + j * nb, nb, out + i * nr + j, nr);
    if (i < nq) micro_hamming8<1, decltype(masked)::value>(q + i * nb, c + j * nb, nb, out + i * nr + j, nr);
  };
  int64_t j = 0;
  // Groups whose unmasked reads (up to 63 bytes past their last row) stay inside the tile.
  for (; (j + 8) * nb + 64 <= nr * nb; j += 8) group(std::false_type{}, j);
  for (; j + 8 <= nr; j += 8) group(std::true_type{}, j);
  for (; j < nr; ++j)  // fewer than 8 rows left: one pair at a time (exact: no tree to match)
    for (int64_t i = 0; i < nq; ++i) out[i * nr + j] = int32_t(hamming(q + i * nb, c + j * nb, size_t(nb)));
}

void rows_f16_to_f32(const uint16_t* src, int64_t nr, int64_t d, float* dst) {
  const int64_t n = nr * d;
  int64_t t = 0;
  for (; t + 16 <= n; t += 16)
    _mm512_storeu_ps(dst + t, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t))));
  if (t < n) {
    const __mmask16 m = tail_mask16(n - t);
    _mm512_mask_storeu_ps(dst + t, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + t)));
  }
}

void rows_bf16_to_f32(const uint16_t* src, int64_t nr, int64_t d, float* dst) {
  const int64_t n = nr * d;
  int64_t t = 0;
  auto widen = [](__m256i x) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16)); };
  for (; t + 16 <= n; t += 16)
    _mm512_storeu_ps(dst + t, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t))));
  if (t < n) {
    const __mmask16 m = tail_mask16(n - t);
    _mm512_mask_storeu_ps(dst + t, m, widen(_mm256_maskz_loadu_epi16(m, src + t)));
  }
}

void rows_i8_affine_to_f32(const int8_t* src, int64_t nr, int64_t d, const float* offset, const float* scale,
                           float* dst) {
  const int64_t dfull = d & ~int64_t(15);
  for (int64_t j = 0; j < nr; ++j) {
    const int8_t* s = src + j * d;
    float* o = dst + j * d;
    for (int64_t t = 0; t < dfull; t += 16) {  // unmasked: masked loads and stores ran slower here
      const __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + t))));
      _mm512_storeu_ps(o + t, _mm512_fmadd_ps(_mm512_loadu_ps(scale + t), x, _mm512_loadu_ps(offset + t)));
    }
    if (d > dfull) {
      const __mmask16 m = tail_mask16(d - dfull);
      const __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, s + dfull)));
      const __m512 v =
          _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, scale + dfull), x, _mm512_maskz_loadu_ps(m, offset + dfull));
      _mm512_mask_storeu_ps(o + dfull, m, v);
    }
  }
}

}  // namespace

const KernelTable& avx512_vpopcnt_kernels() {
  static const KernelTable table{Isa::kAvx512Vpopcnt,
                                 dot_f32,
                                 l2sq_f32,
                                 dot_i8,
                                 hamming,
                                 tile_dot_f32,
                                 tile_l2_f32,
                                 tile_dot_f32_i8,
                                 // VNNI is not part of the AVX-512 levels' requirements: use it when present.
                                 cpu_has_avx512_vnni() ? tile_dot_i8_vnni : tile_dot_i8,
                                 tile_hamming,
                                 rows_f16_to_f32,
                                 rows_bf16_to_f32,
                                 rows_i8_affine_to_f32,
                                 nullptr,
                                 nullptr,
                                 sq_norms_f32,
                                 tile_dot_norms_f32};
  return table;
}

}  // namespace embedcore
