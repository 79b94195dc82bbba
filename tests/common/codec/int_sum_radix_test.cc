// INT_SUM_RADIX: the layout against a plain reference written from the format's description, the
// exact 16-bit division the SIMD kernels use, round trips on every kernel set, the shard's
// packing from 4-bit fields, and malformed payloads.
#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/codec/int_sum.h"
#include "common/codec/isa.h"
#include "common/codec/kernels.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

// Sizes around whole blocks (32 m elements), the last block's word count and the decoder's
// 256-block chunks.
std::vector<size_t> Sizes(int digits) {
  const size_t block = 32 * static_cast<size_t>(digits);
  std::vector<size_t> sizes = {0, 1, 2, 3, 4, 5, 6, 7, 31, 32, 33};
  for (size_t k : {size_t{1}, size_t{2}, size_t{3}, size_t{257}}) {
    for (size_t d : {size_t{0}, size_t{1}, block - 1, block - static_cast<size_t>(digits),
                     block - static_cast<size_t>(digits) + 1}) {
      sizes.push_back((k - 1) * block + d);
      sizes.push_back(k * block + d);
    }
  }
  return sizes;
}

std::vector<int16_t> RandomSums(size_t n, int contributors, std::mt19937_64& rng) {
  std::vector<int16_t> sums(n);
  for (int16_t& s : sums) {
    s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
  }
  return sums;
}

// The format as the header states it, element by element.
std::vector<uint8_t> ReferenceEncode(const std::vector<int16_t>& sums, int contributors) {
  const int m = IntSumRadixDigits(contributors);
  const uint32_t radix = 2 * contributors + 1;
  const size_t n = sums.size(), per_block = 32 * static_cast<size_t>(m);
  std::vector<uint32_t> words((n + m - 1) / m, 0);
  for (size_t j = 0; j < n; ++j) {
    const size_t block = j / per_block, i = j % per_block;
    const size_t r = n - block * per_block;
    const size_t w = r >= per_block ? 32 : (r + m - 1) / m;
    uint32_t weight = 1;
    for (size_t d = 0; d < i / w; ++d) weight *= radix;
    words[block * 32 + i % w] += static_cast<uint32_t>(sums[j] + contributors) * weight;
  }
  std::vector<uint8_t> bytes;
  for (uint32_t x : words) {
    EXPECT_LT(x, 65536u);
    bytes.push_back(static_cast<uint8_t>(x));
    bytes.push_back(static_cast<uint8_t>(x >> 8));
  }
  return bytes;
}

TEST(IntSumRadixTest, DigitsAndWhereTheyAreSmaller) {
  EXPECT_EQ(IntSumRadixDigits(1), 10);  // 3^10 = 59049
  EXPECT_EQ(IntSumRadixDigits(2), 6);   // 5^6 = 15625
  EXPECT_EQ(IntSumRadixDigits(4), 5);   // 9^5 = 59049
  EXPECT_EQ(IntSumRadixDigits(8), 3);   // 17^3 = 4913 < 65536 < 17^4
  EXPECT_EQ(IntSumRadixDigits(19), 3);  // 39^3 = 59319
  EXPECT_EQ(IntSumRadixDigits(0), 0);
  EXPECT_EQ(IntSumRadixDigits(20), 0);  // 41^3 > 65536: two digits never beat INT_SUM
  for (int n : {1, 2, 4, 16, 17, 18, 19}) EXPECT_TRUE(IntSumRadixSmaller(n)) << n;
  for (int n : {3, 5, 6, 7, 8, 15, 20, 32, 128}) EXPECT_FALSE(IntSumRadixSmaller(n)) << n;
  EXPECT_EQ(IntSumRadixBytes(0, 4), 0u);
  EXPECT_EQ(IntSumRadixBytes(1, 4), 2u);
  EXPECT_EQ(IntSumRadixBytes(1048576, 4), 419432u);  // 4-bit INT_SUM: 524288
  EXPECT_EQ(IntSumRadixBytes(10, 0), 0u);
}

// The SIMD kernels divide by R as ((x * M) >> 16) >> s: exact for every word of every N.
TEST(IntSumRadixTest, TheSixteenBitDivisionIsExactForEveryWord) {
  for (int contributors = 1; contributors <= kMaxIntSumRadixContributors; ++contributors) {
    const internal::RadixLayout layout = internal::MakeRadixLayout(contributors);
    ASSERT_GT(layout.digits, 0) << contributors;
    ASSERT_LT(layout.multiplier, 65536u);
    uint32_t limit = 1;
    for (int d = 0; d < layout.digits; ++d) limit *= layout.radix;
    ASSERT_EQ(layout.limit, limit);
    ASSERT_LE(limit, 65536u);
    ASSERT_GT(uint64_t{limit} * layout.radix, 65536u);
    for (uint32_t x = 0; x < limit; ++x) {
      ASSERT_EQ(((x * layout.multiplier) >> 16) >> layout.shift, x / layout.radix)
          << "N " << contributors << ", x " << x;
    }
  }
}

TEST(IntSumRadixTest, EncoderFollowsTheLayoutAndEveryKernelDecodesIt) {
  std::mt19937_64 rng(20261202);
  for (int contributors : {1, 2, 3, 4, 16, 19}) {
    for (size_t n : Sizes(IntSumRadixDigits(contributors))) {
      const std::vector<int16_t> sums = RandomSums(n, contributors, rng);
      std::vector<uint8_t> wire(IntSumRadixBytes(n, contributors), 0xAB);
      ASSERT_TRUE(EncodeIntSumRadix(sums, contributors, absl::MakeSpan(wire)).ok());
      ASSERT_EQ(wire, ReferenceEncode(sums, contributors)) << "N " << contributors << ", n " << n;
      const float scaler = 0.37f;
      const float scale = scaler / static_cast<float>(contributors);
      std::vector<float> base(n);
      for (size_t j = 0; j < n; ++j) base[j] = static_cast<float>(j % 13) - 6.5f;
      for (Isa isa : SupportedIsas()) {
        ASSERT_TRUE(ValidateIntSumRadix(wire, n, contributors, isa).ok());
        std::vector<float> stored(n, 99.0f), added = base;
        ASSERT_TRUE(
            DecodeIntSumRadixOnePass(wire, contributors, scaler, absl::MakeSpan(stored), 0, isa)
                .ok());
        ASSERT_TRUE(
            DecodeIntSumRadixAdd(wire, contributors, scaler, absl::MakeSpan(added), isa).ok());
        for (size_t j = 0; j < n; ++j) {
          const float v = static_cast<float>(sums[j]) * scale;
          ASSERT_EQ(std::bit_cast<uint32_t>(stored[j]), std::bit_cast<uint32_t>(0.0f + v))
              << IsaName(isa) << ", N " << contributors << ", n " << n << ", element " << j;
          ASSERT_EQ(std::bit_cast<uint32_t>(added[j]), std::bit_cast<uint32_t>(base[j] + v))
              << IsaName(isa) << ", N " << contributors << ", n " << n << ", element " << j;
        }
      }
    }
  }
}

TEST(IntSumRadixTest, EncoderRefusesOutOfRangeSumsAndWrongSizes) {
  std::vector<int16_t> sums(200, 0);
  sums[170] = 5;
  std::vector<uint8_t> out(IntSumRadixBytes(sums.size(), 4));
  absl::Status st = EncodeIntSumRadix(sums, 4, absl::MakeSpan(out));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "sums[170]: 5 is outside [-4, 4]");
  sums[170] = 0;
  out.pop_back();
  st = EncodeIntSumRadix(sums, 4, absl::MakeSpan(out));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "out: 79 bytes, expected 80 for 200 elements");
  EXPECT_EQ(EncodeIntSumRadix(sums, 0, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
}

// The shard builds N = 4 answers as 4-bit fields and packs them at completion.
TEST(IntSumRadixTest, PackingFourBitFieldsGivesTheEncodersBytes) {
  std::mt19937_64 rng(7);
  const int contributors = 4;
  for (size_t n : Sizes(IntSumRadixDigits(contributors))) {
    const std::vector<int16_t> sums = RandomSums(n, contributors, rng);
    std::vector<uint8_t> fields(IntSumBytes(n, contributors));
    ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(fields)).ok());
    std::vector<uint8_t> expected(IntSumRadixBytes(n, contributors));
    ASSERT_TRUE(EncodeIntSumRadix(sums, contributors, absl::MakeSpan(expected)).ok());
    for (Isa isa : SupportedIsas()) {
      std::vector<uint8_t> got(expected.size(), 0xCD);
      PackValidatedIntSumRadix(fields, n, contributors, absl::MakeSpan(got), isa);
      ASSERT_EQ(got, expected) << IsaName(isa) << ", n " << n;
    }
  }
}

TEST(IntSumRadixTest, MalformedPayloadsAreRefusedWithTheWord) {
  const int contributors = 4;    // 160 elements per block; 9^5 = 59049
  const size_t n = 2 * 160 + 7;  // two whole blocks and a last block of 2 words (7 elements)
  const std::vector<int16_t> zeros(n, 0);
  std::vector<uint8_t> good(IntSumRadixBytes(n, contributors));
  ASSERT_TRUE(EncodeIntSumRadix(zeros, contributors, absl::MakeSpan(good)).ok());
  struct Case {
    size_t word;
    uint32_t value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {0, 59049, "data: word 0 (from element 0) is 59049, not below 59049 (9^digits it carries)"},
      {45, 65535,
       "data: word 45 (from element 173) is 65535, not below 59049 (9^digits it carries)"},
      // Last block: word 0 carries elements 0, 2, 4, 6 (4 digits), word 1 elements 1, 3, 5.
      {64, 6561, "data: word 64 (from element 320) is 6561, not below 6561 (9^digits it carries)"},
      {65, 729, "data: word 65 (from element 321) is 729, not below 729 (9^digits it carries)"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bad = good;
    bad[2 * c.word] = static_cast<uint8_t>(c.value);
    bad[2 * c.word + 1] = static_cast<uint8_t>(c.value >> 8);
    for (Isa isa : SupportedIsas()) {
      absl::Status st = ValidateIntSumRadix(bad, n, contributors, isa);
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << IsaName(isa);
      EXPECT_EQ(st.message(), c.message) << IsaName(isa);
      std::vector<float> out(n, 1.0f);
      st = DecodeIntSumRadixAdd(bad, contributors, 1.0f, absl::MakeSpan(out), isa);
      EXPECT_EQ(st.message(), c.message) << IsaName(isa);
      EXPECT_EQ(out, std::vector<float>(n, 1.0f)) << "the checked decode writes nothing";
      st = DecodeIntSumRadixOnePass(bad, contributors, 1.0f, absl::MakeSpan(out), 1000, isa);
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << IsaName(isa);
      EXPECT_NE(st.message().find(
                    absl::StrCat("(from element ", 1000 + (c.word / 32) * 160 + c.word % 32)),
                std::string::npos)
          << st.message();
    }
    // One below the bound is a valid word.
    bad[2 * c.word] = static_cast<uint8_t>(c.value - 1);
    bad[2 * c.word + 1] = static_cast<uint8_t>((c.value - 1) >> 8);
    if (c.value <= 59049) {
      EXPECT_TRUE(ValidateIntSumRadix(bad, n, contributors).ok()) << c.word;
    }
  }
  std::vector<float> out(n);
  std::vector<uint8_t> short_payload(good.begin(), good.end() - 1);
  absl::Status st =
      DecodeIntSumRadixOnePass(short_payload, contributors, 1.0f, absl::MakeSpan(out));
  EXPECT_EQ(st.message(),
            "data: 131 bytes, expected 132 for 327 INT_SUM_RADIX elements of 5 per word "
            "(contributors 4)");
  st = DecodeIntSumRadixOnePass(good, 0, 1.0f, absl::MakeSpan(out));
  EXPECT_EQ(st.message(), "contributors: 0 is outside [1, 19] (INT_SUM_RADIX)");
  EXPECT_EQ(DecodeIntSumRadixOnePass(good, contributors, std::nanf(""), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ternps::common
