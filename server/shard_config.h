// What a shard process is started with (ternps-server's flags), and their validation.
//
//   ShardConfig config{.shard_index = 0, .shard_count = 2};
//   absl::Status st = ValidateShardConfig(config);   // INVALID_ARGUMENT naming the setting
//
// A plain value type.
#ifndef TERNPS_SERVER_SHARD_CONFIG_H_
#define TERNPS_SERVER_SHARD_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/codec/int_sum.h"
#include "common/plan/partition_plan.h"
#include "common/util/clock.h"
#include "server/observer.h"

namespace ternps::server {

struct ShardConfig {
  uint32_t shard_index = 0;
  uint32_t shard_count = 1;
  absl::Duration step_timeout = absl::Seconds(60);
  // A rank whose Watch call closed (its connection closed: the process died) and that opened none
  // again for this long is dropped then, not at the step timeout. 0: off (step timeout only).
  absl::Duration disconnect_grace = absl::Seconds(2);
  // A job that receives no call for this long is removed (its workers are gone; its id and memory
  // are freed, and a new run may reuse the id).
  absl::Duration job_idle_timeout = absl::Seconds(180);
  // A job takes its first step once every rank has joined; if some rank has not joined this long
  // after the job was created, the job ends with an error naming the missing ranks.
  absl::Duration start_timeout = absl::Minutes(5);
  // How long an ended job's id is remembered: a Join for it (a worker restarted after its peers
  // finished) is refused with the reason the job ended instead of starting the job again alone,
  // unless it sets restart_ended_job. 0: not remembered.
  absl::Duration ended_job_memory = absl::Minutes(30);
  // Largest world_size a job may register; INT_SUM carries at most 32767 contributors.
  uint32_t max_world_size = 4096;
  // Jobs a shard serves at once; each costs memory at Join (RESOURCE_EXHAUSTED beyond).
  uint32_t max_jobs = 16;
  // Jobs whose owned partitions exceed this many elements are refused (RESOURCE_EXHAUSTED).
  uint64_t max_shard_elements = uint64_t{1} << 29;
  uint32_t max_partition_elements = common::kMaxPartitionElements;
  // Jobs whose recovery state on this shard could exceed this many bytes are refused
  // (RESOURCE_EXHAUSTED naming snapshot_interval): a snapshot of the owned partitions and
  // snapshot_interval + 2 steps of their largest averages (server/recovery_log.h).
  uint64_t max_recovery_bytes = uint64_t{4} << 30;
  // Where the engine and aggregators read the time. Not owned; outlives the engine.
  const common::Clock* clock = &common::Clock::Real();
  // Who watches (metrics); null: nobody. Not owned; outlives the engine.
  ShardObserver* observer = nullptr;
  // Where jobs that keep recovery state (snapshot_interval > 0) are written durably, and restored
  // from at start-up (server/state_store.h). Empty: memory only; a restarted shard has lost its
  // jobs.
  std::string state_dir;
  // Whether every answered average is fdatasync'd before it is answered (survives a power loss),
  // or only written (survives a crash of the shard process, not of its machine: cheaper).
  bool state_sync = true;
  // Whether a job must have a token: a Join that would start a job without one is
  // UNAUTHENTICATED (common/rpc/job_token.h). Off: the first Join decides (a job started without
  // a token refuses calls that carry one, and the other way round).
  bool require_job_token = false;
  // Whether the engine runs its own timeout sweep (every step_timeout / 32, at most 1 s); tests
  // that drive a ManualClock call Engine::CheckTimeouts themselves.
  bool run_reaper = true;
};

// INVALID_ARGUMENT naming the first unusable setting by its ternps-server flag
// ("--max_world_size: ...").
absl::Status ValidateShardConfig(const ShardConfig& config);

}  // namespace ternps::server

#endif  // TERNPS_SERVER_SHARD_CONFIG_H_
