// The walk of a search tile (nq queries x nr corpus rows) in micro-kernel steps, shared by the
// per-ISA kernels. The callable is a TU-local lambda, so each ISA's instantiation stays its own.
#pragma once

#include <cstdint>
#include <type_traits>

namespace embedcore {

// Calls micro(QN, RN, i, j) with QN, RN std::integral_constant<int, ...>: QMAX (4 or 2) queries x
// RMAX (4 or 3: what the level's registers hold) rows where possible, then the 2- and 1-query and
// the 1-row remainders.
template <int QMAX = 2, int RMAX = 4, typename Micro>
inline void for_each_micro(int64_t nq, int64_t nr, Micro&& micro) {
  static_assert(QMAX == 2 || QMAX == 4, "QMAX is 2 or 4");
  static_assert(RMAX == 3 || RMAX == 4, "RMAX is 3 or 4");
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using IQ = std::integral_constant<int, QMAX>;
  auto queries = [&](auto rn, int64_t j) {
    int64_t i = 0;
    for (; i + QMAX <= nq; i += QMAX) micro(IQ{}, rn, i, j);
    if constexpr (QMAX == 4)
      if (i + 2 <= nq) {
        micro(I2{}, rn, i, j);
        i += 2;
      }
    if (i < nq) micro(I1{}, rn, i, j);
  };
  int64_t j = 0;
  for (; j + RMAX <= nr; j += RMAX) queries(std::integral_constant<int, RMAX>{}, j);
  for (; j < nr; ++j) queries(I1{}, j);
}

}  // namespace embedcore
