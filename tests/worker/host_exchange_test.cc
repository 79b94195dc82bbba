// The host exchange decodes an INT_SUM average that arrives in pieces (gRPC slices, cut anywhere)
// to exactly the floats of one contiguous decode, for every field width from 2 to 6 bits
// (1 to 31 contributors), including widths whose 8-field groups span 3 or 5 bytes; and, since it
// checks the values of pieces as it decodes them, rejects a bad value in any piece naming its
// element in the partition.
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/spec/job_spec.h"
#include "common/util/thread_pool.h"
#include "gtest/gtest.h"
#include "worker/client/exchange.h"

namespace ternps::worker {
namespace {

namespace v1 = ::ternps::v1;

// A partition of n elements in one tensor, with the given world size and codec.
common::JobSpec OnePartitionSpec(uint32_t n, int world_size, v1::Codec codec) {
  v1::JoinRequest join;
  join.set_job_id("exchange");
  join.set_world_size(static_cast<uint32_t>(world_size));
  v1::TensorSpec* t = join.add_tensors();
  t->set_name("w");
  t->set_elements(n);
  join.mutable_codec()->set_codec(codec);
  join.mutable_codec()->set_min_compress_elements(1);
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, {.shard_count = 1});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *std::move(spec);
}

// Both INT_SUM layouts: 4-bit style bit fields (INT_SUM) and base-(2N+1) words (INT_SUM_RADIX,
// 64-byte blocks that the cuts split anywhere, the last block shorter).
TEST(HostExchangeTest, IntSumInPiecesDecodesLikeOneSpan) {
  std::mt19937_64 rng(20261202);
  common::ThreadPool pool(1);
  for (const v1::Encoding encoding : {v1::INT_SUM, v1::INT_SUM_RADIX}) {
    for (int contributors : {1, 2, 3, 4, 7, 8, 15, 16, 31}) {
      if (encoding == v1::INT_SUM_RADIX && !common::IntSumRadixSmaller(contributors)) continue;
      for (uint32_t n : {1u, 7u, 8u, 9u, 1000u, 4099u}) {
        const common::JobSpec spec = OnePartitionSpec(n, contributors, v1::CODEC_TERNGRAD);
        ASSERT_EQ(spec.route(0).downlink, v1::INT_SUM);
        std::unique_ptr<Exchange> exchange = MakeHostExchange(spec, pool);
        ASSERT_TRUE(exchange->DecodesPieces(v1::INT_SUM));

        std::vector<int16_t> sums(n);
        for (int16_t& s : sums) {
          s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
        }
        const float scaler = 0.37f;
        std::vector<float> expected(n);
        std::vector<uint8_t> wire(common::PayloadBytes(encoding, n, contributors));
        if (encoding == v1::INT_SUM) {
          ASSERT_TRUE(common::EncodeIntSum(sums, contributors, absl::MakeSpan(wire)).ok());
          common::DecodeValidatedIntSum(wire, contributors, scaler, absl::MakeSpan(expected));
        } else {
          ASSERT_TRUE(common::EncodeIntSumRadix(sums, contributors, absl::MakeSpan(wire)).ok());
          ASSERT_TRUE(
              common::DecodeIntSumRadixOnePass(wire, contributors, scaler, absl::MakeSpan(expected))
                  .ok());
        }

        for (int cut = 0; cut < 20; ++cut) {
          // Up to 4 pieces at random byte boundaries (empty pieces included).
          std::vector<size_t> ends = {rng() % (wire.size() + 1), rng() % (wire.size() + 1),
                                      rng() % (wire.size() + 1), wire.size()};
          std::sort(ends.begin(), ends.end());
          std::vector<common::Piece> pieces;
          size_t begin = 0;
          for (size_t end : ends) {
            pieces.emplace_back(wire.data() + begin, end - begin);
            begin = end;
          }
          std::vector<float> out(n, -99.0f);
          std::vector<absl::Span<float>> grads = {absl::MakeSpan(out)};
          Average avg{.encoding = encoding,
                      .scaler = scaler,
                      .contributors = contributors,
                      .bytes = {},
                      .pieces = pieces};
          ASSERT_TRUE(exchange->Decode(grads, 0, avg).ok());
          ASSERT_EQ(0, std::memcmp(out.data(), expected.data(), n * sizeof(float)))
              << v1::Encoding_Name(encoding) << ", N " << contributors << ", n " << n << ", cuts "
              << ends[0] << "," << ends[1] << "," << ends[2];
        }
      }
    }
  }
}

// Decodes `wire`, cut into 3 pieces at byte offsets a and b, as partition 0 of `spec` (n
// elements) and expects INVALID_ARGUMENT whose message contains `needle`.
void ExpectPiecesRejected(const common::JobSpec& spec, v1::Encoding encoding, float scaler,
                          const std::vector<uint8_t>& wire, size_t a, size_t b,
                          const std::string& needle,
                          v1::Encoding wire_encoding = v1::ENCODING_UNSPECIFIED) {
  if (wire_encoding == v1::ENCODING_UNSPECIFIED) wire_encoding = encoding;
  common::ThreadPool pool(1);
  std::unique_ptr<Exchange> exchange = MakeHostExchange(spec, pool);
  ASSERT_EQ(spec.route(0).downlink, encoding);
  ASSERT_TRUE(exchange->DecodesPieces(encoding));
  const std::vector<common::Piece> pieces = {common::Piece(wire.data(), a),
                                             common::Piece(wire.data() + a, b - a),
                                             common::Piece(wire.data() + b, wire.size() - b)};
  std::vector<float> out(spec.plan.partition(0).elements);
  std::vector<absl::Span<float>> grads = {absl::MakeSpan(out)};
  const absl::Status st =
      exchange->Decode(grads, 0,
                       Average{.encoding = wire_encoding,
                               .scaler = scaler,
                               .contributors = static_cast<int>(spec.world_size),
                               .bytes = {},
                               .pieces = pieces});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find(needle), absl::string_view::npos) << st;
}

TEST(HostExchangeTest, BadValuesInPiecesAreRejectedNamingTheElement) {
  const uint32_t n = 50000;  // several one-pass blocks
  const common::JobSpec terngrad = OnePartitionSpec(n, 4, v1::CODEC_TERNGRAD);
  const std::vector<uint8_t> sums(common::IntSumBytes(n, 4), 0x44);  // every field 4: k = 0
  for (uint32_t k : {0u, 20001u, n - 1}) {
    std::vector<uint8_t> bad = sums;
    bad[k / 2] = static_cast<uint8_t>(k % 2 == 0 ? 0x49 : 0x94);  // field 9 > 2N
    ExpectPiecesRejected(terngrad, v1::INT_SUM, 1.0f, bad, 1001, 13000,
                         "element " + std::to_string(k) + " has field 9");
  }
  // INT_SUM_RADIX, N = 4: 9^5 = 59049 bounds a word; word 4007 (block 125) starts at element
  // 125 * 160 + 7.
  std::vector<uint8_t> words(common::IntSumRadixBytes(n, 4), 0);
  for (size_t w : {size_t{0}, size_t{4007}, words.size() / 2 - 1}) {
    std::vector<uint8_t> bad = words;
    bad[2 * w] = 0xFF;
    bad[2 * w + 1] = 0xFF;
    const size_t element = w / 32 * 160 + w % 32;
    ExpectPiecesRejected(
        terngrad, v1::INT_SUM, 1.0f, bad, 1001, 13000,
        "word " + std::to_string(w) + " (from element " + std::to_string(element) + ") is 65535",
        v1::INT_SUM_RADIX);
  }
  const common::JobSpec fp32 = OnePartitionSpec(n, 4, v1::CODEC_FP32);
  for (uint32_t k : {0u, 1000u, 30001u, n - 1}) {
    std::vector<float> values(n, 0.25f);
    values[k] = std::numeric_limits<float>::infinity();
    std::vector<uint8_t> bad(4 * n);
    std::memcpy(bad.data(), values.data(), bad.size());
    // The second cut splits element 30000 across two pieces.
    ExpectPiecesRejected(fp32, v1::FP32, 0.0f, bad, 4002, 120001,
                         "element " + std::to_string(k) + " is not finite");
  }
}

// FP32 partitions go out as the gradients' own bytes (no encode copy); compressed ones are
// encoded by FinishEncode.
TEST(HostExchangeTest, Fp32UplinkIsTheGradientMemory) {
  common::ThreadPool pool(1);
  const common::JobSpec fp32 = OnePartitionSpec(1000, 2, v1::CODEC_FP32);
  std::unique_ptr<Exchange> exchange = MakeHostExchange(fp32, pool);
  std::vector<float> g(1000, 1.5f);
  const std::vector<absl::Span<float>> grads = {absl::MakeSpan(g)};
  const absl::Span<const uint8_t> in_place = exchange->UplinkInPlace(grads, 0);
  EXPECT_EQ(in_place.data(), reinterpret_cast<const uint8_t*>(g.data()));
  EXPECT_EQ(in_place.size(), common::Fp32Bytes(g.size()));
  const common::JobSpec terngrad = OnePartitionSpec(1000, 2, v1::CODEC_TERNGRAD);
  EXPECT_TRUE(MakeHostExchange(terngrad, pool)->UplinkInPlace(grads, 0).empty());
}

}  // namespace
}  // namespace ternps::worker
