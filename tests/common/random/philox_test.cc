// Philox4x32-10 and -7 against the Random123 known-answer vectors (kat_vectors, "philox4x32 10"
// and "philox4x32 7" lines).
#include "common/random/philox.h"

#include "common/codec/ternary_element.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

struct Kat {
  Philox4x32 ctr;
  PhiloxKey key;
  Philox4x32 expected;
};

TEST(PhiloxTest, MatchesRandom123KnownAnswers) {
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, {{0, 0}}, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {{0xffffffff, 0xffffffff}},
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {{0xa4093822, 0x299f31d0}},
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& kat : kats) {
    const Philox4x32 out = Philox4x32_10(kat.ctr, kat.key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], kat.expected.v[i]) << "word " << i;
  }
  const Kat kats7[] = {
      {{{0, 0, 0, 0}}, {{0, 0}}, {{0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {{0xffffffff, 0xffffffff}},
       {{0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {{0xa4093822, 0x299f31d0}},
       {{0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}}},
  };
  for (const Kat& kat : kats7) {
    const Philox4x32 out = Philox4x32_7(kat.ctr, kat.key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], kat.expected.v[i]) << "word " << i;
  }
}

TEST(PhiloxTest, SixteenBitDrawsAreUniform) {
  // Chi-square over 256 bins of the top byte of 2^20 16-bit draws: 255 degrees of freedom,
  // mean 255, sd 22.6; the bound 400 is 6.4 sd above the mean (p < 1e-9). Deterministic inputs.
  constexpr int kBins = 256;
  int counts[kBins] = {};
  constexpr int kCalls = 1 << 17;  // 8 draws each
  for (uint32_t c = 0; c < kCalls; ++c) {
    const Philox4x32 out = Philox4x32_R<kTernaryPhiloxRounds>({{c, 7, 11, 3}}, {{0x1234, 0x5678}});
    for (uint32_t w : out.v) {
      ++counts[(w >> 8) & 0xff];
      ++counts[w >> 24];
    }
  }
  const double expected = 8.0 * kCalls / kBins;
  double chi2 = 0;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 400.0);
  EXPECT_GT(chi2, 140.0);  // 5 sd below: a suspiciously perfect fit means a broken generator
}

}  // namespace
}  // namespace ternps::common
