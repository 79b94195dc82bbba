// Every kernel set (AVX2, AVX-512 where this CPU has them) gives bit-identical results to the
// scalar reference on random inputs, at sizes that exercise heads, full blocks and tails.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>

#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/isa.h"
#include "common/codec/ternary.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

std::vector<Isa> SimdIsas() {
  std::vector<Isa> isas;
  for (Isa isa : SupportedIsas()) {
    if (isa != Isa::kScalar) isas.push_back(isa);
  }
  return isas;
}

std::vector<float> Input(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> special(0, 40);
  std::vector<float> g(n);
  for (float& x : g) {
    switch (special(rng)) {
      case 0:
        x = 0.0f;
        break;
      case 1:
        x = -0.0f;
        break;
      case 2:
        x = std::numeric_limits<float>::denorm_min();
        break;
      case 3:
        x = 1e30f;
        break;  // beyond any clip and scaler
      default:
        x = normal(rng) * std::ldexp(1.0f, special(rng) - 20);
    }
  }
  return g;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(SimdTest, HasSomethingToCompare) {
  if (SimdIsas().empty()) GTEST_SKIP() << "this CPU has neither AVX2 nor AVX-512";
  EXPECT_EQ(ResolveIsa(Isa::kAuto), BestIsa());
}

TEST(SimdTest, StatsAndTernarizeAreBitIdentical) {
  std::mt19937_64 rng(42);
  const size_t sizes[] = {1, 3, 15, 16, 17, 127, 128, 129, 255, 256, 1000, 4099, (1u << 20) + 3};
  for (Isa isa : SimdIsas()) {
    for (size_t n : sizes) {
      for (int variant = 0; variant < 3; ++variant) {
        const std::vector<float> g = Input(n, rng);
        const PartitionStats ref = *ComputeStats(g, Isa::kScalar);
        const PartitionStats got = *ComputeStats(g, isa);
        ASSERT_EQ(Bits(got.sigma), Bits(ref.sigma)) << IsaName(isa) << " n " << n;
        ASSERT_EQ(Bits(got.max_abs), Bits(ref.max_abs)) << IsaName(isa) << " n " << n;
        ASSERT_EQ(got.mean, ref.mean);
        // Variant 0: clipped with the local scaler; 1: no clip, scaler 4x the max (sharing);
        // 2: scaler below the max (every |g| >= s must give p = 1).
        const float clip =
            variant == 0 ? ClipThreshold(ref, 2.5f) : std::numeric_limits<float>::infinity();
        const float s = variant == 0   ? LocalScaler(ref, 2.5f)
                        : variant == 1 ? 4.0f * ref.max_abs
                                       : 0.25f * ref.max_abs;
        const TernaryKey key{.seed = rng(),
                             .worker = static_cast<uint32_t>(rng()),
                             .step = rng(),
                             .partition = static_cast<uint32_t>(rng())};
        // Start at a random multiple-of-4 element of the partition.
        const uint64_t first = (rng() % 1000) * 4;
        std::vector<uint8_t> a(TernaryBytes(n)), b(TernaryBytes(n), 0xff);
        ASSERT_TRUE(Ternarize(g, clip, s, key, absl::MakeSpan(a), first, Isa::kScalar).ok());
        ASSERT_TRUE(Ternarize(g, clip, s, key, absl::MakeSpan(b), first, isa).ok());
        ASSERT_EQ(a, b) << IsaName(isa) << " n " << n << " variant " << variant;
      }
    }
  }
}

TEST(SimdTest, DecodersAreBitIdentical) {
  std::mt19937_64 rng(7);
  const size_t sizes[] = {1, 5, 31, 32, 33, 100, 1000, 4097, (1u << 18) + 5};
  for (Isa isa : SimdIsas()) {
    for (size_t n : sizes) {
      std::vector<uint8_t> packed(TernaryBytes(n));
      for (size_t k = 0; k < n; ++k)
        packed[k / 4] |= static_cast<uint8_t>(rng() % 3) << (2 * (k % 4));
      const std::vector<float> base = Input(n, rng);
      std::vector<float> a = base, b = base;
      ASSERT_TRUE(DecodeTernaryAdd(packed, 0.37f, absl::MakeSpan(a), Isa::kScalar).ok());
      ASSERT_TRUE(DecodeTernaryAdd(packed, 0.37f, absl::MakeSpan(b), isa).ok());
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), 4 * n)) << IsaName(isa) << " n " << n;

      std::vector<int16_t> sa(n), sb(n);
      for (size_t k = 0; k < n; ++k) sa[k] = sb[k] = static_cast<int16_t>(rng() % 9) - 4;
      ASSERT_TRUE(AddTernaryCodes(packed, absl::MakeSpan(sa), Isa::kScalar).ok());
      ASSERT_TRUE(AddTernaryCodes(packed, absl::MakeSpan(sb), isa).ok());
      ASSERT_EQ(sa, sb) << IsaName(isa) << " n " << n;
      // Storing the codes equals adding them into zeros, on every ISA, whatever was there.
      std::vector<int16_t> zeros(n, 0), stored(n, 7777);
      ASSERT_TRUE(AddTernaryCodes(packed, absl::MakeSpan(zeros), Isa::kScalar).ok());
      StoreValidatedTernaryCodes(packed, absl::MakeSpan(stored), isa);
      ASSERT_EQ(zeros, stored) << IsaName(isa) << " n " << n;
      std::fill(stored.begin(), stored.end(), -7777);
      StoreValidatedTernaryCodes(packed, absl::MakeSpan(stored), Isa::kScalar);
      ASSERT_EQ(zeros, stored) << "scalar n " << n;

      for (int contributors : {1, 2, 4, 7, 8, 31, 200, 300, 32767}) {
        std::vector<int16_t> sums(n);
        for (int16_t& s : sums) {
          s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
        }
        std::vector<uint8_t> wire(IntSumBytes(n, contributors));
        ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(wire)).ok());
        std::vector<float> x = base, y = base;
        ASSERT_TRUE(
            DecodeIntSumAdd(wire, contributors, 1.25f, absl::MakeSpan(x), Isa::kScalar).ok());
        ASSERT_TRUE(DecodeIntSumAdd(wire, contributors, 1.25f, absl::MakeSpan(y), isa).ok());
        ASSERT_EQ(0, std::memcmp(x.data(), y.data(), 4 * n))
            << IsaName(isa) << " n " << n << " N " << contributors;
        // The writing decode gives the bits of the accumulating one into zeros, on every kernel
        // set, including scaler 0 (where -1 * 0 = -0.0 must come out as 0 + -0.0 = +0.0).
        for (const float scaler : {1.25f, 0.0f}) {
          std::vector<float> zeros(n, 0.0f), written(n, 7.0f);
          DecodeValidatedIntSumAdd(wire, contributors, scaler, absl::MakeSpan(zeros), Isa::kScalar);
          DecodeValidatedIntSum(wire, contributors, scaler, absl::MakeSpan(written), isa);
          ASSERT_EQ(0, std::memcmp(zeros.data(), written.data(), 4 * n))
              << IsaName(isa) << " n " << n << " N " << contributors << " scaler " << scaler;
        }
      }
    }
  }
}

// 4-bit INT_SUM fields summed in place from N ternary pushes (the shard's path at N = 4..7)
// equal the 16-bit sums' encoding, on every kernel set, with the pushes cut into runs at any
// byte (as gRPC slices arrive): element counts around the SIMD widths (256 and 128 elements a
// loop), odd ones (an unused last nibble, cleared by the caller), and at most N pushes.
TEST(SimdTest, FourBitSumsInPlaceEqualTheSixteenBitEncoding) {
  std::mt19937_64 rng(20261202);
  std::vector<Isa> isas = SimdIsas();
  isas.push_back(Isa::kScalar);
  for (Isa isa : isas) {
    for (size_t n : {1, 2, 3, 5, 127, 128, 255, 256, 257, 1000, 4097}) {
      for (int contributors = kNibbleSumMinOffset; contributors <= kNibbleSumMaxOffset;
           ++contributors) {
        const size_t bytes = IntSumBytes(n, contributors);
        std::vector<uint8_t> fields(bytes, 0xAB);  // the first push must not read these
        std::vector<int16_t> sums(n, 0);
        for (int pushes = 1; pushes <= contributors; ++pushes) {
          std::vector<uint8_t> packed(TernaryBytes(n));
          for (size_t k = 0; k < n; ++k)
            packed[k / 4] |= static_cast<uint8_t>(rng() % 3) << (2 * (k % 4));
          AddValidatedTernaryCodes(packed, absl::MakeSpan(sums), Isa::kScalar);
          // Two runs, cut at a random byte.
          const size_t cut = rng() % (packed.size() + 1);
          for (const auto& [begin, end] :
               {std::pair<size_t, size_t>{0, cut}, {cut, packed.size()}}) {
            const absl::Span<const uint8_t> run =
                absl::MakeConstSpan(packed).subspan(begin, end - begin);
            const absl::Span<uint8_t> out = absl::MakeSpan(fields).subspan(
                std::min(2 * begin, bytes), std::min(2 * end, bytes) - std::min(2 * begin, bytes));
            if (pushes == 1) {
              StoreValidatedTernaryNibbles(run, contributors, out, isa);
            } else {
              AddValidatedTernaryNibbles(run, out, isa);
            }
          }
          if (pushes == 1 && n % 2 == 1) fields.back() &= 0x0F;
        }
        std::vector<uint8_t> expected(bytes);
        ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(expected)).ok());
        ASSERT_EQ(fields, expected) << IsaName(isa) << " n " << n << " N " << contributors;
      }
    }
  }
}

// The FP32 kernels on every kernel set (scalar included) against plain per-element code: the
// finiteness check finds one NaN or infinity at any position (heads, unrolled blocks, tails),
// sums and quotients have the reference's bits, and the division reports overflow.
TEST(SimdTest, Fp32KernelsMatchThePlainLoops) {
  std::mt19937_64 rng(20261204);
  std::vector<Isa> isas = SimdIsas();
  isas.push_back(Isa::kScalar);
  const float kInf = std::numeric_limits<float>::infinity();
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  for (Isa isa : isas) {
    for (size_t n : {1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000}) {
      SCOPED_TRACE(testing::Message() << IsaName(isa) << " n " << n);
      const std::vector<float> values = Input(n, rng);
      std::vector<uint8_t> wire(Fp32Bytes(n));
      std::memcpy(wire.data(), values.data(), wire.size());
      ASSERT_TRUE(ValidateFp32(wire, n, 0, isa).ok());
      // Every position, and every kind of non-finite value (the largest finite value is not one).
      for (size_t k = 0; k < n; ++k) {
        for (const float bad : {kNaN, kInf, -kInf, -kNaN}) {
          std::vector<uint8_t> data = wire;
          std::memcpy(data.data() + 4 * k, &bad, 4);
          const absl::Status st = ValidateFp32(data, n, 0, isa);
          ASSERT_FALSE(st.ok()) << "element " << k;
          ASSERT_EQ(st.message(), "data: element " + std::to_string(k) + " is not finite");
        }
        std::vector<uint8_t> data = wire;
        const float big = std::numeric_limits<float>::max();
        std::memcpy(data.data() + 4 * k, &big, 4);
        ASSERT_TRUE(ValidateFp32(data, n, 0, isa).ok()) << "element " << k;
      }
      std::vector<float> base = Input(n, rng);
      std::vector<float> expected = base, got = base;
      for (size_t k = 0; k < n; ++k) expected[k] += values[k];
      AddValidatedFp32(wire, absl::MakeSpan(got), isa);
      ASSERT_EQ(0, std::memcmp(expected.data(), got.data(), 4 * n));
      for (const float divisor : {3.0f, 4.0f, 7.0f}) {
        std::vector<float> quotients = base, reference = base;
        for (float& v : reference) v /= divisor;
        ASSERT_TRUE(DivideFp32(absl::MakeSpan(quotients), divisor, isa));
        ASSERT_EQ(0, std::memcmp(reference.data(), quotients.data(), 4 * n)) << divisor;
      }
      // An overflowed sum (infinite) at the last position, then at the first.
      for (const size_t k : {n - 1, size_t{0}}) {
        std::vector<float> sums = base;
        sums[k] = kInf;
        ASSERT_FALSE(DivideFp32(absl::MakeSpan(sums), 2.0f, isa)) << "element " << k;
      }
    }
  }
}

}  // namespace
}  // namespace ternps::common
