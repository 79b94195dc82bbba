#include "server/shard_config.h"

#include "absl/strings/str_cat.h"
#include "server/state_store.h"

namespace ternps::server {

absl::Status ValidateShardConfig(const ShardConfig& config) {
  if (config.shard_count == 0 || config.shard_count > common::kMaxShards) {
    return absl::InvalidArgumentError(absl::StrCat("--shard_count: ", config.shard_count,
                                                   " is outside [1, ", common::kMaxShards, "]"));
  }
  if (config.shard_index >= config.shard_count) {
    return absl::InvalidArgumentError(absl::StrCat("--shard_index: ", config.shard_index,
                                                   " must be below --shard_count ",
                                                   config.shard_count));
  }
  if (config.step_timeout <= absl::ZeroDuration() ||
      config.step_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--step_timeout: ", absl::FormatDuration(config.step_timeout),
                     " must be positive and finite"));
  }
  if (config.job_idle_timeout <= absl::ZeroDuration() ||
      config.job_idle_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--job_idle_timeout: ", absl::FormatDuration(config.job_idle_timeout),
                     " must be positive and finite"));
  }
  if (config.start_timeout <= absl::ZeroDuration() ||
      config.start_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--start_timeout: ", absl::FormatDuration(config.start_timeout),
                     " must be positive and finite"));
  }
  if (config.ended_job_memory < absl::ZeroDuration() ||
      config.ended_job_memory == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ended_job_memory: ", absl::FormatDuration(config.ended_job_memory),
                     " must be finite and not negative"));
  }
  if (config.max_world_size == 0 || config.max_world_size > common::kMaxIntSumContributors) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_world_size: ", config.max_world_size, " is outside [1, ",
                     common::kMaxIntSumContributors, "] (INT_SUM averages carry at most ",
                     common::kMaxIntSumContributors, " contributors)"));
  }
  if (config.max_jobs == 0) return absl::InvalidArgumentError("--max_jobs: must be at least 1");
  if (config.max_partition_elements == 0 ||
      config.max_partition_elements > common::kMaxPartitionElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_partition_elements: ", config.max_partition_elements,
                     " is outside [1, ", common::kMaxPartitionElements, "]"));
  }
  if (config.max_shard_elements == 0) {
    return absl::InvalidArgumentError("--max_shard_elements: must be at least 1");
  }
  if (config.disconnect_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--disconnect_grace: must not be negative (0: off)");
  }
  if (config.max_recovery_bytes == 0) {
    return absl::InvalidArgumentError("--max_recovery_bytes: must be at least 1");
  }
  if (!config.state_dir.empty()) {
    if (absl::Status st = CheckStateDir(config.state_dir); !st.ok()) return st;
  }
  if (config.clock == nullptr) return absl::InvalidArgumentError("clock: null");
  return absl::OkStatus();
}

}  // namespace ternps::server
