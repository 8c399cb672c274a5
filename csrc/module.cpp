// Python bindings of embedcore._C. The Python wrappers (embedcore/ops/*) check and convert inputs;
// these bindings re-check what native code relies on (ndim, dtype, contiguity, ranges) so a wrong
// call raises instead of reading out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <omp.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <string>

#include "cpu_features.h"
#include "kernels.h"
#include "search.h"
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
#pragma omp parallel for schedule(static) num_threads(num_threads > 0 ? num_threads : 1) \
    if (na * nb * d > (int64_t(1) << 20))
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

// ---- search ------------------------------------------------------------------------------------

Metric parse_metric(const std::string& name) {
  if (name == "dot") return Metric::kDot;
  if (name == "cos") return Metric::kCos;
  if (name == "l2") return Metric::kL2;
  throw std::invalid_argument("unknown metric '" + name + "'; valid: dot, cos, l2");
}

// Checks a (nq, d) query array against an (n, d) corpus array and k; returns (nq, n, d).
std::tuple<int64_t, int64_t, int64_t> check_search(const py::array& q, const py::array& c, int64_t k) {
  if (q.ndim() != 2 || c.ndim() != 2) throw std::invalid_argument("queries and corpus must be 2-D");
  const int64_t nq = q.shape(0), n = c.shape(0), d = q.shape(1);
  if (c.shape(1) != d)
    throw std::invalid_argument("corpus has dim " + std::to_string(c.shape(1)) + ", queries have dim " +
                                std::to_string(d));
  if (n < 1 || n > int64_t(INT32_MAX)) throw std::invalid_argument("corpus must have 1 to 2^31 - 1 rows");
  if (d < 1) throw std::invalid_argument("dim must be at least 1");
  if (k < 1 || k > n)
    throw std::invalid_argument("k must be in [1, " + std::to_string(n) + "], got " + std::to_string(k));
  return {nq, n, d};
}

py::tuple search_float_binding(CArray<float> queries, py::array corpus, const std::string& format,
                               const std::string& metric, int64_t k, int num_threads,
                               std::optional<CArray<float>> offset, std::optional<CArray<float>> scale) {
  const auto [nq, n, d] = check_search(queries, corpus, k);
  FloatCorpus fc{nullptr, FloatFormat::kF32, nullptr, nullptr};
  py::array held;  // the corpus, checked to be C-contiguous with the format's element type
  if (format == "f32") {
    if (!py::isinstance<CArray<float>>(corpus)) throw std::invalid_argument("f32 corpus must be float32");
    held = corpus;
    fc.format = FloatFormat::kF32;
  } else if (format == "f16" || format == "bf16") {
    if (!py::isinstance<CArray<uint16_t>>(corpus) && !py::isinstance<CArray<int16_t>>(corpus))
      throw std::invalid_argument(format + " corpus must be passed as its 16-bit pattern (uint16/int16)");
    held = corpus;
    fc.format = format == "f16" ? FloatFormat::kF16 : FloatFormat::kBF16;
  } else if (format == "i8") {
    if (!py::isinstance<CArray<int8_t>>(corpus)) throw std::invalid_argument("i8 corpus must be int8");
    if (!offset || !scale || offset->ndim() != 1 || scale->ndim() != 1 || offset->shape(0) != d ||
        scale->shape(0) != d)
      throw std::invalid_argument("i8 corpus needs float32 offset and scale of shape (dim,)");
    held = corpus;
    fc.format = FloatFormat::kI8Affine;
    fc.offset = offset->data();
    fc.scale = scale->data();
  } else {
    throw std::invalid_argument("unknown corpus format '" + format + "'; valid: f32, f16, bf16, i8");
  }
  fc.data = held.data();
  const Metric m = parse_metric(metric);
  CArray<float> values({nq, k});
  CArray<int64_t> indices({nq, k});
  const float* qp = queries.data();
  float* vout = values.mutable_data();
  int64_t* iout = indices.mutable_data();
  bool ok;
  {
    py::gil_scoped_release release;
    ok = search_float(qp, nq, fc, n, d, m, k, num_threads, vout, iout);
  }
  if (!ok) throw std::invalid_argument("corpus contains NaN or infinity (or a score overflows float32)");
  return py::make_tuple(values, indices);
}

py::tuple search_int8_binding(CArray<int8_t> queries, CArray<int8_t> corpus, const std::string& metric,
                              int64_t k, int num_threads) {
  const auto [nq, n, d] = check_search(queries, corpus, k);
  const Metric m = parse_metric(metric);
  if (d > (m == Metric::kDot ? 131071 : 33025))
    throw std::invalid_argument("dim " + std::to_string(d) + " is too large for exact int32 int8 " + metric);
  CArray<int64_t> indices({nq, k});
  // dot and l2 are exact int32 scores; cos is float32.
  py::array values = m == Metric::kCos ? py::array(CArray<float>({nq, k})) : py::array(CArray<int32_t>({nq, k}));
  const int8_t* qp = queries.data();
  const int8_t* cp = corpus.data();
  int64_t* iout = indices.mutable_data();
  int32_t* i32 = m == Metric::kCos ? nullptr : static_cast<int32_t*>(values.mutable_data());
  float* f32 = m == Metric::kCos ? static_cast<float*>(values.mutable_data()) : nullptr;
  {
    py::gil_scoped_release release;
    search_int8(qp, nq, cp, n, d, m, k, num_threads, i32, f32, iout);
  }
  return py::make_tuple(values, indices);
}

py::tuple search_hamming_binding(CArray<uint8_t> queries, CArray<uint8_t> corpus, int64_t k, int num_threads) {
  const auto [nq, n, nbytes] = check_search(queries, corpus, k);
  CArray<int32_t> values({nq, k});
  CArray<int64_t> indices({nq, k});
  const uint8_t* qp = queries.data();
  const uint8_t* cp = corpus.data();
  int32_t* vout = values.mutable_data();
  int64_t* iout = indices.mutable_data();
  {
    py::gil_scoped_release release;
    search_hamming(qp, nq, cp, n, nbytes, k, num_threads, vout, iout);
  }
  return py::make_tuple(values, indices);
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

  m.def("search_float", &search_float_binding, py::arg("queries"), py::arg("corpus"), py::arg("format"),
        py::arg("metric"), py::arg("k"), py::arg("num_threads"), py::arg("offset") = py::none(),
        py::arg("scale") = py::none(),
        "Fused exact top-k of float32 queries against a float32/f16/bf16/dequantised-int8 corpus.");
  m.def("search_int8", &search_int8_binding, py::arg("queries"), py::arg("corpus"), py::arg("metric"),
        py::arg("k"), py::arg("num_threads"), "Fused exact top-k of int8 queries against int8 codes.");
  m.def("search_hamming", &search_hamming_binding, py::arg("queries"), py::arg("corpus"), py::arg("k"),
        py::arg("num_threads"), "Fused exact top-k (smallest Hamming distance) over packed bits.");

  m.def("isa", []() { return std::string(isa_name(active_kernels().isa)); },
        "The ISA level of the kernels in use.");
  m.def("best_isa", []() { return std::string(isa_name(best_supported_isa())); });
  m.def("available_isas", []() {
    py::list out;
    for (Isa isa : kAllIsas)
      if (isa_available(isa)) out.append(isa_name(isa));
    return out;
  });
  m.def("compiled_isas", []() {
    py::list out;
    out.append("scalar");
#ifdef EMBEDCORE_HAVE_AVX2
    out.append("avx2");
#endif
#if defined(EMBEDCORE_HAVE_AVX512) && defined(EMBEDCORE_HAVE_AVX2)
    out.append("avx512");
    out.append("avx512_vpopcnt");
#endif
    return out;
  });
  m.def("set_isa", [](const std::string& name) {
    Isa isa;
    if (!parse_isa(name.c_str(), &isa)) {
      std::string valid;
      for (Isa level : kAllIsas) valid += std::string(valid.empty() ? "" : ", ") + isa_name(level);
      throw std::invalid_argument("unknown ISA '" + name + "'; valid: " + valid);
    }
    if (!set_active_isa(isa))
      throw std::invalid_argument("ISA '" + name + "' is not supported by this CPU or build");
  });
  m.def("isa_extensions", []() {
    py::list out;
    const Isa isa = active_kernels().isa;
    if ((isa == Isa::kAvx512 || isa == Isa::kAvx512Vpopcnt) && cpu_has_avx512_vnni()) out.append("avx512vnni");
    return out;
  }, "Optional CPU features the active level's kernels use, chosen at run time (e.g. avx512vnni).");
  m.def("omp_max_threads", []() { return omp_get_max_threads(); });
}
