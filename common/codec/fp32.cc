#include "common/codec/fp32.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ternps::common {

static_assert(std::endian::native == std::endian::little,
              "the FP32 wire format is little-endian; a big-endian port must byte-swap here");

absl::Status EncodeFp32(absl::Span<const float> g, absl::Span<uint8_t> out) {
  if (out.size() != Fp32Bytes(g.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("out: ", out.size(), " bytes, expected ", Fp32Bytes(g.size())));
  }
  if (!g.empty()) std::memcpy(out.data(), g.data(), out.size());
  return absl::OkStatus();
}

absl::Status ValidateFp32(absl::Span<const uint8_t> data, size_t n) {
  if (data.size() != Fp32Bytes(n)) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   Fp32Bytes(n), " for ", n, " FP32 elements"));
  }
  // Exponent all ones <=> NaN or infinity. Branch-free scan; the loop vectorizes.
  uint32_t any_bad = 0;
  for (size_t k = 0; k < n; ++k) {
    uint32_t bits;
    std::memcpy(&bits, data.data() + 4 * k, 4);
    any_bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (any_bad != 0) {
    for (size_t k = 0; k < n; ++k) {
      float v;
      std::memcpy(&v, data.data() + 4 * k, 4);
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat("data: element ", k, " is not finite"));
      }
    }
  }
  return absl::OkStatus();
}

void AddValidatedFp32(absl::Span<const uint8_t> data, absl::Span<float> out) {
  for (size_t k = 0; k < out.size(); ++k) {
    float v;
    std::memcpy(&v, data.data() + 4 * k, 4);
    out[k] += v;
  }
}

void CopyValidatedFp32(absl::Span<const uint8_t> data, absl::Span<float> out) {
  if (!out.empty()) std::memcpy(out.data(), data.data(), 4 * out.size());
}

absl::Status DecodeFp32Add(absl::Span<const uint8_t> data, absl::Span<float> out) {
  if (absl::Status st = ValidateFp32(data, out.size()); !st.ok()) return st;
  AddValidatedFp32(data, out);
  return absl::OkStatus();
}

absl::Status DecodeFp32(absl::Span<const uint8_t> data, absl::Span<float> out) {
  if (absl::Status st = ValidateFp32(data, out.size()); !st.ok()) return st;
  CopyValidatedFp32(data, out);
  return absl::OkStatus();
}

}  // namespace ternps::common
