// The partition plan: how a job's tensors are cut into partitions and spread over shards.
//
// Tensors, in registration order, are cut into partitions of at most `partition_elements`
// elements (the last piece of a tensor may be shorter); partition ids count from 0 across all
// tensors in that order. Partitions of tensors smaller than `min_compress_elements`, or marked
// keep_fp32, or of a job with compression off, travel as FP32; the rest as TERNARY_2BIT.
// Shards: greedy largest-first onto the least-loaded shard (ties: lower partition id first, then
// lower shard index), so max load - min load <= the largest partition. Every worker and shard
// computes the same plan from the same registration; Checksum() fingerprints it.
//
//   absl::StatusOr<PartitionPlan> plan = PartitionPlan::Create(tensors, options);
//   for (uint32_t p : plan->PartitionsOfShard(shard)) Use(plan->partition(p));
//
// Thread safety: immutable after Create; const methods are safe from any thread.
#ifndef TERNPS_COMMON_PLAN_PARTITION_PLAN_H_
#define TERNPS_COMMON_PLAN_PARTITION_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ternps/codec_config.h"

namespace ternps::common {

struct TensorSpec {
  std::string name;
  uint64_t elements = 0;
  bool keep_fp32 = false;
};

struct PlanOptions {
  uint32_t partition_elements = DefaultPartitionElements(CodecKind::kTernGrad);
  uint32_t min_compress_elements = 4096;
  uint32_t shard_count = 1;
  bool compress = true;  // false: the fp32 codec, every partition FP32
};

struct Partition {
  uint32_t id = 0;
  uint32_t tensor = 0;  // index into the registration
  uint64_t offset = 0;  // first element within the tensor
  uint32_t elements = 0;
  uint32_t shard = 0;
  bool compressed = false;  // TERNARY_2BIT (else FP32)
};

// Limits that keep an untrusted registration from asking for unbounded memory.
inline constexpr uint32_t kMaxPartitionElements = 1u << 28;
inline constexpr size_t kMaxTensors = 1u << 16;
inline constexpr size_t kMaxPartitions = 1u << 20;
inline constexpr size_t kMaxTensorNameBytes = 256;
inline constexpr uint32_t kMaxShards = 4096;

class PartitionPlan {
 public:
  // INVALID_ARGUMENT naming the field ("tensors[3].elements", "partition_elements", ...) for an
  // empty or oversized registration, duplicate or empty names, zero sizes or bad options.
  static absl::StatusOr<PartitionPlan> Create(absl::Span<const TensorSpec> tensors,
                                              const PlanOptions& options);

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  const PlanOptions& options() const { return options_; }
  const std::vector<Partition>& partitions() const { return partitions_; }
  const Partition& partition(uint32_t id) const { return partitions_[id]; }
  // Ids of the partitions shard `shard` owns, ascending.
  const std::vector<uint32_t>& PartitionsOfShard(uint32_t shard) const {
    return shard_partitions_[shard];
  }
  // Total elements owned by `shard`.
  uint64_t ShardLoad(uint32_t shard) const { return shard_load_[shard]; }
  // First partition id of each tensor (size tensors().size() + 1; the last is the total).
  const std::vector<uint32_t>& tensor_first_partition() const { return tensor_first_partition_; }
  uint64_t total_elements() const { return total_elements_; }

  // 64-bit FNV-1a over the canonical registration (all little-endian):
  //   "ternps-plan-v1" | u32 partition_elements | u32 min_compress_elements | u32 shard_count |
  //   u8 compress | u32 tensor count | per tensor: u32 name bytes, name, u64 elements, u8 keep_fp32
  // Any difference in tensors or options changes it (with FNV's 2^-64 collision odds).
  uint64_t Checksum() const { return checksum_; }

 private:
  PartitionPlan() = default;

  std::vector<TensorSpec> tensors_;
  PlanOptions options_;
  std::vector<Partition> partitions_;
  std::vector<std::vector<uint32_t>> shard_partitions_;
  std::vector<uint64_t> shard_load_;
  std::vector<uint32_t> tensor_first_partition_;
  uint64_t total_elements_ = 0;
  uint64_t checksum_ = 0;
};

}  // namespace ternps::common

#endif  // TERNPS_COMMON_PLAN_PARTITION_PLAN_H_
