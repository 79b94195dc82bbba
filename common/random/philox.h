// Philox4x32-R counter-based random number generators (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC'11): Philox4x32-10, Random123's default, and Philox4x32-7, the fewest
// rounds its authors found to pass TestU01's BigCrush, which the TernGrad codec uses for its draws
// (common/codec/ternary_element.h).
//
// A pure function of a 128-bit counter and a 64-bit key: any thread, SIMD lane or GPU thread can
// compute any draw without shared state, so every split of the work yields the same numbers.
// Both are checked against the Random123 known-answer vectors in
// tests/common/random/philox_test.cc.
//
//   ternps::common::Philox4x32 out = ternps::common::Philox4x32_10({ctr0, ctr1, ctr2, ctr3},
//                                                                    {key0, key1});
//
// Thread safety: pure functions, safe everywhere. Usable in CUDA device code (nvcc).
#ifndef TERNPS_COMMON_RANDOM_PHILOX_H_
#define TERNPS_COMMON_RANDOM_PHILOX_H_

#include <cstdint>

#if defined(__CUDACC__)
#define TERNPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TERNPS_HOST_DEVICE inline
#endif

namespace ternps::common {

struct Philox4x32 {
  uint32_t v[4];
};
struct PhiloxKey {
  uint32_t k[2];
};

inline constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
inline constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1
// Philox4x32 with `Rounds` rounds.
template <int Rounds>
TERNPS_HOST_DEVICE Philox4x32 Philox4x32_R(Philox4x32 ctr, PhiloxKey key) {
  uint32_t k0 = key.k[0];
  uint32_t k1 = key.k[1];
  for (int round = 0; round < Rounds; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return ctr;
}

TERNPS_HOST_DEVICE Philox4x32 Philox4x32_10(Philox4x32 ctr, PhiloxKey key) {
  return Philox4x32_R<10>(ctr, key);
}
TERNPS_HOST_DEVICE Philox4x32 Philox4x32_7(Philox4x32 ctr, PhiloxKey key) {
  return Philox4x32_R<7>(ctr, key);
}

}  // namespace ternps::common

#endif  // TERNPS_COMMON_RANDOM_PHILOX_H_
