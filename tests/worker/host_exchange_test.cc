// The host exchange decodes an INT_SUM average that arrives in pieces (gRPC slices, cut anywhere)
// to exactly the floats of one contiguous decode, for every field width from 2 to 6 bits
// (1 to 31 contributors), including widths whose 8-field groups span 3 or 5 bytes.
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "common/codec/int_sum.h"
#include "common/spec/job_spec.h"
#include "common/util/thread_pool.h"
#include "gtest/gtest.h"
#include "worker/client/exchange.h"

namespace ternps::worker {
namespace {

namespace v1 = ::ternps::v1;

TEST(HostExchangeTest, IntSumInPiecesDecodesLikeOneSpan) {
  std::mt19937_64 rng(20261202);
  common::ThreadPool pool(1);
  for (int contributors : {1, 3, 4, 7, 8, 15, 16, 31}) {
    for (uint32_t n : {1u, 7u, 8u, 9u, 1000u, 4099u}) {
      v1::JoinRequest join;
      join.set_job_id("exchange");
      join.set_world_size(static_cast<uint32_t>(contributors));
      v1::TensorSpec* t = join.add_tensors();
      t->set_name("w");
      t->set_elements(n);
      join.mutable_codec()->set_codec(v1::CODEC_TERNGRAD);
      join.mutable_codec()->set_min_compress_elements(1);
      absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, {.shard_count = 1});
      ASSERT_TRUE(spec.ok()) << spec.status();
      ASSERT_EQ(spec->route(0).downlink, v1::INT_SUM);
      std::unique_ptr<Exchange> exchange = MakeHostExchange(*spec, pool);
      ASSERT_TRUE(exchange->DecodesPieces(v1::INT_SUM));

      std::vector<int16_t> sums(n);
      for (int16_t& s : sums) {
        s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
      }
      std::vector<uint8_t> wire(common::IntSumBytes(n, contributors));
      ASSERT_TRUE(common::EncodeIntSum(sums, contributors, absl::MakeSpan(wire)).ok());
      const float scaler = 0.37f;
      std::vector<float> expected(n);
      common::DecodeValidatedIntSum(wire, contributors, scaler, absl::MakeSpan(expected));

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
        Average avg{.encoding = v1::INT_SUM,
                    .scaler = scaler,
                    .contributors = contributors,
                    .bytes = {},
                    .pieces = pieces};
        ASSERT_TRUE(exchange->Decode(grads, 0, avg).ok());
        ASSERT_EQ(0, std::memcmp(out.data(), expected.data(), n * sizeof(float)))
            << "N " << contributors << ", n " << n << ", cuts " << ends[0] << "," << ends[1] << ","
            << ends[2];
      }
    }
  }
}

}  // namespace
}  // namespace ternps::worker
