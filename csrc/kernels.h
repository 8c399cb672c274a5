// Per-ISA distance primitives. Each translation unit kernels_<isa>.cpp is compiled with its own
// -m flags and fills one KernelTable; dispatch.cpp hands out the table the CPU supports, so the
// extension runs on any x86-64 (scalar fallback) and uses AVX2/AVX-512 where present.
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
  // are exact, so results depend neither on tiling nor on the number of threads.
  void (*tile_dot_f32)(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out);
  void (*tile_l2_f32)(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out);
  // Float queries against int8 rows widened in registers: out = sum_t q[t] * float(c[t]).
  void (*tile_dot_f32_i8)(const float* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, float* out);
  void (*tile_dot_i8)(const int8_t* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, int32_t* out);
  void (*tile_hamming)(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nbytes,
                       int32_t* out);
  // Widens nr rows of 16-bit floats (IEEE half or bfloat16) to float32: dst[j * d + t].
  void (*rows_f16_to_f32)(const uint16_t* src, int64_t nr, int64_t d, float* dst);
  void (*rows_bf16_to_f32)(const uint16_t* src, int64_t nr, int64_t d, float* dst);
  // Dequantises nr rows of int8 codes: dst[j * d + t] = offset[t] + scale[t] * src[j * d + t].
  void (*rows_i8_affine_to_f32)(const int8_t* src, int64_t nr, int64_t d, const float* offset,
                                const float* scale, float* dst);
};

const KernelTable& scalar_kernels();
#ifdef EMBEDCORE_HAVE_AVX2
const KernelTable& avx2_kernels();
#endif
#ifdef EMBEDCORE_HAVE_AVX512
const KernelTable& avx512_kernels();
#endif

// The table in use: the best supported ISA, or the one forced by set_active_isa / EMBEDCORE_CPU_ISA.
const KernelTable& active_kernels();
// Forces an ISA (tests, benchmarks). Returns false when the CPU or the build lacks it.
bool set_active_isa(Isa isa);

}  // namespace embedcore
