// The walk of a search tile (nq queries x nr corpus rows) in micro-kernel steps, shared by the
// per-ISA kernels. The callable is a TU-local lambda, so each ISA's instantiation stays its own.
#pragma once

#include <cstdint>
#include <type_traits>

namespace embedcore {

// Calls micro(QN, RN, i, j) with QN, RN std::integral_constant<int, ...>: 2 queries x 4 rows where
// possible, then the 1-query and 1-row remainders.
template <typename Micro>
inline void for_each_micro(int64_t nq, int64_t nr, Micro&& micro) {
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I4 = std::integral_constant<int, 4>;
  int64_t j = 0;
  for (; j + 4 <= nr; j += 4) {
    int64_t i = 0;
    for (; i + 2 <= nq; i += 2) micro(I2{}, I4{}, i, j);
    if (i < nq) micro(I1{}, I4{}, i, j);
  }
  for (; j < nr; ++j) {
    int64_t i = 0;
    for (; i + 2 <= nq; i += 2) micro(I2{}, I1{}, i, j);
    if (i < nq) micro(I1{}, I1{}, i, j);
  }
}

}  // namespace embedcore
