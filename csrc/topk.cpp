#include "topk.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "heap.h"

namespace embedcore {

namespace {

// Scores a thread must get to repay waking it: a heap scan takes ~1 ns per score, and on a shared
// machine a sleeping OpenMP thread can cost a scheduler time slice (a 1 x 40 top-k took 1.46 ms
// with 2 threads, 8 us with one).
constexpr int64_t kMinScoresPerThread = int64_t(1) << 18;

// Pushes scores[begin:end] of one row into `heap`; returns false on a NaN.
template <typename T, typename Rank>
bool scan_range(const T* row, int64_t begin, int64_t end, TopKHeap<T, Rank>& heap) {
  bool ok = true;
  for (int64_t j = begin; j < end; ++j) {
    const T v = row[j];
    if (heap.admits(v, j)) {
      heap.replace_top(v, j);
    } else if (v != v) {
      ok = false;  // NaN compares false everywhere: it never enters, so detect it here
      break;
    }
  }
  return ok;
}

template <typename T, typename Rank>
bool topk_impl(const T* scores, int64_t nrows, int64_t ncols, int64_t stride, int64_t k,
               int num_threads, T* out_val, int64_t* out_idx) {
  std::atomic<bool> ok{true};
  if (nrows >= num_threads || ncols < 4 * k * num_threads) {
    // Enough rows to keep every thread busy: one row per task, heap in the output itself.
#pragma omp parallel for schedule(static) num_threads(num_threads) if (num_threads > 1)
    for (int64_t r = 0; r < nrows; ++r) {
      TopKHeap<T, Rank> heap{out_val + r * k, out_idx + r * k, k};
      heap.clear();
      if (!scan_range(scores + r * stride, 0, ncols, heap)) ok.store(false);
      heap.sort_best_first();
    }
    return ok.load();
  }
  // Few long rows: split each row across threads, then merge the per-thread heaps.
  std::vector<T> tval(static_cast<size_t>(num_threads * k));
  std::vector<int64_t> tidx(static_cast<size_t>(num_threads * k));
  for (int64_t r = 0; r < nrows; ++r) {
    const T* row = scores + r * stride;
#pragma omp parallel num_threads(num_threads) if (num_threads > 1)
    {
      const int t = omp_get_thread_num();
      const int nt = omp_get_num_threads();
      const int64_t chunk = (ncols + nt - 1) / nt;
      const int64_t begin = std::min<int64_t>(ncols, t * chunk);
      const int64_t end = std::min<int64_t>(ncols, begin + chunk);
      TopKHeap<T, Rank> heap{tval.data() + t * k, tidx.data() + t * k, k};
      heap.clear();
      if (!scan_range(row, begin, end, heap)) ok.store(false);
    }
    TopKHeap<T, Rank> heap{out_val + r * k, out_idx + r * k, k};
    heap.clear();
    for (int64_t j = 0; j < int64_t(tval.size()); ++j)
      if (tidx[j] != kNoIndex) heap.push(tval[j], tidx[j]);
    heap.sort_best_first();
  }
  return ok.load();
}

}  // namespace

template <typename T>
bool topk_rows(const T* scores, int64_t nrows, int64_t ncols, int64_t row_stride, int64_t k,
               bool largest, int num_threads, T* out_val, int64_t* out_idx) {
  const int64_t work = nrows * ncols;
  num_threads = int(std::max<int64_t>(1, std::min<int64_t>(num_threads, work / kMinScoresPerThread)));
  return largest ? topk_impl<T, RankLargest<T>>(scores, nrows, ncols, row_stride, k, num_threads,
                                                 out_val, out_idx)
                 : topk_impl<T, RankSmallest<T>>(scores, nrows, ncols, row_stride, k, num_threads,
                                                  out_val, out_idx);
}

template bool topk_rows<float>(const float*, int64_t, int64_t, int64_t, int64_t, bool, int, float*,
                               int64_t*);
template bool topk_rows<double>(const double*, int64_t, int64_t, int64_t, int64_t, bool, int,
                                double*, int64_t*);

}  // namespace embedcore
