// Exact fused search: scores are computed in cache-sized tiles (query block x corpus rows) by the
// per-ISA kernels and pushed straight into per-query heaps; the full score matrix never exists.
//
// Parallel plan: with enough query blocks to share evenly, threads split the query blocks and each
// walks the corpus tile by tile (a tile stays in cache for all of the thread's blocks); with fewer
// queries, threads split the corpus and their heaps are merged. Heaps rank (score, index) totally, so the
// result is the same for any number of threads: best first, ties toward the lower index.
#pragma once

#include <cstdint>

namespace embedcore {

enum class Metric { kDot, kCos, kL2 };

// How a float-scored corpus is stored.
enum class FloatFormat { kF32, kF16, kBF16, kI8Affine };

struct FloatCorpus {
  const void* data;     // (n, d) row-major, element type per `format`
  FloatFormat format;
  const float* offset;  // kI8Affine: a code c stands for offset[t] + scale[t] * c; (d,) each
  const float* scale;
};

// Float queries (nq, d) against a float-scored corpus. cos expects unit (or zero) queries and
// divides by the corpus norms. Returns false when a score is not finite (NaN/inf in the corpus,
// or float32 overflow); the outputs are then unspecified.
bool search_float(const float* q, int64_t nq, const FloatCorpus& corpus, int64_t n, int64_t d, Metric metric,
                  int64_t k, int num_threads, float* out_val, int64_t* out_idx);

// int8 queries (nq, d) against int8 codes (n, d). dot and l2 are exact int32 (out_i32; needs
// d <= 33025 for l2, d <= 131071 for dot); cos is float (out_f32).
void search_int8(const int8_t* q, int64_t nq, const int8_t* c, int64_t n, int64_t d, Metric metric, int64_t k,
                 int num_threads, int32_t* out_i32, float* out_f32, int64_t* out_idx);

// Hamming distances between packed bit strings of nbytes bytes, ascending.
void search_hamming(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t n, int64_t nbytes, int64_t k,
                    int num_threads, int32_t* out_val, int64_t* out_idx);

}  // namespace embedcore
