// FP32: the dense encoding (small tensors, the fp32 baseline codec, exact averages).
//
// Wire layout: n little-endian IEEE-754 float32 values, 4*n bytes. Values must be finite: a NaN
// or infinity from one worker would poison every replica's model, so decoders reject it.
//
//   absl::Status st = EncodeFp32(g, wire);   // sender
//   st = DecodeFp32Add(wire, out);            // receiver
//
// Thread-safe; decoders validate before writing (output untouched on error), except
// DecodeFp32OnePass, which checks as it writes.
#ifndef TERNPS_COMMON_CODEC_FP32_H_
#define TERNPS_COMMON_CODEC_FP32_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/codec/isa.h"

namespace ternps::common {

constexpr size_t Fp32Bytes(size_t n) { return 4 * n; }

// Copies g to `out` (exactly 4 * g.size() bytes) in wire byte order.
absl::Status EncodeFp32(absl::Span<const float> g, absl::Span<uint8_t> out);

// Checks length and finiteness of an FP32 payload of n elements (element indices in the message
// offset by `first_element`: where the payload starts in its partition).
absl::Status ValidateFp32(absl::Span<const uint8_t> data, size_t n, size_t first_element = 0,
                          Isa isa = Isa::kAuto);

// out[k] += value_k, after validating data for out.size() elements.
absl::Status DecodeFp32Add(absl::Span<const uint8_t> data, absl::Span<float> out,
                           Isa isa = Isa::kAuto);

// out[k] = value_k, after validating data for out.size() elements.
absl::Status DecodeFp32(absl::Span<const uint8_t> data, absl::Span<float> out,
                        Isa isa = Isa::kAuto);

// out[k] = value_k, checking each block of the payload just before copying it: one pass over the
// payload instead of a check and a copy. On error (INVALID_ARGUMENT naming the field; element
// indices in the message are offset by `first_element`) `out` is partly written: for destinations
// the caller discards on error.
absl::Status DecodeFp32OnePass(absl::Span<const uint8_t> data, absl::Span<float> out,
                               size_t first_element = 0, Isa isa = Isa::kAuto);

// out[k] += value_k (or out[k] = value_k) for a payload that already passed
// ValidateFp32(data, out.size()); undefined for unvalidated input.
void AddValidatedFp32(absl::Span<const uint8_t> data, absl::Span<float> out, Isa isa = Isa::kAuto);
void CopyValidatedFp32(absl::Span<const uint8_t> data, absl::Span<float> out);

// sums[k] /= divisor in place (IEEE division: the same bits on every kernel set); whether every
// quotient is finite (finite sums can overflow float32).
bool DivideFp32(absl::Span<float> sums, float divisor, Isa isa = Isa::kAuto);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_CODEC_FP32_H_
