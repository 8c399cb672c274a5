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

// Resources of the fused top-k for these sizes, or None when the kernels do not support them.
py::object topk_plan(int format, int metric, int64_t nq, int64_t width, int64_t k) {
  int64_t kp = 0, queries = 0, shared = 0;
  if (ec_cuda_topk_plan(format, metric, nq, width, k, &kp, &queries, &shared) != 0) return py::none();
  py::dict plan;
  plan["kp"] = kp;
  plan["queries_per_block"] = queries;
  plan["shared_bytes"] = shared;
  return plan;
}

int topk_blocks_per_sm(int format, int metric, int64_t nq, int64_t width, int64_t k) {
  int blocks = 0;
  const int code = ec_cuda_topk_blocks_per_sm(format, metric, nq, width, k, &blocks);
  if (code != 0) throw std::runtime_error(std::string("topk_blocks_per_sm failed: ") + ec_cuda_error_string(code));
  return blocks;
}

void fused_topk(int format, int metric, uintptr_t q, uintptr_t c, int64_t nq, int64_t n, int64_t width, int64_t k,
                int64_t chunk, uintptr_t out, uintptr_t nonfinite, uintptr_t stream) {
  int code;
  {
    py::gil_scoped_release release;
    code = ec_cuda_fused_topk(format, metric, reinterpret_cast<const void*>(q), reinterpret_cast<const void*>(c), nq,
                              n, width, k, chunk, reinterpret_cast<void*>(out), reinterpret_cast<void*>(nonfinite),
                              reinterpret_cast<void*>(stream));
  }
  if (code != 0) throw std::runtime_error(std::string("fused_topk failed: ") + ec_cuda_error_string(code));
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

  py::dict formats, metrics;
  formats["hamming"] = int(EC_TOPK_HAMMING);
  formats["int8"] = int(EC_TOPK_INT8);
  formats["float16"] = int(EC_TOPK_F16);
  formats["bfloat16"] = int(EC_TOPK_BF16);
  formats["float32"] = int(EC_TOPK_F32);
  metrics["dot"] = int(EC_TOPK_METRIC_DOT);
  metrics["cos"] = int(EC_TOPK_METRIC_COS);
  metrics["l2"] = int(EC_TOPK_METRIC_L2);
  metrics["hamming"] = int(EC_TOPK_METRIC_HAMMING);
  m.attr("TOPK_FORMATS") = formats;
  m.attr("TOPK_METRICS") = metrics;
  m.attr("TOPK_MAX_K") = int(EC_TOPK_MAX_K);
  m.def("topk_plan", &topk_plan, py::arg("format"), py::arg("metric"), py::arg("nq"), py::arg("width"), py::arg("k"),
        "{'kp', 'queries_per_block', 'shared_bytes'} of the fused top-k, or None when unsupported (host only).");
  m.def("topk_blocks_per_sm", &topk_blocks_per_sm, py::arg("format"), py::arg("metric"), py::arg("nq"),
        py::arg("width"), py::arg("k"), "Resident blocks per SM of the fused top-k kernel (needs a device).");
  m.def("fused_topk", &fused_topk, py::arg("format"), py::arg("metric"), py::arg("q_ptr"), py::arg("c_ptr"),
        py::arg("nq"), py::arg("n"), py::arg("width"), py::arg("k"), py::arg("chunk"), py::arg("out_ptr"),
        py::arg("nonfinite_ptr"), py::arg("stream"),
        "Fused scan + block top-k: (nq, ceil(n / chunk), k) int64 candidate keys, best first per block "
        "(csrc/cuda/topk_search.cu). Arguments are checked before launch; RuntimeError on a bad one.");
}
