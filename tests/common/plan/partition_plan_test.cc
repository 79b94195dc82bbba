#include "common/plan/partition_plan.h"

#include <algorithm>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

using ::testing::HasSubstr;

std::vector<TensorSpec> RandomModel(std::mt19937_64& rng, int tensors) {
  std::uniform_int_distribution<uint64_t> size(1, 5'000'000);
  std::vector<TensorSpec> specs;
  for (int i = 0; i < tensors; ++i) {
    specs.push_back({"t" + std::to_string(i), i % 3 == 0 ? size(rng) % 5000 + 1 : size(rng)});
  }
  return specs;
}

TEST(PartitionPlanTest, SplitsTensorsInOrder) {
  const std::vector<TensorSpec> tensors = {{"w1", 2'500'000}, {"b1", 512}, {"w2", 1'048'576}};
  absl::StatusOr<PartitionPlan> plan =
      PartitionPlan::Create(tensors, {.partition_elements = 1u << 20, .shard_count = 2});
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto& parts = plan->partitions();
  ASSERT_EQ(parts.size(), 5u);
  EXPECT_EQ(parts[0].elements, 1u << 20);
  EXPECT_EQ(parts[1].offset, 1u << 20);
  EXPECT_EQ(parts[2].elements, 2'500'000u - 2 * (1u << 20));
  EXPECT_EQ(parts[3].tensor, 1u);
  EXPECT_FALSE(parts[3].compressed);  // 512 < min_compress_elements
  EXPECT_TRUE(parts[4].compressed);
  EXPECT_EQ(plan->tensor_first_partition(), (std::vector<uint32_t>{0, 3, 4, 5}));
  for (uint32_t i = 0; i < parts.size(); ++i) EXPECT_EQ(parts[i].id, i);
}

TEST(PartitionPlanTest, DeterministicAndBalancedWithinOnePartition) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const auto tensors = RandomModel(rng, 1 + trial % 40);
    const PlanOptions options{.partition_elements = 1u << (16 + trial % 5),
                              .shard_count = 1u + trial % 7};
    absl::StatusOr<PartitionPlan> a = PartitionPlan::Create(tensors, options);
    absl::StatusOr<PartitionPlan> b = PartitionPlan::Create(tensors, options);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->partitions().size(), b->partitions().size());
    uint32_t largest = 0;
    for (size_t i = 0; i < a->partitions().size(); ++i) {
      EXPECT_EQ(a->partitions()[i].shard, b->partitions()[i].shard);
      largest = std::max(largest, a->partitions()[i].elements);
    }
    EXPECT_EQ(a->Checksum(), b->Checksum());
    uint64_t lo = UINT64_MAX, hi = 0, total = 0;
    for (uint32_t s = 0; s < options.shard_count; ++s) {
      lo = std::min(lo, a->ShardLoad(s));
      hi = std::max(hi, a->ShardLoad(s));
      total += a->ShardLoad(s);
      for (uint32_t id : a->PartitionsOfShard(s)) EXPECT_EQ(a->partition(id).shard, s);
    }
    EXPECT_EQ(total, a->total_elements());
    EXPECT_LE(hi - lo, largest) << "trial " << trial;
  }
}

TEST(PartitionPlanTest, ChecksumChangesWithAnyTensorOrOption) {
  const std::vector<TensorSpec> base = {{"a", 100'000}, {"b", 10}, {"c", 3'000'000}};
  const PlanOptions options{.shard_count = 2};
  const uint64_t sum = PartitionPlan::Create(base, options)->Checksum();
  auto changed = [&](std::vector<TensorSpec> t, PlanOptions o) {
    absl::StatusOr<PartitionPlan> p = PartitionPlan::Create(t, o);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() && p->Checksum() != sum;
  };
  auto t = base;
  t[1].name = "B";
  EXPECT_TRUE(changed(t, options));
  t = base;
  t[2].elements += 1;
  EXPECT_TRUE(changed(t, options));
  t = base;
  t[0].keep_fp32 = true;
  EXPECT_TRUE(changed(t, options));
  t = base;
  std::swap(t[0], t[1]);
  EXPECT_TRUE(changed(t, options));
  t = base;
  t.push_back({"d", 1});
  EXPECT_TRUE(changed(t, options));
  EXPECT_TRUE(changed(base, {.shard_count = 3}));
  EXPECT_TRUE(changed(base, {.partition_elements = 1u << 19, .shard_count = 2}));
  EXPECT_TRUE(changed(base, {.min_compress_elements = 1, .shard_count = 2}));
  EXPECT_TRUE(changed(base, {.shard_count = 2, .compress = false}));
  // "ab"+"c" vs "a"+"bc": names are length-prefixed, so concatenation cannot collide.
  EXPECT_NE(PartitionPlan::Create({{{"ab", 1}, {"c", 1}}}, options)->Checksum(),
            PartitionPlan::Create({{{"a", 1}, {"bc", 1}}}, options)->Checksum());
}

TEST(PartitionPlanTest, ChecksumIsPinned) {
  // Pins the canonical serialization; the value was cross-checked with an independent Python
  // FNV-1a over struct.pack("<IIIBI", ...) of the documented layout (with partition_elements
  // 2^20, the default when it was pinned).
  absl::StatusOr<PartitionPlan> plan =
      PartitionPlan::Create({{{"fc1.weight", 401408}, {"fc1.bias", 512}}},
                            {.partition_elements = 1u << 20, .shard_count = 2});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Checksum(), 0x9ee83ca728b89551ull) << std::hex << plan->Checksum();
}

TEST(PartitionPlanTest, RejectsBadRegistrations) {
  auto error = [](std::vector<TensorSpec> t, PlanOptions o = {}) {
    absl::StatusOr<PartitionPlan> p = PartitionPlan::Create(t, o);
    EXPECT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(p.status().message());
  };
  EXPECT_THAT(error({}), HasSubstr("tensors: empty"));
  EXPECT_THAT(error({{"a", 1}, {"a", 2}}), HasSubstr("tensors[1].name: duplicate"));
  EXPECT_THAT(error({{"", 1}}), HasSubstr("tensors[0].name"));
  EXPECT_THAT(error({{std::string(300, 'x'), 1}}), HasSubstr("tensors[0].name"));
  EXPECT_THAT(error({{"a", 0}}), HasSubstr("tensors[0].elements"));
  EXPECT_THAT(error({{"a", 1ull << 62}}), HasSubstr("tensors[0].elements"));
  EXPECT_THAT(error({{"a", 1}}, {.partition_elements = 0}), HasSubstr("partition_elements"));
  EXPECT_THAT(error({{"a", 1}}, {.shard_count = 0}), HasSubstr("shard_count"));
  EXPECT_THAT(error({{"a", 1u << 19}, {"b", 1u << 19}, {"c", 1u << 19}}, {.partition_elements = 1}),
              HasSubstr("tensors: more than"));
}

}  // namespace
}  // namespace ternps::common
