// The job spec: everything a JoinRequest fixes about a job, resolved once and shared by the shard
// (which checks every later Join against it) and the worker (which builds its JoinRequest and
// resolves the same spec from it).
//
//   absl::StatusOr<JobSpec> spec = ResolveJobSpec(join_request, SpecLimits{.shard_count = 2});
//   const PartitionRoute& route = spec->route(partition_id);   // how it travels, up and down
//   absl::Status same = CompareSpecs(*spec, *other);             // FAILED_PRECONDITION naming a
//   field
//
// The encoding rule (which encoding a partition travels in, how the shard aggregates it and what
// comes back) is defined here and nowhere else:
//   - partitions the plan leaves uncompressed (small tensors, keep_fp32, the fp32 codec):
//     FP32 up, float32 sum, FP32 down;
//   - compressed partitions with scaler sharing: TERNARY_2BIT up, int16 sum of codes, INT_SUM down
//     (each answer as AverageEncoding says: INT_SUM_RADIX where the job allows it and it is
//     smaller);
//   - compressed partitions without sharing: TERNARY_2BIT up, float32 sum of scaler * code, FP32
//     down (or TERNARY_2BIT, re-ternarized by the shard, with `ternary_downlink`).
//
// Thread safety: a JobSpec is immutable after ResolveJobSpec; const access from any thread.
#ifndef TERNPS_COMMON_SPEC_JOB_SPEC_H_
#define TERNPS_COMMON_SPEC_JOB_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/codec/int_sum.h"
#include "common/plan/partition_plan.h"
#include "ternps/codec_config.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::common {

// How a shard sums the pushes of one partition.
enum class Aggregation {
  kFp32,          // float32 sum of FP32 pushes, in rank order
  kIntSum,        // exact int16 sum of ternary codes (all pushed with the shared scaler)
  kTernaryFloat,  // float32 sum of scaler_i * code_i, in rank order
};

struct PartitionRoute {
  ternps::v1::Encoding uplink = ternps::v1::FP32;
  Aggregation aggregation = Aggregation::kFp32;
  ternps::v1::Encoding downlink = ternps::v1::FP32;

  bool operator==(const PartitionRoute&) const = default;
};

// The route of `partition` in a job with codec settings `codec` (the rule above).
PartitionRoute RouteOf(const Partition& partition, const CodecConfig& codec);

// The encoding of an average of N = `contributors` workers on a route with downlink `downlink`
// in a job whose codec has `int_sum_radix`: `downlink`, except that INT_SUM becomes INT_SUM_RADIX
// where the job allows it and it is smaller (IntSumRadixSmaller).
ternps::v1::Encoding AverageEncoding(ternps::v1::Encoding downlink, bool int_sum_radix,
                                     int contributors);

// Bytes of a payload of `encoding` for `elements` elements (INT_SUM, INT_SUM_RADIX: from
// `contributors`).
size_t PayloadBytes(ternps::v1::Encoding encoding, size_t elements, int contributors);

// Bounds a shard (or worker) puts on a registration.
struct SpecLimits {
  uint32_t shard_count = 1;
  uint32_t max_world_size = kMaxIntSumContributors;
  uint32_t max_partition_elements = kMaxPartitionElements;
};

// Recovery settings of a job (JoinRequest.snapshot_interval, state_slots).
struct RecoveryConfig {
  uint32_t snapshot_interval = 0;  // 0: no recovery state kept
  uint32_t state_slots = 1;        // float32 values per element in a snapshot
};
inline constexpr uint32_t kMaxSnapshotInterval = 1000000;
inline constexpr uint32_t kMaxStateSlots = 16;

struct JobSpec {
  std::string job_id;
  uint32_t world_size = 0;
  CodecConfig codec;
  RecoveryConfig recovery;
  PartitionPlan plan;                  // the tensors, their partitions and owning shards
  std::vector<PartitionRoute> routes;  // per partition id

  const PartitionRoute& route(uint32_t partition) const { return routes[partition]; }
  uint32_t shard_count() const { return plan.options().shard_count; }
};

// INVALID_ARGUMENT unless `job_id` is 1..128 bytes of [A-Za-z0-9._-].
absl::Status ValidateJobId(absl::string_view job_id);

// The proto's CodecSettings with every default applied; INVALID_ARGUMENT naming the field
// ("codec.clip_sigmas") for unusable values.
absl::StatusOr<CodecConfig> ResolveCodec(const ternps::v1::CodecSettings& settings,
                                         uint32_t max_partition_elements = kMaxPartitionElements);
// Every field set explicitly, so a shard resolves exactly `codec`.
ternps::v1::CodecSettings CodecToProto(const CodecConfig& codec);

// Resolves a JoinRequest's job_id, world_size, tensors and codec settings against `limits`
// (worker_rank, shard_index and plan_checksum are the caller's to check). INVALID_ARGUMENT naming
// the field, or RESOURCE_EXHAUSTED for a registration beyond the limits.
absl::StatusOr<JobSpec> ResolveJobSpec(const ternps::v1::JoinRequest& request,
                                       const SpecLimits& limits);

// OK if `other` registers the same job as `job`; otherwise FAILED_PRECONDITION naming the first
// field that differs, in the proto's field order ("world_size", "tensors[3].elements",
// "codec.seed", ...).
absl::Status CompareSpecs(const JobSpec& job, const JobSpec& other);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_SPEC_JOB_SPEC_H_
