#include "common/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace ternps::common::cuda {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error));
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) {
    return absl::FailedPreconditionError(message);
  }
  return absl::InternalError(message);
}

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  if (absl::Status st = CudaStatus(error, "cudaGetDeviceCount"); !st.ok()) return st;
  return count;
}

}  // namespace ternps::common::cuda
