// Score tiles of the exact search on the GPU: popc Hamming distances and dp4a int8 dot products of
// nq queries against nr corpus rows, out[i * nr + j] (int32, exact). The top-k over the scores runs
// in embedcore.ops.search on unique int64 (score, index) keys, merged block by block.
//
// Layout: one thread per corpus row; a block stages kQueries queries in shared memory and each
// thread keeps its row's words in registers while it walks them, so a row is read from global
// memory once per kQueries queries.
#include <cuda_runtime.h>

#include <cstdint>

#include "api.h"

namespace {

constexpr int kThreads = 128;
constexpr int kQueries = 8;
constexpr int kMaxSharedBytes = 48 * 1024;

// Reads 4 bytes at p (any alignment) as a little-endian word.
__device__ __forceinline__ uint32_t load_word(const uint8_t* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const uint32_t*>(p);
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

template <bool kHamming>
__global__ void score_kernel(const uint8_t* __restrict__ q, const uint8_t* __restrict__ c, int nq, int64_t nr,
                             int nbytes, int32_t* __restrict__ out) {
  extern __shared__ uint8_t sq[];  // kQueries * nbytes bytes
  const int q0 = blockIdx.y * kQueries;
  const int nqb = min(kQueries, nq - q0);
  for (int t = threadIdx.x; t < nqb * nbytes; t += blockDim.x) sq[t] = q[int64_t(q0) * nbytes + t];
  __syncthreads();
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= nr) return;
  const uint8_t* row = c + j * nbytes;
  const bool aligned = (nbytes % 4 == 0) && (reinterpret_cast<uintptr_t>(c) % 4 == 0);
  const int words = nbytes / 4;
  int32_t acc[kQueries];
#pragma unroll
  for (int i = 0; i < kQueries; ++i) acc[i] = 0;
  for (int w = 0; w < words; ++w) {
    const uint32_t x = load_word(row + 4 * w, aligned);
#pragma unroll
    for (int i = 0; i < kQueries; ++i) {
      if (i >= nqb) break;
      const uint32_t y = load_word(sq + i * nbytes + 4 * w, nbytes % 4 == 0);
      if (kHamming)
        acc[i] += __popc(x ^ y);
      else
        acc[i] = __dp4a(int(x), int(y), acc[i]);  // four signed byte products, exact int32
    }
  }
  for (int t = 4 * words; t < nbytes; ++t) {  // tail bytes
    for (int i = 0; i < nqb; ++i) {
      const uint8_t a = row[t], b = sq[i * nbytes + t];
      acc[i] += kHamming ? __popc(uint32_t(a ^ b)) : int32_t(int8_t(a)) * int32_t(int8_t(b));
    }
  }
  for (int i = 0; i < nqb; ++i) out[int64_t(q0 + i) * nr + j] = acc[i];
}

template <bool kHamming>
int launch(const void* q, const void* c, int64_t nq, int64_t nr, int64_t nbytes, void* out, void* stream) {
  if (nq <= 0 || nr <= 0) return 0;
  if (nbytes <= 0 || nbytes * kQueries > kMaxSharedBytes) return int(cudaErrorInvalidValue);
  const dim3 grid(unsigned((nr + kThreads - 1) / kThreads), unsigned((nq + kQueries - 1) / kQueries));
  if (grid.y > 65535) return int(cudaErrorInvalidValue);
  score_kernel<kHamming><<<grid, kThreads, size_t(nbytes * kQueries), static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint8_t*>(q), static_cast<const uint8_t*>(c), int(nq), nr, int(nbytes),
      static_cast<int32_t*>(out));
  return int(cudaGetLastError());
}

}  // namespace

extern "C" int ec_cuda_hamming_scores(const void* q, const void* c, int64_t nq, int64_t nr, int64_t nbytes,
                                      void* out, void* stream) {
  return launch<true>(q, c, nq, nr, nbytes, out, stream);
}

extern "C" int ec_cuda_int8_dot_scores(const void* q, const void* c, int64_t nq, int64_t nr, int64_t d, void* out,
                                       void* stream) {
  return launch<false>(q, c, nq, nr, d, out, stream);
}
