#include "common/cuda/philox_device.h"

#include <cuda_runtime_api.h>

#include <memory>

#include "common/cuda/cuda_status.h"
#include "common/cuda/philox_kernels.cuh"

namespace ternps::common::cuda {
namespace {

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;

struct StreamDestroy {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};
using Stream = std::unique_ptr<CUstream_st, StreamDestroy>;

}  // namespace

absl::StatusOr<std::vector<Philox4x32>> PhiloxOnDevice(absl::Span<const Philox4x32> counters,
                                                       PhiloxKey key) {
  std::vector<Philox4x32> out(counters.size());
  if (counters.empty()) return out;
  const size_t bytes = counters.size() * sizeof(Philox4x32);
  cudaStream_t raw_stream = nullptr;
  TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&raw_stream, cudaStreamNonBlocking));
  Stream stream(raw_stream);
  void* raw_in = nullptr;
  void* raw_out = nullptr;
  TERNPS_CUDA_RETURN_IF_ERROR(cudaMalloc(&raw_in, bytes));
  DeviceBuffer in(raw_in);
  TERNPS_CUDA_RETURN_IF_ERROR(cudaMalloc(&raw_out, bytes));
  DeviceBuffer dev_out(raw_out);
  TERNPS_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(raw_in, counters.data(), bytes, cudaMemcpyHostToDevice, stream.get()));
  TERNPS_CUDA_RETURN_IF_ERROR(LaunchPhilox(static_cast<const Philox4x32*>(raw_in),
                                           static_cast<Philox4x32*>(raw_out), counters.size(), key,
                                           stream.get()));
  TERNPS_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out.data(), raw_out, bytes, cudaMemcpyDeviceToHost, stream.get()));
  TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream.get()));
  return out;
}

}  // namespace ternps::common::cuda
