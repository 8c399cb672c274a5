// Python bindings of embedcore._C. The Python wrappers (embedcore/ops/*) check and convert inputs;
// these bindings re-check what native code relies on (ndim, dtype, contiguity, ranges) so a wrong
// call raises instead of reading out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <stdexcept>
#include <string>

#include "cpu_features.h"
#include "kernels.h"
#include "topk.h"

namespace py = pybind11;
using namespace embedcore;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
py::tuple topk_binding(CArray<T> scores, int64_t k, bool largest, int num_threads) {
  if (scores.ndim() != 2) throw std::invalid_argument("scores must be 2-D");
  const int64_t nrows = scores.shape(0), ncols = scores.shape(1);
  if (k < 1 || k > ncols)
    throw std::invalid_argument("k must be in [1, " + std::to_string(ncols) + "], got " +
                                std::to_string(k));
  CArray<T> values({nrows, k});
  CArray<int64_t> indices({nrows, k});
  const T* src = scores.data();
  T* vout = values.mutable_data();
  int64_t* iout = indices.mutable_data();
  bool ok;
  {
    py::gil_scoped_release release;
    ok = topk_rows<T>(src, nrows, ncols, ncols, k, largest, num_threads, vout, iout);
  }
  if (!ok) throw std::invalid_argument("scores contains NaN");
  return py::make_tuple(values, indices);
}

// All-pairs scores with the active per-ISA primitive; used to test each ISA against numpy.
template <typename In, typename Out, typename Fn>
CArray<Out> pairwise(CArray<In> a, CArray<In> b, int num_threads, Fn fn) {
  if (a.ndim() != 2 || b.ndim() != 2) throw std::invalid_argument("a and b must be 2-D");
  if (a.shape(1) != b.shape(1))
    throw std::invalid_argument("a has dim " + std::to_string(a.shape(1)) + ", b has dim " +
                                std::to_string(b.shape(1)));
  const int64_t na = a.shape(0), nb = b.shape(0), d = a.shape(1);
  CArray<Out> out({na, nb});
  const In* pa = a.data();
  const In* pb = b.data();
  Out* po = out.mutable_data();
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) num_threads(num_threads > 0 ? num_threads : 1)
    for (int64_t i = 0; i < na; ++i)
      for (int64_t j = 0; j < nb; ++j) po[i * nb + j] = Out(fn(pa + i * d, pb + j * d, size_t(d)));
  }
  return out;
}

py::array pairwise_binding(const std::string& kind, py::array a, py::array b, int num_threads) {
  const KernelTable& kt = active_kernels();
  if (kind == "dot_f32")
    return pairwise<float, float>(a, b, num_threads, kt.dot_f32);
  if (kind == "l2sq_f32")
    return pairwise<float, float>(a, b, num_threads, kt.l2sq_f32);
  if (kind == "dot_i8")
    return pairwise<int8_t, int32_t>(a, b, num_threads, kt.dot_i8);
  if (kind == "hamming")
    return pairwise<uint8_t, int32_t>(a, b, num_threads, kt.hamming);
  throw std::invalid_argument("unknown kind '" + kind +
                              "'; valid: dot_f32, l2sq_f32, dot_i8, hamming");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "embedcore native CPU kernels (SIMD + OpenMP), torch-free";

  m.def("topk_f32", &topk_binding<float>, py::arg("scores"), py::arg("k"), py::arg("largest"),
        py::arg("num_threads"));
  m.def("topk_f64", &topk_binding<double>, py::arg("scores"), py::arg("k"), py::arg("largest"),
        py::arg("num_threads"));
  m.def("pairwise", &pairwise_binding, py::arg("kind"), py::arg("a"), py::arg("b"),
        py::arg("num_threads") = 1);

  m.def("isa", []() { return std::string(isa_name(active_kernels().isa)); },
        "The ISA level of the kernels in use.");
  m.def("best_isa", []() { return std::string(isa_name(best_supported_isa())); });
  m.def("available_isas", []() {
    py::list out;
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
      if (isa_available(isa)) out.append(isa_name(isa));
    return out;
  });
  m.def("compiled_isas", []() {
    py::list out;
    out.append("scalar");
#ifdef EMBEDCORE_HAVE_AVX2
    out.append("avx2");
#endif
#ifdef EMBEDCORE_HAVE_AVX512
    out.append("avx512");
#endif
    return out;
  });
  m.def("set_isa", [](const std::string& name) {
    Isa isa;
    if (!parse_isa(name.c_str(), &isa))
      throw std::invalid_argument("unknown ISA '" + name + "'; valid: scalar, avx2, avx512");
    if (!set_active_isa(isa))
      throw std::invalid_argument("ISA '" + name + "' is not supported by this CPU or build");
  });
  m.def("omp_max_threads", []() { return omp_get_max_threads(); });
}
