// Checks of what a shard answers, before anything of it reaches the worker's state: a shard is a
// peer on the network, and a wrong answer (another version, a bug, corruption) must fail the call
// with a message naming the field, never write a wrong gradient. Pure functions; the caller
// prefixes the shard and the call ("shard 1 (host:port) PushPull answer: averages[3]...").
#ifndef TERNPS_WORKER_CLIENT_ANSWER_CHECKS_H_
#define TERNPS_WORKER_CLIENT_ANSWER_CHECKS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/plan/partition_plan.h"
#include "common/spec/job_spec.h"
#include "common/wire/push_pull_wire.h"
#include "ternps/v1/ternps.pb.h"
#include "worker/client/exchange.h"

namespace ternps::worker {

// Checks an answered average of partition `p` against the spec's downlink and, for INT_SUM, the
// shared scaler this worker encoded with. With `as_pieces` the payload's values are left to the
// exchange's Decode, which checks them as it writes. The message starts with the field's suffix
// (".contributors: ...", ": partition ..."), to follow "averages[i]".
absl::StatusOr<Average> ValidateAverage(const common::PayloadView& avg, uint32_t p,
                                        const common::JobSpec& spec, float shared_scaler,
                                        bool as_pieces, std::vector<uint8_t>* scratch);

// Checks a ShareScalers answer for `partitions` (in request order): one shared scaler per
// partition, the same ids, each a valid scaler at least this worker's own (scalers[p]); then, and
// only if all are good, sets scalers[p] to the shared ones.
absl::Status CheckSharedScalers(const ternps::v1::ShareScalersResponse& answer,
                                absl::Span<const uint32_t> partitions, std::vector<float>& scalers);

// Checks a Join answer from shard `shard`: the same plan checksum and owned partitions as this
// worker's plan.
absl::Status CheckJoinAnswer(const ternps::v1::JoinResponse& answer,
                             const common::PartitionPlan& plan, uint32_t shard);

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_ANSWER_CHECKS_H_
