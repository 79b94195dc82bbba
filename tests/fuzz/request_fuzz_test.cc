// Robustness: seeded random requests — valid ones mutated field by field and byte by byte — go
// through the shard's engine (the layer behind the gRPC service). The shard must never crash,
// must answer every call exactly once (at the latest when it shuts down), and the codec's
// validators must survive arbitrary bytes. Deterministic: fixed seeds, no timing.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "gtest/gtest.h"
#include "server/engine.h"

namespace ternps {
namespace {

namespace v1 = ::ternps::v1;

constexpr char kJob[] = "fuzz";

v1::JoinRequest Join(uint32_t rank) {
  v1::JoinRequest r;
  r.set_job_id(kJob);
  r.set_worker_rank(rank);
  r.set_world_size(3);
  for (const auto& [name, n] :
       std::vector<std::pair<std::string, uint64_t>>{{"w", 10000}, {"v", 5000}, {"b", 7}}) {
    v1::TensorSpec* t = r.add_tensors();
    t->set_name(name);
    t->set_elements(n);
  }
  r.mutable_codec()->set_codec(v1::CODEC_TERNGRAD);
  r.mutable_codec()->set_partition_elements(4096);
  r.set_shard_count(1);
  r.set_snapshot_interval(2);  // recovery state kept: PutSnapshot and GetRecovery are live
  return r;
}

// Counts callbacks; a second call for the same request is a failure.
struct Calls {
  std::atomic<int> started{0};
  std::atomic<int> finished{0};
  std::atomic<int> doubled{0};
  server::DoneCallback Track() {
    ++started;
    auto once = std::make_shared<std::atomic<bool>>(false);
    return [this, once](absl::Status) {
      if (once->exchange(true)) ++doubled;
      ++finished;
    };
  }
};

float RandomFloat(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return -1.0f;
    case 3:
      return 0.0f;
    default:
      return static_cast<float>(rng() % 1000) / 997.0f;
  }
}

void MutateBytes(std::string& s, std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0:
      if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
      break;
    case 1:
      if (!s.empty()) s.resize(rng() % s.size());
      break;
    case 2:
      s.push_back(static_cast<char>(rng()));
      break;
    default:
      for (char& c : s) c = static_cast<char>(rng());
  }
}

v1::PartitionPayload RandomPayload(std::mt19937_64& rng) {
  v1::PartitionPayload p;
  p.set_partition_id(static_cast<uint32_t>(rng() % 7));  // plan has 5; 5, 6 are unknown
  const uint32_t sizes[] = {4096, 1808, 4096, 904, 7, 0, 4095};
  p.set_elements(sizes[rng() % 7]);
  p.set_encoding(static_cast<v1::Encoding>(rng() % 5));
  p.set_scaler(RandomFloat(rng));
  if (rng() % 4 == 0) p.set_contributors(static_cast<uint32_t>(rng() % 3));
  const size_t n = p.elements();
  std::string data;
  switch (rng() % 3) {
    case 0:
      data.assign((n + 3) / 4, static_cast<char>(rng() % 2 ? 0x55 : 0x00));
      break;
    case 1:
      data.assign(4 * n, '\0');
      break;
    default:
      data.assign(rng() % 5000, static_cast<char>(rng()));
  }
  if (rng() % 2) MutateBytes(data, rng);
  p.set_data(data);
  return p;
}

TEST(RequestFuzzTest, TheShardSurvivesAndAnswersEveryCallOnce) {
  Calls calls;
  int snapshots_taken = 0;
  int recoveries_answered = 0;
  std::vector<std::unique_ptr<v1::PushPullResponse>> push_responses;
  std::vector<std::unique_ptr<v1::ShareScalersResponse>> scaler_responses;
  {
    char state_dir[] = "/tmp/ternps-fuzz-XXXXXX";  // durable: the state store is fuzzed too
    ASSERT_NE(mkdtemp(state_dir), nullptr);
    server::ShardConfig config;
    config.step_timeout = absl::Hours(1);  // no drops: the test controls everything
    config.state_dir = state_dir;
    config.state_sync = false;  // the writes are exercised; syncing them only costs time here
    server::Engine engine(config);
    std::vector<uint64_t> epochs;
    for (uint32_t r = 0; r < 3; ++r) {
      auto joined = engine.Join(Join(r));
      ASSERT_TRUE(joined.ok()) << joined.status();
      epochs.push_back(joined->epoch());
    }
    std::mt19937_64 rng(20261128);
    for (int i = 0; i < 6000; ++i) {
      const uint32_t rank = static_cast<uint32_t>(rng() % 4);  // 3 is out of range
      const uint64_t step = rng() % 4;
      const uint64_t epoch = rank < 3 && rng() % 4 ? epochs[rank] : rng() % 5;
      switch (rng() % 6) {
        case 4: {  // PutSnapshot: random partitions, sizes around the right one, random steps
          v1::PutSnapshotRequest r;
          r.set_job_id(rng() % 10 ? kJob : "other!");
          r.set_worker_rank(rank);
          r.set_epoch(epoch);
          r.set_step(step);
          const int k = static_cast<int>(rng() % 3);
          for (int j = 0; j < k; ++j) {
            v1::PartitionState* p = r.add_partitions();
            p->set_partition_id(static_cast<uint32_t>(rng() % 7));
            const size_t right = p->partition_id() < 2 ? 4 * 4096 : 4 * (rng() % 4096);
            p->set_data(std::string(rng() % 2 ? right : rng() % 20000, static_cast<char>(rng())));
          }
          if (engine.PutSnapshot(r).ok()) ++snapshots_taken;
          break;
        }
        case 5: {  // GetRecovery of random partitions up to a random step
          v1::GetRecoveryRequest r;
          r.set_job_id(kJob);
          r.set_worker_rank(rank);
          r.set_epoch(epoch);
          r.set_to_step(rng() % 5);
          const int k = static_cast<int>(rng() % 4);
          for (int j = 0; j < k; ++j) r.add_partition_ids(static_cast<uint32_t>(rng() % 7));
          if (engine.GetRecovery(r).ok()) ++recoveries_answered;
          break;
        }
        case 0: {  // ShareScalers
          v1::ShareScalersRequest r;
          r.set_job_id(rng() % 10 ? kJob : "other!");
          r.set_worker_rank(rank);
          r.set_epoch(epoch);
          r.set_step(step);
          const int k = static_cast<int>(rng() % 4);
          for (int j = 0; j < k; ++j) r.add_partition_ids(static_cast<uint32_t>(rng() % 7));
          for (int j = 0; j < k + static_cast<int>(rng() % 2); ++j) r.add_scalers(RandomFloat(rng));
          scaler_responses.push_back(std::make_unique<v1::ShareScalersResponse>());
          engine.ShareScalers(r, scaler_responses.back().get(), calls.Track());
          break;
        }
        case 1: {  // a Join, valid or mutated
          v1::JoinRequest j = Join(rank % 3);
          std::string bytes = j.SerializeAsString();
          MutateBytes(bytes, rng);
          v1::JoinRequest mutated;
          if (mutated.ParseFromString(bytes)) (void)engine.Join(mutated);
          break;
        }
        default: {  // PushPull, fields random, sometimes mutated on the wire
          v1::PushPullRequest r;
          r.set_job_id(kJob);
          r.set_worker_rank(rank);
          r.set_epoch(epoch);
          r.set_step(step);
          const int k = static_cast<int>(rng() % 4);
          for (int j = 0; j < k; ++j) *r.add_partitions() = RandomPayload(rng);
          if (rng() % 3 == 0) {
            std::string bytes = r.SerializeAsString();
            MutateBytes(bytes, rng);
            v1::PushPullRequest mutated;
            if (!mutated.ParseFromString(bytes)) break;
            r = mutated;
          }
          push_responses.push_back(std::make_unique<v1::PushPullResponse>());
          engine.PushPull(r, push_responses.back().get(), calls.Track());
        }
      }
    }
    auto status = engine.GetStatus(v1::GetStatusRequest());
    ASSERT_TRUE(status.ok());
    engine.Shutdown();  // fails whatever still waits
    std::system((std::string("rm -rf ") + state_dir).c_str());
  }
  EXPECT_GT(calls.started.load(), 2000);
  // The recovery calls reached their apply paths, not only their checks.
  EXPECT_GT(snapshots_taken, 0);
  EXPECT_GT(recoveries_answered, 0);
  EXPECT_EQ(calls.finished.load(), calls.started.load()) << "a call was never answered";
  EXPECT_EQ(calls.doubled.load(), 0) << "a call was answered twice";
}

// Joins are untrusted too: each new job costs memory, so a shard serves a bounded number.
TEST(RequestFuzzTest, NewJobsBeyondTheLimitAreRefused) {
  server::ShardConfig config;
  config.max_jobs = 4;
  server::Engine engine(config);
  for (int i = 0; i < 4; ++i) {
    v1::JoinRequest j = Join(0);
    j.set_job_id("job-" + std::to_string(i));
    ASSERT_TRUE(engine.Join(j).ok());
  }
  v1::JoinRequest extra = Join(0);
  extra.set_job_id("job-4");
  const auto refused = engine.Join(extra);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  v1::JoinRequest again = Join(1);  // an existing job still admits its workers
  again.set_job_id("job-0");
  EXPECT_TRUE(engine.Join(again).ok());
}

TEST(RequestFuzzTest, ValidatorsSurviveArbitraryBytes) {
  std::mt19937_64 rng(7);
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    const auto data =
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    const size_t n = rng() % 200;
    const int contributors = static_cast<int>(rng() % 40) - 2;
    rejected += !common::ValidateTernary(data, n).ok();
    rejected += !common::ValidateIntSum(data, n, contributors).ok();
    rejected += !common::ValidateFp32(data, n).ok();
    std::vector<float> out(n, 1.0f);
    const std::vector<float> before = out;
    if (!common::DecodeIntSumAdd(data, contributors, RandomFloat(rng), absl::MakeSpan(out)).ok()) {
      ASSERT_EQ(out, before) << "a rejected payload changed the output";
    }
  }
  EXPECT_GT(rejected, 10000);
}

}  // namespace
}  // namespace ternps
