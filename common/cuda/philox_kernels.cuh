// Launchers of the Philox kernels (philox_kernels.cu). Plain CUDA types only, so that nvcc
// never compiles absl; the Status wrappers live in .cc files.
#ifndef TERNPS_COMMON_CUDA_PHILOX_KERNELS_CUH_
#define TERNPS_COMMON_CUDA_PHILOX_KERNELS_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>

#include "common/random/philox.h"

namespace ternps::common::cuda {

// out[i] = Philox4x32_10(counters[i], key) for i < n; device pointers; asynchronous on `stream`.
cudaError_t LaunchPhilox(const Philox4x32* counters, Philox4x32* out, size_t n, PhiloxKey key,
                         cudaStream_t stream);

}  // namespace ternps::common::cuda

#endif  // TERNPS_COMMON_CUDA_PHILOX_KERNELS_CUH_
