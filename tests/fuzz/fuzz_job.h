// The job the engine fuzz target serves, shared with the seed generator so that the seeds are
// valid requests of that job (the fuzzer mutates them from there).
#ifndef TERNPS_TESTS_FUZZ_FUZZ_JOB_H_
#define TERNPS_TESTS_FUZZ_FUZZ_JOB_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/fp32.h"
#include "common/codec/ternary.h"
#include "common/spec/job_spec.h"
#include "server/engine.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::fuzz {

inline constexpr char kJob[] = "fuzz";
inline constexpr uint32_t kWorld = 3;
// The job's token, and another one (tokens are picked by an input byte).
inline constexpr char kToken[] = "fuzz-token-0123456789abcdef";
inline constexpr char kOtherToken[] = "fuzz-token-fedcba9876543210";

// Three tensors: w and v ternarized (partitions 0-3 of at most 4096 elements), b (7) in FP32.
inline ternps::v1::JoinRequest JobJoin(uint32_t rank) {
  ternps::v1::JoinRequest r;
  r.set_job_id(kJob);
  r.set_worker_rank(rank);
  r.set_world_size(kWorld);
  for (const auto& [name, n] :
       std::vector<std::pair<std::string, uint64_t>>{{"w", 10000}, {"v", 5000}, {"b", 7}}) {
    ternps::v1::TensorSpec* t = r.add_tensors();
    t->set_name(name);
    t->set_elements(n);
  }
  r.mutable_codec()->set_codec(ternps::v1::CODEC_TERNGRAD);
  r.mutable_codec()->set_partition_elements(4096);
  r.set_shard_count(1);
  r.set_snapshot_interval(2);  // recovery state kept: PutSnapshot and GetRecovery are live
  return r;
}

// The job's partitions (its spec resolved as the shard does, one shard).
inline ternps::common::JobSpec JobSpec() {
  return *ternps::common::ResolveJobSpec(JobJoin(0), {.shard_count = 1});
}

// Every rank joins `engine` with the job's token; their epochs, or the first error.
inline absl::StatusOr<std::vector<uint64_t>> JoinAll(ternps::server::Engine& engine) {
  std::vector<uint64_t> epochs;
  for (uint32_t r = 0; r < kWorld; ++r) {
    absl::StatusOr<ternps::v1::JoinResponse> joined = engine.Join(JobJoin(r), kToken);
    if (!joined.ok()) return joined.status();
    epochs.push_back(joined->epoch());
  }
  return epochs;
}

// Valid requests of the job for `rank` at `step`: scalers 0.5 for the ternarized partitions, a
// push of all +1 codes (scaler 0.5) and FP32 zeros, a snapshot whose bytes are all `fill`.
inline ternps::v1::ShareScalersRequest JobShare(uint32_t rank, uint64_t epoch, uint64_t step) {
  ternps::v1::ShareScalersRequest share;
  share.set_job_id(kJob);
  share.set_worker_rank(rank);
  share.set_epoch(epoch);
  share.set_step(step);
  const ternps::common::JobSpec spec = JobSpec();  // the loop must not outlive it
  for (const ternps::common::Partition& p : spec.plan.partitions()) {
    if (!p.compressed) continue;
    share.add_partition_ids(p.id);
    share.add_scalers(0.5f);
  }
  return share;
}

inline ternps::v1::PushPullRequest JobPush(uint32_t rank, uint64_t epoch, uint64_t step) {
  ternps::v1::PushPullRequest push;
  push.set_job_id(kJob);
  push.set_worker_rank(rank);
  push.set_epoch(epoch);
  push.set_step(step);
  const ternps::common::JobSpec spec = JobSpec();  // the loop must not outlive it
  for (const ternps::common::Partition& p : spec.plan.partitions()) {
    ternps::v1::PartitionPayload* payload = push.add_partitions();
    payload->set_partition_id(p.id);
    payload->set_elements(p.elements);
    if (p.compressed) {
      payload->set_encoding(ternps::v1::TERNARY_2BIT);
      payload->set_scaler(0.5f);
      payload->set_data(std::string(ternps::common::TernaryBytes(p.elements), '\x55'));
    } else {
      payload->set_encoding(ternps::v1::FP32);
      payload->set_data(std::string(ternps::common::Fp32Bytes(p.elements), '\0'));
    }
  }
  return push;
}

inline ternps::v1::PutSnapshotRequest JobSnapshot(uint32_t rank, uint64_t epoch, uint64_t step,
                                                  char fill) {
  ternps::v1::PutSnapshotRequest snapshot;
  snapshot.set_job_id(kJob);
  snapshot.set_worker_rank(rank);
  snapshot.set_epoch(epoch);
  snapshot.set_step(step);
  const ternps::common::JobSpec spec = JobSpec();  // the loop must not outlive it
  for (const ternps::common::Partition& p : spec.plan.partitions()) {
    ternps::v1::PartitionState* state = snapshot.add_partitions();
    state->set_partition_id(p.id);
    state->set_data(std::string(4 * p.elements, fill));
  }
  return snapshot;
}

// The methods an engine fuzz input selects with its first byte (modulo kMethods).
enum Method : uint8_t {
  kJoin = 0,
  kShareScalers = 1,
  kPushPull = 2,
  kLeave = 3,
  kPutSnapshot = 4,
  kGetRecovery = 5,
  kGetStatus = 6,
  kTick = 7,  // the clock advances by a step timeout and the timeout check runs
  kMethods = 8,
};

// An engine fuzz input: method byte, token byte (0: none, 1: the job's, 2: another), then the
// request's protobuf bytes.
inline std::string EngineInput(Method method, uint8_t token, const std::string& request) {
  std::string input;
  input.push_back(static_cast<char>(method));
  input.push_back(static_cast<char>(token));
  return input + request;
}

}  // namespace ternps::fuzz

#endif  // TERNPS_TESTS_FUZZ_FUZZ_JOB_H_
