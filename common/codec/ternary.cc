#include "common/codec/ternary.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/codec/kernels.h"

namespace ternps::common {

using internal::KernelsFor;

absl::StatusOr<PartitionStats> ComputeStats(absl::Span<const float> g, Isa isa) {
  PartitionStats stats;
  stats.elements = g.size();
  if (g.empty()) return stats;
  internal::StatsLanes lanes;
  KernelsFor(isa).stats(g.data(), g.size(), &lanes);
  for (int w = internal::kStatsLanes / 2; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) {
      lanes.sum[j] += lanes.sum[j + w];
      lanes.sum_squares[j] += lanes.sum_squares[j + w];
    }
  }
  const double sum = lanes.sum[0];
  const double sum_squares = lanes.sum_squares[0];
  if (!std::isfinite(sum) || !std::isfinite(sum_squares)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient: holds a NaN or infinite value (", g.size(), " elements)"));
  }
  const double n = static_cast<double>(g.size());
  stats.mean = sum / n;
  const double variance = sum_squares / n - stats.mean * stats.mean;
  stats.sigma = static_cast<float>(std::sqrt(variance > 0.0 ? variance : 0.0));
  stats.max_abs = lanes.max_abs;
  return stats;
}

float ClipThreshold(const PartitionStats& stats, float clip_sigmas) {
  if (clip_sigmas <= 0.0f) return std::numeric_limits<float>::infinity();
  return clip_sigmas * stats.sigma;
}

float LocalScaler(const PartitionStats& stats, float clip_sigmas) {
  const float clip = ClipThreshold(stats, clip_sigmas);
  return stats.max_abs < clip ? stats.max_abs : clip;
}

absl::Status ValidateScaler(float s, std::string_view field) {
  if (!std::isfinite(s)) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": not finite (", s, ")"));
  }
  if (s < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": negative (", s, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<float> MaxScaler(absl::Span<const float> scalers) {
  if (scalers.empty()) return absl::InvalidArgumentError("scalers: empty");
  float max = 0.0f;
  for (size_t i = 0; i < scalers.size(); ++i) {
    if (absl::Status st = ValidateScaler(scalers[i], absl::StrCat("scalers[", i, "]")); !st.ok()) {
      return st;
    }
    max = scalers[i] > max ? scalers[i] : max;
  }
  return max;
}

absl::Status Ternarize(absl::Span<const float> g, float clip, float scaler, const TernaryKey& key,
                       absl::Span<uint8_t> out, uint64_t first, Isa isa) {
  if (out.size() != TernaryBytes(g.size())) {
    return absl::InvalidArgumentError(absl::StrCat("out: ", out.size(), " bytes, expected ",
                                                   TernaryBytes(g.size()), " for ", g.size(),
                                                   " elements"));
  }
  if (first % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("first: ", first, " is not a multiple of 4"));
  }
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  if (std::isnan(clip) || clip < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("clip: must be >= 0 (", clip, ")"));
  }
  if (scaler < kMinScaler || g.empty()) {
    if (!out.empty()) std::memset(out.data(), 0, out.size());
    return absl::OkStatus();
  }
  const float scale = kDrawRange / scaler;
  const float limit = clip < scaler ? clip : scaler;
  internal::KernelsFor(isa).ternarize(g.data(), g.size(), first, limit, scale, key, out.data());
  return absl::OkStatus();
}

absl::StatusOr<float> EncodeTernary(absl::Span<const float> g, float clip_sigmas,
                                    const TernaryKey& key, absl::Span<uint8_t> out, Isa isa) {
  absl::StatusOr<PartitionStats> stats = ComputeStats(g, isa);
  if (!stats.ok()) return stats.status();
  const float scaler = LocalScaler(*stats, clip_sigmas);
  if (absl::Status st = Ternarize(g, ClipThreshold(*stats, clip_sigmas), scaler, key, out, 0, isa);
      !st.ok()) {
    return st;
  }
  return scaler;
}

absl::Status ValidateTernary(absl::Span<const uint8_t> data, size_t n, Isa isa) {
  if (data.size() != TernaryBytes(n)) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   TernaryBytes(n), " for ", n,
                                                   " TERNARY_2BIT elements"));
  }
  if (n % 4 != 0) {
    const uint8_t last = data[data.size() - 1];
    const int used_bits = 2 * static_cast<int>(n % 4);
    if ((last >> used_bits) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("data: padding bits of the last byte are not zero (byte ", data.size() - 1,
                       " = 0x", absl::Hex(last), ")"));
    }
  }
  if (internal::KernelsFor(isa).has_invalid_ternary_code(data.data(), data.size())) {
    // Locate the first offender for the message; this path is cold.
    for (size_t k = 0; k < n; ++k) {
      if (((data[k >> 2] >> (2 * (k & 3))) & 3) == 3) {
        return absl::InvalidArgumentError(
            absl::StrCat("data: element ", k, " has the invalid code 0b11"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeTernaryAdd(absl::Span<const uint8_t> data, float scaler, absl::Span<float> out,
                              Isa isa) {
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  if (absl::Status st = ValidateTernary(data, out.size(), isa); !st.ok()) return st;
  if (out.empty()) return absl::OkStatus();
  internal::KernelsFor(isa).decode_ternary_add(data.data(), out.size(), scaler, out.data());
  return absl::OkStatus();
}

absl::Status AddTernaryCodes(absl::Span<const uint8_t> data, absl::Span<int16_t> sums, Isa isa) {
  if (absl::Status st = ValidateTernary(data, sums.size(), isa); !st.ok()) return st;
  if (sums.empty()) return absl::OkStatus();
  internal::KernelsFor(isa).add_ternary_codes(data.data(), sums.size(), sums.data());
  return absl::OkStatus();
}

void DecodeValidatedTernaryAdd(absl::Span<const uint8_t> data, float scaler, absl::Span<float> out,
                               Isa isa) {
  if (!out.empty()) {
    internal::KernelsFor(isa).decode_ternary_add(data.data(), out.size(), scaler, out.data());
  }
}

void AddValidatedTernaryCodes(absl::Span<const uint8_t> data, absl::Span<int16_t> sums, Isa isa) {
  if (!sums.empty())
    internal::KernelsFor(isa).add_ternary_codes(data.data(), sums.size(), sums.data());
}

void StoreValidatedTernaryCodes(absl::Span<const uint8_t> data, absl::Span<int16_t> sums, Isa isa) {
  if (!sums.empty())
    internal::KernelsFor(isa).store_ternary_codes(data.data(), sums.size(), sums.data());
}

}  // namespace ternps::common
