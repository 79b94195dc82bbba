#include "worker/client/call_plan.h"

#include <utility>

#include "common/plan/partition_plan.h"

namespace ternps::worker {

std::vector<std::vector<uint32_t>> CutInOrder(absl::Span<const uint32_t> partitions,
                                              const std::function<size_t(uint32_t)>& bytes_of,
                                              size_t max_bytes) {
  std::vector<std::vector<uint32_t>> groups;
  size_t bytes = 0;
  for (const uint32_t p : partitions) {
    const size_t size = bytes_of(p);
    if (groups.empty() || bytes + size > max_bytes) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(p);
    bytes += size;
  }
  return groups;
}

CallPlan PlanCalls(const common::JobSpec& spec, uint32_t shards, size_t max_call_bytes,
                   int channels_per_shard) {
  const common::PartitionPlan& plan = spec.plan;
  CallPlan calls;
  for (const common::Partition& part : plan.partitions()) {
    if (part.compressed) calls.compressed.push_back(part.id);
  }
  const auto uplink_bytes = [&](uint32_t p) {
    return common::PayloadBytes(spec.route(p).uplink, plan.partition(p).elements,
                                static_cast<int>(spec.world_size));
  };
  std::vector<std::vector<std::vector<uint32_t>>> per_shard(shards);
  for (uint32_t s = 0; s < shards; ++s) {
    const std::vector<uint32_t>& owned = plan.PartitionsOfShard(s);
    per_shard[s] = CutInOrder(owned, uplink_bytes, max_call_bytes);
    CallGroup scalers{.shard = s, .channel = 0, .partitions = {}};
    for (const uint32_t p : owned) {
      if (spec.route(p).aggregation == common::Aggregation::kIntSum)
        scalers.partitions.push_back(p);
    }
    if (!scalers.partitions.empty()) calls.scalers.push_back(std::move(scalers));
  }
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (uint32_t s = 0; s < shards; ++s) {
      if (round >= per_shard[s].size()) continue;
      calls.push.push_back({.shard = s,
                            .channel = static_cast<int>(round % channels_per_shard),
                            .partitions = std::move(per_shard[s][round])});
      any = true;
    }
    if (!any) break;
  }
  return calls;
}

std::vector<std::vector<uint32_t>> PlanStateGroups(const common::JobSpec& spec, uint32_t shard,
                                                   size_t max_call_bytes) {
  return CutInOrder(
      spec.plan.PartitionsOfShard(shard),
      [&](uint32_t p) {
        return size_t{4} * spec.recovery.state_slots * spec.plan.partition(p).elements;
      },
      max_call_bytes);
}

}  // namespace ternps::worker
