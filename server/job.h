// One training job on one shard: its registration (tensors, codec, partition plan), membership,
// and the aggregators of the partitions this shard owns. The service layer hands every request of
// the job here; this is where DESIGN.md §3's validation happens.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Job> job, Job::Create(join_request, shard));
//   ASSIGN_OR_RETURN(JoinResponse r, job->Join(join_request));
//   job->PushPull(request, &response, [](absl::Status st) { ... });   // answered later
//
// Every data-path request is validated in two phases: first everything that needs no state
// (fields, payload bytes), then, with the partitions involved locked in ascending order, the
// membership/step/duplicate checks of all its partitions; only a request that passes both touches
// an aggregate, so nothing of a rejected request is ever summed.
//
// Thread-safe.
#ifndef TERNPS_SERVER_JOB_H_
#define TERNPS_SERVER_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "common/plan/partition_plan.h"
#include "server/aggregator.h"
#include "server/membership.h"
#include "server/pending_call.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

// What a shard process was started with.
struct ShardConfig {
  uint32_t shard_index = 0;
  uint32_t shard_count = 1;
  absl::Duration step_timeout = absl::Seconds(60);
  uint32_t max_world_size = 4096;
  // Jobs a shard serves at once; each costs memory at Join (RESOURCE_EXHAUSTED beyond).
  uint32_t max_jobs = 16;
  // Jobs whose owned partitions exceed this many elements are refused (RESOURCE_EXHAUSTED).
  uint64_t max_shard_elements = uint64_t{1} << 29;
  uint32_t max_partition_elements = common::kMaxPartitionElements;
  // Where to record metrics; null: none. Not owned; outlives the engine.
  common::ServerMetrics* metrics = nullptr;
};

// The codec settings with their defaults applied.
struct CodecConfig {
  ternps::v1::Codec codec = ternps::v1::CODEC_TERNGRAD;
  float clip_sigmas = 2.5f;
  bool scaler_sharing = true;
  uint32_t partition_elements = 1u << 20;
  uint32_t min_compress_elements = 4096;
  ternps::v1::Encoding downlink = ternps::v1::FP32;
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field ("codec.clip_sigmas") unless the settings are usable.
absl::StatusOr<CodecConfig> ResolveCodec(const ternps::v1::CodecSettings& settings,
                                         uint32_t max_partition_elements);
// Whether a job id is 1..128 bytes of [A-Za-z0-9._-].
absl::Status ValidateJobId(absl::string_view job_id);

// Counters of a job since it was created (wire payload bytes), for GetStatus.
struct JobCounters {
  std::atomic<uint64_t> received_bytes{0};
  std::atomic<uint64_t> sent_bytes{0};
};

class Job {
 public:
  static absl::StatusOr<std::unique_ptr<Job>> Create(const ternps::v1::JoinRequest& request,
                                                     const ShardConfig& shard);

  const std::string& id() const { return id_; }
  // FAILED_PRECONDITION naming the first field in which `request` differs from this job.
  absl::Status Matches(const ternps::v1::JoinRequest& request) const;
  // Admits the worker (after Matches).
  ternps::v1::JoinResponse Join(const ternps::v1::JoinRequest& request);

  void ShareScalers(const ternps::v1::ShareScalersRequest& request,
                    ternps::v1::ShareScalersResponse* response, DoneCallback done);
  void PushPull(const ternps::v1::PushPullRequest& request, ternps::v1::PushPullResponse* response,
                DoneCallback done);
  absl::StatusOr<ternps::v1::LeaveResponse> Leave(const ternps::v1::LeaveRequest& request);

  void FillStatus(ternps::v1::JobStatus* status) const;
  // Drops the ranks an expired step still waits for; returns how many were dropped.
  int CheckTimeouts(absl::Time now);
  // Fails every waiting call (shutdown).
  void FailAll(const absl::Status& status);
  bool AnyLive() const { return membership_.AnyLive(); }
  int LiveWorkers() const { return membership_.View()->LiveCount(); }
  // The newest step any owned partition is at.
  uint64_t NewestStep() const;

 private:
  Job(std::string id, const ternps::v1::JoinRequest& request, CodecConfig codec,
      common::PartitionPlan plan, const ShardConfig& shard);

  // The aggregator of partition `id` if this shard owns it, else null.
  PartitionAggregator* Owned(uint32_t id) const;
  // Completes what a membership change released.
  void RecheckAll();
  void Account(const std::vector<CompletionStats>& completed);
  // Notes the first push of `step` (for ternps_server_step_seconds).
  void NoteStepStart(uint64_t step);

  const std::string id_;
  const uint32_t world_size_;
  const CodecConfig codec_;
  const common::PartitionPlan plan_;
  const ShardConfig shard_;
  Membership membership_;
  std::vector<int32_t> owned_index_;  // partition id -> index into aggregators_, or -1
  std::vector<std::unique_ptr<PartitionAggregator>> aggregators_;
  JobCounters counters_;
  // Per in-flight step: when its first push arrived and how many owned partitions completed it.
  struct StepTiming {
    uint64_t step = UINT64_MAX;
    absl::Time first_push;
    size_t completed = 0;
  };
  absl::Mutex timing_mu_;
  StepTiming timing_[2] ABSL_GUARDED_BY(timing_mu_);
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_JOB_H_
