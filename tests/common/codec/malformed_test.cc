// Every decoder rejects every malformed payload class of the wire format
// (proto/ternps/v1/ternps.proto) with INVALID_ARGUMENT naming the field, on every kernel set, and
// leaves its output buffer untouched (the one-pass decoders, which check as they write, excepted:
// they name the same fields). The one-pass decoders write the two-pass decoders' bits.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/isa.h"
#include "common/codec/ternary.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

using ::testing::HasSubstr;

constexpr float kSentinel = 12345.0f;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Runs `decode` into a sentinel-filled buffer of n elements; expects INVALID_ARGUMENT whose
// message contains `field`, and (if `untouched`) the buffer unchanged.
template <typename Decode>
void ExpectRejected(size_t n, const std::string& field, Decode decode, bool untouched = true) {
  std::vector<float> out(n, kSentinel);
  const absl::Status st = decode(absl::MakeSpan(out));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr(field));
  if (!untouched) return;
  for (size_t k = 0; k < n; ++k) ASSERT_EQ(out[k], kSentinel) << "output written at " << k;
}

std::vector<uint8_t> ValidTernary(size_t n) {
  std::vector<uint8_t> p(TernaryBytes(n));
  for (size_t k = 0; k < n; ++k) p[k / 4] |= static_cast<uint8_t>((k % 3)) << (2 * (k % 4));
  return p;
}

TEST(MalformedTest, TernaryPayloads) {
  for (Isa isa : SupportedIsas()) {
    for (size_t n : {1, 5, 1000, 4099}) {
      SCOPED_TRACE(testing::Message() << IsaName(isa) << " n " << n);
      const std::vector<uint8_t> good = ValidTernary(n);
      {
        std::vector<float> out(n, 0.0f);
        ASSERT_TRUE(DecodeTernaryAdd(good, 1.0f, absl::MakeSpan(out), isa).ok());
      }
      auto decode = [&](std::vector<uint8_t> data, float s) {
        return [=](absl::Span<float> out) { return DecodeTernaryAdd(data, s, out, isa); };
      };
      std::vector<uint8_t> longer = good;
      longer.push_back(0);
      ExpectRejected(n, "data: ", decode(longer, 1.0f));
      std::vector<uint8_t> shorter(good.begin(), good.end() - 1);
      ExpectRejected(n, "data: ", decode(shorter, 1.0f));
      // An 0b11 code at the first, a middle and the last element.
      for (size_t k : {size_t{0}, n / 2, n - 1}) {
        std::vector<uint8_t> bad = good;
        bad[k / 4] |= static_cast<uint8_t>(3u << (2 * (k % 4)));
        ExpectRejected(n, "element " + std::to_string(k) + " has the invalid code",
                       decode(bad, 1.0f));
      }
      if (n % 4 != 0) {
        std::vector<uint8_t> pad = good;
        pad.back() |= 0x80;  // the top code slot is past the last element
        ExpectRejected(n, "padding bits", decode(pad, 1.0f));
      }
      for (float s : {kNaN, kInf, -kInf, -1.0f}) ExpectRejected(n, "scaler: ", decode(good, s));

      // The shard's integer sum rejects the same payloads and leaves its sums alone.
      std::vector<uint8_t> bad = good;
      bad[0] |= 3;
      std::vector<int16_t> sums(n, 7);
      EXPECT_EQ(AddTernaryCodes(bad, absl::MakeSpan(sums), isa).code(),
                absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(AddTernaryCodes(shorter, absl::MakeSpan(sums), isa).code(),
                absl::StatusCode::kInvalidArgument);
      for (int16_t s : sums) ASSERT_EQ(s, 7);
    }
  }
}

TEST(MalformedTest, IntSumPayloads) {
  for (Isa isa : SupportedIsas()) {
    for (int contributors : {1, 4, 5, 8, 100, 200, 300}) {
      // 40000: the one-pass decoder's blocks (16384 elements) and a last partial one.
      for (size_t n : {1, 7, 1000, 4099, 40000}) {
        for (bool one_pass : {false, true}) {
          SCOPED_TRACE(testing::Message() << IsaName(isa) << " N " << contributors << " n " << n
                                          << (one_pass ? " one pass" : ""));
          std::vector<int16_t> sums(n, 0);
          std::vector<uint8_t> good(IntSumBytes(n, contributors));
          ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(good)).ok());
          auto decode = [&](std::vector<uint8_t> data, int contrib, float s) {
            return [=](absl::Span<float> out) {
              return one_pass ? DecodeIntSumOnePass(data, contrib, s, out, 0, isa)
                              : DecodeIntSumAdd(data, contrib, s, out, isa);
            };
          };
          auto ExpectRejected = [&](size_t n, const std::string& field, auto decode) {
            common::ExpectRejected(n, field, decode, /*untouched=*/!one_pass);
          };
          std::vector<uint8_t> longer = good;
          longer.push_back(0);
          ExpectRejected(n, "data: ", decode(longer, contributors, 1.0f));
          std::vector<uint8_t> shorter(good.begin(), good.end() - 1);
          ExpectRejected(n, "data: ", decode(shorter, contributors, 1.0f));
          // The smallest invalid field, 2N + 1, at the first, a middle and the last element.
          const int bits = IntSumBits(contributors);
          const unsigned invalid = 2u * static_cast<unsigned>(contributors) + 1u;
          if (invalid < (1u << bits)) {
            for (size_t k : {size_t{0}, n / 2, n - 1}) {
              std::vector<uint8_t> bad = good;
              for (int b = 0; b < bits; ++b) {
                const size_t bit = k * bits + b;
                const auto mask = static_cast<uint8_t>(1u << (bit % 8));
                bad[bit / 8] =
                    ((invalid >> b) & 1u) ? (bad[bit / 8] | mask) : (bad[bit / 8] & ~mask);
              }
              ExpectRejected(n, "element " + std::to_string(k) + " has field",
                             decode(bad, contributors, 1.0f));
            }
          }
          if ((n * bits) % 8 != 0) {
            std::vector<uint8_t> pad = good;
            pad.back() |= 0x80;
            ExpectRejected(n, "padding bits", decode(pad, contributors, 1.0f));
          }
          for (float s : {kNaN, kInf, -2.0f})
            ExpectRejected(n, "scaler: ", decode(good, contributors, s));
          ExpectRejected(n, "contributors: ", decode(good, 0, 1.0f));
          ExpectRejected(n, "contributors: ", decode(good, 32768, 1.0f));
          ExpectRejected(n, "contributors: ", decode(good, -3, 1.0f));
        }
      }
    }
  }
}

TEST(MalformedTest, Fp32Payloads) {
  for (size_t n : {1, 5, 1000}) {
    std::vector<float> values(n, 0.5f);
    std::vector<uint8_t> good(Fp32Bytes(n));
    ASSERT_TRUE(EncodeFp32(values, absl::MakeSpan(good)).ok());
    auto decode = [](std::vector<uint8_t> data) {
      return [=](absl::Span<float> out) { return DecodeFp32Add(data, out); };
    };
    std::vector<uint8_t> shorter(good.begin(), good.end() - 1);
    ExpectRejected(n, "data: ", decode(shorter));
    std::vector<uint8_t> longer = good;
    longer.insert(longer.end(), 4, 0);
    ExpectRejected(n, "data: ", decode(longer));
    for (float bad : {kNaN, kInf, -kInf}) {
      std::vector<uint8_t> data = good;
      std::memcpy(data.data() + 4 * (n - 1), &bad, 4);
      ExpectRejected(n, "element " + std::to_string(n - 1) + " is not finite", decode(data));
      // Where the payload starts in its partition (a gRPC slice after the first).
      const absl::Status offset = ValidateFp32(data, n, 1000);
      EXPECT_THAT(std::string(offset.message()),
                  HasSubstr("element " + std::to_string(1000 + n - 1) + " is not finite"));
      std::vector<float> out(n, kSentinel);
      EXPECT_FALSE(DecodeFp32(data, absl::MakeSpan(out)).ok());
      for (float v : out) ASSERT_EQ(v, kSentinel);
    }
  }
}

// The one-pass FP32 decoder: the same rejections (element indices offset by first_element), a
// non-finite value found in any of its blocks (4096 elements), and the bits of the plain copy.
TEST(MalformedTest, Fp32OnePass) {
  std::mt19937 rng(20261202);
  for (size_t n : {1, 5, 4096, 4097, 10000}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    std::vector<float> values(n);
    for (float& v : values) v = std::uniform_real_distribution<float>(-3.0f, 3.0f)(rng);
    std::vector<uint8_t> good(Fp32Bytes(n));
    ASSERT_TRUE(EncodeFp32(values, absl::MakeSpan(good)).ok());
    std::vector<float> out(n, kSentinel);
    ASSERT_TRUE(DecodeFp32OnePass(good, absl::MakeSpan(out)).ok());
    ASSERT_EQ(0, std::memcmp(out.data(), values.data(), 4 * n));
    auto decode = [](std::vector<uint8_t> data, size_t first) {
      return [=](absl::Span<float> out) { return DecodeFp32OnePass(data, out, first); };
    };
    std::vector<uint8_t> shorter(good.begin(), good.end() - 1);
    ExpectRejected(n, "data: ", decode(shorter, 0), /*untouched=*/false);
    for (size_t k : {size_t{0}, n / 2, n - 1}) {
      for (float bad : {kNaN, kInf, -kInf}) {
        std::vector<uint8_t> data = good;
        std::memcpy(data.data() + 4 * k, &bad, 4);
        ExpectRejected(n, "element " + std::to_string(100 + k) + " is not finite",
                       decode(data, 100), /*untouched=*/false);
      }
    }
  }
}

// The one-pass INT_SUM decoder writes DecodeValidatedIntSum's bits on every kernel set, across
// its blocks, and names the element (offset by first_element) of a field above 2N in any block.
TEST(MalformedTest, IntSumOnePassMatchesTwoPasses) {
  std::mt19937 rng(20261203);
  for (Isa isa : SupportedIsas()) {
    for (int contributors : {1, 4, 8, 300}) {
      for (size_t n : {size_t{9}, size_t{16384}, size_t{16385}, size_t{50001}}) {
        SCOPED_TRACE(testing::Message() << IsaName(isa) << " N " << contributors << " n " << n);
        std::vector<int16_t> sums(n);
        for (int16_t& s : sums) {
          s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
        }
        std::vector<uint8_t> wire(IntSumBytes(n, contributors));
        ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(wire), isa).ok());
        std::vector<float> expected(n), out(n, kSentinel);
        DecodeValidatedIntSum(wire, contributors, 0.37f, absl::MakeSpan(expected), isa);
        ASSERT_TRUE(
            DecodeIntSumOnePass(wire, contributors, 0.37f, absl::MakeSpan(out), 0, isa).ok());
        ASSERT_EQ(0, std::memcmp(out.data(), expected.data(), 4 * n));
        const int bits = IntSumBits(contributors);
        const unsigned invalid = 2u * static_cast<unsigned>(contributors) + 1u;
        if (invalid >= (1u << bits)) continue;
        const size_t k = n - 1 - rng() % std::min<size_t>(n, 20000);
        std::vector<uint8_t> bad = wire;
        for (int b = 0; b < bits; ++b) {
          const size_t bit = k * bits + b;
          const auto mask = static_cast<uint8_t>(1u << (bit % 8));
          bad[bit / 8] = ((invalid >> b) & 1u) ? (bad[bit / 8] | mask) : (bad[bit / 8] & ~mask);
        }
        const absl::Status st =
            DecodeIntSumOnePass(bad, contributors, 0.37f, absl::MakeSpan(out), 7, isa);
        EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
        EXPECT_THAT(std::string(st.message()),
                    HasSubstr("element " + std::to_string(7 + k) + " has field"));
      }
    }
  }
}

}  // namespace
}  // namespace ternps::common

namespace ternps::common {
namespace {

// Every kernel set's EncodeIntSum (SIMD 4-bit packing and the scalar bit-stream writer) writes
// the stream of a plain bit-by-bit reference, for every N and for lengths that exercise whole
// SIMD blocks and odd tails.
TEST(IntSumEncodeTest, EveryKernelMatchesTheBitStream) {
  std::mt19937_64 rng(20261201);
  for (Isa isa : SupportedIsas()) {
    for (int contributors = 1; contributors <= 130; ++contributors) {
      const int bits = IntSumBits(contributors);
      for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{67},
                       size_t{64}, size_t{97}}) {
        std::vector<int16_t> sums(n);
        for (int16_t& s : sums) {
          s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
        }
        std::vector<uint8_t> expected(IntSumBytes(n, contributors), 0);
        size_t bit = 0;
        for (const int16_t s : sums) {
          const uint32_t field = static_cast<uint32_t>(s + contributors);
          for (int b = 0; b < bits; ++b, ++bit) {
            if ((field >> b) & 1u) expected[bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
          }
        }
        std::vector<uint8_t> got(expected.size(), 0xAB);
        ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(got), isa).ok());
        EXPECT_EQ(got, expected) << IsaName(isa) << ", N " << contributors << ", n " << n;
      }
    }
  }
}

// A sum outside [-N, N] is refused by every kernel set wherever it sits (in a SIMD block or in
// the tail), including values whose field would wrap (below -N, or near INT16_MAX).
TEST(IntSumEncodeTest, EveryKernelRefusesOutOfRangeSums) {
  for (Isa isa : SupportedIsas()) {
    for (int contributors : {1, 4, 7, 8, 100}) {
      for (size_t at : {size_t{0}, size_t{31}, size_t{40}, size_t{70}}) {
        for (int bad : {contributors + 1, -contributors - 1, 32767, -32768}) {
          std::vector<int16_t> sums(71, 0);
          sums[at] = static_cast<int16_t>(bad);
          std::vector<uint8_t> out(IntSumBytes(sums.size(), contributors));
          const absl::Status st = EncodeIntSum(sums, contributors, absl::MakeSpan(out), isa);
          EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument)
              << IsaName(isa) << ", N " << contributors << ", at " << at << ", value " << bad;
          EXPECT_EQ(st.message(), absl::StrCat("sums[", at, "]: ", bad, " is outside [-",
                                               contributors, ", ", contributors, "]"));
        }
      }
    }
  }
}

}  // namespace
}  // namespace ternps::common
