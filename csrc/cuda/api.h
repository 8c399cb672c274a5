// C-linkage entry points of the CUDA sources. Pointers are device pointers; `stream` is a
// cudaStream_t passed as void* so that the host-side bindings compile without CUDA headers.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

int ec_cuda_device_count();
int ec_cuda_runtime_version();
const char* ec_cuda_last_error();

#ifdef __cplusplus
}
#endif
