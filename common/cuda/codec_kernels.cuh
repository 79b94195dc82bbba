// Launchers of the codec's CUDA kernels (codec_kernels.cu): TernGrad statistics, ternarization
// with packing, and decoding of INT_SUM / TERNARY_2BIT payloads into device gradient buffers
// (optionally fused with the SGD-momentum update). Plain CUDA types only, so nvcc never compiles
// absl; device_codec.h wraps them in Status. Every launcher is asynchronous on `stream` and
// returns the launch's cudaError_t. Pointers are device pointers.
//
// Bit-exactness: the codes use the same Philox draws, thresholds and packing as the CPU codec
// (common/codec/ternary_element.h is shared), so the same (g, limit, scale, key) give the same
// bytes. The statistics are reduced in a fixed order but a different one from the CPU's 32-lane
// order, so sigma may differ in the last bits (the scaler then differs by ~1e-7 relative).
#ifndef TERNPS_COMMON_CUDA_CODEC_KERNELS_CUH_
#define TERNPS_COMMON_CUDA_CODEC_KERNELS_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/codec/ternary_element.h"

namespace ternps::common::cuda {

// Sums of one partition: sum and sum of squares in double, max |g| in float.
struct DeviceStats {
  double sum;
  double sum_squares;
  float max_abs;
};

// Blocks of the first statistics pass (the size of the partials workspace, in DeviceStats).
inline constexpr unsigned kStatsBlocks = 1024;

// stats = the sums of g[0, n); `partials` holds kStatsBlocks entries of scratch.
cudaError_t LaunchStats(const float* g, size_t n, DeviceStats* partials, DeviceStats* stats,
                        cudaStream_t stream);

// out[0, ceil(n/4)) = the TERNARY_2BIT codes of g[0, n) (element 0 of the partition), with
// limit = min(C, s) and scale = 65536 / s as on the CPU; s >= kMinScaler.
cudaError_t LaunchTernarize(const float* g, size_t n, float limit, float scale, TernaryKey key,
                            uint8_t* out, cudaStream_t stream);

// out[k] (=|+=) float(field_k - contributors) * scale, fields of `bits` bits (validated payload).
cudaError_t LaunchDecodeIntSum(const uint8_t* data, size_t n, int bits, int contributors,
                               float scale, bool accumulate, float* out, cudaStream_t stream);
// The same from an INT_SUM_RADIX payload with `digits` per word (validated).
cudaError_t LaunchDecodeIntSumRadix(const uint8_t* data, size_t n, int digits, int contributors,
                                    float scale, bool accumulate, float* out, cudaStream_t stream);
// out[k] (=|+=) scaler * code_k (validated payload).
cudaError_t LaunchDecodeTernary(const uint8_t* data, size_t n, float scaler, bool accumulate,
                                float* out, cudaStream_t stream);

// SGD with momentum and weight decay on w[0, n) with gradient g:
//   v = momentum * v + (g + weight_decay * w); w -= lr * v.
cudaError_t LaunchSgd(float* w, float* v, const float* g, size_t n, float lr, float momentum,
                      float weight_decay, cudaStream_t stream);

// Spins on the device for about `cycles` clock cycles (tests: exposes a missing stream sync).
cudaError_t LaunchDelay(long long cycles, cudaStream_t stream);

}  // namespace ternps::common::cuda

#endif  // TERNPS_COMMON_CUDA_CODEC_KERNELS_CUH_
