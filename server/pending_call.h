// A call that is answered once all of its parts (partitions) are complete, possibly by other
// threads: every part fills its own pre-sized slot of the response, and whichever part is last
// runs `done`, outside every engine lock (see Finisher).
//
//   auto call = std::make_shared<PendingCall<PushPullResponse>>(response, parts, std::move(done));
//   ... part i complete: call->response()->mutable_averages(i)->... ; finisher.PartDone(call);
//
// Every call is answered exactly once: a call destroyed before its last part completed (its job
// was removed or the shard shut down while it waited, or a call parked in a job just being
// removed) is answered ABORTED by the destructor.
//
// Thread-safe: parts write disjoint fields of the response; the counter is atomic.
#ifndef TERNPS_SERVER_PENDING_CALL_H_
#define TERNPS_SERVER_PENDING_CALL_H_

#include <atomic>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace ternps::server {

using DoneCallback = std::function<void(absl::Status)>;

class PendingCallBase {
 public:
  PendingCallBase(int parts, DoneCallback done) : remaining_(parts), done_(std::move(done)) {}
  virtual ~PendingCallBase() {
    if (!finished_.exchange(true, std::memory_order_acq_rel)) {
      done_(absl::AbortedError(
          "job_id: the job was removed (it expired, ended or the shard is shutting down) before "
          "this call was answered; Join again"));
    }
  }
  PendingCallBase(const PendingCallBase&) = delete;
  PendingCallBase& operator=(const PendingCallBase&) = delete;

  // Records a failure of one part (the first one wins) before PartDone.
  void Fail(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (status_.ok()) status_ = std::move(status);
  }
  // Several parts of one call may report how many workers their answer includes, under different
  // partition locks: the call keeps the smallest (atomically), and a response with a
  // `contributors` field gets it when the call finishes.
  void NoteContributors(uint32_t n) {
    uint32_t seen = contributors_.load(std::memory_order_relaxed);
    while ((seen == 0 || n < seen) &&
           !contributors_.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
  }
  uint32_t contributors() const { return contributors_.load(std::memory_order_relaxed); }
  // Marks one part complete; true when it was the last (the caller then runs Finish()).
  bool PartDone() { return remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1; }
  void Finish() ABSL_LOCKS_EXCLUDED(mu_) {
    if (finished_.exchange(true, std::memory_order_acq_rel)) return;
    BeforeDone();
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = status_;
    }
    done_(std::move(status));
  }

 protected:
  // Runs once, on the finishing thread, after every part completed (acquire: the parts' writes
  // are visible).
  virtual void BeforeDone() {}

 private:
  std::atomic<uint32_t> contributors_{0};
  std::atomic<int> remaining_;
  std::atomic<bool> finished_{false};
  DoneCallback done_;
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

template <typename Response>
class PendingCall : public PendingCallBase {
 public:
  PendingCall(Response* response, int parts, DoneCallback done)
      : PendingCallBase(parts, std::move(done)), response_(response) {}
  Response* response() const { return response_; }

 private:
  void BeforeDone() override {
    if constexpr (requires(Response * r) { r->set_contributors(uint32_t{0}); }) {
      if (contributors() != 0) response_->set_contributors(contributors());
    }
  }
  Response* const response_;
};

// Something written under engine locks that must be durable before the answers that depend on
// it go out (a durable shard's log of averages).
class SyncTarget {
 public:
  virtual ~SyncTarget() = default;
  virtual absl::Status Sync() = 0;
};

// Collects the calls whose last part completed while engine locks were held, and finishes them
// when it goes out of scope (declare it before the locks). Targets to sync are synced first, once
// each, outside the locks; if one fails, every call fails (UNAVAILABLE, with its error).
class Finisher {
 public:
  Finisher() = default;
  Finisher(const Finisher&) = delete;
  Finisher& operator=(const Finisher&) = delete;
  ~Finisher() {
    absl::Status synced;
    for (SyncTarget* target : syncs_) {
      absl::Status st = target->Sync();
      if (synced.ok()) synced = std::move(st);
    }
    if (!synced.ok()) {
      // The worker joins again and repeats (UNAVAILABLE); the job reloads what is durable.
      synced = absl::UnavailableError(absl::StrCat(
          "the shard cannot make the averages durable (", synced.message(),
          "): it stops the job and reloads it from its state directory when a worker joins again"));
    }
    for (const auto& call : ready_) {
      if (!synced.ok()) call->Fail(synced);
      call->Finish();
    }
  }
  void PartDone(std::shared_ptr<PendingCallBase> call) {
    if (call->PartDone()) ready_.push_back(std::move(call));
  }
  void SyncBeforeFinishing(SyncTarget* target) {
    for (const SyncTarget* t : syncs_) {
      if (t == target) return;
    }
    syncs_.push_back(target);
  }

 private:
  std::vector<std::shared_ptr<PendingCallBase>> ready_;
  std::vector<SyncTarget*> syncs_;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_PENDING_CALL_H_
