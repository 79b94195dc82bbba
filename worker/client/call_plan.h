// Which partitions travel in which call: decided once per job, from its spec and the worker's
// options, by pure functions (no I/O, no state), so the cut is tested on its own and written once.
#ifndef TERNPS_WORKER_CLIENT_CALL_PLAN_H_
#define TERNPS_WORKER_CLIENT_CALL_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/types/span.h"
#include "common/spec/job_spec.h"

namespace ternps::worker {

// Partitions that one call to one shard carries.
struct CallGroup {
  uint32_t shard = 0;
  int channel = 0;                   // which of the shard's connections carries it (push only)
  std::vector<uint32_t> partitions;  // in plan order
};

struct CallPlan {
  // PushPull calls: each shard's partitions in plan order, cut at max_call_bytes of uplink
  // payload, then interleaved across shards (every shard gets work from the start of a step).
  // A shard's consecutive calls take turns on its connections.
  std::vector<CallGroup> push;
  // ShareScalers calls: one per shard that owns INT_SUM partitions, listing them in plan order.
  std::vector<CallGroup> scalers;
  // Partitions that are compressed (statistics and a scaler each step), in plan order.
  std::vector<uint32_t> compressed;
};

// Cuts `partitions`, in order, into consecutive groups whose bytes_of sum is at most max_bytes;
// a partition larger than max_bytes gets a group of its own. Empty input, no groups.
std::vector<std::vector<uint32_t>> CutInOrder(absl::Span<const uint32_t> partitions,
                                              const std::function<size_t(uint32_t)>& bytes_of,
                                              size_t max_bytes);

// The calls of a step for a job with `shards` shards (the spec's plan was built for them).
CallPlan PlanCalls(const common::JobSpec& spec, uint32_t shards, size_t max_call_bytes,
                   int channels_per_shard);

// The PutSnapshot/GetRecovery groups of `shard`: its partitions cut at max_call_bytes of state
// (state_slots float32 values per element).
std::vector<std::vector<uint32_t>> PlanStateGroups(const common::JobSpec& spec, uint32_t shard,
                                                   size_t max_call_bytes);

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_CALL_PLAN_H_
