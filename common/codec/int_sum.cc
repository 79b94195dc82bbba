#include "common/codec/int_sum.h"

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

absl::Status EncodeIntSum(absl::Span<const int16_t> sums, int contributors,
                          absl::Span<uint8_t> out) {
  if (absl::Status st = ValidateContributors(contributors); !st.ok()) return st;
  const int bits = IntSumBits(contributors);
  const size_t bytes = IntSumBytes(sums.size(), contributors);
  if (out.size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("out: ", out.size(), " bytes, expected ", bytes,
                                                   " for ", sums.size(), " elements of ", bits,
                                                   " bits"));
  }
  for (size_t j = 0; j < sums.size(); ++j) {
    if (sums[j] < -contributors || sums[j] > contributors) {
      return absl::InvalidArgumentError(absl::StrCat("sums[", j, "]: ", sums[j], " is outside [-",
                                                     contributors, ", ", contributors, "]"));
    }
  }
  // Field widths that divide a byte (N = 1: 2 bits; N = 4..7: 4 bits; 8 and 16 bits) pack
  // whole bytes independently, which compilers vectorize; the same bit stream as below.
  const auto n = sums.size();
  const auto offset = static_cast<int>(contributors);
  if (bits == 4) {
    const size_t pairs = n / 2;
    for (size_t i = 0; i < pairs; ++i) {
      out[i] = static_cast<uint8_t>((sums[2 * i] + offset) | ((sums[2 * i + 1] + offset) << 4));
    }
    if (n % 2 != 0) out[pairs] = static_cast<uint8_t>(sums[n - 1] + offset);
    return absl::OkStatus();
  }
  if (bits == 2) {
    const size_t quads = n / 4;
    for (size_t i = 0; i < quads; ++i) {
      out[i] = static_cast<uint8_t>((sums[4 * i] + offset) | ((sums[4 * i + 1] + offset) << 2) |
                                    ((sums[4 * i + 2] + offset) << 4) |
                                    ((sums[4 * i + 3] + offset) << 6));
    }
    if (n % 4 != 0) {
      uint8_t last = 0;
      for (size_t j = 4 * quads; j < n; ++j) {
        last |= static_cast<uint8_t>((sums[j] + offset) << (2 * (j - 4 * quads)));
      }
      out[quads] = last;
    }
    return absl::OkStatus();
  }
  if (bits == 8) {
    for (size_t j = 0; j < n; ++j) out[j] = static_cast<uint8_t>(sums[j] + offset);
    return absl::OkStatus();
  }
  // Bit-stream writer: fields accumulate in a 64-bit register and leave it a byte at a time.
  uint64_t acc = 0;
  int acc_bits = 0;
  size_t o = 0;
  for (const int16_t sum : sums) {
    acc |= static_cast<uint64_t>(sum + contributors) << acc_bits;
    acc_bits += bits;
    while (acc_bits >= 8) {
      out[o++] = static_cast<uint8_t>(acc);
      acc >>= 8;
      acc_bits -= 8;
    }
  }
  if (acc_bits > 0) out[o++] = static_cast<uint8_t>(acc);
  return absl::OkStatus();
}

absl::Status ValidateIntSum(absl::Span<const uint8_t> data, size_t n, int contributors, Isa isa) {
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
  if (n == 0) return absl::OkStatus();
  const uint32_t max_field = internal::KernelsFor(isa).int_sum_max_field(data.data(), n, bits);
  if (max_field > 2u * static_cast<uint32_t>(contributors)) {
    for (size_t j = 0; j < n; ++j) {  // cold: find the first offender for the message
      const uint32_t f = internal::ReadField(data.data(), bytes, j, bits);
      if (f > 2u * static_cast<uint32_t>(contributors)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "data: element ", j, " has field ", f, " > 2 * contributors (", 2 * contributors, ")"));
      }
    }
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

}  // namespace ternps::common
