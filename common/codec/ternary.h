// TernGrad's ternary gradient codec (Wen et al., "TernGrad: Ternary Gradients to Reduce
// Communication in Distributed Deep Learning", NIPS 2017), CPU implementation.
//
// For one partition g of n float32 values on one worker:
//   1. Statistics: sigma = population standard deviation of g, m = max_k |g_k|.
//   2. Clip (c = clip_sigmas, 2.5 by default, 0 = off): C = c * sigma; |g_k| > C counts as C.
//   3. Scaler: s = min(m, C), this worker's scaler. With scaler sharing every worker encodes
//      with the shared s = max over workers (MaxScaler), so the server's sum is exact.
//   4. Stochastic ternarization: code_k = sign(g_k) * Bernoulli(min(|g_k|, C) / s), drawn from
//      the worker's own Philox stream (see ternary_element.h for the exact, bit-level rule), so
//      E[s * code_k] = clip(g_k) (unbiased up to s * 2^-17), Var = s * |clip(g_k)| - clip(g_k)^2.
//
// Wire layout TERNARY_2BIT: element k in byte k/4 at bits 2*(k%4), least significant first;
// 00 = 0, 01 = +1, 10 = -1, 11 invalid; ceil(n/4) bytes; unused high bits of the last byte 0.
// Value of element k = scaler * code_k.
//
//   absl::StatusOr<PartitionStats> st = ComputeStats(g);
//   float s = LocalScaler(*st, 2.5f);                                  // share it, get the max
//   absl::Status ok = Ternarize(g, ClipThreshold(*st, 2.5f), s, key, packed);
//   ok = DecodeTernaryAdd(packed, s, out);                             // on the receiving side
//
// Every function that reads a payload treats it as untrusted: it checks everything first and
// returns INVALID_ARGUMENT naming the field ("data", "scaler", "elements") without touching its
// output. Encoding allocates nothing. All functions are thread-safe (no shared state); `isa`
// selects the kernel set (kAuto: the best this CPU has; all sets give identical bytes).
#ifndef TERNPS_COMMON_CODEC_TERNARY_H_
#define TERNPS_COMMON_CODEC_TERNARY_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/isa.h"
#include "common/codec/ternary_element.h"

namespace ternps::common {

inline constexpr float kDefaultClipSigmas = 2.5f;

// Bytes of a TERNARY_2BIT payload of n elements: ceil(n / 4).
constexpr size_t TernaryBytes(size_t n) { return (n + 3) / 4; }

struct PartitionStats {
  size_t elements = 0;
  double mean = 0.0;
  float sigma = 0.0f;    // population standard deviation
  float max_abs = 0.0f;  // max |g_k|
};

// Statistics of one partition, with a fixed summation order (identical on every ISA).
// INVALID_ARGUMENT if g holds a NaN or an infinity.
absl::StatusOr<PartitionStats> ComputeStats(absl::Span<const float> g, Isa isa = Isa::kAuto);

// The clip threshold C = clip_sigmas * sigma, or +infinity when clip_sigmas == 0.
float ClipThreshold(const PartitionStats& stats, float clip_sigmas);
// This worker's scaler: max |g| after clipping = min(max_abs, C).
float LocalScaler(const PartitionStats& stats, float clip_sigmas);
// The shared scaler: the maximum of the workers' scalers. INVALID_ARGUMENT ("scalers[i]") if one
// is negative or not finite, or the list is empty.
absl::StatusOr<float> MaxScaler(absl::Span<const float> scalers);
// INVALID_ARGUMENT naming `field` unless s is finite and >= 0.
absl::Status ValidateScaler(float s, std::string_view field = "scaler");

// Writes the TERNARY_2BIT codes of g with clip threshold `clip` and scaler `scaler` into `out`
// (exactly TernaryBytes(g.size()) bytes). g[0] is element `first` of the partition, first % 4 ==
// 0, so a partition may be encoded in pieces with the same result. scaler == 0 gives all zeros.
// Pass the scaler this partition is sent with: with sharing, the shared one (>= the local one).
absl::Status Ternarize(absl::Span<const float> g, float clip, float scaler, const TernaryKey& key,
                       absl::Span<uint8_t> out, uint64_t first = 0, Isa isa = Isa::kAuto);

// Statistics + local scaler + ternarization in one call (no scaler sharing, or a lone worker).
// Returns the scaler the codes are relative to.
absl::StatusOr<float> EncodeTernary(absl::Span<const float> g, float clip_sigmas,
                                    const TernaryKey& key, absl::Span<uint8_t> out,
                                    Isa isa = Isa::kAuto);

// Checks a TERNARY_2BIT payload of n elements: length, no 0b11 code, zero padding bits.
absl::Status ValidateTernary(absl::Span<const uint8_t> data, size_t n, Isa isa = Isa::kAuto);

// out[k] += scaler * code_k, after validating data (for out.size() elements) and the scaler.
absl::Status DecodeTernaryAdd(absl::Span<const uint8_t> data, float scaler, absl::Span<float> out,
                              Isa isa = Isa::kAuto);

// sums[k] += code_k (the server's exact integer sum under scaler sharing), after validating data
// for sums.size() elements. The caller bounds the number of additions so int16 cannot overflow
// (at most 32767 workers).
absl::Status AddTernaryCodes(absl::Span<const uint8_t> data, absl::Span<int16_t> sums,
                             Isa isa = Isa::kAuto);

// The same two without re-validating, for a payload (and scaler) that already passed
// ValidateTernary(data, out.size()) / ValidateScaler: the shard validates a whole request before
// it sums any of it. Undefined for unvalidated input.
void DecodeValidatedTernaryAdd(absl::Span<const uint8_t> data, float scaler, absl::Span<float> out,
                               Isa isa = Isa::kAuto);
void AddValidatedTernaryCodes(absl::Span<const uint8_t> data, absl::Span<int16_t> sums,
                              Isa isa = Isa::kAuto);
// sums[k] = code_k: the same as AddValidatedTernaryCodes into zeros, without reading `sums` (a
// shard's first push of a step).
void StoreValidatedTernaryCodes(absl::Span<const uint8_t> data, absl::Span<int16_t> sums,
                                Isa isa = Isa::kAuto);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_CODEC_TERNARY_H_
