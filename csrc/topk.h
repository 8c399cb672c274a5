#pragma once

#include <cstdint>

namespace embedcore {

// Row-wise exact top-k of a dense (nrows, ncols) row-major matrix.
//
// out_val / out_idx: (nrows, k), best first; ties go to the lower column index.
// Returns false (and leaves the outputs unspecified) when a NaN is found.
template <typename T>
bool topk_rows(const T* scores, int64_t nrows, int64_t ncols, int64_t row_stride, int64_t k,
               bool largest, int num_threads, T* out_val, int64_t* out_idx);

}  // namespace embedcore
