// CUDA runtime queries behind embedcore._cuda.device_count() / runtime_version().
// Exposed with C linkage so the pybind11 bindings (compiled by the host compiler) need no CUDA headers.
#include <cuda_runtime.h>

#include "api.h"

extern "C" int ec_cuda_device_count() {
  int n = 0;
  // No driver or no device is not an error for us: report zero devices.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

extern "C" int ec_cuda_runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

extern "C" const char* ec_cuda_last_error() { return cudaGetErrorString(cudaGetLastError()); }

extern "C" const char* ec_cuda_error_string(int code) { return cudaGetErrorString(cudaError_t(code)); }
