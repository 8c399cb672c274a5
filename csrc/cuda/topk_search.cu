// Exact search fused with a block-level top-k: the score matrix is never written.
//
// Stage 1 (this file): block (b, y) scans corpus rows [b * chunk, (b + 1) * chunk) for up to
// kMaxQueries queries staged in shared memory. A group of G lanes (a power of two <= 32) scores one
// row: coalesced 16-byte loads when rows and base are 16-byte aligned, element loads otherwise,
// then a shuffle reduction. The group's first lane packs each score into the unique int64 key of
// embedcore.ops.search._pack_keys and keeps it only if it beats the block's current k-th best key
// (a threshold in shared memory), appending it to a per-query shared buffer with a shared atomic.
// Every kRound rows the block synchronises; a buffer that could overflow in the next round is
// flushed: bitonic sort of the buffer (descending), elementwise max of the kept top-KP (descending)
// and the buffer's first KP reversed, which is a bitonic sequence holding the best KP of both, then
// a bitonic merge. The threshold becomes the new k-th key. Each block writes its best k keys.
// Stage 2 (embedcore/ops/search_cuda.py): torch.topk over the nq x (n_blocks * k) candidates; keys
// are unique, so it is exact and ties go to the lower row as in the rest of embedcore.
//
// Bandwidth (one fp16 query, the memory-bound case; goal >= 70% of HBM): the filter makes pushes
// rare after the first rows (about k * ln(chunk / k) per block for unordered data), so the scan is
// loads + FMAs + one __syncthreads per 256 rows: no per-row atomics, no global writes. Bytes in
// flight come from ILP and occupancy: G is chosen so that a lane has ~8 16-byte loads per row,
// issued four at a time before any use (64 bytes per lane in flight); the 1-query kernels fit 64
// registers (launch bounds, no spills; figures in tests/test_search_cuda.py) and ~7 KiB of shared
// memory (k <= 16), so 4 blocks of 256 threads stay resident per SM: 32 warps x 2 KiB = 64 KiB in
// flight per SM, well above the ~15-20 KiB Little's law asks of H100 HBM3 (3.35 TB/s x ~700 ns /
// 132 SMs). Python sizes the grid in whole waves of resident blocks (from
// cudaOccupancyMaxActiveBlocksPerMultiprocessor), so there is no straggling last wave; the start of
// a block (two rounds pass the empty threshold, one 512-key sort) is small next to its ~1 MiB chunk.
// Only a GPU run (benchmarks/gpu_suite.py) can confirm the figure.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "api.h"

namespace {

constexpr int kThreads = 256;
constexpr int kRound = kThreads;  // rows per round: each group scores G rows, one sync per round
constexpr int kMaxQueries = 8;
constexpr int kMinBuffer = 2 * kRound;  // a flush happens at most every other round
constexpr int64_t kSharedBudget = 48 * 1024;  // no opt-in: several blocks per SM matter more
constexpr int64_t kPad = INT64_MIN;           // loses to every real key (row < 2^31)
constexpr int64_t kInt8DotMaxDim = 131071;    // |sum| of products <= 16384 * d < 2^31
constexpr int64_t kInt8L2MaxDim = 33025;      // |sum| of squares <= 65025 * d < 2^31

__host__ __device__ constexpr bool is_float(int format) { return format >= EC_TOPK_F16; }

// Bytes per corpus element and per staged query element (float formats stage float32 queries).
__host__ __device__ constexpr int elem_bytes(int format) {
  return format == EC_TOPK_F32 ? 4 : (format == EC_TOPK_F16 || format == EC_TOPK_BF16) ? 2 : 1;
}
__host__ __device__ constexpr int query_elem_bytes(int format) { return is_float(format) ? 4 : 1; }

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct Plan {
  int kp, buffer, queries, q_stride;
  int64_t shared;
};

bool metric_fits(int format, int metric) {
  if (format == EC_TOPK_HAMMING) return metric == EC_TOPK_METRIC_HAMMING;
  if (format == EC_TOPK_INT8) return metric == EC_TOPK_METRIC_DOT || metric == EC_TOPK_METRIC_L2;
  return metric == EC_TOPK_METRIC_DOT || metric == EC_TOPK_METRIC_COS || metric == EC_TOPK_METRIC_L2;
}

// Host-only check and sizing; no CUDA call, so bad arguments are rejected on any machine.
bool make_plan(int format, int metric, int64_t nq, int64_t width, int64_t k, Plan* plan) {
  if (format < EC_TOPK_HAMMING || format > EC_TOPK_F32) return false;
  if (!metric_fits(format, metric) || nq < 0 || width < 1 || k < 1 || k > EC_TOPK_MAX_K) return false;
  if (format == EC_TOPK_INT8 && width > (metric == EC_TOPK_METRIC_L2 ? kInt8L2MaxDim : kInt8DotMaxDim))
    return false;
  if (width > kSharedBudget) return false;  // keeps every byte count below in int range
  int kp = 1;
  while (kp < k) kp <<= 1;
  const int buffer = kp > kMinBuffer ? kp : kMinBuffer;
  const int64_t q_stride = round_up(width * query_elem_bytes(format), 16);
  // staged query + kept keys + buffer + threshold (8) + buffer count (4) + query norm (4)
  const int64_t per_query = q_stride + int64_t(kp + buffer) * 8 + 16;
  int64_t queries = kSharedBudget / per_query;
  if (queries < 1) return false;
  if (queries > kMaxQueries) queries = kMaxQueries;
  if (nq >= 1 && queries > nq) queries = nq;
  *plan = Plan{kp, buffer, int(queries), int(q_stride), queries * per_query};
  return true;
}

struct Params {
  const uint8_t* q;  // (nq, width) staged query type, this launch's queries
  const uint8_t* c;  // (n, width) corpus
  int64_t* out;      // (nq, n_blocks, k) of this launch
  int* nonfinite;
  int64_t n, chunk, nq;
  int width, q_bytes, q_stride, queries, k, kp, buffer, group, metric;
  bool vec;  // 16-byte loads: row bytes and base pointer 16-byte aligned
};

template <int F>
using Acc = typename std::conditional<is_float(F), float, int>::type;

// Adds one 16-byte corpus vector (vector index v of the row) to every query's sum and to the row's
// sum of squares.
template <int F, int MAXQ>
__device__ __forceinline__ void add_vector(uint4 cv, const uint8_t* sq, int q_stride, int v, int nqb,
                                           Acc<F> (&acc)[MAXQ], Acc<F>& cc) {
  const uint32_t w[4] = {cv.x, cv.y, cv.z, cv.w};
  if constexpr (F == EC_TOPK_HAMMING || F == EC_TOPK_INT8) {
    if constexpr (F == EC_TOPK_INT8) {
#pragma unroll
      for (int t = 0; t < 4; ++t) cc = __dp4a(int(w[t]), int(w[t]), cc);
    }
#pragma unroll
    for (int i = 0; i < MAXQ; ++i) {
      if (i >= nqb) break;
      const uint4 qv = *reinterpret_cast<const uint4*>(sq + i * q_stride + v * 16);
      const uint32_t y[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        if constexpr (F == EC_TOPK_HAMMING)
          acc[i] += __popc(w[t] ^ y[t]);
        else
          acc[i] = __dp4a(int(w[t]), int(y[t]), acc[i]);  // four signed byte products, exact
      }
    }
  } else {
    constexpr int E = 16 / elem_bytes(F);  // elements per vector: 8 (fp16/bf16) or 4 (fp32)
    float x[E];
    if constexpr (F == EC_TOPK_F32) {
      x[0] = __uint_as_float(w[0]), x[1] = __uint_as_float(w[1]);
      x[2] = __uint_as_float(w[2]), x[3] = __uint_as_float(w[3]);
    } else {
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        float2 f;
        if constexpr (F == EC_TOPK_F16)
          f = __half22float2(*reinterpret_cast<const __half2*>(&w[t]));
        else
          f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[t]));
        x[2 * t] = f.x, x[2 * t + 1] = f.y;
      }
    }
#pragma unroll
    for (int t = 0; t < E; ++t) cc = fmaf(x[t], x[t], cc);
#pragma unroll
    for (int i = 0; i < MAXQ; ++i) {
      if (i >= nqb) break;
      const float4* qv = reinterpret_cast<const float4*>(sq + i * q_stride + v * E * 4);
#pragma unroll
      for (int t = 0; t < E / 4; ++t) {
        const float4 y = qv[t];
        acc[i] = fmaf(x[4 * t], y.x, acc[i]);
        acc[i] = fmaf(x[4 * t + 1], y.y, acc[i]);
        acc[i] = fmaf(x[4 * t + 2], y.z, acc[i]);
        acc[i] = fmaf(x[4 * t + 3], y.w, acc[i]);
      }
    }
  }
}

// Element e of a row that is not 16-byte aligned (or whose size is not a multiple of 16 bytes).
template <int F, int MAXQ>
__device__ __forceinline__ void add_element(const uint8_t* row, int e, const uint8_t* sq, int q_stride, int nqb,
                                            Acc<F> (&acc)[MAXQ], Acc<F>& cc) {
  if constexpr (F == EC_TOPK_HAMMING) {
    const uint32_t x = row[e];
#pragma unroll
    for (int i = 0; i < MAXQ; ++i)
      if (i < nqb) acc[i] += __popc(x ^ uint32_t(sq[i * q_stride + e]));
  } else if constexpr (F == EC_TOPK_INT8) {
    const int x = int8_t(row[e]);
    cc += x * x;
#pragma unroll
    for (int i = 0; i < MAXQ; ++i)
      if (i < nqb) acc[i] += x * int(int8_t(sq[i * q_stride + e]));
  } else {
    float x;
    if constexpr (F == EC_TOPK_F16)
      x = __half2float(reinterpret_cast<const __half*>(row)[e]);
    else if constexpr (F == EC_TOPK_BF16)
      x = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row)[e]);
    else
      x = reinterpret_cast<const float*>(row)[e];
    cc = fmaf(x, x, cc);
#pragma unroll
    for (int i = 0; i < MAXQ; ++i)
      if (i < nqb) acc[i] = fmaf(x, reinterpret_cast<const float*>(sq + i * q_stride)[e], acc[i]);
  }
}

// The int64 key of _pack_keys: high word the order-preserving score (negated for ascending
// metrics, in 64 bits so INT32_MIN does not overflow), low word 0xFFFFFFFF - row.
__device__ __forceinline__ int64_t pack_key(int32_t ordered, int64_t row, bool ascending) {
  int64_t o = ordered;
  if (ascending) o = -o - 1;
  return int64_t((uint64_t(o) << 32) | uint64_t(0xFFFFFFFFu - uint32_t(row)));
}

__device__ __forceinline__ int32_t float_order(float s) {
  const int32_t bits = __float_as_int(s == 0.0f ? 0.0f : s);  // -0.0 and +0.0: one key
  return bits ^ ((bits >> 31) & 0x7FFFFFFF);
}

// Sorts a[0, n) descending (n a power of two), all threads of the block; ends synchronised.
__device__ void bitonic_sort_desc(int64_t* a, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
        const int i = 2 * t - (t & (stride - 1)), j = i + stride;
        const bool desc = (i & size) == 0;
        const int64_t x = a[i], y = a[j];
        if ((x < y) == desc) a[i] = y, a[j] = x;
      }
      __syncthreads();
    }
  }
}

// Sorts the bitonic sequence a[0, n) descending; ends synchronised.
__device__ void bitonic_merge_desc(int64_t* a, int n) {
  for (int stride = n >> 1; stride > 0; stride >>= 1) {
    for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
      const int i = 2 * t - (t & (stride - 1)), j = i + stride;
      const int64_t x = a[i], y = a[j];
      if (x < y) a[i] = y, a[j] = x;
    }
    __syncthreads();
  }
}

// Merges the buffered keys of one query into its kept top-kp; block-wide, entered synchronised.
__device__ void flush(int64_t* top, int64_t* buf, int64_t* thr, int* count, int kp, int k) {
  const int cnt = *count;
  int size = 1;  // sort only the filled part, rounded up to a power of two; the rest is padding
  while (size < cnt) size <<= 1;
  for (int i = cnt + threadIdx.x; i < max(size, kp); i += blockDim.x) buf[i] = kPad;
  __syncthreads();
  bitonic_sort_desc(buf, size);  // buf[0, kp) is now descending
  // top descending, buf[kp - 1 - i] ascending: the elementwise max is bitonic and holds the best kp.
  for (int i = threadIdx.x; i < kp; i += blockDim.x) {
    const int64_t y = buf[kp - 1 - i];
    if (y > top[i]) top[i] = y;
  }
  __syncthreads();
  bitonic_merge_desc(top, kp);
  if (threadIdx.x == 0) {
    *thr = top[k - 1];
    *count = 0;
  }
  __syncthreads();
}

// One query: <= 64 registers (>= 4 blocks of 256 per SM, the bandwidth case); 8 queries: <= 85.
template <int F, int MAXQ>
__global__ void __launch_bounds__(kThreads, MAXQ == 1 ? 4 : 3) fused_topk_kernel(const Params p) {
  using A = Acc<F>;
  extern __shared__ __align__(16) uint8_t smem[];
  const int nqb_max = p.queries;
  uint8_t* sq = smem;
  int64_t* top = reinterpret_cast<int64_t*>(smem + nqb_max * p.q_stride);
  int64_t* buf = top + nqb_max * p.kp;
  int64_t* thr = buf + nqb_max * p.buffer;
  int* count = reinterpret_cast<int*>(thr + nqb_max);
  A* qnorm = reinterpret_cast<A*>(count + nqb_max);

  const int tid = threadIdx.x;
  const int64_t q0 = int64_t(blockIdx.y) * nqb_max;
  const int nqb = int(min(int64_t(nqb_max), p.nq - q0));
  for (int t = tid; t < nqb * p.q_bytes; t += kThreads)  // < 48 KiB: int offsets
    sq[(t / p.q_bytes) * p.q_stride + t % p.q_bytes] = p.q[q0 * p.q_bytes + t];
  for (int t = tid; t < nqb * p.kp; t += kThreads) top[t] = kPad;
  if (tid < nqb) thr[tid] = kPad, count[tid] = 0;
  __syncthreads();
  if (p.metric == EC_TOPK_METRIC_L2) {  // |q|^2, one warp per query (nqb <= 8 = warps per block)
    const int w = tid / 32, lane = tid % 32;
    if (w < nqb) {
      A s = 0;
      for (int e = lane; e < p.width; e += 32) {
        if constexpr (is_float(F)) {
          const float x = reinterpret_cast<const float*>(sq + w * p.q_stride)[e];
          s = fmaf(x, x, s);
        } else {
          const int x = int8_t(sq[w * p.q_stride + e]);
          s += x * x;
        }
      }
      for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == 0) qnorm[w] = s;
    }
    __syncthreads();
  }

  const bool ascending = p.metric == EC_TOPK_METRIC_L2 || p.metric == EC_TOPK_METRIC_HAMMING;
  const int G = p.group, lane = tid & (G - 1), groups = kThreads / G;
  const int row_bytes = p.width * elem_bytes(F);
  const int nvec = row_bytes / 16;
  const int64_t begin = int64_t(blockIdx.x) * p.chunk;
  const int64_t end = min(p.n, begin + p.chunk);
  for (int64_t base = begin; base < end; base += kRound) {
    for (int r = 0; r < G; ++r) {
      const int64_t row = base + int64_t(r) * groups + tid / G;
      const bool valid = row < end;
      A acc[MAXQ];
#pragma unroll
      for (int i = 0; i < MAXQ; ++i) acc[i] = 0;
      A cc = 0;
      if (valid) {
        const uint8_t* rp = p.c + row * row_bytes;
        if (p.vec) {
          const uint4* rv = reinterpret_cast<const uint4*>(rp);
          int v = lane;
          for (; v + 3 * G < nvec; v += 4 * G) {  // four loads issued before any use: bytes in flight
            uint4 x[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) x[u] = __ldg(rv + v + u * G);
#pragma unroll
            for (int u = 0; u < 4; ++u) add_vector<F, MAXQ>(x[u], sq, p.q_stride, v + u * G, nqb, acc, cc);
          }
          for (; v < nvec; v += G) add_vector<F, MAXQ>(__ldg(rv + v), sq, p.q_stride, v, nqb, acc, cc);
        } else {
          for (int e = lane; e < p.width; e += G) add_element<F, MAXQ>(rp, e, sq, p.q_stride, nqb, acc, cc);
        }
      }
      for (int off = G >> 1; off > 0; off >>= 1) {  // every lane of the warp takes part
#pragma unroll
        for (int i = 0; i < MAXQ; ++i)
          if (i < nqb) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
        cc += __shfl_xor_sync(0xffffffffu, cc, off);
      }
      if (valid && lane == 0) {
#pragma unroll
        for (int i = 0; i < MAXQ; ++i) {
          if (i >= nqb) break;
          int32_t ordered;
          if constexpr (is_float(F)) {
            float s = acc[i];
            bool finite = isfinite(s);
            if (p.metric == EC_TOPK_METRIC_COS) {
              s = s / fmaxf(sqrtf(cc), 1e-12f);
              finite = finite && isfinite(cc) && isfinite(s);
            } else if (p.metric == EC_TOPK_METRIC_L2) {
              const float d = qnorm[i] + cc - 2.0f * s;
              finite = finite && isfinite(cc) && isfinite(d);
              s = fmaxf(d, 0.0f);
            }
            if (!finite) *p.nonfinite = 1;
            ordered = float_order(s);
          } else {
            ordered = p.metric == EC_TOPK_METRIC_L2 ? qnorm[i] + cc - 2 * acc[i] : acc[i];
          }
          const int64_t key = pack_key(ordered, row, ascending);
          if (key > thr[i]) buf[i * p.buffer + atomicAdd(&count[i], 1)] = key;
        }
      }
    }
    __syncthreads();
    // At most kRound keys per query arrive in a round: flush a buffer that could overflow next.
    for (int i = 0; i < nqb; ++i)
      if (count[i] > p.buffer - kRound) flush(top + i * p.kp, buf + i * p.buffer, thr + i, count + i, p.kp, p.k);
  }
  for (int i = 0; i < nqb; ++i)
    if (count[i] > 0) flush(top + i * p.kp, buf + i * p.buffer, thr + i, count + i, p.kp, p.k);

  const int64_t out_row = (q0 * gridDim.x + blockIdx.x) * p.k;  // query q0 + i at out_row + i * n_blocks * k
  for (int t = tid; t < nqb * p.k; t += kThreads) {
    const int i = t / p.k, j = t % p.k;
    p.out[out_row + int64_t(i) * gridDim.x * p.k + j] = top[i * p.kp + j];
  }
}

using Kernel = void (*)(Params);

template <int F>
Kernel kernel_for_format(int queries) {
  return queries == 1 ? fused_topk_kernel<F, 1> : fused_topk_kernel<F, kMaxQueries>;
}

Kernel kernel_for(int format, int queries) {
  switch (format) {
    case EC_TOPK_HAMMING: return kernel_for_format<EC_TOPK_HAMMING>(queries);
    case EC_TOPK_INT8: return kernel_for_format<EC_TOPK_INT8>(queries);
    case EC_TOPK_F16: return kernel_for_format<EC_TOPK_F16>(queries);
    case EC_TOPK_BF16: return kernel_for_format<EC_TOPK_BF16>(queries);
    default: return kernel_for_format<EC_TOPK_F32>(queries);
  }
}

// Largest power of two <= x, within [1, 32].
int pow2_group(int64_t x) {
  int g = 1;
  while (g < 32 && 2 * g <= x) g <<= 1;
  return g;
}

}  // namespace

extern "C" int ec_cuda_topk_plan(int format, int metric, int64_t nq, int64_t width, int64_t k, int64_t* kp,
                                 int64_t* queries_per_block, int64_t* shared_bytes) {
  Plan plan;
  if (!make_plan(format, metric, nq, width, k, &plan)) return int(cudaErrorInvalidValue);
  if (kp) *kp = plan.kp;
  if (queries_per_block) *queries_per_block = plan.queries;
  if (shared_bytes) *shared_bytes = plan.shared;
  return 0;
}

extern "C" int ec_cuda_fused_topk(int format, int metric, const void* q, const void* c, int64_t nq, int64_t n,
                                  int64_t width, int64_t k, int64_t chunk, void* out, void* nonfinite,
                                  void* stream) {
  Plan plan;
  if (!make_plan(format, metric, nq, width, k, &plan)) return int(cudaErrorInvalidValue);
  if (n < k || n > INT32_MAX || chunk < 1) return int(cudaErrorInvalidValue);
  if (nq == 0) return 0;
  if (!q || !c || !out || (is_float(format) && !nonfinite)) return int(cudaErrorInvalidValue);
  const int64_t n_blocks = (n + chunk - 1) / chunk;  // <= n <= INT32_MAX: fits grid.x

  Params p{};
  p.q = static_cast<const uint8_t*>(q);
  p.c = static_cast<const uint8_t*>(c);
  p.nonfinite = static_cast<int*>(nonfinite);
  p.n = n, p.chunk = chunk;
  p.width = int(width), p.q_bytes = int(width * query_elem_bytes(format)), p.q_stride = plan.q_stride;
  p.queries = plan.queries, p.k = int(k), p.kp = plan.kp, p.buffer = plan.buffer, p.metric = metric;
  const int64_t row_bytes = width * elem_bytes(format);
  p.vec = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(c) % 16 == 0;
  // About eight 16-byte loads per lane and row, issued four at a time (so even G = 1 reads 64
  // contiguous bytes per batch); element loads coalesced across the group.
  p.group = p.vec ? pow2_group(row_bytes / 16 / 8) : pow2_group(width);

  // grid.y is capped at 65535: launch query slices in turn.
  const Kernel kernel = kernel_for(format, plan.queries);
  const int64_t per_launch = int64_t(65535) * plan.queries;
  for (int64_t q0 = 0; q0 < nq; q0 += per_launch) {
    p.nq = nq - q0 < per_launch ? nq - q0 : per_launch;
    p.q = static_cast<const uint8_t*>(q) + q0 * p.q_bytes;
    p.out = static_cast<int64_t*>(out) + q0 * n_blocks * k;
    const dim3 grid(unsigned(n_blocks), unsigned((p.nq + plan.queries - 1) / plan.queries));
    kernel<<<grid, kThreads, size_t(plan.shared), static_cast<cudaStream_t>(stream)>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return int(err);
  }
  return 0;
}

extern "C" int ec_cuda_topk_blocks_per_sm(int format, int metric, int64_t nq, int64_t width, int64_t k,
                                          int* blocks) {
  Plan plan;
  if (!make_plan(format, metric, nq, width, k, &plan) || !blocks) return int(cudaErrorInvalidValue);
  return int(cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel_for(format, plan.queries), kThreads,
                                                           size_t(plan.shared)));
}
