// Python bindings of embedcore._cuda. Tensors arrive as raw device pointers (torch's data_ptr())
// plus the current stream, so this module links against the CUDA runtime only, never libtorch.
#include <pybind11/pybind11.h>

#include "api.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "embedcore CUDA kernels (raw device pointers, torch-free)";
  m.def("device_count", &ec_cuda_device_count, "CUDA devices visible to the runtime (0 without a driver).");
  m.def("runtime_version", &ec_cuda_runtime_version, "CUDA runtime version, e.g. 13000.");
}
