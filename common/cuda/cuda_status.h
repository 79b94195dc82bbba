// CUDA error handling: every CUDA runtime call and kernel launch goes through
// TERNPS_CUDA_RETURN_IF_ERROR, which turns a cudaError_t into an absl::Status naming the call.
//
//   TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream));
//
// Thread safety: stateless.
#ifndef TERNPS_COMMON_CUDA_CUDA_STATUS_H_
#define TERNPS_COMMON_CUDA_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ternps::common::cuda {

// OK for cudaSuccess; otherwise INTERNAL (FAILED_PRECONDITION when no usable device or driver)
// with "what: cudaErrorName: description".
absl::Status CudaStatus(cudaError_t error, const char* what);

// Number of usable CUDA devices; 0 (not an error) when there is no device or no driver.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace ternps::common::cuda

#define TERNPS_CUDA_RETURN_IF_ERROR(call)                      \
  do {                                                         \
    if (const ::absl::Status ternps_cuda_status =              \
            ::ternps::common::cuda::CudaStatus((call), #call); \
        !ternps_cuda_status.ok()) {                            \
      return ternps_cuda_status;                               \
    }                                                          \
  } while (0)

#endif  // TERNPS_COMMON_CUDA_CUDA_STATUS_H_
