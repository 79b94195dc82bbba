// A call that is answered once all of its parts (partitions) are complete, possibly by other
// threads: every part fills its own pre-sized slot of the response, and whichever part is last
// runs `done`, outside every engine lock (see Finisher).
//
//   auto call = std::make_shared<PendingCall<PushPullResponse>>(response, parts, std::move(done));
//   ... part i complete: call->response()->mutable_averages(i)->... ; finisher.PartDone(call);
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
#include "absl/synchronization/mutex.h"

namespace ternps::server {

using DoneCallback = std::function<void(absl::Status)>;

class PendingCallBase {
 public:
  PendingCallBase(int parts, DoneCallback done) : remaining_(parts), done_(std::move(done)) {}
  virtual ~PendingCallBase() = default;

  // Records a failure of one part (the first one wins) before PartDone.
  void Fail(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (status_.ok()) status_ = std::move(status);
  }
  // Marks one part complete; true when it was the last (the caller then runs Finish()).
  bool PartDone() { return remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1; }
  void Finish() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = status_;
    }
    done_(std::move(status));
  }

 private:
  std::atomic<int> remaining_;
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
// each, outside the locks; if one fails, every call fails with its error.
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
