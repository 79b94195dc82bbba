// Validation of the data-path requests (ShareScalers, PushPull) against what a shard knows
// without locking anything: the job's spec, the shard's index and a membership snapshot. Pure
// functions: no locks, no side effects; a request either comes out validated or gets a precise
// status naming the field.
//
//   absl::StatusOr<ValidatedRequest> v = ValidatePushPull(request, spec, shard_index, *view);
//   if (!v.ok()) return done(v.status());          // nothing was touched
//
// What they cannot check (the partition's step window, duplicates, the settled shared scaler)
// needs the partition's state; Job checks that under the partitions' locks before applying.
#ifndef TERNPS_SERVER_REQUEST_VALIDATION_H_
#define TERNPS_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/spec/job_spec.h"
#include "common/wire/push_pull_wire.h"
#include "server/membership.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

struct ValidatedRequest {
  uint32_t rank = 0;
  uint64_t step = 0;
  std::vector<uint32_t> partitions;  // ids, in request order, each owned by the shard, unique
  uint64_t wire_bytes = 0;           // PushPull: payload bytes
  uint64_t dense_bytes = 0;          // PushPull: their float32 size
  // The caller's session was resumed after a lost connection (RankRecord::may_repeat): it may
  // repeat offers and pushes the shard already has.
  bool may_repeat = false;
};

// The caller is a joined rank with a current epoch (MembershipView::CheckCaller) and not behind
// its readmission step; partition_ids and scalers have the same non-zero length; every id is a
// partition this shard owns, aggregated as INT_SUM (scaler sharing), listed once; every scaler
// is finite and >= 0.
absl::StatusOr<ValidatedRequest> ValidateShareScalers(
    const ternps::v1::ShareScalersRequest& request, const common::JobSpec& spec, uint32_t shard,
    const MembershipView& view);

// The caller as above; partitions is non-empty; each payload is a partition this shard owns,
// listed once, with the plan's element count, the route's uplink encoding, contributors 0, and a
// scaler and data that are valid for that encoding (wire format in the proto).
absl::StatusOr<ValidatedRequest> ValidatePushPull(const common::PushPullRequestView& request,
                                                  const common::JobSpec& spec, uint32_t shard,
                                                  const MembershipView& view);

// The data of one payload against `encoding` (FP32 or TERNARY_2BIT) and `elements`, piece by
// piece: length, finite values / valid codes and zero padding. INVALID_ARGUMENT naming "data".
absl::Status ValidatePayloadData(const common::PayloadView& payload, ternps::v1::Encoding encoding,
                                 uint32_t elements);

}  // namespace ternps::server

#endif  // TERNPS_SERVER_REQUEST_VALIDATION_H_
