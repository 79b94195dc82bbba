// The lock a step's threads meet under: what the thread driving a step waits for (calls ending,
// connections lost, tensors marked ready, scaler calls answered, the caller finishing the step),
// with the step's StepProgress under it. Used by worker.cc only; header-only.
#ifndef TERNPS_WORKER_CLIENT_STEP_EVENTS_H_
#define TERNPS_WORKER_CLIENT_STEP_EVENTS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "worker/client/step_progress.h"

namespace ternps::worker {

// What the thread driving a step waits for: calls ending, connections lost, tensors marked ready
// (which makes calls ready), scaler calls answered, the caller finishing the step. The step's
// StepProgress lives under its lock. `pending` counts what must end before the step can:
// PushPull calls not ended (each counts until answered and decoded, failed, held or abandoned)
// and ShareScalers calls in flight.
class StepEvents {
 public:
  StepEvents(StepProgress* progress, int pending) : progress_(progress), pending_(pending) {}

  // What the driver is to do now.
  struct Work {
    std::vector<size_t> ready;        // calls whose tensors are all marked, in call order
    std::vector<size_t> shared;       // scaler calls answered (indexes of the step's scaler calls)
    bool loss = false;                // a PushPull call lost its connection since the last Work
    bool unmarked_at_finish = false;  // Finish came while some tensors were not marked
    bool done = false;  // nothing pending, and every tensor marked (or the step failed)
  };

  // Marks `tensors` ready as one group (StepProgress::Mark); `on_marked` runs under the lock
  // once the mark is accepted, before the driver can see the calls it readies.
  absl::Status Mark(absl::Span<const uint32_t> tensors, StepProgress::Written written,
                    const std::function<void()>& on_marked = nullptr) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (!ended_.ok()) return ended_;
    absl::StatusOr<std::vector<size_t>> ready = progress_->Mark(tensors, std::move(written));
    if (!ready.ok()) return ready.status();
    if (on_marked) on_marked();
    ready_.insert(ready_.end(), ready->begin(), ready->end());
    return absl::OkStatus();
  }
  void AddPending(int n) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    pending_ += n;
  }
  void DecrementCount() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    --pending_;
  }
  // Call `call` is answered and decoded: the groups it completes are told, outside the lock.
  void Decoded(size_t call) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<StepProgress::Written> written;
    {
      absl::MutexLock lock(&mu_);
      written = progress_->Decoded(call);
    }
    for (StepProgress::Written& w : written) w(absl::OkStatus());
    DecrementCount();
  }
  void NoteLoss() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ++losses_;
  }
  // Scaler call `index` ended (its status is in the call): the driver looks at it.
  void ScalerCallEnded(size_t index) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    shared_.push_back(index);
  }
  // The step failed: the driver wakes to abandon what was not sent.
  void Wake() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    failed_ = true;
  }
  // No more marks will come.
  void Finish() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    finishing_ = true;
  }
  // The step failed with `error`, and nothing of it runs any more: the groups not told yet are
  // told, and later marks are refused with it.
  void EndWith(const absl::Status& error) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<StepProgress::Written> uncalled;
    {
      absl::MutexLock lock(&mu_);
      ended_ = absl::Status(error.code(), absl::StrCat("the step failed: ", error.message()));
      uncalled = progress_->TakeUncalled();
    }
    for (StepProgress::Written& w : uncalled) w(error);
  }

  Work Wait() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !ready_.empty() || !shared_.empty() || losses_ > seen_ ||
             (failed_ && !failure_seen_) ||
             (finishing_ && !finish_seen_ && !progress_->all_marked()) || DoneLocked();
    };
    mu_.Await(absl::Condition(&has_work));
    Work work;
    work.ready.swap(ready_);
    std::sort(work.ready.begin(), work.ready.end());
    work.shared.swap(shared_);
    work.loss = losses_ > seen_;
    seen_ = losses_;
    failure_seen_ = failed_;
    if (finishing_ && !finish_seen_ && !progress_->all_marked()) work.unmarked_at_finish = true;
    finish_seen_ = finishing_;
    work.done = work.ready.empty() && work.shared.empty() && !work.loss && DoneLocked();
    return work;
  }
  std::vector<uint32_t> Unmarked(size_t limit) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return progress_->Unmarked(limit);
  }

 private:
  bool DoneLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_ == 0 && ready_.empty() && shared_.empty() &&
           (progress_->all_marked() || failed_);
  }

  mutable absl::Mutex mu_;
  StepProgress* const progress_ ABSL_PT_GUARDED_BY(mu_);
  absl::Status ended_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> ready_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> shared_ ABSL_GUARDED_BY(mu_);
  int losses_ ABSL_GUARDED_BY(mu_) = 0;
  int seen_ ABSL_GUARDED_BY(mu_) = 0;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool failure_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_seen_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_STEP_EVENTS_H_
