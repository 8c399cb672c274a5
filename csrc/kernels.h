// Per-ISA distance primitives. Each translation unit kernels_<isa>.cpp is compiled with its own
// -m flags and fills one KernelTable; dispatch.cpp hands out the table of the level the CPU
// supports (cpu_features.h; the avx512 level is the AVX-512 unit's table with the AVX2 unit's
// popcount kernels), so the extension runs on any x86-64 (scalar fallback) and uses AVX2/AVX-512
// where present. Algorithms shared by the units live in *-inl.h files, instantiated per unit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu_features.h"

namespace embedcore {

struct KernelTable {
  Isa isa;
  // sum_i a[i] * b[i], fp32 accumulation.
  float (*dot_f32)(const float* a, const float* b, size_t d);
  // sum_i (a[i] - b[i])^2.
  float (*l2sq_f32)(const float* a, const float* b, size_t d);
  // sum_i a[i] * b[i] for signed bytes, exact int32 accumulation (d < 2^17 keeps it exact).
  int32_t (*dot_i8)(const int8_t* a, const int8_t* b, size_t d);
  // Number of differing bits between two packed bit strings of `nbytes` bytes.
  uint32_t (*hamming)(const uint8_t* a, const uint8_t* b, size_t nbytes);

  // Score tiles of the fused search: nq queries (rows of q, stride d) against nr consecutive corpus
  // rows (stride d), written to out[i * nr + j]. A float score goes through the same arithmetic
  // (accumulation order and reduction tree) wherever its pair falls in a tile, and integer scores
  // are exact, so results depend neither on tiling nor on the number of threads. The float tiles
  // may prefetch (never read) the `ahead` rows that follow the tile in memory.
  void (*tile_dot_f32)(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out,
                       int64_t ahead);
  void (*tile_l2_f32)(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out,
                      int64_t ahead);
  // Float queries against int8 rows widened in registers: out = sum_t q[t] * float(c[t]).
  void (*tile_dot_f32_i8)(const float* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, float* out,
                          int64_t ahead);
  void (*tile_dot_i8)(const int8_t* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, int32_t* out);
  void (*tile_hamming)(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nbytes,
                       int32_t* out);
  // Widens nr rows of 16-bit floats (IEEE half or bfloat16) to float32: dst[j * d + t].
  void (*rows_f16_to_f32)(const uint16_t* src, int64_t nr, int64_t d, float* dst);
  void (*rows_bf16_to_f32)(const uint16_t* src, int64_t nr, int64_t d, float* dst);
  // Dequantises nr rows of int8 codes: dst[j * d + t] = offset[t] + scale[t] * src[j * d + t].
  void (*rows_i8_affine_to_f32)(const int8_t* src, int64_t nr, int64_t d, const float* offset,
                                const float* scale, float* dst);

  // Fast-scan Hamming for many queries (null where the ISA has no such kernel). Bits are read as
  // nibble positions p = 0 .. hamming_nibble_positions(nbytes) - 1 (byte p / 2, low nibble first;
  // bytes past nbytes are zero). A query becomes a table (P, 16): entry [p][v] = popcount of its
  // nibble p XOR v (hamming_nibble_tables). Corpus rows become groups of 32: nib[(g * P + p) * 32 + r]
  // = nibble p of row 32 g + r (zero past nr), for ceil(nr / 32) groups.
  void (*hamming_nibble_rows)(const uint8_t* c, int64_t nr, int64_t nbytes, uint8_t* nib);
  // out[i * nr + j] = Hamming distance of query i (tables + i * P * 16) to row j, for nr <= 64 rows
  // and nbytes <= kMaxNibbleBytes;
  // bit j of cand[i] is set when it is <= bound[i] (a row that may enter query i's heap).
  void (*tile_hamming_nibbles)(const uint8_t* tables, int64_t nq, const uint8_t* nib, int64_t nr,
                               int64_t nbytes, const int32_t* bound, int32_t* out, uint64_t* cand);

  // Squared norms of nr rows (stride d): out[j] = sum_t c[j * d + t]^2.
  void (*sq_norms_f32)(const float* c, int64_t nr, int64_t d, float* out);
  // The cosine scan of one query reads each row once: out[j] as tile_dot_f32 (nq = 1) and norm2[j]
  // as sq_norms_f32 write them, bit for bit; `ahead` as for tile_dot_f32.
  void (*tile_dot_norms_f32)(const float* q, const float* c, int64_t nr, int64_t d, float* out, float* norm2,
                             int64_t ahead);
};

// Rows padded to 16-byte chunks of 32 nibbles. Measured: wider codes (a tile's nibbles past 128 KB)
// score faster by words; 16-bit sums would allow up to 8191 bytes.
constexpr int64_t kMaxNibbleBytes = 1024;
inline int64_t hamming_nibble_positions(int64_t nbytes) { return 32 * ((nbytes + 15) / 16); }

const KernelTable& scalar_kernels();
#ifdef EMBEDCORE_HAVE_AVX2
const KernelTable& avx2_kernels();
#endif
#ifdef EMBEDCORE_HAVE_AVX512
// The AVX-512 unit's kernels with its VPOPCNTDQ popcount kernels (level avx512_vpopcnt); the
// avx512 level is this table with AVX2's popcount kernels (dispatch.cpp).
const KernelTable& avx512_vpopcnt_kernels();
#endif

// The table in use: the best supported ISA, or the one forced by set_active_isa / EMBEDCORE_CPU_ISA.
const KernelTable& active_kernels();
// Forces an ISA (tests, benchmarks). Returns false when the CPU or the build lacks it.
bool set_active_isa(Isa isa);

}  // namespace embedcore
