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

#ifdef __cplusplus
}
#endif
