// A deliberately naive, element-at-a-time TernGrad encoder written from the text of
// common/codec/ternary_element.h, independent of the library's kernels, for tests to compare
// against.
#ifndef TERNPS_TESTS_COMMON_CODEC_REFERENCE_H_
#define TERNPS_TESTS_COMMON_CODEC_REFERENCE_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/random/philox.h"

namespace ternps::testing {

// -1, 0 or +1 for element e of g (e is the absolute index in the partition).
inline int NaiveCode(float g, uint64_t e, float clip, float scaler, uint64_t seed, uint32_t worker,
                     uint64_t step, uint32_t partition) {
  if (scaler < 0x1p-100f) return 0;
  const uint32_t counter = static_cast<uint32_t>((e / 128) * 16 + e % 16);
  const common::Philox4x32 out =
      common::Philox4x32_7({{counter, partition, static_cast<uint32_t>(step), worker}},
                           {{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}});
  const uint32_t word = out.v[(e / 16) % 4];
  const uint32_t draw = (e / 64) % 2 == 0 ? (word & 0xffff) : (word >> 16);
  const float limit = clip < scaler ? clip : scaler;
  float a = std::fabs(g);
  if (!(a < limit)) a = limit;
  const float scale = 65536.0f / scaler;
  const volatile float x = a * scale;  // volatile: rounded to float before the conversion
  const uint32_t threshold = static_cast<uint32_t>(std::nearbyint(x));
  if (draw >= threshold) return 0;
  return std::signbit(g) ? -1 : 1;
}

// Unpacks a TERNARY_2BIT payload (no validation).
inline std::vector<int> UnpackCodes(const std::vector<uint8_t>& bytes, size_t n) {
  std::vector<int> codes(n);
  for (size_t k = 0; k < n; ++k) {
    const int c = (bytes[k / 4] >> (2 * (k % 4))) & 3;
    codes[k] = c == 1 ? 1 : (c == 2 ? -1 : (c == 0 ? 0 : 99));
  }
  return codes;
}

}  // namespace ternps::testing

#endif  // TERNPS_TESTS_COMMON_CODEC_REFERENCE_H_
