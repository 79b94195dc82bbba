#include "common/cuda/device_codec.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/codec/int_sum.h"

namespace ternps::common::cuda {

absl::StatusOr<DeviceStatsWorkspace> DeviceStatsWorkspace::Create() {
  DeviceStatsWorkspace ws;
  auto partials = DeviceBuffer<DeviceStats>::Create(kStatsBlocks);
  if (!partials.ok()) return partials.status();
  auto result = DeviceBuffer<DeviceStats>::Create(1);
  if (!result.ok()) return result.status();
  auto host = PinnedBuffer<DeviceStats>::Create(1);
  if (!host.ok()) return host.status();
  ws.partials = *std::move(partials);
  ws.result = *std::move(result);
  ws.host = *std::move(host);
  return ws;
}

absl::Status DeviceStatsAsync(absl::Span<const float> g, DeviceStatsWorkspace& ws,
                              cudaStream_t stream) {
  TERNPS_CUDA_RETURN_IF_ERROR(
      LaunchStats(g.data(), g.size(), ws.partials.data(), ws.result.data(), stream));
  TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws.host.data(), ws.result.data(), sizeof(DeviceStats),
                                              cudaMemcpyDeviceToHost, stream));
  return absl::OkStatus();
}

absl::StatusOr<PartitionStats> FinishStats(const DeviceStats& sums, size_t n) {
  PartitionStats stats;
  stats.elements = n;
  if (n == 0) return stats;
  if (!std::isfinite(sums.sum) || !std::isfinite(sums.sum_squares) ||
      !std::isfinite(sums.max_abs)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient: holds a NaN or infinite value (", n, " elements, on the device)"));
  }
  // The same formulas as ComputeStats (common/codec/ternary.cc).
  const double count = static_cast<double>(n);
  stats.mean = sums.sum / count;
  const double variance = sums.sum_squares / count - stats.mean * stats.mean;
  stats.sigma = static_cast<float>(std::sqrt(variance > 0.0 ? variance : 0.0));
  stats.max_abs = sums.max_abs;
  return stats;
}

absl::StatusOr<PartitionStats> DeviceComputeStats(absl::Span<const float> g,
                                                  DeviceStatsWorkspace& ws, cudaStream_t stream) {
  if (absl::Status st = DeviceStatsAsync(g, ws, stream); !st.ok()) return st;
  TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return FinishStats(*ws.host.data(), g.size());
}

absl::Status DeviceTernarize(absl::Span<const float> g, float clip, float scaler,
                             const TernaryKey& key, absl::Span<uint8_t> out, cudaStream_t stream) {
  // The same argument rules and derived constants as Ternarize (common/codec/ternary.cc).
  if (out.size() != TernaryBytes(g.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("out: ", out.size(), " bytes, expected ", TernaryBytes(g.size())));
  }
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  if (std::isnan(clip) || clip < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("clip: must be >= 0 (", clip, ")"));
  }
  if (g.empty()) return absl::OkStatus();
  if (scaler < kMinScaler) {
    TERNPS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out.data(), 0, out.size(), stream));
    return absl::OkStatus();
  }
  const float scale = kDrawRange / scaler;
  const float limit = clip < scaler ? clip : scaler;
  TERNPS_CUDA_RETURN_IF_ERROR(
      LaunchTernarize(g.data(), g.size(), limit, scale, key, out.data(), stream));
  return absl::OkStatus();
}

absl::Status DeviceDecodeIntSum(absl::Span<const uint8_t> data, int contributors, float scaler,
                                bool accumulate, absl::Span<float> out, cudaStream_t stream) {
  const int bits = IntSumBits(contributors);
  if (bits == 0) return absl::InvalidArgumentError("contributors: out of range");
  if (data.size() != IntSumBytes(out.size(), contributors)) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   IntSumBytes(out.size(), contributors)));
  }
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  const float scale = scaler / static_cast<float>(contributors);
  TERNPS_CUDA_RETURN_IF_ERROR(LaunchDecodeIntSum(data.data(), out.size(), bits, contributors, scale,
                                                 accumulate, out.data(), stream));
  return absl::OkStatus();
}

absl::Status DeviceDecodeIntSumRadix(absl::Span<const uint8_t> data, int contributors, float scaler,
                                     bool accumulate, absl::Span<float> out, cudaStream_t stream) {
  const int digits = IntSumRadixDigits(contributors);
  if (digits == 0) return absl::InvalidArgumentError("contributors: out of range");
  if (data.size() != IntSumRadixBytes(out.size(), contributors)) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   IntSumRadixBytes(out.size(), contributors)));
  }
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  const float scale = scaler / static_cast<float>(contributors);
  TERNPS_CUDA_RETURN_IF_ERROR(LaunchDecodeIntSumRadix(data.data(), out.size(), digits, contributors,
                                                      scale, accumulate, out.data(), stream));
  return absl::OkStatus();
}

absl::Status DeviceDecodeTernary(absl::Span<const uint8_t> data, float scaler, bool accumulate,
                                 absl::Span<float> out, cudaStream_t stream) {
  if (data.size() != TernaryBytes(out.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: ", data.size(), " bytes, expected ", TernaryBytes(out.size())));
  }
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  TERNPS_CUDA_RETURN_IF_ERROR(
      LaunchDecodeTernary(data.data(), out.size(), scaler, accumulate, out.data(), stream));
  return absl::OkStatus();
}

absl::Status DeviceSgd(absl::Span<float> w, absl::Span<float> v, absl::Span<const float> g,
                       float lr, float momentum, float weight_decay, cudaStream_t stream) {
  if (v.size() != w.size() || g.size() != w.size()) {
    return absl::InvalidArgumentError("w, v, g: sizes differ");
  }
  TERNPS_CUDA_RETURN_IF_ERROR(
      LaunchSgd(w.data(), v.data(), g.data(), w.size(), lr, momentum, weight_decay, stream));
  return absl::OkStatus();
}

}  // namespace ternps::common::cuda
