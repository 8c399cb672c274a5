// C-linkage entry points of the CUDA sources. Pointers are device pointers; `stream` is a
// cudaStream_t passed as void* so that the host-side bindings compile without CUDA headers.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int ec_cuda_device_count();
int ec_cuda_runtime_version();
const char* ec_cuda_last_error();
const char* ec_cuda_error_string(int code);

// Exact int32 score tiles of the search (csrc/cuda/search.cu), out[i * nr + j] for nq queries and
// nr corpus rows, all device pointers, enqueued on `stream`. Return a cudaError_t (0: launched).
// Limits: nbytes / d <= 6144 (queries are staged in shared memory), nq <= 524280.
int ec_cuda_hamming_scores(const void* q, const void* c, int64_t nq, int64_t nr, int64_t nbytes, void* out,
                           void* stream);
int ec_cuda_int8_dot_scores(const void* q, const void* c, int64_t nq, int64_t nr, int64_t d, void* out,
                            void* stream);

// Exact search fused with a block-level top-k (csrc/cuda/topk_search.cu): no score matrix is written.
// Formats of the corpus rows (width elements each, contiguous) and the queries handed over:
//   EC_TOPK_HAMMING: packed bits, uint8 queries/corpus (metric EC_TOPK_METRIC_HAMMING);
//   EC_TOPK_INT8: int8 codes, int8 queries (dot or l2, exact int32);
//   EC_TOPK_F16 / EC_TOPK_BF16 / EC_TOPK_F32: float corpus, float32 queries (dot, cos with queries
//   already unit-norm, or l2), fp32 accumulation.
enum { EC_TOPK_HAMMING = 0, EC_TOPK_INT8 = 1, EC_TOPK_F16 = 2, EC_TOPK_BF16 = 3, EC_TOPK_F32 = 4 };
enum { EC_TOPK_METRIC_DOT = 0, EC_TOPK_METRIC_COS = 1, EC_TOPK_METRIC_L2 = 2, EC_TOPK_METRIC_HAMMING = 3 };
#define EC_TOPK_MAX_K 1024

// Resources of the fused search for these arguments, computed on the host without any CUDA call:
// kp (keys kept per query and block, the power of two >= k), queries per block and dynamic shared
// bytes per block. Returns cudaErrorInvalidValue (the pair, k or width is not supported) or 0.
int ec_cuda_topk_plan(int format, int metric, int64_t nq, int64_t width, int64_t k, int64_t* kp,
                      int64_t* queries_per_block, int64_t* shared_bytes);

// Resident blocks per SM of the fused kernel for these arguments (cudaOccupancy..., needs a device),
// so that the caller can size the grid in whole waves. Returns a cudaError_t.
int ec_cuda_topk_blocks_per_sm(int format, int metric, int64_t nq, int64_t width, int64_t k, int* blocks);

// Scans corpus rows [b * chunk, (b + 1) * chunk) per block b (n_blocks = ceil(n / chunk)) and writes
// each block's best k keys per query, best first, to out[(i * n_blocks + b) * k + j] (int64). A key is
// embedcore.ops.search._pack_keys's: order-preserving score << 32 | (0xFFFFFFFF - row), so keys are
// unique and the top k of the nq x (n_blocks * k) candidates is the exact answer; INT64_MIN pads a
// block with fewer than k rows. q: (nq, width) of the format's query type, c: (n, width), out:
// (nq, n_blocks, k); nonfinite: one int32 set to 1 when a float score is NaN/inf (needed for float
// formats, may be null otherwise; the caller zeroes it). Every argument is checked before any CUDA
// call: a bad one returns cudaErrorInvalidValue and launches nothing.
int ec_cuda_fused_topk(int format, int metric, const void* q, const void* c, int64_t nq, int64_t n, int64_t width,
                       int64_t k, int64_t chunk, void* out, void* nonfinite, void* stream);

#ifdef __cplusplus
}
#endif
