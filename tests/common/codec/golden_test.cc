// Every CPU kernel set reproduces tests/data/codec_golden.txt bit for bit.
#include <cstring>
#include <string>

#include "common/codec/int_sum.h"
#include "common/codec/isa.h"
#include "common/codec/ternary.h"
#include "gtest/gtest.h"
#include "tests/common/codec/golden_file.h"
#include "tests/common/codec/reference.h"

namespace ternps::testing {
namespace {

using common::Isa;

std::vector<GoldenCase> LoadCases() {
  absl::StatusOr<std::vector<GoldenCase>> cases =
      ReadGoldenFile(std::string(TERNPS_TEST_DATA_DIR) + "/codec_golden.txt");
  EXPECT_TRUE(cases.ok()) << cases.status();
  return cases.ok() ? *cases : std::vector<GoldenCase>{};
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(GoldenTest, FileHasBothEncodings) {
  int ternary = 0, int_sum = 0;
  for (const GoldenCase& c : LoadCases()) {
    ternary += c.at("encoding") == "TERNARY_2BIT";
    int_sum += c.at("encoding") == "INT_SUM";
  }
  EXPECT_GE(ternary, 5);
  EXPECT_GE(int_sum, 3);
}

TEST(GoldenTest, TernaryCasesOnEveryIsa) {
  for (const GoldenCase& c : LoadCases()) {
    if (c.at("encoding") != "TERNARY_2BIT") continue;
    const std::vector<float> input = HexToFloats(c.at("input"));
    ASSERT_EQ(input.size(), std::stoul(c.at("elements"))) << c.at("case");
    const common::TernaryKey key{.seed = std::stoull(c.at("seed")),
                                 .worker = static_cast<uint32_t>(std::stoul(c.at("worker"))),
                                 .step = std::stoull(c.at("step")),
                                 .partition = static_cast<uint32_t>(std::stoul(c.at("partition")))};
    const float clip_sigmas = HexToFloats(c.at("clip_sigmas"))[0];
    const float scaler = HexToFloats(c.at("scaler"))[0];
    const std::vector<uint8_t> expected = HexToBytes(c.at("bytes"));
    for (Isa isa : common::SupportedIsas()) {
      SCOPED_TRACE(c.at("case") + " on " + std::string(common::IsaName(isa)));
      const common::PartitionStats st = *common::ComputeStats(input, isa);
      EXPECT_EQ(Bits(st.sigma), Bits(HexToFloats(c.at("sigma"))[0]));
      EXPECT_EQ(Bits(st.max_abs), Bits(HexToFloats(c.at("max_abs"))[0]));
      const float clip = common::ClipThreshold(st, clip_sigmas);
      EXPECT_EQ(Bits(clip), Bits(HexToFloats(c.at("clip"))[0]));
      std::vector<uint8_t> bytes(common::TernaryBytes(input.size()));
      ASSERT_TRUE(common::Ternarize(input, clip, scaler, key, absl::MakeSpan(bytes), 0, isa).ok());
      EXPECT_EQ(BytesToHex(bytes), c.at("bytes"));
      std::vector<float> decoded(input.size(), 0.0f);
      ASSERT_TRUE(common::DecodeTernaryAdd(expected, scaler, absl::MakeSpan(decoded), isa).ok());
      EXPECT_EQ(FloatsToHex(decoded), c.at("decoded"));
    }
    // And the naive, element-at-a-time reference written from the spec agrees.
    const std::vector<int> codes = UnpackCodes(expected, input.size());
    const float clip = HexToFloats(c.at("clip"))[0];
    for (size_t k = 0; k < input.size(); ++k) {
      EXPECT_EQ(codes[k],
                NaiveCode(input[k], k, clip, scaler, key.seed, key.worker, key.step, key.partition))
          << c.at("case") << " element " << k;
    }
  }
}

TEST(GoldenTest, IntSumCasesOnEveryIsa) {
  for (const GoldenCase& c : LoadCases()) {
    if (c.at("encoding") != "INT_SUM") continue;
    const std::vector<int16_t> sums = TextToInts(c.at("sums"));
    const int contributors = std::stoi(c.at("contributors"));
    const float scaler = HexToFloats(c.at("scaler"))[0];
    std::vector<uint8_t> bytes(common::IntSumBytes(sums.size(), contributors));
    ASSERT_TRUE(common::EncodeIntSum(sums, contributors, absl::MakeSpan(bytes)).ok());
    EXPECT_EQ(BytesToHex(bytes), c.at("bytes")) << c.at("case");
    for (Isa isa : common::SupportedIsas()) {
      std::vector<float> decoded(sums.size(), 0.0f);
      ASSERT_TRUE(common::DecodeIntSumAdd(HexToBytes(c.at("bytes")), contributors, scaler,
                                          absl::MakeSpan(decoded), isa)
                      .ok());
      EXPECT_EQ(FloatsToHex(decoded), c.at("decoded"))
          << c.at("case") << " " << common::IsaName(isa);
    }
  }
}

TEST(GoldenTest, IntSumRadixCasesOnEveryIsa) {
  int cases = 0;
  for (const GoldenCase& c : LoadCases()) {
    if (c.at("encoding") != "INT_SUM_RADIX") continue;
    ++cases;
    const std::vector<int16_t> sums = TextToInts(c.at("sums"));
    const int contributors = std::stoi(c.at("contributors"));
    const float scaler = HexToFloats(c.at("scaler"))[0];
    std::vector<uint8_t> bytes(common::IntSumRadixBytes(sums.size(), contributors));
    ASSERT_TRUE(common::EncodeIntSumRadix(sums, contributors, absl::MakeSpan(bytes)).ok());
    EXPECT_EQ(BytesToHex(bytes), c.at("bytes")) << c.at("case");
    for (Isa isa : common::SupportedIsas()) {
      std::vector<float> decoded(sums.size(), 0.0f);
      ASSERT_TRUE(common::DecodeIntSumRadixAdd(HexToBytes(c.at("bytes")), contributors, scaler,
                                               absl::MakeSpan(decoded), isa)
                      .ok());
      EXPECT_EQ(FloatsToHex(decoded), c.at("decoded"))
          << c.at("case") << " " << common::IsaName(isa);
    }
  }
  EXPECT_GE(cases, 3);
}

}  // namespace
}  // namespace ternps::testing
