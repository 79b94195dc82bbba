// Recovery of a worker's model (OfferState, Recover): every snapshot_interval steps one live
// worker uploads its state to the shards (PutSnapshot, cut into calls of at most
// max_call_bytes); a worker that rejoined rebuilds the model its peers have by fetching each
// partition's snapshot and the averages since, page by page (GetRecovery, at most
// kRecoveryPageBytes of averages per answer, at most one page per group held at a time), and
// replaying them through the caller's optimizer step.
#ifndef TERNPS_WORKER_CLIENT_RECOVERY_H_
#define TERNPS_WORKER_CLIENT_RECOVERY_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spec/job_spec.h"
#include "ternps/v1/ternps.pb.h"
#include "ternps/worker.h"
#include "worker/client/exchange.h"
#include "worker/client/session.h"

namespace ternps::worker {

// Driven by the worker's one driving thread, between steps.
class Recovery {
 public:
  // `host` decodes the replayed averages (host memory).
  Recovery(const WorkerOptions& options, const common::JobSpec& spec, Session& session,
           Exchange& host);

  // After the averages of step - 1 are applied to `state`: uploads it when this worker is the one
  // to snapshot at `step` (step a multiple of snapshot_interval, its rank's turn); else nothing.
  absl::Status Offer(State state, uint64_t step);
  // Rebuilds `state` as of `to_step` from the shards' snapshot and the averages since, calling
  // apply(t) after writing step t's average into `gradients` (checked by the caller).
  absl::Status Recover(State state, Gradients gradients,
                       const std::function<absl::Status(uint64_t)>& apply, uint64_t to_step);

  // Bytes of averages a GetRecovery answer holds (GetRecoveryRequest.max_bytes).
  static constexpr uint64_t kRecoveryPageBytes = uint64_t{16} << 20;

 private:
  // The partitions one GetRecovery asks a shard for, and their current page.
  struct RecoveryGroup {
    uint32_t shard = 0;
    std::vector<uint32_t> partitions;
    ternps::v1::GetRecoveryResponse page;
  };
  absl::Status CheckState(State state) const;
  // Replaces `g.page` with its recovery page from `from_step` to `to_step`, checked; false if the
  // shard answered UNAVAILABLE (a step still aggregating) and not `retry` (else retried with
  // backoff until `deadline`).
  absl::StatusOr<bool> FetchRecoveryPage(RecoveryGroup& g, uint64_t from_step, uint64_t to_step,
                                         absl::Time deadline, bool retry);
  // One replay; false if a partition's snapshot moved meanwhile (start again).
  absl::StatusOr<bool> RecoverOnce(State state, Gradients gradients,
                                   const std::function<absl::Status(uint64_t)>& apply,
                                   uint64_t to_step);

  const WorkerOptions& options_;
  const common::JobSpec& spec_;
  Session& session_;
  Exchange& host_;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_RECOVERY_H_
