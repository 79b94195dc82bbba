// One training job on one shard: its spec (tensors, codec, partition plan and routes, fixed by
// the first Join), its membership, and the aggregators of the partitions this shard owns. The
// engine hands every request of the job here.
//
//   absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, limits);
//   absl::StatusOr<std::unique_ptr<Job>> job = Job::Create(*spec, shard_config);
//   absl::StatusOr<JoinResponse> joined = (*job)->Join(join, *spec);
//   (*job)->PushPull(request, &response, [](absl::Status st) { ... });   // answered later
//
// Every data-path request goes through validate-then-apply: a pure validation
// (server/request_validation.h) against the spec and a membership snapshot, then one apply that
// locks the request's partitions in ascending id order, checks their state (step window,
// duplicates, settled scaler) for all of them, and only if all pass records anything: membership
// (a readmitted rank's first call), counters, observers and aggregates. A rejected request
// changes no state.
//
// Thread-safe.
#ifndef TERNPS_SERVER_JOB_H_
#define TERNPS_SERVER_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/spec/job_spec.h"
#include "server/aggregator.h"
#include "server/answer.h"
#include "server/membership.h"
#include "server/observer.h"
#include "server/pending_call.h"
#include "server/request_validation.h"
#include "server/shard_config.h"
#include "server/state_store.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

// The limits a shard puts on registrations.
common::SpecLimits LimitsOf(const ShardConfig& shard);

class Job {
 public:
  // RESOURCE_EXHAUSTED if this shard's part of the job exceeds max_shard_elements. With a
  // `store` (a durable shard; the job keeps recovery state) the job writes its snapshots and
  // averages there.
  // `token_digest`: common::JobTokenDigest of the token the first Join carried (empty: none).
  static absl::StatusOr<std::unique_ptr<Job>> Create(common::JobSpec spec, const ShardConfig& shard,
                                                     std::string token_digest = {},
                                                     std::unique_ptr<JobStore> store = nullptr);
  // A job a durable shard wrote before it restarted: every owned partition's snapshot and log are
  // read back (DATA_LOSS naming the file if one does not fit the spec); every rank must Join
  // again, and epochs start above the previous incarnation's. The token digest is the store's.
  static absl::StatusOr<std::unique_ptr<Job>> Restore(common::JobSpec spec,
                                                      const ShardConfig& shard,
                                                      std::unique_ptr<JobStore> store);
  // Answers every call still waiting (ABORTED), while the job's members are all alive: a call
  // that parked after the job was removed from the engine is answered here, not lost.
  ~Job();
  // The job is over (every rank left, or it expired): its files are deleted.
  void RemoveState() {
    if (store_ != nullptr) store_->Remove();
  }
  // A durable shard's job whose files failed (a write, sync, rename or segment change): it
  // answers nothing any more, every call gets StoppedStatus, and the engine reloads it from its
  // state directory (what is durable) when a worker joins again.
  bool stopped() const { return store_ != nullptr && store_->fault().failed(); }
  // UNAVAILABLE, naming the file and errno of the failure and what happens next.
  absl::Status StoppedStatus() const;
  // Once stopped: cuts the open segments back to what is durable and fails every waiting call
  // with StoppedStatus. Idempotent; does nothing while the job is not stopped.
  void Stop();
  // The directory of a durable shard's job (empty: memory only).
  std::string StateDir() const { return store_ == nullptr ? std::string() : store_->dir(); }

  const std::string& id() const { return spec_.job_id; }
  const common::JobSpec& spec() const { return spec_; }
  // The job's token digest (common/rpc/job_token.h); empty if its first Join carried no token.
  const std::string& token_digest() const { return token_digest_; }

  // Admits the worker if `spec` (resolved from `request`) registers this job and the request's
  // plan_checksum, if any, matches; FAILED_PRECONDITION naming the first differing field if not.
  absl::StatusOr<ternps::v1::JoinResponse> Join(const ternps::v1::JoinRequest& request,
                                                const common::JobSpec& spec);
  void ShareScalers(const ternps::v1::ShareScalersRequest& request,
                    ternps::v1::ShareScalersResponse* response, DoneCallback done);
  // `answer` is filled before `done` runs; the request's bytes are not used after this returns.
  void PushPull(const common::PushPullRequestView& request, PushPullAnswer* answer,
                DoneCallback done);
  absl::StatusOr<ternps::v1::LeaveResponse> Leave(const ternps::v1::LeaveRequest& request);
  // A worker's Watch (see the proto): `call` is kept and answered when the rank leaves (OK), or
  // the job ends, stops or the shard shuts down (FailAll). An error if the caller is not a member
  // at its epoch (nothing kept).
  absl::Status Watch(const ternps::v1::WatchRequest& request,
                     std::shared_ptr<PendingCallBase> call);
  // `call`, a Watch of `rank`, was cancelled (the worker's connection closed, or it cancelled):
  // once the rank has no Watch open, it counts as disconnected from now (CheckTimeouts).
  void Unwatch(uint32_t rank, const PendingCallBase* call);
  // Recovery (see the proto): stores a snapshot (the request's state bytes are moved out), and
  // answers with snapshots and the averages since.
  absl::StatusOr<ternps::v1::PutSnapshotResponse> PutSnapshot(
      ternps::v1::PutSnapshotRequest& request);
  absl::StatusOr<ternps::v1::GetRecoveryResponse> GetRecovery(
      const ternps::v1::GetRecoveryRequest& request);

  void FillStatus(ternps::v1::JobStatus* status) const;
  // When a worker last called (any method but GetStatus).
  absl::Time LastCall() const {
    return absl::FromUnixNanos(last_call_ns_.load(std::memory_order_relaxed));
  }
  // Drops the ranks an expired step still waits for; returns how many were dropped. Never every
  // live rank at once unless all their connections closed (then they all died): every live
  // worker late at once is a fault of the network or of this shard, and they are waited for.
  int CheckTimeouts(absl::Time now);
  // Fails every waiting call (shutdown).
  void FailAll(const absl::Status& status);
  bool AnyLive() const { return membership_.AnyLive(); }
  bool started() const { return membership_.View()->started; }
  // FAILED_PRECONDITION naming the ranks that never joined once `start_timeout` has passed since
  // the job was created and it has not started; OK otherwise.
  absl::Status CheckStart(absl::Time now, absl::Duration start_timeout) const;
  int LiveWorkers() const { return membership_.View()->LiveCount(); }
  // The newest step any owned partition is at.
  uint64_t NewestStep() const;
  // A membership snapshot (tests, status).
  std::shared_ptr<const MembershipView> View() const { return membership_.View(); }

 private:
  Job(common::JobSpec spec, const ShardConfig& shard, std::string token_digest,
      std::unique_ptr<JobStore> store);

  struct OfferOp;
  struct PushOp;
  // The apply half of validate-then-apply, shared by ShareScalers and PushPull.
  template <typename Op>
  void Apply(const ValidatedRequest& request, Op op, DoneCallback done);

  // OK if `rank` may call with `epoch` and `partitions` are owned here, each once (`list` names
  // the request field in messages).
  absl::Status CheckRecoveryCaller(uint32_t rank, uint64_t epoch,
                                   absl::Span<const uint32_t> partitions, const char* list) const;
  // The aggregator of partition `id` if this shard owns it, else null.
  PartitionAggregator* Owned(uint32_t id) const;
  // Completes what a membership change released.
  void RecheckAll();
  // Notes `rank` active now and again when `done` runs.
  DoneCallback Activity(uint32_t rank, DoneCallback done);
  void Account(const std::vector<CompletionStats>& completed);

  const common::JobSpec spec_;
  const std::string token_digest_;
  const ShardConfig shard_;
  const std::unique_ptr<JobStore> store_;  // null: memory only
  Membership membership_;
  std::vector<int32_t> owned_index_;  // partition id -> index into aggregators_, or -1
  std::vector<std::unique_ptr<PartitionAggregator>> aggregators_;
  std::unique_ptr<JobObserver> observer_;
  void Touch() {
    last_call_ns_.store(absl::ToUnixNanos(shard_.clock->Now()), std::memory_order_relaxed);
  }
  // `rank` (validated) called, or one of its calls was answered: it is alive.
  void NoteActive(uint32_t rank) {
    active_ns_[rank].store(absl::ToUnixNanos(shard_.clock->Now()), std::memory_order_relaxed);
  }
  std::atomic<int64_t> last_call_ns_{0};
  std::atomic<bool> stop_done_{false};  // Stop ran
  // The step at which CheckTimeouts last found every live rank late (logged once per step); only
  // the reaper's thread uses it.
  uint64_t all_late_step_ = UINT64_MAX;
  const absl::Time created_;
  // Per rank: when it last called this shard or had a call answered (NoteActive).
  std::unique_ptr<std::atomic<int64_t>[]> active_ns_;
  // Per rank: its open Watch calls, and when the last one closed (kConnected: one is open, or it
  // never watched).
  absl::Mutex watch_mu_;
  std::vector<std::vector<std::shared_ptr<PendingCallBase>>> watches_ ABSL_GUARDED_BY(watch_mu_);
  std::unique_ptr<std::atomic<int64_t>[]> disconnected_ns_;
  static constexpr int64_t kConnected = INT64_MAX;
  // Answers (and forgets) the Watch calls of `rank` (every rank if kAllRanks) with `status`.
  static constexpr uint32_t kAllRanks = UINT32_MAX;
  void FinishWatches(uint32_t rank, const absl::Status& status) ABSL_LOCKS_EXCLUDED(watch_mu_);
  // Wire payload bytes since the job was created, for GetStatus.
  std::atomic<uint64_t> received_bytes_{0};
  std::atomic<uint64_t> sent_bytes_{0};
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_JOB_H_
