// Internal: the per-ISA codec kernels behind common/codec/ternary.h and int_sum.h.
//
// Kernels take already-validated arguments (sizes, scalers, payload contents); validation and
// error reporting live in the public functions. Every kernel set produces bit-identical results
// to the scalar reference (kernels_scalar.cc), which is the specification in code.
//
// Thread safety: kernels are pure functions of their arguments.
#ifndef TERNPS_COMMON_CODEC_KERNELS_H_
#define TERNPS_COMMON_CODEC_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "common/codec/ternary_element.h"

// This header is included by the SIMD translation units, which are compiled with -mavx2 or
// -mavx512*: it must stay free of inline functions that other translation units also emit (absl,
// the standard library), or the linker could keep a SIMD copy for baseline callers.
namespace ternps::common {
enum class Isa : int;
}  // namespace ternps::common

namespace ternps::common::internal {

// Lanes of the statistics pass: element k adds into lane k % 32, lanes are then reduced by the
// fixed tree lane[j] += lane[j + w] for w = 16, 8, 4, 2, 1. (32 lanes = 8 independent AVX-512
// accumulator chains, enough to hide the add latency.) Fixing the order makes the sums, and so
// sigma and the clip threshold, bit-identical across implementations.
inline constexpr int kStatsLanes = 32;

// An INT_SUM_RADIX layout (int_sum.h): fields k + N in base R = 2N + 1, `digits` (m) of them per
// little-endian 16-bit word, in blocks of kRadixBlockWords words: element i of a block is digit
// i / 32 of word i % 32. The SIMD kernels divide a word x < limit by R as
// (x * multiplier) >> (16 + shift), which MakeRadixLayout checked to be exact.
struct RadixLayout {
  int contributors = 0;  // N
  uint32_t radix = 0;    // R = 2N + 1
  int digits = 0;        // m: R^m <= 65536 < R^(m+1)
  uint32_t limit = 0;    // R^m: every word of a whole block is below it
  uint32_t multiplier = 0;
  int shift = 0;
};
// The layout for N contributors; digits = 0 when N is outside [1, kMaxIntSumRadixContributors].
RadixLayout MakeRadixLayout(int contributors);
inline constexpr size_t kRadixBlockWords = 32;
inline constexpr size_t kRadixBlockBytes = 2 * kRadixBlockWords;

struct StatsLanes {
  double sum[kStatsLanes];
  double sum_squares[kStatsLanes];
  float max_abs;
};

struct CodecKernels {
  // Fills `lanes` from g[0, n).
  void (*stats)(const float* g, size_t n, StatsLanes* lanes);
  // Writes the 2-bit codes of g[0, n) into out[0, ceil(n/4)); g[0] is element `first` of the
  // partition (first % 4 == 0). limit = min(C, s), scale = 65536 / s, s >= kMinScaler.
  void (*ternarize)(const float* g, size_t n, uint64_t first, float limit, float scale,
                    const TernaryKey& key, uint8_t* out);
  // out[k] += scaler * code_k for k < n; `data` is a valid TERNARY_2BIT payload of n elements.
  void (*decode_ternary_add)(const uint8_t* data, size_t n, float scaler, float* out);
  // sums[k] += code_k (as -1, 0, +1); `data` is a valid TERNARY_2BIT payload.
  void (*add_ternary_codes)(const uint8_t* data, size_t n, int16_t* sums);
  // sums[k] = code_k: the first push of a step, without reading (or zeroing) `sums` first.
  void (*store_ternary_codes)(const uint8_t* data, size_t n, int16_t* sums);
  // Whether any of the n bytes holds a 0b11 code (ignores the element count: a caller checks the
  // padding bits of the last byte itself).
  bool (*has_invalid_ternary_code)(const uint8_t* data, size_t bytes);
  // The largest of the n `bits`-wide fields of an INT_SUM stream (data holds ceil(n*bits/8) bytes).
  uint32_t (*int_sum_max_field)(const uint8_t* data, size_t n, int bits);
  // out[k] += float(field_k - contributors) * scale for k < n; fields already validated.
  void (*decode_int_sum_add)(const uint8_t* data, size_t n, int bits, int contributors, float scale,
                             float* out);
  // out[k] = 0.0f + float(field_k - contributors) * scale: the same bits as decode_int_sum_add
  // into zeros (+0.0 where that gives +0.0), without reading `out`.
  void (*decode_int_sum)(const uint8_t* data, size_t n, int bits, int contributors, float scale,
                         float* out);
  // Packs sums[0, n) as `bits`-wide fields sums[k] + contributors into out[0, ceil(n*bits/8)),
  // the INT_SUM stream. Returns false, with `out` unspecified, when some sum lies outside
  // [-contributors, contributors] (the caller finds which for its message).
  bool (*encode_int_sum)(const int16_t* sums, size_t n, int bits, int contributors, uint8_t* out);
  // 4-bit INT_SUM fields summed in place from TERNARY_2BIT codes: field byte i (the fields of
  // elements 2i and 2i+1) += kNibbleDeltas[nibble i % 2 of data[i / 2]], for i < field_bytes;
  // the caller keeps every field in [0, 15], so no nibble carries into the next.
  void (*add_ternary_nibbles)(const uint8_t* data, size_t field_bytes, uint8_t* fields);
  // The same from `base` (each nibble's start value in both nibbles) instead of reading `fields`.
  void (*store_ternary_nibbles)(const uint8_t* data, size_t field_bytes, uint8_t base,
                                uint8_t* fields);
  // The largest of `words` little-endian 16-bit words at `data`.
  uint32_t (*radix_max_word)(const uint8_t* data, size_t words);
  // `blocks` whole INT_SUM_RADIX blocks whose words are all below layout.limit: element i of
  // block b, digit i / 32 of word i % 32, gives out[32 * m * b + i] +=
  // float(digit - contributors) * scale.
  void (*decode_int_sum_radix_add)(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                                   float scale, float* out);
  // The same as out[...] = 0.0f + float(digit - contributors) * scale, without reading `out`.
  void (*decode_int_sum_radix)(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                               float scale, float* out);
  // `blocks` whole blocks of 4-bit INT_SUM fields (each k + N <= 2N, element 2i in the low nibble
  // of byte i; 16 * m bytes per block) packed into the block's kRadixBlockWords words.
  void (*pack_nibbles_radix)(const uint8_t* fields, size_t blocks, const RadixLayout& layout,
                             uint8_t* out);
  // Whether any of the n little-endian float32 values at `data` is a NaN or an infinity
  // (exponent all ones).
  bool (*fp32_any_non_finite)(const uint8_t* data, size_t n);
  // out[k] += value_k for the n float32 values at `data` (IEEE additions, one per element).
  void (*fp32_add)(const uint8_t* data, size_t n, float* out);
  // sums[k] /= divisor (IEEE division, one per element); whether every quotient is finite.
  bool (*fp32_divide)(float* sums, size_t n, float divisor);
};

// The byte to add to a pair of 4-bit fields for the pair of 2-bit codes in a nibble of a
// TERNARY_2BIT byte (first element in bits 0-1 -> field bits 0-3, second in bits 2-3 -> bits
// 4-7): (d0 + 16 * d1) mod 256 with d = +1 for 01, -1 for 10, 0 for 00 (and the invalid 11).
// While both fields stay in [0, 15] the byte sum equals the two nibble sums.
inline constexpr uint8_t kNibbleDeltas[16] = {0x00, 0x01, 0xFF, 0x00, 0x10, 0x11, 0x0F, 0x10,
                                              0xF0, 0xF1, 0xEF, 0xF0, 0x00, 0x01, 0xFF, 0x00};

const CodecKernels& ScalarKernels();
const CodecKernels& Avx2Kernels();
const CodecKernels& Avx512Kernels();
// The kernel set for ResolveIsa(isa).
const CodecKernels& KernelsFor(Isa isa);

// Scalar helpers (compiled for the baseline ISA) the SIMD kernels use for heads and tails.
void TernarizeScalar(const float* g, size_t n, uint64_t first, float limit, float scale,
                     const TernaryKey& key, uint8_t* out);
// Adds g[begin, n) into lanes k % kStatsLanes and folds |g| into *max_abs: the statistics of
// the elements a SIMD loop left over, in exactly the reference's order.
void StatsTail(const float* g, size_t begin, size_t n, StatsLanes* lanes, float* max_abs);
// Fields [begin, end) of an INT_SUM stream of `bytes` bytes.
uint32_t IntSumMaxFieldRange(const uint8_t* data, size_t bytes, size_t begin, size_t end, int bits);
// `accumulate`: out[k] += v; otherwise out[k] = 0.0f + v.
void DecodeIntSumAddRange(const uint8_t* data, size_t bytes, size_t begin, size_t end, int bits,
                          int contributors, float scale, float* out, bool accumulate = true);
// The scalar encode_int_sum of sums[0, n), for any field width; SIMD kernels hand it the widths
// they do not pack themselves and their tails (`n` a multiple of 8 / gcd(bits, 8) before a tail).
bool EncodeIntSumScalar(const int16_t* sums, size_t n, int bits, int contributors, uint8_t* out);
// add_ternary_nibbles (store: store_ternary_nibbles from `base`) for the bytes SIMD loops leave.
void TernaryNibblesScalar(const uint8_t* data, size_t field_bytes, uint8_t base, bool store,
                          uint8_t* fields);
// Element count and words of the last, partial block of an INT_SUM_RADIX payload of n elements
// (r = n % (32 m) elements in ceil(r / m) words; element i is digit i / words of word i % words).
// The reference decode of such a block (`accumulate` as for DecodeIntSumAddRange); its words
// must be valid (RadixTailValid).
void DecodeIntSumRadixTail(const uint8_t* data, size_t elements, const RadixLayout& layout,
                           float scale, float* out, bool accumulate);
bool RadixTailValid(const uint8_t* data, size_t elements, const RadixLayout& layout);
inline size_t RadixTailWords(size_t elements, int digits) {
  return (elements + static_cast<size_t>(digits) - 1) / static_cast<size_t>(digits);
}
// R^(digits word j carries) in a block of `elements` elements over `words` words: the bound of a
// valid word (every digit above those it carries is 0).
inline uint32_t RadixWordLimit(size_t j, size_t elements, size_t words, uint32_t radix) {
  uint32_t limit = 1;
  for (size_t e = j; e < elements; e += words) limit *= radix;
  return limit;
}
inline uint32_t LoadWord16(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8;
}
// The reference (scalar) pack_nibbles_radix and decode kernels, for SIMD sets without their own.
void PackNibblesRadixScalar(const uint8_t* fields, size_t blocks, const RadixLayout& layout,
                            uint8_t* out);
// The scalar fp32 kernels (the SIMD sets hand them their tails).
bool Fp32AnyNonFiniteScalar(const uint8_t* data, size_t n);
void Fp32AddScalar(const uint8_t* data, size_t n, float* out);
bool Fp32DivideScalar(float* sums, size_t n, float divisor);
void DecodeIntSumRadixBlocksScalar(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                                   float scale, float* out, bool accumulate);

// Reads the `bits`-wide field `k` (bits <= 16) of a stream of `bytes` bytes.
inline uint32_t ReadField(const uint8_t* data, size_t bytes, size_t k, int bits) {
  const size_t bit = k * static_cast<size_t>(bits);
  size_t byte = bit >> 3;
  uint32_t window = 0;
  for (int i = 0; i < 3 && byte + i < bytes; ++i) {
    window |= static_cast<uint32_t>(data[byte + i]) << (8 * i);
  }
  return (window >> (bit & 7)) & ((1u << bits) - 1u);
}

}  // namespace ternps::common::internal

#endif  // TERNPS_COMMON_CODEC_KERNELS_H_
