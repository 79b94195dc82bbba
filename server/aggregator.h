// The aggregation state of one partition on its shard: the scaler exchange and the sum of the
// pushes of the oldest incomplete step and the one after it (a worker done with step t may push
// t+1 while others still read t), so memory stays O(2 x partition).
//
// Per step, a partition collects one offer (ShareScalers, with scaler sharing) and one push
// (PushPull) from every rank the membership requires at that step, then answers every waiting
// call and frees the step:
//   - kIntSum (TERNARY_2BIT with scaler sharing): int16 sums of the codes, answered as INT_SUM
//     with the shared scaler; exact, independent of arrival order.
//   - kTernaryFloat (TERNARY_2BIT without sharing): float32 sum of scaler_i * code_i in rank
//     order, answered as FP32 or re-ternarized (the shard's own random stream).
//   - kFp32: float32 sum in rank order, answered as FP32.
// Float sums are taken in rank order whatever the pushes' arrival order (Slot::deferred), so an
// average depends only on the pushed values (the proto states the order).
// The average is sum / contributors in float32 (contributors = pushes included).
//
// The caller validates payloads before handing them over (server/request_validation.h, so
// applying cannot fail) and holds mu() around every call (several aggregators are locked in
// ascending id order by one request). Time comes from the config's clock.
// Thread-compatible under mu().
#ifndef TERNPS_SERVER_AGGREGATOR_H_
#define TERNPS_SERVER_AGGREGATOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/codec/ternary_element.h"
#include "common/spec/job_spec.h"
#include "common/util/clock.h"
#include "common/wire/push_pull_wire.h"
#include "server/answer.h"
#include "server/membership.h"
#include "server/observer.h"
#include "server/pending_call.h"
#include "server/recovery_log.h"
#include "server/state_store.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

// The worker id of the shard's own random stream (re-ternarized averages).
inline constexpr uint32_t kShardStreamWorker = 0xFFFFFFFFu;

struct PartitionConfig {
  uint32_t id = 0;
  uint32_t elements = 0;
  common::PartitionRoute route;  // from the job spec: aggregation and downlink encoding
  bool int_sum_radix = false;    // the job's CodecConfig::int_sum_radix (common::AverageEncoding)
  uint64_t seed = 0;
  absl::Duration step_timeout = absl::Seconds(60);
  const common::Clock* clock = &common::Clock::Real();  // not owned
  // Recovery: keep the snapshot and every average answered since (JobSpec.recovery).
  bool keep_recovery = false;
  size_t state_bytes = 0;  // bytes of this partition's snapshot (4 * state_slots * elements)
  // With keep_recovery on a durable shard: where the snapshot and the averages are written (every
  // average before it is answered). Not owned; null: memory only.
  PartitionStore* store = nullptr;
};

class PartitionAggregator {
 public:
  explicit PartitionAggregator(const PartitionConfig& config);

  const PartitionConfig& config() const { return config_; }
  absl::Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }
  // Tells the thread-safety analysis that mu() is held (taken by a PartitionLocks); checks it.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK(mu_) { mu_.AssertHeld(); }
  // The oldest incomplete step. Readable without the lock.
  uint64_t base_step() const { return base_step_.load(std::memory_order_acquire); }

  // The first step a rank readmitted now can take part in: the base step, or a later one when
  // the others have already settled its shared scaler without this rank (it could not encode
  // with a scaler that ignores its own gradient).
  uint64_t FirstOpenStep() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // OK if `rank` may offer (scalers) or push at `step` now: FAILED_PRECONDITION for a step
  // outside [base, base + 1] or, for a push under sharing, before the scalers are shared;
  // ALREADY_EXISTS for a repeat within the step unless `may_repeat` (the rank resumed its
  // session after a lost connection: Offer and Push then answer the repeat like the first, and
  // count it once). A repeat of a completed step by a rank that contributed to it is OK while
  // that step's average is kept (with recovery, the whole log; without, the newest completed
  // step, for a resumed session only): Offer and Push answer it from there (a worker repeating a
  // step whose answer its lost connection carried, or after its shard restarted). `index` is the
  // partition's place in the request, named in the messages ("partition_ids[2]", "partitions[2]");
  // nothing is formatted unless a check fails.
  absl::Status CheckOffer(uint32_t rank, uint64_t step, int index, bool may_repeat = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckPush(uint32_t rank, uint64_t step, const common::PayloadView& payload,
                         int index, bool may_repeat = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Records an offer / a push that passed the checks above; the call's part `index` is answered
  // when the step completes.
  void Offer(uint32_t rank, uint64_t step, float scaler,
             std::shared_ptr<PendingCall<ternps::v1::ShareScalersResponse>> call, int index,
             const MembershipView& view, Finisher& finisher) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The payload's bytes are summed before this returns (the caller may then reuse them).
  void Push(uint32_t rank, uint64_t step, const common::PayloadView& payload,
            std::shared_ptr<PendingCall<PushPullAnswer>> call, int index,
            const MembershipView& view, Finisher& finisher, std::vector<CompletionStats>* completed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The job just started (its last rank joined): the steps waiting for it time out from `now`,
  // not from when their first call arrived (which may be long before the slow starter came).
  void RestartDeadlines(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completes whatever the (changed) membership no longer waits for.
  void Recheck(const MembershipView& view, Finisher& finisher,
               std::vector<CompletionStats>* completed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds to `missing` the ranks a step has waited too long for: every rank it still waits for once
  // its deadline has passed (step_timeout after it started, or after its scalers settled), and
  // before that any joined rank it waits for that has been silent on this shard for step_timeout
  // (`active_ns[r]`: when rank r last called or had a call answered). The second rule keeps a
  // rank that died between shards from costing its peers a second timeout here: the other shard
  // already waited for it once. And, at any time, any joined rank it waits for whose connection
  // closed at least `grace` ago (`disconnected_ns[r]`: when rank r's last Watch call closed;
  // INT64_MAX while one is open or it never watched).
  void CollectExpired(absl::Time now, const MembershipView& view,
                      absl::Span<const std::atomic<int64_t>> active_ns,
                      absl::Span<const std::atomic<int64_t>> disconnected_ns, absl::Duration grace,
                      std::vector<uint32_t>* missing) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Recovery (see the proto's header). CheckSnapshot: OK if a snapshot of the state at the start
  // of `step` fits (FAILED_PRECONDITION if step - 1 is not complete here, or the job keeps no
  // recovery state). ApplySnapshot replaces an older snapshot and forgets the averages before
  // `step`; an equal or older step is ignored.
  absl::Status CheckSnapshot(uint64_t step, size_t bytes, int index) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // INTERNAL if a durable shard cannot start the next log segment (the snapshot is applied).
  absl::Status ApplySnapshot(uint64_t step, std::string state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A restarted durable shard: takes the snapshot and log read back from the state directory
  // (checked against this partition by the store) and continues at the first step not logged.
  void Restore(LoadedPartition loaded) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RecoveryLog::CheckRecovery.
  absl::Status CheckRecovery(uint64_t to_step) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return log_.CheckRecovery(to_step);
  }
  // A page of the recovery to `to_step` (RecoveryLog::Recovery).
  absl::Status Recovery(uint64_t to_step, uint64_t from_step, int index, uint64_t* budget,
                        ternps::v1::PartitionRecovery* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Fails every waiting call with `status` and forgets both steps (shutdown, job removed).
  void FailAll(const absl::Status& status, Finisher& finisher) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

 private:
  struct ScalerWaiter {
    std::shared_ptr<PendingCall<ternps::v1::ShareScalersResponse>> call;
    int index;
  };
  struct PushWaiter {
    std::shared_ptr<PendingCall<PushPullAnswer>> call;
    int index;
  };
  struct Slot {
    bool active = false;
    uint64_t step = 0;
    absl::Time deadline = absl::InfiniteFuture();
    RankBits offered;
    float shared_scaler = 0.0f;
    bool scalers_done = false;
    std::vector<ScalerWaiter> scaler_waiters;
    RankBits pushed;
    int pushes = 0;
    absl::Time first_push;
    absl::Time last_push;
    absl::Duration apply;  // time spent decoding and summing pushes
    // kIntSum: with 4-bit fields (world size N = 4..7 at the step's first push: packed_offset =
    // N) the sums are kept as the INT_SUM answer itself, fields k + N, in `packed` (answered
    // without a copy when N workers pushed); otherwise (packed_offset 0) as int_sums.
    int packed_offset = 0;
    std::shared_ptr<AverageBytes> packed;
    std::vector<int16_t> int_sums;  // capacity kept across steps
    // Otherwise: float32 sums, kept in the buffer the average is sent from (an FP32 average is
    // divided in place and answered without a copy); replaced when an answer still holds it.
    std::shared_ptr<AverageBytes> float_sums;
    // Float sums are taken in rank order, so that an average depends only on the pushed values,
    // not on when they arrived: ranks [0, next_rank) are summed; a push from a later rank is
    // copied into `deferred` until the ranks before it are in (or, for ranks that never push
    // this step, until the slot completes), then summed in rank order. The first rank summed
    // is copied, not added (0 + -0 would be +0).
    uint32_t next_rank = 0;
    bool summed_any = false;
    struct Deferred {
      uint32_t rank = 0;
      float scaler = 0.0f;
      std::vector<uint8_t> bytes;  // the payload, contiguous (capacity kept across steps)
    };
    std::vector<Deferred> deferred;  // the first `deferred_count` are in use
    size_t deferred_count = 0;
    std::vector<PushWaiter> push_waiters;
  };

  bool sharing() const { return config_.route.aggregation == common::Aggregation::kIntSum; }
  // The slot's float sums as floats (n elements), in a buffer nobody else holds.
  absl::Span<float> FloatSums(Slot& slot, bool first) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds one push (its payload pieces; the scaler of a ternary one) to the slot's float sums
  // (kFp32, kTernaryFloat), or copies it when it is the first summed.
  void SumFloatPush(Slot& slot, absl::Span<const common::Piece> pieces, float scaler)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sums the deferred pushes of ranks next in order (all of them, in rank order, with `all`).
  void SumDeferred(Slot& slot, bool all) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves a slot's packed sums into int_sums (k = field - packed_offset): for an answer of
  // fewer contributors than the offset, or a push beyond it.
  void UnpackIntSums(Slot& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers every waiting push of a complete slot with `status` (its average is unusable).
  void FailPushes(Slot& slot, const absl::Status& status, Finisher& finisher)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckStep(uint64_t step, const char* list, int index) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The slot of `step` (in [base, base + 1]), activated if idle.
  Slot& SlotFor(uint64_t step, uint32_t world_size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TryComplete(const MembershipView& view, Finisher& finisher,
                   std::vector<CompletionStats>* completed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Encodes the average of a complete slot once and answers every waiting call with it (the
  // calls share the bytes; nothing is copied per waiter).
  CompletionStats Complete(Slot& slot, Finisher& finisher) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const PartitionConfig config_;
  mutable absl::Mutex mu_;
  std::atomic<uint64_t> base_step_{0};
  Slot slots_[2] ABSL_GUARDED_BY(mu_);  // slot of step s: s % 2
  // Encoded averages of earlier steps; one is reused when no answer holds it any more.
  std::shared_ptr<AverageBytes> spare_[2] ABSL_GUARDED_BY(mu_);
  // The averages answered (for repeats and recovery; on disk first on a durable shard).
  RecoveryLog log_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_AGGREGATOR_H_
