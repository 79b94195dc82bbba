// The call plan: which partitions go in which PushPull, ShareScalers and state call. Checked as
// properties against the spec (every partition exactly once, in its shard's plan order, each call
// within max_call_bytes unless one partition alone exceeds it, cut greedily, interleaved across
// shards in rounds, connections taken in turn) for several sizes of call and connection counts.
#include "worker/client/call_plan.h"

#include <algorithm>
#include <map>
#include <vector>

#include "common/spec/job_spec.h"
#include "gtest/gtest.h"

namespace ternps::worker {
namespace {

namespace v1 = ::ternps::v1;

common::JobSpec MixedSpec(v1::Codec codec, uint32_t shards) {
  v1::JoinRequest join;
  join.set_job_id("plan");
  join.set_world_size(4);
  const uint32_t sizes[] = {10, 5000, 300, 12000, 7, 2500, 999};
  for (size_t i = 0; i < std::size(sizes); ++i) {
    v1::TensorSpec* t = join.add_tensors();
    t->set_name("t" + std::to_string(i));
    t->set_elements(sizes[i]);
  }
  join.mutable_codec()->set_codec(codec);
  join.mutable_codec()->set_partition_elements(1000);
  join.mutable_codec()->set_min_compress_elements(200);
  join.set_snapshot_interval(10);
  join.set_state_slots(2);
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, {.shard_count = shards});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *std::move(spec);
}

size_t UplinkBytes(const common::JobSpec& spec, uint32_t p) {
  return common::PayloadBytes(spec.route(p).uplink, spec.plan.partition(p).elements,
                              static_cast<int>(spec.world_size));
}

TEST(CallPlanTest, CutInOrderIsGreedyAndKeepsOversizedPartitionsAlone) {
  const std::vector<uint32_t> parts = {0, 1, 2, 3, 4};
  const std::map<uint32_t, size_t> bytes = {{0, 40}, {1, 60}, {2, 150}, {3, 10}, {4, 90}};
  const auto size = [&](uint32_t p) { return bytes.at(p); };
  EXPECT_EQ(CutInOrder(parts, size, 100),
            (std::vector<std::vector<uint32_t>>{{0, 1}, {2}, {3, 4}}));
  EXPECT_EQ(CutInOrder(parts, size, 1000), (std::vector<std::vector<uint32_t>>{{0, 1, 2, 3, 4}}));
  EXPECT_EQ(CutInOrder(parts, size, 1),
            (std::vector<std::vector<uint32_t>>{{0}, {1}, {2}, {3}, {4}}));
  EXPECT_TRUE(CutInOrder({}, size, 100).empty());
}

TEST(CallPlanTest, PushCallsCoverEveryPartitionOnceInPlanOrderWithinTheByteBound) {
  for (const v1::Codec codec : {v1::CODEC_TERNGRAD, v1::CODEC_FP32}) {
    for (const uint32_t shards : {1u, 2u, 3u}) {
      const common::JobSpec spec = MixedSpec(codec, shards);
      for (const size_t max_bytes : {size_t{1}, size_t{700}, size_t{3000}, size_t{1} << 30}) {
        for (const int channels : {1, 3}) {
          SCOPED_TRACE(::testing::Message()
                       << "codec " << codec << ", shards " << shards << ", max_call_bytes "
                       << max_bytes << ", channels " << channels);
          const CallPlan calls = PlanCalls(spec, shards, max_bytes, channels);
          std::vector<std::vector<const CallGroup*>> of_shard(shards);
          for (const CallGroup& c : calls.push) {
            ASSERT_LT(c.shard, shards);
            ASSERT_FALSE(c.partitions.empty());
            // Consecutive calls of a shard take its connections in turn.
            EXPECT_EQ(c.channel, static_cast<int>(of_shard[c.shard].size() % channels));
            of_shard[c.shard].push_back(&c);
          }
          for (uint32_t s = 0; s < shards; ++s) {
            std::vector<uint32_t> joined;
            for (size_t k = 0; k < of_shard[s].size(); ++k) {
              const std::vector<uint32_t>& parts = of_shard[s][k]->partitions;
              size_t bytes = 0;
              for (const uint32_t p : parts) bytes += UplinkBytes(spec, p);
              if (parts.size() > 1) {
                EXPECT_LE(bytes, max_bytes);
              }
              // Greedy: the next call's first partition did not fit in this one.
              if (k + 1 < of_shard[s].size()) {
                EXPECT_GT(bytes + UplinkBytes(spec, of_shard[s][k + 1]->partitions.front()),
                          max_bytes);
              }
              joined.insert(joined.end(), parts.begin(), parts.end());
            }
            EXPECT_EQ(joined, spec.plan.PartitionsOfShard(s));
          }
          // Interleaved in rounds: the calls are ordered by (round within shard, shard).
          std::vector<size_t> seen(shards, 0);
          std::pair<size_t, uint32_t> last = {0, 0};
          for (size_t i = 0; i < calls.push.size(); ++i) {
            const std::pair<size_t, uint32_t> key = {seen[calls.push[i].shard]++,
                                                     calls.push[i].shard};
            if (i > 0) {
              EXPECT_LT(last, key);
            }
            last = key;
          }
        }
      }
    }
  }
}

TEST(CallPlanTest, ScalerCallsListEachShardsIntSumPartitionsAndCompressedListsTheRest) {
  for (const v1::Codec codec : {v1::CODEC_TERNGRAD, v1::CODEC_FP32}) {
    const common::JobSpec spec = MixedSpec(codec, 2);
    const CallPlan calls = PlanCalls(spec, 2, 4096, 1);
    std::vector<uint32_t> int_sum_of[2];
    std::vector<uint32_t> compressed;
    for (const common::Partition& part : spec.plan.partitions()) {
      if (spec.route(part.id).aggregation == common::Aggregation::kIntSum) {
        int_sum_of[part.shard].push_back(part.id);
      }
      if (part.compressed) compressed.push_back(part.id);
    }
    std::vector<CallGroup> want;
    for (uint32_t s = 0; s < 2; ++s) {
      if (!int_sum_of[s].empty())
        want.push_back({.shard = s, .channel = 0, .partitions = int_sum_of[s]});
    }
    ASSERT_EQ(calls.scalers.size(), want.size()) << "codec " << codec;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(calls.scalers[i].shard, want[i].shard);
      EXPECT_EQ(calls.scalers[i].partitions, want[i].partitions);
    }
    EXPECT_EQ(calls.compressed, compressed);
    if (codec == v1::CODEC_TERNGRAD) {
      EXPECT_FALSE(calls.scalers.empty()) << "the TernGrad spec has no shared-scaler partition";
      EXPECT_FALSE(compressed.empty());
    } else {
      EXPECT_TRUE(calls.scalers.empty());
    }
  }
}

TEST(CallPlanTest, StateGroupsAreCutAtTheStateBytes) {
  const common::JobSpec spec = MixedSpec(v1::CODEC_TERNGRAD, 2);
  ASSERT_EQ(spec.recovery.state_slots, 2u);
  for (uint32_t s = 0; s < 2; ++s) {
    const auto groups = PlanStateGroups(spec, s, 10000);  // 1250 elements of 2 slots
    std::vector<uint32_t> joined;
    for (const std::vector<uint32_t>& g : groups) {
      size_t bytes = 0;
      for (const uint32_t p : g) bytes += 8 * spec.plan.partition(p).elements;
      if (g.size() > 1) {
        EXPECT_LE(bytes, 10000u);
      }
      joined.insert(joined.end(), g.begin(), g.end());
    }
    EXPECT_EQ(joined, spec.plan.PartitionsOfShard(s));
    EXPECT_GT(groups.size(), 1u);
  }
}

}  // namespace
}  // namespace ternps::worker
