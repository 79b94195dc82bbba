// Philox4x32-10 evaluated on the GPU, from the same common/random/philox.h the CPU codec uses.
// The first CUDA building block of the codec: the GPU kernels of the ternary encoder (issue #4)
// draw their random numbers this way, and tests/gpu/ proves the device agrees with the host.
//
//   absl::StatusOr<std::vector<Philox4x32>> out = PhiloxOnDevice(counters, key);
//
// Thread safety: thread-safe; each call uses its own stream and buffers.
#ifndef TERNPS_COMMON_CUDA_PHILOX_DEVICE_H_
#define TERNPS_COMMON_CUDA_PHILOX_DEVICE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/random/philox.h"

namespace ternps::common::cuda {

// Philox4x32_10(counters[i], key) for every i, computed by a CUDA kernel on the current device.
absl::StatusOr<std::vector<Philox4x32>> PhiloxOnDevice(absl::Span<const Philox4x32> counters,
                                                       PhiloxKey key);

}  // namespace ternps::common::cuda

#endif  // TERNPS_COMMON_CUDA_PHILOX_DEVICE_H_
