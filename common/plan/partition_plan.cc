#include "common/plan/partition_plan.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace ternps::common {
namespace {

class Fnv1a64 {
 public:
  void Bytes(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
      hash_ ^= p[i];
      hash_ *= 0x100000001b3ull;
    }
  }
  void U8(uint8_t v) { Bytes(&v, 1); }
  void U32(uint32_t v) {
    const uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                          static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
    Bytes(b, 4);
  }
  void U64(uint64_t v) {
    U32(static_cast<uint32_t>(v));
    U32(static_cast<uint32_t>(v >> 32));
  }
  uint64_t hash() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

absl::Status ValidateRegistration(absl::Span<const TensorSpec> tensors,
                                  const PlanOptions& options) {
  if (options.partition_elements == 0 || options.partition_elements > kMaxPartitionElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("partition_elements: ", options.partition_elements, " is outside [1, ",
                     kMaxPartitionElements, "]"));
  }
  if (options.shard_count == 0 || options.shard_count > kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard_count: ", options.shard_count, " is outside [1, ", kMaxShards, "]"));
  }
  if (tensors.empty()) return absl::InvalidArgumentError("tensors: empty");
  if (tensors.size() > kMaxTensors) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensors: ", tensors.size(), " tensors, at most ", kMaxTensors));
  }
  absl::flat_hash_set<std::string_view> names;
  uint64_t partitions = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    if (t.name.empty() || t.name.size() > kMaxTensorNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat("tensors[", i, "].name: length ",
                                                     t.name.size(), " is outside [1, ",
                                                     kMaxTensorNameBytes, "]"));
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "].name: duplicate name '", t.name, "'"));
    }
    if (t.elements == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensors[", i, "].elements: 0"));
    }
    if (t.elements > static_cast<uint64_t>(kMaxPartitions) * options.partition_elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "].elements: ", t.elements, " is too large"));
    }
    partitions += (t.elements + options.partition_elements - 1) / options.partition_elements;
    if (partitions > kMaxPartitions) {
      return absl::InvalidArgumentError(absl::StrCat("tensors: more than ", kMaxPartitions,
                                                     " partitions of ", options.partition_elements,
                                                     " elements"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PartitionPlan> PartitionPlan::Create(absl::Span<const TensorSpec> tensors,
                                                    const PlanOptions& options) {
  if (absl::Status st = ValidateRegistration(tensors, options); !st.ok()) return st;
  PartitionPlan plan;
  plan.tensors_.assign(tensors.begin(), tensors.end());
  plan.options_ = options;

  for (uint32_t t = 0; t < tensors.size(); ++t) {
    plan.tensor_first_partition_.push_back(static_cast<uint32_t>(plan.partitions_.size()));
    const TensorSpec& spec = tensors[t];
    const bool compressed =
        options.compress && !spec.keep_fp32 && spec.elements >= options.min_compress_elements;
    for (uint64_t offset = 0; offset < spec.elements; offset += options.partition_elements) {
      Partition p;
      p.id = static_cast<uint32_t>(plan.partitions_.size());
      p.tensor = t;
      p.offset = offset;
      p.elements = static_cast<uint32_t>(
          std::min<uint64_t>(options.partition_elements, spec.elements - offset));
      p.compressed = compressed;
      plan.partitions_.push_back(p);
    }
    plan.total_elements_ += spec.elements;
  }
  plan.tensor_first_partition_.push_back(static_cast<uint32_t>(plan.partitions_.size()));

  // Greedy LPT: largest partitions first, each onto the currently least-loaded shard.
  std::vector<uint32_t> order(plan.partitions_.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return plan.partitions_[a].elements > plan.partitions_[b].elements;
  });
  using Load = std::pair<uint64_t, uint32_t>;  // (elements, shard): min-heap, ties to lower shard
  std::priority_queue<Load, std::vector<Load>, std::greater<Load>> loads;
  for (uint32_t s = 0; s < options.shard_count; ++s) loads.push({0, s});
  plan.shard_load_.assign(options.shard_count, 0);
  plan.shard_partitions_.assign(options.shard_count, {});
  for (uint32_t id : order) {
    auto [load, shard] = loads.top();
    loads.pop();
    plan.partitions_[id].shard = shard;
    load += plan.partitions_[id].elements;
    plan.shard_load_[shard] = load;
    loads.push({load, shard});
    plan.shard_partitions_[shard].push_back(id);
  }
  for (auto& ids : plan.shard_partitions_) std::sort(ids.begin(), ids.end());

  Fnv1a64 h;
  static constexpr char kTag[] = "ternps-plan-v1";
  h.Bytes(kTag, sizeof(kTag) - 1);
  h.U32(options.partition_elements);
  h.U32(options.min_compress_elements);
  h.U32(options.shard_count);
  h.U8(options.compress ? 1 : 0);
  h.U32(static_cast<uint32_t>(tensors.size()));
  for (const TensorSpec& t : tensors) {
    h.U32(static_cast<uint32_t>(t.name.size()));
    h.Bytes(t.name.data(), t.name.size());
    h.U64(t.elements);
    h.U8(t.keep_fp32 ? 1 : 0);
  }
  plan.checksum_ = h.hash();
  return plan;
}

}  // namespace ternps::common
