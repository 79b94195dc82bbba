#include "common/cuda/philox_kernels.cuh"

namespace ternps::common::cuda {
namespace {

__global__ void PhiloxKernel(const Philox4x32* counters, Philox4x32* out, size_t n, PhiloxKey key) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = Philox4x32_10(counters[i], key);
}

}  // namespace

cudaError_t LaunchPhilox(const Philox4x32* counters, Philox4x32* out, size_t n, PhiloxKey key,
                         cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr unsigned kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  PhiloxKernel<<<blocks, kThreads, 0, stream>>>(counters, out, n, key);
  return cudaGetLastError();
}

}  // namespace ternps::common::cuda
