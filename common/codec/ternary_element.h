// The per-element definition of TernGrad's stochastic ternarization, shared by every
// implementation (scalar reference, AVX2, AVX-512, CUDA) so that all of them pick the same codes.
//
// Random draws. Element e (absolute index within its partition) takes a 16-bit draw from
// Philox4x32-7 (kTernaryPhiloxRounds) with
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (c, partition_id, step & 0xffffffff, worker_rank),  c = (e >> 7) * 16 + (e & 15)
//   draw    = (word[(e >> 4) & 3] >> (16 * ((e >> 6) & 1))) & 0xffff
// so a block of 128 elements uses 16 Philox outputs, one SIMD lane each: elements 16w+i and
// 64+16w+i come from lane i's word w, which keeps vector code free of shuffles.
//
// Code. With clip threshold C (+inf when clipping is off) and scaler s >= 2^-100, in float32:
//   L   = min(C, s)                       (once per partition; min as x < y ? x : y)
//   a   = min(|g|, L)
//   x   = a * (65536 / s)                 (65536 / s computed once per partition; x <= 65536)
//   thr = (uint32)round_half_even(x)
//   b   = draw < thr                      (Bernoulli with p = thr / 65536 ~ a / s)
//   code = b ? (signbit(g) ? -1 : +1) : 0
// so E[s * code] = sign(g) * a up to |bias| <= s * 2^-17 from the 16-bit draw (rounding to the
// nearest 1/65536 of s). s < 2^-100 (including 0) gives all codes 0: it keeps 65536 / s finite,
// and such a partition is zero for every practical purpose.
//
// Thread safety: pure functions. Usable in CUDA device code.
#ifndef TERNPS_COMMON_CODEC_TERNARY_ELEMENT_H_
#define TERNPS_COMMON_CODEC_TERNARY_ELEMENT_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/random/philox.h"

namespace ternps::common {

// What selects one worker's random stream for one partition of one step.
struct TernaryKey {
  uint64_t seed = 0;
  uint32_t worker = 0;
  uint64_t step = 0;
  uint32_t partition = 0;
};

inline constexpr float kDrawRange = 65536.0f;  // 16-bit draws

// Rounds of the Philox4x32 behind the draws. 7 is the fewest with which Philox4x32 passes
// TestU01's BigCrush (Salmon et al., SC'11); Random123's default of 10 adds a safety margin that
// costs about a third more of the codec's dominant work (the draws are most of ternarization's
// instructions) and buys nothing the codec's statistical tests can see: unbiasedness, the
// variance s|g| - g^2, and independent streams per worker (tests/common/codec/
// ternary_statistics_test.cc), plus a chi-square on the 16-bit draws (philox_test.cc).
inline constexpr int kTernaryPhiloxRounds = 7;

TERNPS_HOST_DEVICE uint32_t TernaryCounter(uint64_t element) {
  return static_cast<uint32_t>((element >> 7) * 16 + (element & 15));
}

TERNPS_HOST_DEVICE PhiloxKey TernaryPhiloxKey(const TernaryKey& key) {
  return PhiloxKey{{static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32)}};
}

// The Philox block (lane) of element `element`.
TERNPS_HOST_DEVICE Philox4x32 TernaryBlock(const TernaryKey& key, uint64_t element) {
  return Philox4x32_R<kTernaryPhiloxRounds>(
      Philox4x32{
          {TernaryCounter(element), key.partition, static_cast<uint32_t>(key.step), key.worker}},
      TernaryPhiloxKey(key));
}

// The 16-bit draw of `element` from its block.
TERNPS_HOST_DEVICE uint32_t TernaryDraw(const Philox4x32& block, uint64_t element) {
  return (block.v[(element >> 4) & 3] >> (16 * ((element >> 6) & 1))) & 0xffffu;
}

TERNPS_HOST_DEVICE float MinPs(float x, float y) { return x < y ? x : y; }

TERNPS_HOST_DEVICE uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

TERNPS_HOST_DEVICE float BitsFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// Scalers below this encode as all zeros.
inline constexpr float kMinScaler = 0x1p-100f;

// `limit` = min(C, s), `scale` = 65536 / s. Assumes the default (round-to-nearest-even) mode.
TERNPS_HOST_DEVICE uint32_t TernaryThreshold(float g, float limit, float scale) {
  const float a = MinPs(BitsFloat(FloatBits(g) & 0x7fffffffu), limit);
#if defined(__CUDA_ARCH__)
  return __float2uint_rn(__fmul_rn(a, scale));
#else
  return static_cast<uint32_t>(nearbyintf(a * scale));
#endif
}

// The 2-bit wire code (0 = 0, 1 = +1, 2 = -1) of one element.
TERNPS_HOST_DEVICE uint32_t TernaryCode(float g, uint32_t threshold, uint32_t draw) {
  if (draw >= threshold) return 0;
  return (FloatBits(g) >> 31) ? 2u : 1u;
}

}  // namespace ternps::common

#endif  // TERNPS_COMMON_CODEC_TERNARY_ELEMENT_H_
