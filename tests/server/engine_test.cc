// The engine with a ManualClock and no reaper thread: step timeouts, drops and readmission are
// driven by advancing the clock and calling CheckTimeouts (no sleeping), and no rejected request
// leaves any trace in the shard's state, membership included.
#include "server/engine.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/codec/fp32.h"
#include "common/codec/ternary.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;

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
  void Start(v1::Codec codec, uint32_t world) {
    config_.step_timeout = absl::Seconds(60);
    config_.clock = &clock_;
    config_.run_reaper = false;
    engine_ = std::make_unique<Engine>(config_);
    codec_ = codec;
    world_ = world;
    epochs_.assign(world, 0);
    for (uint32_t r = 0; r < world; ++r) {
      absl::StatusOr<v1::JoinResponse> joined = engine_->Join(JoinRequest(r));
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
    return r;
  }

  // FP32 push of `value` everywhere; TERNARY_2BIT push of all +1 codes with `value` as scaler.
  std::unique_ptr<Answer<v1::PushPullResponse>> Push(uint32_t rank, uint64_t step, float value) {
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

  std::unique_ptr<Answer<v1::PushPullResponse>> Send(const v1::PushPullRequest& r) {
    auto answer = std::make_unique<Answer<v1::PushPullResponse>>();
    engine_->PushPull(r, &answer->response, answer->Callback());
    return answer;
  }

  std::unique_ptr<Answer<v1::ShareScalersResponse>> Share(uint32_t rank, uint64_t step,
                                                          float scaler) {
    v1::ShareScalersRequest r;
    r.set_job_id("engine");
    r.set_worker_rank(rank);
    r.set_epoch(epochs_[rank]);
    r.set_step(step);
    r.add_partition_ids(0);
    r.add_scalers(scaler);
    auto answer = std::make_unique<Answer<v1::ShareScalersResponse>>();
    engine_->ShareScalers(r, &answer->response, answer->Callback());
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
    absl::StatusOr<v1::GetStatusResponse> status = engine_->GetStatus({});
    absl::StrAppend(&s, " ", status->ShortDebugString());
    return s;
  }

  common::ManualClock clock_;
  ShardConfig config_;
  std::unique_ptr<Engine> engine_;
  v1::Codec codec_ = v1::CODEC_FP32;
  uint32_t world_ = 0;
  std::vector<uint64_t> epochs_;
};

TEST_F(EngineTest, TimeoutDropsTheLateRankWhichRejoinsWithoutSleeping) {
  Start(v1::CODEC_FP32, 3);
  auto a0 = Push(0, 0, 1.0f);
  auto a1 = Push(1, 0, 3.0f);
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  clock_.Advance(absl::Seconds(59));
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  EXPECT_FALSE(a0->done);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(engine_->CheckTimeouts(), 1);
  ASSERT_TRUE(a0->done && a1->done);
  ASSERT_TRUE(a0->status.ok()) << a0->status;
  EXPECT_EQ(a0->response.averages(0).contributors(), 2u);
  // The dropped rank is told so, rejoins at step 1 with a new epoch, and counts again.
  auto late = Push(2, 0, 5.0f);
  ASSERT_TRUE(late->done);
  EXPECT_EQ(late->status.code(), absl::StatusCode::kAborted);
  absl::StatusOr<v1::JoinResponse> back = engine_->Join(JoinRequest(2));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->start_step(), 1u);
  EXPECT_GT(back->epoch(), epochs_[2]);
  epochs_[2] = back->epoch();
  std::vector<std::unique_ptr<Answer<v1::PushPullResponse>>> step1;
  for (uint32_t r = 0; r < 3; ++r) step1.push_back(Push(r, 1, 2.0f * r));
  for (const auto& a : step1) {
    ASSERT_TRUE(a->done && a->status.ok()) << a->status;
    EXPECT_EQ(a->response.averages(0).contributors(), 3u);
  }
}

// A rank readmitted after the others settled the shared scaler of the current step must not take
// part in that step (its own scaler could exceed the settled maximum, which no valid encoding
// allows): it is awaited from the next step, whose scaler then includes its own.
TEST_F(EngineTest, ARankReadmittedAfterTheScalerSettledStartsAtTheNextStep) {
  Start(v1::CODEC_TERNGRAD, 3);
  auto s0 = Share(0, 0, 1.0f);
  auto s1 = Share(1, 0, 1.0f);
  clock_.Advance(absl::Seconds(61));
  EXPECT_EQ(engine_->CheckTimeouts(), 1);  // rank 2 never offered: dropped, scaler settles at 1
  ASSERT_TRUE(s0->done && s0->status.ok()) << s0->status;
  absl::StatusOr<v1::JoinResponse> back = engine_->Join(JoinRequest(2));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->start_step(), 1u);
  epochs_[2] = back->epoch();
  // Offering at the settled step is refused instead of answered with a maximum below its own.
  auto early = Share(2, 0, 7.0f);
  ASSERT_TRUE(early->done);
  EXPECT_EQ(early->status.code(), absl::StatusCode::kFailedPrecondition) << early->status;
  // Step 0 completes without it; step 1 waits for it and shares its scaler.
  auto p0 = Push(0, 0, 1.0f);
  auto p1 = Push(1, 0, 1.0f);
  ASSERT_TRUE(p0->done && p0->status.ok()) << p0->status;
  EXPECT_EQ(p0->response.averages(0).contributors(), 2u);
  std::vector<std::unique_ptr<Answer<v1::ShareScalersResponse>>> shares;
  for (uint32_t r = 0; r < 3; ++r) shares.push_back(Share(r, 1, r == 2 ? 7.0f : 1.0f));
  for (const auto& a : shares) {
    ASSERT_TRUE(a->done && a->status.ok()) << a->status;
    EXPECT_EQ(a->response.shared_scalers(0), 7.0f);
    EXPECT_EQ(a->response.contributors(), 3u);
  }
}

TEST_F(EngineTest, ARankThatLeavesIsNotWaitedFor) {
  Start(v1::CODEC_FP32, 2);
  auto a0 = Push(0, 0, 1.0f);
  v1::LeaveRequest leave;
  leave.set_job_id("engine");
  leave.set_worker_rank(1);
  leave.set_epoch(epochs_[1]);
  ASSERT_TRUE(engine_->Leave(leave).ok());
  ASSERT_TRUE(a0->done && a0->status.ok()) << a0->status;
  EXPECT_EQ(a0->response.averages(0).contributors(), 1u);
}

TEST_F(EngineTest, RejectedRequestsChangeNoState) {
  Start(v1::CODEC_TERNGRAD, 2);
  // Step 0 with both; then rank 1 misses step 1, is dropped and readmitted (its first call
  // still to come: the case where a rejected request used to move its readmission step).
  {
    auto s0 = Share(0, 0, 1.0f);
    auto s1 = Share(1, 0, 1.0f);
    auto p0 = Push(0, 0, 1.0f);
    auto p1 = Push(1, 0, 1.0f);
    ASSERT_TRUE(p0->done && p0->status.ok() && p1->done && p1->status.ok());
  }
  auto s10 = Share(0, 1, 2.0f);
  clock_.Advance(absl::Seconds(61));
  ASSERT_EQ(engine_->CheckTimeouts(), 1);
  auto p10 = Push(0, 1, 2.0f);
  ASSERT_TRUE(p10->done && p10->status.ok()) << p10->status;
  absl::StatusOr<v1::JoinResponse> back = engine_->Join(JoinRequest(1));
  ASSERT_TRUE(back.ok());
  epochs_[1] = back->epoch();
  ASSERT_EQ(back->start_step(), 2u);

  const std::string before = Fingerprint();
  ASSERT_THAT(before, HasSubstr(",2,1]"));  // rank 1: from step 2, awaiting its first call
  int rejected = 0;
  auto expect_rejected = [&](auto answer, absl::StatusCode code, const char* what) {
    ASSERT_TRUE(answer->done) << what;
    EXPECT_EQ(answer->status.code(), code) << what << ": " << answer->status;
    EXPECT_EQ(Fingerprint(), before) << what;
    ++rejected;
  };
  // Rejected by validation.
  expect_rejected(Push(1, 1, 2.0f), absl::StatusCode::kFailedPrecondition, "before readmission");
  {
    v1::PushPullRequest r;
    r.set_job_id("engine");
    r.set_worker_rank(1);
    r.set_epoch(epochs_[1]);
    r.set_step(3);
    v1::PartitionPayload* p = r.add_partitions();
    p->set_partition_id(0);
    p->set_elements(kElements);
    p->set_encoding(v1::TERNARY_2BIT);
    p->set_scaler(1.0f);
    p->set_data(std::string(common::TernaryBytes(kElements), '\xff'));
    expect_rejected(Send(r), absl::StatusCode::kInvalidArgument, "invalid codes");
  }
  expect_rejected(Share(1, 3, -1.0f), absl::StatusCode::kInvalidArgument, "negative scaler");
  // Rejected by the partition's state, after validation passed.
  expect_rejected(Push(1, 3, 1.0f), absl::StatusCode::kFailedPrecondition, "push before scalers");
  expect_rejected(Share(1, 4, 1.0f), absl::StatusCode::kFailedPrecondition, "too far ahead");
  expect_rejected(Push(1, 4, 1.0f), absl::StatusCode::kFailedPrecondition, "push too far ahead");
  EXPECT_EQ(rejected, 6);

  // The honest step 2 runs as if nothing had happened: both ranks, exact sum.
  auto s0 = Share(0, 2, 0.5f);
  auto s1 = Share(1, 2, 0.25f);
  ASSERT_TRUE(s0->done && s0->status.ok() && s1->done && s1->status.ok());
  EXPECT_EQ(s1->response.shared_scalers(0), 0.5f);
  auto p0 = Push(0, 2, 0.5f);
  auto p1 = Push(1, 2, 0.5f);
  ASSERT_TRUE(p0->done && p0->status.ok()) << p0->status;
  EXPECT_EQ(p1->response.averages(0).contributors(), 2u);
  EXPECT_EQ(p1->response.step(), 2u);
}

}  // namespace
}  // namespace ternps::server
