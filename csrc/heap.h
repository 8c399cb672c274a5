// Fixed-size heaps over contiguous (value, index) arrays, templated on the ranking.
//
// A heap of capacity k keeps the k best elements seen so far with the *worst* kept element at the
// root, so a candidate is rejected by one comparison in the common case. The ranking is a strict
// total order on (value, index): ties on value go to the lower index, which makes every result
// deterministic and independent of the order in which elements (or threads) arrive.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace embedcore {

// Larger values rank first (similarities). worst() is -inf for floats, the lowest value for integers.
template <typename T>
struct RankLargest {
  static constexpr T worst() {
    if constexpr (std::numeric_limits<T>::has_infinity) return -std::numeric_limits<T>::infinity();
    else return std::numeric_limits<T>::lowest();
  }
  static bool better(T a, int64_t ia, T b, int64_t ib) { return a > b || (a == b && ia < ib); }
  // Whether a value could enter a heap whose worst kept value is b (a cheap, index-free pre-filter).
  static bool may_enter(T a, T b) { return a >= b; }
};

// Smaller values rank first (distances). worst() is +inf for floats, the largest value for integers.
template <typename T>
struct RankSmallest {
  static constexpr T worst() {
    if constexpr (std::numeric_limits<T>::has_infinity) return std::numeric_limits<T>::infinity();
    else return std::numeric_limits<T>::max();
  }
  static bool better(T a, int64_t ia, T b, int64_t ib) { return a < b || (a == b && ia < ib); }
  static bool may_enter(T a, T b) { return a <= b; }
};

// Sentinel index: loses every tie, so a real element with the sentinel's value still enters.
constexpr int64_t kNoIndex = std::numeric_limits<int64_t>::max();

template <typename T, typename Rank>
struct TopKHeap {
  T* val;
  int64_t* idx;
  int64_t k;

  void clear() {
    std::fill(val, val + k, Rank::worst());
    std::fill(idx, idx + k, kNoIndex);
  }

  // True when (v, i) would enter the heap.
  bool admits(T v, int64_t i) const { return Rank::better(v, i, val[0], idx[0]); }

  // Replaces the root by (v, i) and restores the heap (caller checked admits()).
  void replace_top(T v, int64_t i) {
    int64_t pos = 0;
    for (;;) {
      int64_t child = 2 * pos + 1;
      if (child >= k) break;
      // Pick the worse child: it must move up if it is worse than the new element.
      if (child + 1 < k && Rank::better(val[child], idx[child], val[child + 1], idx[child + 1])) ++child;
      if (!Rank::better(val[child], idx[child], v, i)) {
        // child is worse than (v, i)
        val[pos] = val[child];
        idx[pos] = idx[child];
        pos = child;
      } else {
        break;
      }
    }
    val[pos] = v;
    idx[pos] = i;
  }

  void push(T v, int64_t i) {
    if (admits(v, i)) replace_top(v, i);
  }

  // Sorts the kept elements best first, in place. Sentinels (fewer than k pushes) sort last.
  void sort_best_first() {
    std::vector<int64_t> order(static_cast<size_t>(k));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return Rank::better(val[a], idx[a], val[b], idx[b]); });
    std::vector<T> v(static_cast<size_t>(k));
    std::vector<int64_t> ix(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      v[j] = val[order[j]];
      ix[j] = idx[order[j]];
    }
    std::copy(v.begin(), v.end(), val);
    std::copy(ix.begin(), ix.end(), idx);
  }
};

}  // namespace embedcore
