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

// INT_SUM_RADIX.

namespace internal {

// R^m <= 65536 digits per word, and a division by R that 16-bit SIMD lanes can do exactly:
// q = ((x * M) >> 16) >> s with M = ceil(2^(16+s) / R) < 2^16. With e = M * R - 2^(16+s), x * M /
// 2^(16+s) = x / R + x * e / (R * 2^(16+s)), whose floor is x / R's whenever x * e < 2^(16+s).
RadixLayout MakeRadixLayout(int contributors) {
  RadixLayout layout;
  if (contributors < 1 || contributors > kMaxIntSumRadixContributors) return layout;
  const uint32_t radix = 2u * static_cast<uint32_t>(contributors) + 1u;
  int digits = 0;
  uint32_t limit = 1;
  while (limit * radix <= 65536u) {
    limit *= radix;
    ++digits;
  }
  for (int shift = 0; shift < 16; ++shift) {
    const uint64_t scale = uint64_t{1} << (16 + shift);
    const uint64_t multiplier = (scale + radix - 1) / radix;
    if (multiplier >= 65536) break;
    const uint64_t error = multiplier * radix - scale;
    if (uint64_t{limit - 1} * error < scale) {
      layout = RadixLayout{.contributors = contributors,
                           .radix = radix,
                           .digits = digits,
                           .limit = limit,
                           .multiplier = static_cast<uint32_t>(multiplier),
                           .shift = shift};
      break;
    }
  }
  return layout;
}

}  // namespace internal

int IntSumRadixDigits(int contributors) { return internal::MakeRadixLayout(contributors).digits; }

bool IntSumRadixSmaller(int contributors) {
  const int digits = IntSumRadixDigits(contributors);
  return digits > 0 && digits * IntSumBits(contributors) > 16;
}

size_t IntSumRadixBytes(size_t n, int contributors) {
  const int digits = IntSumRadixDigits(contributors);
  if (digits == 0) return 0;
  return 2 * ((n + static_cast<size_t>(digits) - 1) / static_cast<size_t>(digits));
}

size_t IntSumRadixBlockElements(int contributors) {
  return kIntSumRadixBlockWords * static_cast<size_t>(IntSumRadixDigits(contributors));
}
static_assert(kIntSumRadixBlockWords == internal::kRadixBlockWords &&
              kIntSumRadixBlockBytes == internal::kRadixBlockBytes);

namespace {

absl::Status ValidateRadixContributors(int contributors) {
  if (IntSumRadixDigits(contributors) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("contributors: ", contributors,
                                                   " is outside [1, ", kMaxIntSumRadixContributors,
                                                   "] (INT_SUM_RADIX)"));
  }
  return absl::OkStatus();
}

absl::Status CheckRadixShape(absl::Span<const uint8_t> data, size_t n, int contributors) {
  if (absl::Status st = ValidateRadixContributors(contributors); !st.ok()) return st;
  const size_t bytes = IntSumRadixBytes(n, contributors);
  if (data.size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data.size(), " bytes, expected ",
                                                   bytes, " for ", n, " INT_SUM_RADIX elements of ",
                                                   IntSumRadixDigits(contributors),
                                                   " per word (contributors ", contributors, ")"));
  }
  return absl::OkStatus();
}

// The error for the first invalid word (cold: a check failed).
absl::Status RadixWordError(absl::Span<const uint8_t> data, size_t n,
                            const internal::RadixLayout& layout, size_t first_element) {
  const size_t per_block = internal::kRadixBlockWords * static_cast<size_t>(layout.digits);
  for (size_t w = 0; w < data.size() / 2; ++w) {
    const size_t block = w / internal::kRadixBlockWords, j = w % internal::kRadixBlockWords;
    const size_t in_block = std::min(per_block, n - block * per_block);
    const size_t words = in_block == per_block ? internal::kRadixBlockWords
                                               : internal::RadixTailWords(in_block, layout.digits);
    const uint32_t bound = internal::RadixWordLimit(j, in_block, words, layout.radix);
    const uint32_t value = internal::LoadWord16(data.data() + 2 * w);
    if (value >= bound) {
      // A run decoded on its own starts on a block: its words count from that block's first.
      const size_t word = first_element / per_block * internal::kRadixBlockWords + w;
      return absl::InvalidArgumentError(absl::StrCat(
          "data: word ", word, " (from element ", first_element + block * per_block + j, ") is ",
          value, ", not below ", bound, " (", layout.radix, "^digits it carries)"));
    }
  }
  return absl::InternalError("INT_SUM_RADIX: a kernel reported an invalid word and none is");
}

// Decodes blocks of at most kRadixChunkBlocks whole blocks and then the last, partial block, of
// a payload whose scaler and shape (CheckRadixShape) the caller checked. Unless the caller
// validated the words too (`checked`), each chunk is checked just before it is decoded, while it
// is in L1.
inline constexpr size_t kRadixChunkBlocks = 256;  // 16 KiB of payload

absl::Status DecodeRadix(absl::Span<const uint8_t> data, int contributors, float scaler,
                         absl::Span<float> out, size_t first_element, Isa isa, bool accumulate,
                         bool checked) {
  const size_t n = out.size();
  const internal::RadixLayout layout = internal::MakeRadixLayout(contributors);
  const internal::CodecKernels& kernels = internal::KernelsFor(isa);
  const size_t per_block = internal::kRadixBlockWords * static_cast<size_t>(layout.digits);
  const size_t blocks = n / per_block;
  const float scale = scaler / static_cast<float>(contributors);
  auto decode = accumulate ? kernels.decode_int_sum_radix_add : kernels.decode_int_sum_radix;
  for (size_t b = 0; b < blocks; b += kRadixChunkBlocks) {
    const size_t m = std::min(kRadixChunkBlocks, blocks - b);
    const uint8_t* chunk = data.data() + b * internal::kRadixBlockBytes;
    if (!checked && kernels.radix_max_word(chunk, m * internal::kRadixBlockWords) >= layout.limit) {
      return RadixWordError(data, n, layout, first_element);
    }
    decode(chunk, m, layout, scale, out.data() + b * per_block);
  }
  const size_t tail = n - blocks * per_block;
  const uint8_t* tail_words = data.data() + blocks * internal::kRadixBlockBytes;
  if (tail > 0) {
    if (!checked && !internal::RadixTailValid(tail_words, tail, layout)) {
      return RadixWordError(data, n, layout, first_element);
    }
    internal::DecodeIntSumRadixTail(tail_words, tail, layout, scale,
                                    out.data() + blocks * per_block, accumulate);
  }
  return absl::OkStatus();
}

// The words of the last, partial block (`tail` elements; element i is field(i)), Horner's rule
// from each word's top digit down.
template <typename Field>
void PackRadixTail(size_t tail, const internal::RadixLayout& layout, Field field, uint8_t* out) {
  const size_t words = internal::RadixTailWords(tail, layout.digits);
  for (size_t w = 0; w < words; ++w) {
    uint32_t x = 0;
    for (size_t i = w + (tail - 1 - w) / words * words + words; i > w;) {
      i -= words;
      x = x * layout.radix + field(i);
    }
    out[2 * w] = static_cast<uint8_t>(x);
    out[2 * w + 1] = static_cast<uint8_t>(x >> 8);
  }
}

}  // namespace

absl::Status EncodeIntSumRadix(absl::Span<const int16_t> sums, int contributors,
                               absl::Span<uint8_t> out) {
  if (absl::Status st = ValidateRadixContributors(contributors); !st.ok()) return st;
  const size_t n = sums.size();
  const size_t bytes = IntSumRadixBytes(n, contributors);
  if (out.size() != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("out: ", out.size(), " bytes, expected ", bytes, " for ", n, " elements"));
  }
  for (size_t j = 0; j < n; ++j) {
    if (sums[j] < -contributors || sums[j] > contributors) {
      return absl::InvalidArgumentError(absl::StrCat("sums[", j, "]: ", sums[j], " is outside [-",
                                                     contributors, ", ", contributors, "]"));
    }
  }
  const internal::RadixLayout layout = internal::MakeRadixLayout(contributors);
  const size_t per_block = internal::kRadixBlockWords * static_cast<size_t>(layout.digits);
  const size_t blocks = n / per_block;
  auto field = [&](size_t j) { return static_cast<uint32_t>(sums[j] + contributors); };
  for (size_t b = 0; b < blocks; ++b) {
    uint32_t x[internal::kRadixBlockWords] = {};
    for (int d = layout.digits - 1; d >= 0; --d) {
      const size_t first = b * per_block + internal::kRadixBlockWords * static_cast<size_t>(d);
      for (size_t w = 0; w < internal::kRadixBlockWords; ++w) {
        x[w] = x[w] * layout.radix + field(first + w);
      }
    }
    for (size_t w = 0; w < internal::kRadixBlockWords; ++w) {
      out[b * internal::kRadixBlockBytes + 2 * w] = static_cast<uint8_t>(x[w]);
      out[b * internal::kRadixBlockBytes + 2 * w + 1] = static_cast<uint8_t>(x[w] >> 8);
    }
  }
  PackRadixTail(
      n - blocks * per_block, layout, [&](size_t i) { return field(blocks * per_block + i); },
      out.data() + blocks * internal::kRadixBlockBytes);
  return absl::OkStatus();
}

void PackValidatedIntSumRadix(absl::Span<const uint8_t> fields, size_t n, int contributors,
                              absl::Span<uint8_t> out, Isa isa) {
  const internal::RadixLayout layout = internal::MakeRadixLayout(contributors);
  const size_t per_block = internal::kRadixBlockWords * static_cast<size_t>(layout.digits);
  const size_t blocks = n / per_block;
  if (blocks > 0) {
    internal::KernelsFor(isa).pack_nibbles_radix(fields.data(), blocks, layout, out.data());
  }
  PackRadixTail(
      n - blocks * per_block, layout,
      [&](size_t i) {
        const size_t e = blocks * per_block + i;
        return static_cast<uint32_t>((fields[e / 2] >> (4 * (e % 2))) & 15u);
      },
      out.data() + blocks * internal::kRadixBlockBytes);
}

absl::Status ValidateIntSumRadix(absl::Span<const uint8_t> data, size_t n, int contributors,
                                 Isa isa) {
  if (absl::Status st = CheckRadixShape(data, n, contributors); !st.ok()) return st;
  const internal::RadixLayout layout = internal::MakeRadixLayout(contributors);
  const size_t per_block = internal::kRadixBlockWords * static_cast<size_t>(layout.digits);
  const size_t blocks = n / per_block;
  const bool ok =
      (blocks == 0 || internal::KernelsFor(isa).radix_max_word(
                          data.data(), blocks * internal::kRadixBlockWords) < layout.limit) &&
      internal::RadixTailValid(data.data() + blocks * internal::kRadixBlockBytes,
                               n - blocks * per_block, layout);
  return ok ? absl::OkStatus() : RadixWordError(data, n, layout, 0);
}

absl::Status DecodeIntSumRadixAdd(absl::Span<const uint8_t> data, int contributors, float scaler,
                                  absl::Span<float> out, Isa isa) {
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  if (absl::Status st = ValidateIntSumRadix(data, out.size(), contributors, isa); !st.ok()) {
    return st;
  }
  return DecodeRadix(data, contributors, scaler, out, 0, isa, /*accumulate=*/true,
                     /*checked=*/true);
}

absl::Status DecodeIntSumRadixOnePass(absl::Span<const uint8_t> data, int contributors,
                                      float scaler, absl::Span<float> out, size_t first_element,
                                      Isa isa) {
  if (absl::Status st = ValidateScaler(scaler); !st.ok()) return st;
  if (absl::Status st = CheckRadixShape(data, out.size(), contributors); !st.ok()) return st;
  return DecodeRadix(data, contributors, scaler, out, first_element, isa, /*accumulate=*/false,
                     /*checked=*/false);
}

}  // namespace ternps::common
