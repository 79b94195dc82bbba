// Prints tests/data/codec_golden.txt from the scalar reference. Run only when the wire format
// changes on purpose; golden_test.cc then pins every implementation to the new file.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "tests/common/codec/golden_file.h"

namespace ternps::testing {
namespace {

using common::Isa;

void TernaryCase(const char* name, const std::vector<float>& g, float clip_sigmas,
                 const common::TernaryKey& key, float scaler_factor) {
  const common::PartitionStats st = *common::ComputeStats(g, Isa::kScalar);
  const float clip = common::ClipThreshold(st, clip_sigmas);
  const float scaler = common::LocalScaler(st, clip_sigmas) * scaler_factor;
  std::vector<uint8_t> bytes(common::TernaryBytes(g.size()));
  if (!common::Ternarize(g, clip, scaler, key, absl::MakeSpan(bytes), 0, Isa::kScalar).ok()) {
    std::abort();
  }
  std::vector<float> decoded(g.size(), 0.0f);
  if (!common::DecodeTernaryAdd(bytes, scaler, absl::MakeSpan(decoded), Isa::kScalar).ok()) {
    std::abort();
  }
  std::printf("case: %s\nencoding: TERNARY_2BIT\nelements: %zu\n", name, g.size());
  std::printf("seed: %" PRIu64 "\nworker: %u\nstep: %" PRIu64 "\npartition: %u\n", key.seed,
              key.worker, key.step, key.partition);
  std::printf("clip_sigmas: %s\ninput: %s\n", FloatsToHex({clip_sigmas}).c_str(),
              FloatsToHex(g).c_str());
  std::printf("sigma: %s\nmax_abs: %s\nclip: %s\nscaler: %s\n", FloatsToHex({st.sigma}).c_str(),
              FloatsToHex({st.max_abs}).c_str(), FloatsToHex({clip}).c_str(),
              FloatsToHex({scaler}).c_str());
  std::printf("bytes: %s\ndecoded: %s\n\n", BytesToHex(bytes).c_str(),
              FloatsToHex(decoded).c_str());
}

void IntSumCase(const char* name, const std::vector<int16_t>& sums, int contributors,
                float scaler) {
  std::vector<uint8_t> bytes(common::IntSumBytes(sums.size(), contributors));
  if (!common::EncodeIntSum(sums, contributors, absl::MakeSpan(bytes)).ok()) std::abort();
  std::vector<float> decoded(sums.size(), 0.0f);
  if (!common::DecodeIntSumAdd(bytes, contributors, scaler, absl::MakeSpan(decoded), Isa::kScalar)
           .ok()) {
    std::abort();
  }
  std::printf("case: %s\nencoding: INT_SUM\nelements: %zu\ncontributors: %d\n", name, sums.size(),
              contributors);
  std::printf("sums: %s\nscaler: %s\nbytes: %s\ndecoded: %s\n\n", IntsToText(sums).c_str(),
              FloatsToHex({scaler}).c_str(), BytesToHex(bytes).c_str(),
              FloatsToHex(decoded).c_str());
}

void IntSumRadixCase(const char* name, const std::vector<int16_t>& sums, int contributors,
                     float scaler) {
  std::vector<uint8_t> bytes(common::IntSumRadixBytes(sums.size(), contributors));
  if (!common::EncodeIntSumRadix(sums, contributors, absl::MakeSpan(bytes)).ok()) std::abort();
  std::vector<float> decoded(sums.size(), 0.0f);
  if (!common::DecodeIntSumRadixAdd(bytes, contributors, scaler, absl::MakeSpan(decoded),
                                    Isa::kScalar)
           .ok()) {
    std::abort();
  }
  std::printf("case: %s\nencoding: INT_SUM_RADIX\nelements: %zu\ncontributors: %d\n", name,
              sums.size(), contributors);
  std::printf("sums: %s\nscaler: %s\nbytes: %s\ndecoded: %s\n\n", IntsToText(sums).c_str(),
              FloatsToHex({scaler}).c_str(), BytesToHex(bytes).c_str(),
              FloatsToHex(decoded).c_str());
}

// n sums cycling through [-N, N] with a stride coprime to 2N + 1, so every digit position of
// every word sees varied values.
std::vector<int16_t> CyclingSums(size_t n, int contributors) {
  std::vector<int16_t> sums(n);
  for (size_t j = 0; j < n; ++j) {
    sums[j] =
        static_cast<int16_t>(static_cast<int>((7 * j + 3) % (2 * contributors + 1)) - contributors);
  }
  return sums;
}

std::vector<float> Gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::vector<float> g(n);
  for (float& x : g) x = normal(rng);
  return g;
}

}  // namespace
}  // namespace ternps::testing

int main() {
  using ternps::testing::Gaussian;
  std::fputs(ternps::testing::kGoldenHeader, stdout);
  std::fputs("\n", stdout);
  ternps::testing::TernaryCase("one_element", {0.25f}, 2.5f, {1, 0, 0, 0}, 1.0f);
  ternps::testing::TernaryCase("five_elements_no_clip", {0.5f, -0.25f, 0.0f, -0.0f, 1.0f}, 0.0f,
                               {7, 1, 2, 3}, 1.0f);
  ternps::testing::TernaryCase("gaussian_37_clipped", Gaussian(37, 1), 2.5f,
                               {0x0123456789abcdefull, 3, 41, 9}, 1.0f);
  ternps::testing::TernaryCase("gaussian_300_shared_scaler", Gaussian(300, 2), 2.5f,
                               {42, 2, 100000, 17}, 1.5f);
  ternps::testing::TernaryCase("gaussian_131_high_step", Gaussian(131, 3), 2.5f,
                               {~0ull, 0xfffffffeu, (1ull << 33) + 5, 0xffffffffu}, 1.0f);
  ternps::testing::TernaryCase("zeros_8", std::vector<float>(8, 0.0f), 2.5f, {1, 1, 1, 1}, 1.0f);
  ternps::testing::IntSumCase("int_sum_n1", {-1, 0, 1, 1, -1}, 1, 0.5f);
  ternps::testing::IntSumCase("int_sum_n4", {-4, -3, -2, -1, 0, 1, 2, 3, 4}, 4, 0.125f);
  ternps::testing::IntSumCase("int_sum_n8", {-8, 8, 0, 5, -5, 7, -7}, 8, 1.0f);
  ternps::testing::IntSumCase("int_sum_n3", {-3, 3, 2, -2, 1, -1, 0, 3, 3, -3, 1}, 3, 0.3f);
  using ternps::testing::CyclingSums;
  // N = 4: one whole block of 160 elements and a last block of 13 (3 words).
  ternps::testing::IntSumRadixCase("int_sum_radix_n4", CyclingSums(173, 4), 4, 0.125f);
  ternps::testing::IntSumRadixCase("int_sum_radix_n2_short", CyclingSums(7, 2), 2, 0.5f);
  ternps::testing::IntSumRadixCase("int_sum_radix_n1", CyclingSums(331, 1), 1, 1.0f);
  return 0;
}
