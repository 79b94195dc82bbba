// Keeps one Watch call (see the proto) open on every shard while the worker is in the job, so
// that a shard learns within its --disconnect_grace when this process dies (its connections
// close), instead of at the step timeout. A watch that ends while the worker is still in the job
// (a reset connection, a restarted shard) is opened again by a keeper thread every
// kReopenInterval; a shard that does not know Watch (UNIMPLEMENTED) is not asked again.
//
//   ShardWatches watches(stubs, "job", rank, [&] { return NewContext(absl::InfiniteFuture()); });
//   watches.Watch(s, epoch);   // after every successful Join of shard s
//   watches.StopAll();         // at Leave; the destructor cancels and waits for every call
//
// Thread-safe.
#ifndef TERNPS_WORKER_CLIENT_SHARD_WATCH_H_
#define TERNPS_WORKER_CLIENT_SHARD_WATCH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "ternps/v1/ternps.grpc.pb.h"

namespace ternps::worker {

class ShardWatches {
 public:
  // A Watch lost while the worker is still in the job is opened again this often.
  static constexpr absl::Duration kReopenInterval = absl::Milliseconds(200);

  // `stubs` (one per shard, not owned) outlive this; `new_context` gives a call context without
  // a deadline carrying the job token.
  ShardWatches(std::vector<ternps::v1::ParameterServer::Stub*> stubs, std::string job_id,
               uint32_t rank, std::function<std::unique_ptr<grpc::ClientContext>()> new_context);
  // Cancels every watch and waits until gRPC has answered each.
  ~ShardWatches();
  ShardWatches(const ShardWatches&) = delete;
  ShardWatches& operator=(const ShardWatches&) = delete;

  // Shard `s` answered a Join with `epoch`: its watch is opened (again) with that epoch.
  void Watch(uint32_t s, uint64_t epoch) ABSL_LOCKS_EXCLUDED(mu_);
  // The worker left: every watch is cancelled and none is opened again.
  void StopAll() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Call {
    grpc::ClientContext* context = nullptr;  // owned by the call's callback
    uint64_t generation = 0;
  };
  struct Shard {
    uint64_t epoch = 0;  // 0: not watching
    bool unsupported = false;
    uint64_t generation = 0;  // of the current call; a callback of an older one is ignored
    bool open = false;        // the current call has not ended
    grpc::ClientContext* context = nullptr;  // the current call's, while open
  };
  void Open(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Ended(uint32_t s, uint64_t generation, const grpc::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  void KeeperLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<ternps::v1::ParameterServer::Stub*> stubs_;
  const std::string job_id_;
  const uint32_t rank_;
  const std::function<std::unique_ptr<grpc::ClientContext>()> new_context_;
  absl::Mutex mu_;
  std::vector<Shard> shards_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // calls whose callback has not run
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread keeper_;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_SHARD_WATCH_H_
