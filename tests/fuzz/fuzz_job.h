// The job the engine fuzz target serves, shared with the seed generator so that the seeds are
// valid requests of that job (the fuzzer mutates them from there).
#ifndef TERNPS_TESTS_FUZZ_FUZZ_JOB_H_
#define TERNPS_TESTS_FUZZ_FUZZ_JOB_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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
