#include "common/codec/fp32.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/codec/kernels.h"

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

namespace {

// The error for the first non-finite value at or after element `from` (cold).
absl::Status NonFiniteError(const uint8_t* data, size_t from, size_t n, size_t first_element) {
  for (size_t k = from; k < n; ++k) {
    float v;
    std::memcpy(&v, data + 4 * k, 4);
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("data: element ", first_element + k, " is not finite"));
    }
  }
  return absl::InternalError("FP32: a scan reported a non-finite value and none is");
}

absl::Status CheckFp32Length(absl::Span<const uint8_t> data, size_t n) {
  if (data.size() != Fp32Bytes(n)) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   Fp32Bytes(n), " for ", n, " FP32 elements"));
  }
  return absl::OkStatus();
}

// Elements per block of DecodeFp32OnePass: 16 KB, still in L1 when it is copied.
inline constexpr size_t kOnePassBlock = 4096;

}  // namespace

absl::Status ValidateFp32(absl::Span<const uint8_t> data, size_t n, size_t first_element, Isa isa) {
  if (absl::Status st = CheckFp32Length(data, n); !st.ok()) return st;
  if (internal::KernelsFor(isa).fp32_any_non_finite(data.data(), n)) {
    return NonFiniteError(data.data(), 0, n, first_element);
  }
  return absl::OkStatus();
}

absl::Status DecodeFp32OnePass(absl::Span<const uint8_t> data, absl::Span<float> out,
                               size_t first_element, Isa isa) {
  const size_t n = out.size();
  if (absl::Status st = CheckFp32Length(data, n); !st.ok()) return st;
  const internal::CodecKernels& kernels = internal::KernelsFor(isa);
  for (size_t b = 0; b < n; b += kOnePassBlock) {
    const size_t m = std::min(kOnePassBlock, n - b);
    const uint8_t* block = data.data() + 4 * b;
    if (kernels.fp32_any_non_finite(block, m)) {
      return NonFiniteError(data.data(), b, n, first_element);
    }
    std::memcpy(out.data() + b, block, 4 * m);
  }
  return absl::OkStatus();
}

void AddValidatedFp32(absl::Span<const uint8_t> data, absl::Span<float> out, Isa isa) {
  internal::KernelsFor(isa).fp32_add(data.data(), out.size(), out.data());
}

void CopyValidatedFp32(absl::Span<const uint8_t> data, absl::Span<float> out) {
  if (!out.empty()) std::memcpy(out.data(), data.data(), 4 * out.size());
}

bool DivideFp32(absl::Span<float> sums, float divisor, Isa isa) {
  return internal::KernelsFor(isa).fp32_divide(sums.data(), sums.size(), divisor);
}

absl::Status DecodeFp32Add(absl::Span<const uint8_t> data, absl::Span<float> out, Isa isa) {
  if (absl::Status st = ValidateFp32(data, out.size(), 0, isa); !st.ok()) return st;
  AddValidatedFp32(data, out, isa);
  return absl::OkStatus();
}

absl::Status DecodeFp32(absl::Span<const uint8_t> data, absl::Span<float> out, Isa isa) {
  if (absl::Status st = ValidateFp32(data, out.size(), 0, isa); !st.ok()) return st;
  CopyValidatedFp32(data, out);
  return absl::OkStatus();
}

}  // namespace ternps::common
