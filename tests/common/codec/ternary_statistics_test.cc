// Statistical properties of stochastic ternarization, with bounds that cannot flake:
// inputs and keys are fixed (the test is deterministic), and every bound is a non-asymptotic
// concentration inequality set at failure probability 1e-12 for a correct codec, so it would
// also hold for any other seed.
#include <cmath>
#include <random>

#include "common/codec/ternary.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

constexpr double kLogInvDelta = 28.3;  // ln(2 / 1e-12)

// Bernstein: for T i.i.d. X in [mu - b, mu + b] with variance v, |mean - mu| < t with
// probability >= 1 - 1e-12 where T t^2 = L (2 v + 2 b t / 3).
double BernsteinBound(double variance, double range, double trials) {
  const double a = trials, b = 2.0 * kLogInvDelta * range / 3.0, c = 2.0 * kLogInvDelta * variance;
  return (b + std::sqrt(b * b + 4.0 * a * c)) / (2.0 * a);
}

struct Trials {
  std::vector<double> mean;    // per element: mean of s * code over trials
  std::vector<double> second;  // per element: mean of (s * code - a)^2
  float scaler = 0, clip = 0;
};

// T encodings of the same g with independent streams (different steps).
Trials Encode(const std::vector<float>& g, float clip_sigmas, int trials, uint32_t worker) {
  Trials t;
  const PartitionStats st = *ComputeStats(g);
  t.clip = ClipThreshold(st, clip_sigmas);
  t.scaler = LocalScaler(st, clip_sigmas);
  t.mean.assign(g.size(), 0.0);
  t.second.assign(g.size(), 0.0);
  std::vector<uint8_t> packed(TernaryBytes(g.size()));
  std::vector<float> out(g.size());
  for (int i = 0; i < trials; ++i) {
    EXPECT_TRUE(Ternarize(g, t.clip, t.scaler,
                          {.seed = 2024, .worker = worker, .step = static_cast<uint64_t>(i)},
                          absl::MakeSpan(packed))
                    .ok());
    std::fill(out.begin(), out.end(), 0.0f);
    EXPECT_TRUE(DecodeTernaryAdd(packed, t.scaler, absl::MakeSpan(out)).ok());
    for (size_t k = 0; k < g.size(); ++k) {
      const double a = std::copysign(std::min<double>(std::fabs(g[k]), t.clip), g[k]);
      t.mean[k] += out[k] / trials;
      t.second[k] += (out[k] - a) * (out[k] - a) / trials;
    }
  }
  return t;
}

std::vector<float> Gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> g(n);
  for (float& x : g) x = normal(rng);
  return g;
}

TEST(TernaryStatisticsTest, UnbiasedPerElement) {
  // Every element's mean over T encodings is within the Bernstein bound of clip(g_k), plus the
  // 16-bit draw's rounding bias s * 2^-17 and float rounding.
  const std::vector<float> g = Gaussian(2048, 1);
  constexpr int kTrials = 3000;
  for (float clip_sigmas : {0.0f, kDefaultClipSigmas}) {
    const Trials t = Encode(g, clip_sigmas, kTrials, 0);
    const double s = t.scaler;
    double worst = 0;
    for (size_t k = 0; k < g.size(); ++k) {
      const double a = std::min<double>(std::fabs(g[k]), t.clip);
      const double variance = s * a - a * a;
      const double bound =
          BernsteinBound(variance, s, kTrials) + s * std::ldexp(1.0, -17) + 1e-6 * s;
      const double expected = std::copysign(a, g[k]);
      const double err = std::fabs(t.mean[k] - expected);
      worst = std::max(worst, err / bound);
      ASSERT_LE(err, bound) << "element " << k << " g " << g[k] << " clip_sigmas " << clip_sigmas;
    }
    // A codec that ignores its input (e.g. rounds deterministically) fails by a wide margin; a
    // correct one sits well inside: the worst element uses under 60% of its bound.
    EXPECT_LT(worst, 0.6) << "clip_sigmas " << clip_sigmas;
  }
}

TEST(TernaryStatisticsTest, VarianceIsSTimesAbsGMinusGSquared) {
  // Sum over elements of the empirical E[(s t - a)^2] vs the theory sum_k (s |a_k| - a_k^2).
  // Each of the K*T terms lies in [0, s^2]; Hoeffding at 1e-12 gives |diff| <= s^2 sqrt(L/2KT)
  // on the average, i.e. K times that on the sum.
  const std::vector<float> g = Gaussian(2048, 2);
  constexpr int kTrials = 2000;
  const Trials t = Encode(g, kDefaultClipSigmas, kTrials, 0);
  const double s = t.scaler;
  double empirical = 0, theory = 0;
  for (size_t k = 0; k < g.size(); ++k) {
    const double a = std::min<double>(std::fabs(g[k]), t.clip);
    empirical += t.second[k];
    theory += s * a - a * a;
  }
  const double k = static_cast<double>(g.size());
  const double bound = k * s * s * std::sqrt(kLogInvDelta / (2.0 * k * kTrials));
  EXPECT_NEAR(empirical, theory, bound);
  EXPECT_GT(theory, 20 * bound) << "the test must be able to tell a zero-variance codec apart";
}

TEST(TernaryStatisticsTest, WorkersHaveIndependentStreams) {
  // The rounding noise of two workers on the same input is uncorrelated: the averaged second
  // moment of (w0 + w1)/2 - a is half the single-worker one. Correlated rounding (same stream
  // for all workers) would keep it at the single-worker value.
  const std::vector<float> g = Gaussian(2048, 3);
  constexpr int kTrials = 1000;
  const PartitionStats st = *ComputeStats(g);
  const float clip = ClipThreshold(st, kDefaultClipSigmas), s = LocalScaler(st, kDefaultClipSigmas);
  std::vector<uint8_t> p0(TernaryBytes(g.size())), p1(TernaryBytes(g.size()));
  double pair = 0, single = 0;
  for (int i = 0; i < kTrials; ++i) {
    const uint64_t step = static_cast<uint64_t>(i);
    ASSERT_TRUE(
        Ternarize(g, clip, s, {.seed = 1, .worker = 0, .step = step}, absl::MakeSpan(p0)).ok());
    ASSERT_TRUE(
        Ternarize(g, clip, s, {.seed = 1, .worker = 1, .step = step}, absl::MakeSpan(p1)).ok());
    std::vector<float> d0(g.size(), 0.0f), d1(g.size(), 0.0f);
    ASSERT_TRUE(DecodeTernaryAdd(p0, s, absl::MakeSpan(d0)).ok());
    ASSERT_TRUE(DecodeTernaryAdd(p1, s, absl::MakeSpan(d1)).ok());
    for (size_t k = 0; k < g.size(); ++k) {
      const double a = std::copysign(std::min<double>(std::fabs(g[k]), clip), g[k]);
      pair += std::pow((d0[k] + d1[k]) / 2.0 - a, 2);
      single += std::pow(d0[k] - a, 2);
    }
  }
  // Terms of `pair` lie in [0, s^2]; Hoeffding at 1e-12 on K*T terms bounds each average's error
  // by s^2 sqrt(L / 2KT) ~ 0.0026 s^2, against an expected single-worker average of ~0.16 s^2.
  const double terms = static_cast<double>(g.size()) * kTrials;
  const double slack = s * s * std::sqrt(kLogInvDelta / (2.0 * terms)) * terms;
  EXPECT_NEAR(pair, single / 2.0, 2 * slack);
}

}  // namespace
}  // namespace ternps::common
