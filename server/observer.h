// What the shard reports to whoever watches it (Prometheus, tests): observers are called after a
// request was accepted or a partition completed, never on rejected input, and never decide
// anything. server/metrics_observer.h is the Prometheus implementation.
//
//   class Counting : public JobObserver { ... };   // in a test
//   ShardConfig config; config.observer = &my_shard_observer;
//
// Implementations must be thread-safe: they are called from many request threads at once,
// without shard locks held, except PartitionCompleted (called after the partition's lock is
// released, but possibly while the call that completed it is still being processed).
#ifndef TERNPS_SERVER_OBSERVER_H_
#define TERNPS_SERVER_OBSERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace ternps::server {

// Figures of one completed step of a partition.
struct CompletionStats {
  uint64_t step = 0;
  uint64_t sent_bytes = 0;        // wire bytes of the average, times the calls answered
  absl::Duration straggler_wait;  // first push to last push
  absl::Duration aggregate;       // decoding and summing the pushes, and encoding the average
};

class JobObserver {
 public:
  virtual ~JobObserver() = default;
  // A PushPull of `step` was accepted: its payload bytes and their float32 equivalent.
  virtual void PushAccepted(uint64_t step, uint64_t wire_bytes, uint64_t dense_bytes) = 0;
  virtual void PartitionCompleted(const CompletionStats& stats) = 0;
  // `count` ranks were dropped from the live set after a step timeout.
  virtual void WorkersDropped(int count) = 0;
};

// The rpc methods, in the order of ternps_server_requests_total's `method` label values.
enum class Method {
  kJoin = 0,
  kShareScalers = 1,
  kPushPull = 2,
  kLeave = 3,
  kGetStatus = 4,
  kPutSnapshot = 5,
  kGetRecovery = 6,
};

class ShardObserver {
 public:
  virtual ~ShardObserver() = default;
  // The observer of a new job owning `owned_partitions` partitions on this shard.
  virtual std::unique_ptr<JobObserver> NewJob(size_t owned_partitions) = 0;
  // Every answered call, with its status code.
  virtual void RequestDone(Method method, absl::StatusCode code) = 0;
  // The shard's state after a timeout sweep: live workers over all jobs, newest step.
  virtual void ShardState(int live_workers, uint64_t newest_step) = 0;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_OBSERVER_H_
