#include "common/codec/int_sum.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/codec/kernels.h"
#include "common/codec/ternary.h"

namespace ternps::common {

int IntSumBits(int contributors) {
  if (contributors < 1 || contributors > kMaxIntSumContributors) return 0;
  const uint32_t levels = 2u * static_cast<uint32_t>(contributors) + 1u;
  int bits = 0;
  while ((1u << bits) < levels) ++bits;
  return bits;
}

size_t IntSumBytes(size_t n, int contributors) {
  return (n * static_cast<size_t>(IntSumBits(contributors)) + 7) / 8;
}

namespace {

absl::Status ValidateContributors(int contributors) {
  if (IntSumBits(contributors) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "contributors: ", contributors, " is outside [1, ", kMaxIntSumContributors, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EncodeIntSum(absl::Span<const int16_t> sums, int contributors, absl::Span<uint8_t> out,
                          Isa isa) {
  if (absl::Status st = ValidateContributors(contributors); !st.ok()) return st;
  const int bits = IntSumBits(contributors);
  const size_t bytes = IntSumBytes(sums.size(), contributors);
  if (out.size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("out: ", out.size(), " bytes, expected ", bytes,
                                                   " for ", sums.size(), " elements of ", bits,
                                                   " bits"));
  }
  if (sums.empty() || internal::KernelsFor(isa).encode_int_sum(sums.data(), sums.size(), bits,
                                                               contributors, out.data())) {
    return absl::OkStatus();
  }
  for (size_t j = 0; j < sums.size(); ++j) {  // cold: find the first offender for the message
    if (sums[j] < -contributors || sums[j] > contributors) {
      return absl::InvalidArgumentError(absl::StrCat("sums[", j, "]: ", sums[j], " is outside [-",
                                                     contributors, ", ", contributors, "]"));
    }
  }
  return absl::InternalError("EncodeIntSum: a kernel reported a sum out of range and none is");
}

namespace {

// Contributors, length and padding bits of an INT_SUM payload of n elements.
absl::Status CheckIntSumShape(absl::Span<const uint8_t> data, size_t n, int contributors) {
  if (absl::Status st = ValidateContributors(contributors); !st.ok()) return st;
  const int bits = IntSumBits(contributors);
  const size_t bytes = IntSumBytes(n, contributors);
  if (data.size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   bytes, " for ", n, " INT_SUM elements of ", bits,
                                                   " bits (contributors ", contributors, ")"));
  }
  const size_t used_bits = (n * bits) % 8;
  if (used_bits != 0 && (data[bytes - 1] >> used_bits) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: padding bits of the last byte are not zero (byte ", bytes - 1, ")"));
  }
  return absl::OkStatus();
}

// The error for the first field above 2N at or after element `from` (cold: a kernel found one).
absl::Status FieldError(absl::Span<const uint8_t> data, size_t from, size_t n, int contributors,
                        size_t first_element) {
  const int bits = IntSumBits(contributors);
  for (size_t j = from; j < n; ++j) {
    const uint32_t f = internal::ReadField(data.data(), data.size(), j, bits);
    if (f > 2u * static_cast<uint32_t>(contributors)) {
      return absl::InvalidArgumentError(absl::StrCat("data: element ", first_element + j,
                                                     " has field ", f, " > 2 * contributors (",
                                                     2 * contributors, ")"));
    }
  }
  return absl::InternalError("INT_SUM: a kernel reported a field above 2N and none is");
}

// Elements per block of DecodeIntSumOnePass: a multiple of 8 (blocks start on a byte for every
// field width), small enough that the block's payload is still in L1 when it is decoded.
inline constexpr size_t kOnePassBlock = 16384;

}  // namespace

absl::Status ValidateIntSum(absl::Span<const uint8_t> data, size_t n, int contributors, Isa isa) {
  if (absl::Status st = CheckIntSumShape(data, n, contributors); !st.ok()) return st;
  if (n == 0) return absl::OkStatus();
  const uint32_t max_field =
      internal::KernelsFor(isa).int_sum_max_field(data.data(), n, IntSumBits(contributors));
  if (max_field > 2u * static_cast<uint32_t>(contributors)) {
    return FieldError(data, 0, n, contributors, 0);
  }
  return absl::OkStatus();
}

absl::Status DecodeIntSumOnePass(absl::Span<const uint8_t> data, int contributors, float scaler,
                                 absl::Span<float> out, size_t first_element, Isa isa) {
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  const size_t n = out.size();
  if (absl::Status st = CheckIntSumShape(data, n, contributors); !st.ok()) return st;
  const internal::CodecKernels& kernels = internal::KernelsFor(isa);
  const int bits = IntSumBits(contributors);
  const float scale = scaler / static_cast<float>(contributors);
  for (size_t b = 0; b < n; b += kOnePassBlock) {
    const size_t m = std::min(kOnePassBlock, n - b);
    const uint8_t* block = data.data() + b / 8 * static_cast<size_t>(bits);
    if (kernels.int_sum_max_field(block, m, bits) > 2u * static_cast<uint32_t>(contributors)) {
      return FieldError(data, b, n, contributors, first_element);
    }
    kernels.decode_int_sum(block, m, bits, contributors, scale, out.data() + b);
  }
  return absl::OkStatus();
}

absl::Status DecodeIntSumAdd(absl::Span<const uint8_t> data, int contributors, float scaler,
                             absl::Span<float> out, Isa isa) {
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  if (absl::Status st = ValidateIntSum(data, out.size(), contributors, isa); !st.ok()) return st;
  DecodeValidatedIntSumAdd(data, contributors, scaler, out, isa);
  return absl::OkStatus();
}

namespace {

// Runs an INT_SUM decode kernel (accumulating or writing) over a validated payload.
void RunDecode(decltype(internal::CodecKernels::decode_int_sum) kernel,
               absl::Span<const uint8_t> data, int contributors, float scaler,
               absl::Span<float> out) {
  if (out.empty()) return;
  const float scale = scaler / static_cast<float>(contributors);
  kernel(data.data(), out.size(), IntSumBits(contributors), contributors, scale, out.data());
}

}  // namespace

void DecodeValidatedIntSumAdd(absl::Span<const uint8_t> data, int contributors, float scaler,
                              absl::Span<float> out, Isa isa) {
  RunDecode(internal::KernelsFor(isa).decode_int_sum_add, data, contributors, scaler, out);
}

void DecodeValidatedIntSum(absl::Span<const uint8_t> data, int contributors, float scaler,
                           absl::Span<float> out, Isa isa) {
  RunDecode(internal::KernelsFor(isa).decode_int_sum, data, contributors, scaler, out);
}

void StoreValidatedTernaryNibbles(absl::Span<const uint8_t> data, int offset,
                                  absl::Span<uint8_t> fields, Isa isa) {
  const auto base = static_cast<uint8_t>(offset | (offset << 4));
  if (!fields.empty()) {
    internal::KernelsFor(isa).store_ternary_nibbles(data.data(), fields.size(), base,
                                                    fields.data());
  }
}

void AddValidatedTernaryNibbles(absl::Span<const uint8_t> data, absl::Span<uint8_t> fields,
                                Isa isa) {
  if (!fields.empty()) {
    internal::KernelsFor(isa).add_ternary_nibbles(data.data(), fields.size(), fields.data());
  }
}

}  // namespace ternps::common
