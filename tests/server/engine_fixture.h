// The engine with a ManualClock and no reaper thread, driven by direct calls: a job "engine" of one
// partition of kElements elements, helpers for its calls, and answers kept until the engine has
// answered every call (engine_test, durable_engine_test).
#ifndef TERNPS_TESTS_SERVER_ENGINE_FIXTURE_H_
#define TERNPS_TESTS_SERVER_ENGINE_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/codec/fp32.h"
#include "common/codec/ternary.h"
#include "common/util/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine.h"

namespace ternps::server {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint32_t kElements = 64;

// A call's answer, kept alive until the test ends.
template <typename Response>
struct Answer {
  Response response;
  bool done = false;
  absl::Status status;
  DoneCallback Callback() {
    return [this](absl::Status st) {
      EXPECT_FALSE(done) << "answered twice";
      done = true;
      status = std::move(st);
    };
  }
};

class EngineTest : public ::testing::Test {
 protected:
  // A job of `world` ranks, of which the first `joined` (all by default) have joined.
  void Start(v1::Codec codec, uint32_t world, uint32_t joined = UINT32_MAX) {
    config_.step_timeout = absl::Seconds(60);
    config_.clock = &clock_;
    config_.run_reaper = false;
    engine_ = std::make_unique<Engine>(config_);
    codec_ = codec;
    world_ = world;
    epochs_.assign(world, 0);
    for (uint32_t r = 0; r < std::min(world, joined); ++r) {
      absl::StatusOr<v1::JoinResponse> joined = engine_->Join(JoinRequest(r), token_);
      ASSERT_TRUE(joined.ok()) << joined.status();
      epochs_[r] = joined->epoch();
    }
  }

  v1::JoinRequest JoinRequest(uint32_t rank) const {
    v1::JoinRequest r;
    r.set_job_id("engine");
    r.set_worker_rank(rank);
    r.set_world_size(world_);
    v1::TensorSpec* t = r.add_tensors();
    t->set_name("w");
    t->set_elements(kElements);
    r.mutable_codec()->set_codec(codec_);
    r.mutable_codec()->set_min_compress_elements(1);
    r.set_shard_count(1);
    r.set_snapshot_interval(snapshot_interval_);
    r.set_state_slots(2);
    return r;
  }

  // FP32 push of `value` everywhere; TERNARY_2BIT push of all +1 codes with `value` as scaler.
  std::shared_ptr<Answer<v1::PushPullResponse>> Push(uint32_t rank, uint64_t step, float value) {
    v1::PushPullRequest r;
    r.set_job_id("engine");
    r.set_worker_rank(rank);
    r.set_epoch(epochs_[rank]);
    r.set_step(step);
    v1::PartitionPayload* p = r.add_partitions();
    p->set_partition_id(0);
    p->set_elements(kElements);
    if (codec_ == v1::CODEC_FP32) {
      p->set_encoding(v1::FP32);
      std::vector<float> g(kElements, value);
      p->mutable_data()->resize(common::Fp32Bytes(kElements));
      EXPECT_TRUE(common::EncodeFp32(
                      g, absl::MakeSpan(reinterpret_cast<uint8_t*>(p->mutable_data()->data()),
                                        p->data().size()))
                      .ok());
    } else {
      p->set_encoding(v1::TERNARY_2BIT);
      p->set_scaler(value);
      p->set_data(std::string(common::TernaryBytes(kElements), '\x55'));
    }
    return Send(r);
  }

  std::shared_ptr<Answer<v1::PushPullResponse>> Send(const v1::PushPullRequest& r) {
    auto answer = std::make_shared<Answer<v1::PushPullResponse>>();
    answers_.push_back(answer);
    engine_->PushPull(r, &answer->response, answer->Callback(), token_);
    return answer;
  }

  // Every rank leaves (the job is over).
  absl::Status LeaveAll() {
    for (uint32_t rank = 0; rank < world_; ++rank) {
      v1::LeaveRequest leave;
      leave.set_job_id("engine");
      leave.set_worker_rank(rank);
      leave.set_epoch(epochs_[rank]);
      if (absl::Status st = engine_->Leave(leave, token_).status(); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  std::shared_ptr<Answer<v1::ShareScalersResponse>> Share(uint32_t rank, uint64_t step,
                                                          float scaler) {
    v1::ShareScalersRequest r;
    r.set_job_id("engine");
    r.set_worker_rank(rank);
    r.set_epoch(epochs_[rank]);
    r.set_step(step);
    r.add_partition_ids(0);
    r.add_scalers(scaler);
    auto answer = std::make_shared<Answer<v1::ShareScalersResponse>>();
    answers_.push_back(answer);
    engine_->ShareScalers(r, &answer->response, answer->Callback(), token_);
    return answer;
  }

  // Everything the shard holds about the job that a request could change.
  std::string Fingerprint() const {
    absl::StatusOr<std::shared_ptr<Job>> job = engine_->FindJob("engine");
    EXPECT_TRUE(job.ok());
    const std::shared_ptr<const MembershipView> view = (*job)->View();
    std::string s = absl::StrCat("epoch=", view->epoch, " live=", view->live[0]);
    for (const RankRecord& r : view->ranks) {
      absl::StrAppend(&s, " [", static_cast<int>(r.state), ",", r.join_epoch, ",", r.from_step, ",",
                      r.awaiting_first_call, "]");
    }
    absl::StatusOr<v1::GetStatusResponse> status = engine_->GetStatus({}, token_);
    absl::StrAppend(&s, " ", status->ShortDebugString());
    return s;
  }

  common::ManualClock clock_;
  ShardConfig config_;
  // Every answer the helpers handed out, kept until the engine (declared after it, so destroyed
  // first) has answered every call: a call still waiting when a test ends is answered when the
  // engine shuts down.
  std::vector<std::shared_ptr<void>> answers_;
  std::unique_ptr<Engine> engine_;
  v1::Codec codec_ = v1::CODEC_FP32;
  uint32_t world_ = 0;
  uint32_t snapshot_interval_ = 0;
  std::string token_;  // the job token every helper call carries (empty: none)
  std::vector<uint64_t> epochs_;
};

inline v1::PutSnapshotRequest Snapshot(uint32_t rank, uint64_t epoch, uint64_t step, size_t bytes,
                                       char fill) {
  v1::PutSnapshotRequest r;
  r.set_job_id("engine");
  r.set_worker_rank(rank);
  r.set_epoch(epoch);
  r.set_step(step);
  v1::PartitionState* p = r.add_partitions();
  p->set_partition_id(0);
  p->set_data(std::string(bytes, fill));
  return r;
}

inline v1::GetRecoveryRequest Recovery(uint32_t rank, uint64_t epoch, uint64_t to_step) {
  v1::GetRecoveryRequest r;
  r.set_job_id("engine");
  r.set_worker_rank(rank);
  r.set_epoch(epoch);
  r.add_partition_ids(0);
  r.set_to_step(to_step);
  return r;
}

// The recovery of partition 0 is the snapshot of `step` holding `state`, and exactly
// `averages`.
inline void ExpectRecovery(const absl::StatusOr<v1::GetRecoveryResponse>& r, uint64_t step,
                           const std::string& state,
                           const std::vector<v1::PartitionPayload>& averages) {
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->partitions(0).snapshot_step(), step);
  EXPECT_EQ(r->partitions(0).state(), state);
  ASSERT_EQ(r->partitions(0).averages_size(), static_cast<int>(averages.size()));
  for (size_t i = 0; i < averages.size(); ++i) {
    EXPECT_EQ(r->partitions(0).averages(static_cast<int>(i)).SerializeAsString(),
              averages[i].SerializeAsString());
  }
}

// The shard keeps the snapshot and exactly the averages it answered since; every malformed or

}  // namespace ternps::server

#endif  // TERNPS_TESTS_SERVER_ENGINE_FIXTURE_H_
