// INT_SUM: the exact downlink encoding of TernGrad with scaler sharing.
//
// When all N workers ternarize a partition with the same scaler s, the shard's sum of their codes
// k_j = sum_i code_ij is an integer in [-N, N], and the average gradient is s * k_j / N. The shard
// sends k_j + N (0..2N) in b = ceil(log2(2N+1)) bits per element (N=4: 4 bits, N=8: 5 bits).
//
// Wire layout: fields packed into a little-endian bit stream, least significant bit first
// (field j occupies stream bits [j*b, (j+1)*b)); ceil(n*b/8) bytes; unused high bits of the last
// byte are 0; fields above 2N are invalid. Element j decodes to float(k_j) * (s / float(N)),
// evaluated in float32 exactly in that order on every implementation.
//
//   std::vector<uint8_t> wire(IntSumBytes(n, N));
//   absl::Status st = EncodeIntSum(sums, N, wire);                // shard
//   st = DecodeIntSumAdd(wire, N, s, gradient);                   // worker
//
// Decoders validate everything before writing (INVALID_ARGUMENT naming the field; output
// untouched on error), except DecodeIntSumOnePass, which checks as it writes. Thread-safe;
// allocation-free.
#ifndef TERNPS_COMMON_CODEC_INT_SUM_H_
#define TERNPS_COMMON_CODEC_INT_SUM_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/isa.h"

namespace ternps::common {

inline constexpr int kMaxIntSumContributors = 32767;

// b = ceil(log2(2N+1)) for 1 <= N <= 32767 (so 2 <= b <= 16); 0 for N outside that range.
int IntSumBits(int contributors);
// ceil(n * b / 8).
size_t IntSumBytes(size_t n, int contributors);

// Packs sums (each in [-N, N]) into `out` (exactly IntSumBytes(sums.size(), N) bytes). A sum
// outside [-N, N] is INVALID_ARGUMENT naming it, with `out` unspecified.
absl::Status EncodeIntSum(absl::Span<const int16_t> sums, int contributors, absl::Span<uint8_t> out,
                          Isa isa = Isa::kAuto);

// Checks an INT_SUM payload of n elements from N contributors: N in range, length, no field
// above 2N, zero padding bits.
absl::Status ValidateIntSum(absl::Span<const uint8_t> data, size_t n, int contributors,
                            Isa isa = Isa::kAuto);

// out[j] += float(k_j) * (scaler / N) after validating the payload (for out.size() elements)
// and the scaler.
absl::Status DecodeIntSumAdd(absl::Span<const uint8_t> data, int contributors, float scaler,
                             absl::Span<float> out, Isa isa = Isa::kAuto);

// out[j] = 0.0f + float(k_j) * (scaler / N) (DecodeValidatedIntSum's bits), checking each block
// of the payload just before decoding it: one pass over the payload instead of a check and a
// decode. On error (INVALID_ARGUMENT naming the field; element indices in the message are offset
// by `first_element`) `out` is partly written: for destinations the caller discards on error.
absl::Status DecodeIntSumOnePass(absl::Span<const uint8_t> data, int contributors, float scaler,
                                 absl::Span<float> out, size_t first_element = 0,
                                 Isa isa = Isa::kAuto);

// The same for a payload (and scaler) that already passed ValidateIntSum(data, out.size(), N) /
// ValidateScaler; undefined for unvalidated input.
void DecodeValidatedIntSumAdd(absl::Span<const uint8_t> data, int contributors, float scaler,
                              absl::Span<float> out, Isa isa = Isa::kAuto);
// out[j] = 0.0f + float(k_j) * (scaler / N): the bits DecodeValidatedIntSumAdd gives into zeros,
// without reading `out` first (one pass instead of a fill and an accumulate).
void DecodeValidatedIntSum(absl::Span<const uint8_t> data, int contributors, float scaler,
                           absl::Span<float> out, Isa isa = Isa::kAuto);

// Summing TERNARY_2BIT pushes straight into the INT_SUM answer (4-bit fields, N = 4..7): the
// sums are the answer's bytes, without 16-bit sums or an encode pass. `fields` is the slice of
// the answer that a run of a validated push covers: byte i of `data` (elements 4i..4i+3) goes
// to field bytes 2i and 2i+1, for fields.size() <= 2 * data.size() bytes. The first push stores
// offset + code_k into every field (offset = N: the fields are k + N once N pushes are in; an odd
// element count's unused last nibble is the caller's to clear), each later push adds its codes.
// At most `offset` pushes may be summed (fields stay in [0, 2 * offset]).
inline constexpr int kNibbleSumMinOffset = 4;
inline constexpr int kNibbleSumMaxOffset = 7;
void StoreValidatedTernaryNibbles(absl::Span<const uint8_t> data, int offset,
                                  absl::Span<uint8_t> fields, Isa isa = Isa::kAuto);
void AddValidatedTernaryNibbles(absl::Span<const uint8_t> data, absl::Span<uint8_t> fields,
                                Isa isa = Isa::kAuto);

// INT_SUM_RADIX: the same fields k + N (0..2N), as the digits of base-R numbers, R = 2N + 1:
// m = IntSumRadixDigits(N) fields per little-endian 16-bit word, the largest m with R^m <= 65536,
// so 16 / m bits per element where INT_SUM takes b. N = 4: 3.2 bits against 4 (20% fewer bytes);
// N = 1: 1.6 against 2; N = 2: 2.67 against 3; most other N gain nothing (IntSumRadixSmaller).
//
// Layout: blocks of 32 m elements, 32 words (64 bytes) each; element i of a block is digit i / 32
// (digit d weighs R^d) of word i % 32, so one digit of the 32 words is 32 consecutive elements.
// The last r = n % (32 m) elements, if any, take w = ceil(r / m) words: element i is digit i / w
// of word i % w. 2 * ceil(n / m) bytes in all. Invalid: a word of a whole block >= R^m, or a word
// of the last block with a nonzero digit beyond the elements it carries. Element j decodes to
// float(k_j) * (s / float(N)) exactly as INT_SUM.
//
//   std::vector<uint8_t> wire(IntSumRadixBytes(n, 4));
//   absl::Status st = EncodeIntSumRadix(sums, 4, wire);                 // shard
//   st = DecodeIntSumRadixOnePass(wire, 4, s, gradient);                // worker
// Defined for 1 <= N <= 19, where R^3 <= 65536 (at least 3 digits per word; with 2 a word is
// never smaller than INT_SUM's b bits).
inline constexpr int kMaxIntSumRadixContributors = 19;
int IntSumRadixDigits(int contributors);  // m; 0 when N is outside [1, 19]
bool IntSumRadixSmaller(int contributors);
size_t IntSumRadixBytes(size_t n, int contributors);  // 0 when IntSumRadixDigits(N) is 0
// A whole block: 32 words, 64 bytes, 32 m elements (0 when IntSumRadixDigits(N) is 0).
inline constexpr size_t kIntSumRadixBlockWords = 32;
inline constexpr size_t kIntSumRadixBlockBytes = 2 * kIntSumRadixBlockWords;
size_t IntSumRadixBlockElements(int contributors);

// Packs sums (each in [-N, N]) into `out` (exactly IntSumRadixBytes(sums.size(), N) bytes); a sum
// outside [-N, N] is INVALID_ARGUMENT naming it. The reference encoder (scalar).
absl::Status EncodeIntSumRadix(absl::Span<const int16_t> sums, int contributors,
                               absl::Span<uint8_t> out);
// The same from the 4-bit INT_SUM payload of the same sums (`fields`, IntSumBytes(n, N) bytes for
// 4 <= N <= 7, every field already checked to be at most 2N): the shard's answer for N = 4.
void PackValidatedIntSumRadix(absl::Span<const uint8_t> fields, size_t n, int contributors,
                              absl::Span<uint8_t> out, Isa isa = Isa::kAuto);

// Checks an INT_SUM_RADIX payload of n elements from N contributors (N, length, every word).
absl::Status ValidateIntSumRadix(absl::Span<const uint8_t> data, size_t n, int contributors,
                                 Isa isa = Isa::kAuto);
// out[j] += float(k_j) * (scaler / N) after validating the payload and the scaler.
absl::Status DecodeIntSumRadixAdd(absl::Span<const uint8_t> data, int contributors, float scaler,
                                  absl::Span<float> out, Isa isa = Isa::kAuto);
// out[j] = 0.0f + float(k_j) * (scaler / N), checking as it writes (as DecodeIntSumOnePass: on
// error `out` is partly written; the message's element and word numbers count from
// `first_element`, which is where `data` starts in a larger payload, a multiple of 32 m).
absl::Status DecodeIntSumRadixOnePass(absl::Span<const uint8_t> data, int contributors,
                                      float scaler, absl::Span<float> out, size_t first_element = 0,
                                      Isa isa = Isa::kAuto);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_CODEC_INT_SUM_H_
