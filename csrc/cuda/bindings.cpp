// Python bindings of embedcore._cuda. Tensors arrive as raw device pointers (torch's data_ptr())
// plus the current stream, so this module links against the CUDA runtime only, never libtorch.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "api.h"

namespace py = pybind11;

namespace {

using ScoreFn = int (*)(const void*, const void*, int64_t, int64_t, int64_t, void*, void*);

// Binds a score-tile launcher: pointers arrive as integers (torch's data_ptr(), stream.cuda_stream).
// The caller (embedcore.ops.search) checks devices, dtypes and contiguity before handing them over.
auto score_binding(ScoreFn fn, const char* name) {
  return [fn, name](uintptr_t q, uintptr_t c, int64_t nq, int64_t nr, int64_t width, uintptr_t out,
                    uintptr_t stream) {
    if (nq < 0 || nr < 0 || width < 1) throw std::invalid_argument(std::string(name) + ": bad sizes");
    int code;
    {
      py::gil_scoped_release release;
      code = fn(reinterpret_cast<const void*>(q), reinterpret_cast<const void*>(c), nq, nr, width,
                reinterpret_cast<void*>(out), reinterpret_cast<void*>(stream));
    }
    if (code != 0) throw std::runtime_error(std::string(name) + " failed: " + ec_cuda_error_string(code));
  };
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "embedcore CUDA kernels (raw device pointers, torch-free)";
  m.def("device_count", &ec_cuda_device_count, "CUDA devices visible to the runtime (0 without a driver).");
  m.def("runtime_version", &ec_cuda_runtime_version, "CUDA runtime version, e.g. 13000.");
  m.def("hamming_scores", score_binding(&ec_cuda_hamming_scores, "hamming_scores"), py::arg("q_ptr"),
        py::arg("c_ptr"), py::arg("nq"), py::arg("nr"), py::arg("nbytes"), py::arg("out_ptr"), py::arg("stream"),
        "int32 Hamming distances (nq, nr) of packed bits, device pointers (csrc/cuda/search.cu).");
  m.def("int8_dot_scores", score_binding(&ec_cuda_int8_dot_scores, "int8_dot_scores"), py::arg("q_ptr"),
        py::arg("c_ptr"), py::arg("nq"), py::arg("nr"), py::arg("d"), py::arg("out_ptr"), py::arg("stream"),
        "Exact int32 dot products (nq, nr) of int8 codes with dp4a, device pointers.");
}
