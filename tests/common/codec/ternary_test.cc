// Functional tests of the codec: the encoder against the naive reference, splits, round trips of
// every encoding at the edge sizes, clipping, scaler sharing and re-ternarization.
#include "common/codec/ternary.h"

#include <cmath>
#include <limits>
#include <random>

#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "gtest/gtest.h"
#include "tests/common/codec/reference.h"

namespace ternps::common {
namespace {

using testing::NaiveCode;
using testing::UnpackCodes;

constexpr size_t kSizes[] = {0, 1, 3, 4, 5, 127, 128, 129, 1000, (1u << 20) + 3};

std::vector<float> Gaussian(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> g(n);
  for (float& x : g) x = normal(rng);
  return g;
}

TEST(TernaryTest, EncoderMatchesNaiveReferenceAtEverySize) {
  for (size_t n : kSizes) {
    const std::vector<float> g = Gaussian(n, n + 1);
    const TernaryKey key{.seed = 0x0123456789abcdefull, .worker = 3, .step = 41, .partition = 9};
    std::vector<uint8_t> packed(TernaryBytes(n), 0xee);
    absl::StatusOr<float> s = EncodeTernary(g, kDefaultClipSigmas, key, absl::MakeSpan(packed));
    ASSERT_TRUE(s.ok()) << s.status();
    absl::StatusOr<PartitionStats> stats = ComputeStats(g);
    ASSERT_TRUE(stats.ok());
    const float clip = ClipThreshold(*stats, kDefaultClipSigmas);
    EXPECT_EQ(*s, LocalScaler(*stats, kDefaultClipSigmas));
    const std::vector<int> codes = UnpackCodes(packed, n);
    size_t mismatches = 0;
    for (size_t k = 0; k < n; ++k) {
      mismatches +=
          codes[k] != NaiveCode(g[k], k, clip, *s, key.seed, key.worker, key.step, key.partition);
    }
    EXPECT_EQ(mismatches, 0u) << "n = " << n;
    if (n % 4 != 0) {
      EXPECT_EQ(packed.back() >> (2 * (n % 4)), 0) << "padding bits, n = " << n;
    }
  }
}

TEST(TernaryTest, AnySplitGivesTheSameCodes) {
  const size_t n = 10'000;
  const std::vector<float> g = Gaussian(n, 5);
  const TernaryKey key{.seed = 99, .worker = 1, .step = 2, .partition = 3};
  std::vector<uint8_t> whole(TernaryBytes(n));
  ASSERT_TRUE(Ternarize(g, 2.0f, 3.0f, key, absl::MakeSpan(whole)).ok());
  std::mt19937 rng(1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> pieces(TernaryBytes(n));
    size_t begin = 0;
    while (begin < n) {
      size_t len = std::min(n - begin, (static_cast<size_t>(rng() % 700) + 1) * 4);
      ASSERT_TRUE(Ternarize(absl::MakeConstSpan(g.data() + begin, len), 2.0f, 3.0f, key,
                            absl::MakeSpan(pieces.data() + begin / 4, TernaryBytes(len)), begin)
                      .ok());
      begin += len;
    }
    EXPECT_EQ(pieces, whole) << "trial " << trial;
  }
}

TEST(TernaryTest, TernaryRoundTripGivesScaledSigns) {
  for (size_t n : kSizes) {
    std::vector<float> g = Gaussian(n, 77 + n);
    std::vector<uint8_t> packed(TernaryBytes(n));
    const TernaryKey key{.seed = 5, .worker = 0, .step = 1, .partition = 0};
    absl::StatusOr<float> s = EncodeTernary(g, 0.0f, key, absl::MakeSpan(packed));  // no clip
    ASSERT_TRUE(s.ok());
    std::vector<float> out(n, 0.0f);
    ASSERT_TRUE(DecodeTernaryAdd(packed, *s, absl::MakeSpan(out)).ok());
    for (size_t k = 0; k < n; ++k) {
      ASSERT_TRUE(out[k] == 0.0f || out[k] == *s || out[k] == -*s) << k;
      if (out[k] != 0.0f) {
        ASSERT_EQ(std::signbit(out[k]), std::signbit(g[k])) << k;
      }
      if (std::fabs(g[k]) == *s) {
        ASSERT_EQ(std::fabs(out[k]), *s) << "p = 1 must be certain";
      }
    }
    // Decode-accumulate adds: decoding twice doubles.
    std::vector<float> twice = out;
    ASSERT_TRUE(DecodeTernaryAdd(packed, *s, absl::MakeSpan(twice)).ok());
    for (size_t k = 0; k < n; ++k) ASSERT_EQ(twice[k], 2 * out[k]);
  }
}

TEST(TernaryTest, ZeroPartitionHasZeroScalerAndCodes) {
  std::vector<float> g(1000, 0.0f);
  g[17] = -0.0f;
  std::vector<uint8_t> packed(TernaryBytes(g.size()), 0xff);
  absl::StatusOr<float> s = EncodeTernary(g, kDefaultClipSigmas, {}, absl::MakeSpan(packed));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, 0.0f);
  for (uint8_t b : packed) ASSERT_EQ(b, 0);
}

TEST(TernaryTest, TinyScalerEncodesAsZeros) {
  // Below kMinScaler, 65536 / s would overflow to infinity (and 0 * inf is NaN): such partitions
  // are sent as all zeros on every ISA instead of as garbage codes.
  const std::vector<float> g = {1e-36f, -1e-36f, 0.0f, 5e-37f, 1e-36f};
  for (Isa isa : SupportedIsas()) {
    std::vector<uint8_t> packed(TernaryBytes(g.size()), 0xff);
    ASSERT_TRUE(Ternarize(g, std::numeric_limits<float>::infinity(), 1e-36f, {},
                          absl::MakeSpan(packed), 0, isa)
                    .ok());
    for (uint8_t b : packed) EXPECT_EQ(b, 0) << IsaName(isa);
  }
  // Just above it, the codes are live again.
  const std::vector<float> h(64, 0x1p-99f);
  std::vector<uint8_t> packed(TernaryBytes(h.size()));
  ASSERT_TRUE(
      Ternarize(h, std::numeric_limits<float>::infinity(), 0x1p-99f, {}, absl::MakeSpan(packed))
          .ok());
  for (uint8_t b : packed) EXPECT_EQ(b, 0x55) << "|g| == s must give +1 with certainty";
}

TEST(TernaryTest, NonFiniteGradientIsRejected) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> g = Gaussian(300, 1);
    g[200] = bad;
    std::vector<uint8_t> packed(TernaryBytes(g.size()));
    absl::StatusOr<float> s = EncodeTernary(g, kDefaultClipSigmas, {}, absl::MakeSpan(packed));
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(TernaryTest, ClippingCountMatchesGaussianTailAndClippedValuesAreCertain) {
  // n = 2^20 N(0,1) values: P(|g| > 2.5) = 0.0124193; the count is Binomial with sd ~ 111.6. The
  // bound 6 sd (670) covers sigma's own estimation error (~0.07% -> ~16 elements).
  const size_t n = 1u << 20;
  const std::vector<float> g = Gaussian(n, 2017);
  absl::StatusOr<PartitionStats> stats = ComputeStats(g);
  ASSERT_TRUE(stats.ok());
  EXPECT_NEAR(stats->sigma, 1.0, 0.01);
  const float clip = ClipThreshold(*stats, 2.5f);
  EXPECT_EQ(clip, 2.5f * stats->sigma);
  const float s = LocalScaler(*stats, 2.5f);
  EXPECT_EQ(s, clip) << "max |g| of 1M Gaussians is far above 2.5 sigma";
  size_t clipped = 0;
  for (float x : g) clipped += std::fabs(x) > clip;
  const double expected = 0.0124193 * n;
  EXPECT_NEAR(static_cast<double>(clipped), expected, 670.0);

  std::vector<uint8_t> packed(TernaryBytes(n));
  ASSERT_TRUE(Ternarize(g, clip, s, {.seed = 3}, absl::MakeSpan(packed)).ok());
  const std::vector<int> codes = UnpackCodes(packed, n);
  for (size_t k = 0; k < n; ++k) {
    if (std::fabs(g[k]) >= clip) {
      ASSERT_EQ(codes[k], g[k] < 0 ? -1 : 1) << "clipped element " << k << " must be certain";
    }
  }
  // Without clipping, the scaler is the plain max.
  EXPECT_EQ(LocalScaler(*stats, 0.0f), stats->max_abs);
  EXPECT_TRUE(std::isinf(ClipThreshold(*stats, 0.0f)));
}

TEST(TernaryTest, MaxScalerIsTheSharedScaler) {
  const std::vector<float> scalers = {0.5f, 2.0f, 0.0f, 1.5f};
  absl::StatusOr<float> s = MaxScaler(scalers);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, 2.0f);
  EXPECT_FALSE(MaxScaler({}).ok());
  const std::vector<float> bad = {1.0f, -1.0f};
  EXPECT_EQ(MaxScaler(bad).status().message(), "scalers[1]: negative (-1)");
  const std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN()};
  EXPECT_EQ(MaxScaler(nan).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TernaryTest, SharedScalerMakesTheServerSumExact) {
  // Four workers encode with the shared scaler; the integer sum of their codes, sent as INT_SUM
  // and decoded, equals the mean of their decoded pushes exactly (up to one float rounding).
  constexpr int kWorkers = 4;
  const size_t n = 5000;
  std::vector<std::vector<float>> grads;
  std::vector<float> locals;
  for (int w = 0; w < kWorkers; ++w) {
    grads.push_back(Gaussian(n, 100 + w, 1.0f + w));
    locals.push_back(LocalScaler(*ComputeStats(grads.back()), kDefaultClipSigmas));
  }
  const float shared = *MaxScaler(locals);
  std::vector<int16_t> sums(n, 0);
  std::vector<double> mean(n, 0.0);
  for (int w = 0; w < kWorkers; ++w) {
    const PartitionStats st = *ComputeStats(grads[w]);
    std::vector<uint8_t> packed(TernaryBytes(n));
    ASSERT_TRUE(Ternarize(grads[w], ClipThreshold(st, kDefaultClipSigmas), shared,
                          {.seed = 8, .worker = static_cast<uint32_t>(w), .step = 0},
                          absl::MakeSpan(packed))
                    .ok());
    ASSERT_TRUE(AddTernaryCodes(packed, absl::MakeSpan(sums)).ok());
    std::vector<float> decoded(n, 0.0f);
    ASSERT_TRUE(DecodeTernaryAdd(packed, shared, absl::MakeSpan(decoded)).ok());
    for (size_t k = 0; k < n; ++k) mean[k] += decoded[k] / kWorkers;
  }
  std::vector<uint8_t> wire(IntSumBytes(n, kWorkers));
  ASSERT_EQ(wire.size(), n / 2) << "N = 4 travels in 4 bits";
  ASSERT_TRUE(EncodeIntSum(sums, kWorkers, absl::MakeSpan(wire)).ok());
  std::vector<float> avg(n, 0.0f);
  ASSERT_TRUE(DecodeIntSumAdd(wire, kWorkers, shared, absl::MakeSpan(avg)).ok());
  for (size_t k = 0; k < n; ++k) {
    ASSERT_EQ(avg[k], static_cast<float>(sums[k]) * (shared / kWorkers));
    ASSERT_NEAR(avg[k], mean[k], 1e-6 * shared) << k;
  }
}

TEST(TernaryTest, ReternarizedAverageIsUnbiasedTernary) {
  // The no-sharing downlink: the shard re-ternarizes its float average with no clipping and its
  // own stream; the result takes values {0, +-max|avg|} with the signs of the average.
  const std::vector<float> avg = Gaussian(4096, 11, 0.01f);
  std::vector<uint8_t> packed(TernaryBytes(avg.size()));
  absl::StatusOr<float> s =
      EncodeTernary(avg, 0.0f, {.seed = 1, .worker = 0xffffffffu, .step = 3, .partition = 2},
                    absl::MakeSpan(packed));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, ComputeStats(avg)->max_abs);
  std::vector<float> out(avg.size(), 0.0f);
  ASSERT_TRUE(DecodeTernaryAdd(packed, *s, absl::MakeSpan(out)).ok());
  for (size_t k = 0; k < avg.size(); ++k) {
    if (out[k] != 0.0f) {
      ASSERT_EQ(std::signbit(out[k]), std::signbit(avg[k]));
    }
  }
}

TEST(IntSumTest, BitsFollowCeilLog2Of2NPlus1) {
  EXPECT_EQ(IntSumBits(1), 2);
  EXPECT_EQ(IntSumBits(2), 3);
  EXPECT_EQ(IntSumBits(3), 3);
  EXPECT_EQ(IntSumBits(4), 4);
  EXPECT_EQ(IntSumBits(7), 4);
  EXPECT_EQ(IntSumBits(8), 5);
  EXPECT_EQ(IntSumBits(15), 5);
  EXPECT_EQ(IntSumBits(16), 6);
  EXPECT_EQ(IntSumBits(32767), 16);
  EXPECT_EQ(IntSumBits(0), 0);
  EXPECT_EQ(IntSumBits(32768), 0);
}

TEST(IntSumTest, RoundTripAtEverySizeAndWidth) {
  std::mt19937_64 rng(3);
  for (int contributors : {1, 2, 3, 4, 7, 8, 16, 100, 1000, 32767}) {
    for (size_t n : kSizes) {
      std::uniform_int_distribution<int> dist(-contributors, contributors);
      std::vector<int16_t> sums(n);
      for (int16_t& s : sums) s = static_cast<int16_t>(dist(rng));
      if (n > 0) sums[0] = static_cast<int16_t>(-contributors);
      if (n > 1) sums[n - 1] = static_cast<int16_t>(contributors);
      std::vector<uint8_t> wire(IntSumBytes(n, contributors));
      ASSERT_EQ(wire.size(), (n * IntSumBits(contributors) + 7) / 8);
      ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(wire)).ok());
      const float scaler = 0.75f;
      std::vector<float> out(n, 1.0f);
      ASSERT_TRUE(DecodeIntSumAdd(wire, contributors, scaler, absl::MakeSpan(out)).ok());
      for (size_t k = 0; k < n; ++k) {
        ASSERT_EQ(out[k], 1.0f + static_cast<float>(sums[k]) * (scaler / contributors))
            << "N " << contributors << " n " << n << " k " << k;
      }
    }
  }
}

TEST(IntSumTest, EncodeRejectsOutOfRangeSums) {
  std::vector<int16_t> sums = {0, 5, 0};
  std::vector<uint8_t> wire(IntSumBytes(3, 4));
  absl::Status st = EncodeIntSum(sums, 4, absl::MakeSpan(wire));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "sums[1]: 5 is outside [-4, 4]");
}

TEST(Fp32Test, RoundTripAtEverySize) {
  for (size_t n : kSizes) {
    const std::vector<float> g = Gaussian(n, n);
    std::vector<uint8_t> wire(Fp32Bytes(n));
    ASSERT_TRUE(EncodeFp32(g, absl::MakeSpan(wire)).ok());
    std::vector<float> out(n, 0.0f);
    ASSERT_TRUE(DecodeFp32(wire, absl::MakeSpan(out)).ok());
    EXPECT_EQ(out, g);
    ASSERT_TRUE(DecodeFp32Add(wire, absl::MakeSpan(out)).ok());
    for (size_t k = 0; k < n; ++k) ASSERT_EQ(out[k], 2 * g[k]);
  }
}

}  // namespace
}  // namespace ternps::common
