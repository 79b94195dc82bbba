// What a worker's calls share: the first error of a phase, what counts as a lost connection, and
// how often one step may reconnect.
#ifndef TERNPS_WORKER_CLIENT_CALL_STATUS_H_
#define TERNPS_WORKER_CLIENT_CALL_STATUS_H_

#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/status.h"

namespace ternps::worker {

// How often one step may reconnect to shards whose connections were lost (each reconnection
// waits up to connect_timeout for the shard).
inline constexpr int kMaxReconnectsPerStep = 8;

// Whether a call failed because its shard went away (connection lost, or the shard shut down and
// cancelled it) rather than because the shard refused it: the shard may come back (restarted
// from its state directory), so the worker reconnects and asks again. `cancelled_here`: this
// worker cancelled the call itself (its step failed already).
inline bool LostConnection(const grpc::Status& st, bool cancelled_here) {
  return st.error_code() == grpc::StatusCode::UNAVAILABLE ||
         (st.error_code() == grpc::StatusCode::CANCELLED && !cancelled_here);
}

// The first error of a step wins; later ones are usually its consequences.
class FirstError {
 public:
  FirstError() = default;
  // `on_first` runs once, on the thread that sets the first error (no lock held).
  explicit FirstError(std::function<void()> on_first) : on_first_(std::move(on_first)) {}
  void Set(absl::Status st) ABSL_LOCKS_EXCLUDED(mu_) {
    if (st.ok()) return;
    {
      absl::MutexLock lock(&mu_);
      if (!status_.ok()) return;
      status_ = std::move(st);
    }
    if (on_first_) on_first_();
  }
  absl::Status Get() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  const std::function<void()> on_first_;
  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_CALL_STATUS_H_
