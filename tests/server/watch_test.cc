// Fast failure detection through Watch calls (the engine's side; the worker keeps them open in
// worker/client/shard_watch.h), driven by a ManualClock: no sleeping.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine.h"
#include "tests/server/engine_fixture.h"

namespace ternps::server {
namespace {

// Watch (fast failure detection): a rank whose Watch call closed (its process died) and that
// opens none again within --disconnect_grace is dropped then; one whose connection was reset and
// that watches again within the grace is not; one that is silent with its Watch open costs the
// step timeout as before. The Watch is answered OK when the rank leaves.
class WatchTest : public EngineTest {
 protected:
  // Rank `rank`'s Watch, as the service hands it to the engine.
  std::shared_ptr<PendingCall<v1::WatchResponse>> Watch(uint32_t rank) {
    auto answer = std::make_shared<Answer<v1::WatchResponse>>();
    answers_.push_back(answer);
    auto call =
        std::make_shared<PendingCall<v1::WatchResponse>>(&answer->response, 1, answer->Callback());
    v1::WatchRequest request;
    request.set_job_id("engine");
    request.set_worker_rank(rank);
    request.set_epoch(rank < epochs_.size() ? epochs_[rank] : 1);
    engine_->Watch(request, call, token_);
    watch_answers_.push_back(answer);
    return call;
  }
  // What gRPC does when the worker's connection closes: the call is cancelled.
  void Close(uint32_t rank, const std::shared_ptr<PendingCall<v1::WatchResponse>>& call) {
    engine_->Unwatch("engine", rank, call.get());
    call->Fail(absl::CancelledError("cancelled"));
    call->Finish();
  }
  // Three ranks, each watching; ranks 0 and 1 push step 0 (a_), rank 2 does not.
  void StartThreeRanksWaitingForRank2() {
    Start(v1::CODEC_FP32, 3);
    for (uint32_t r = 0; r < 3; ++r) watches_.push_back(Watch(r));
    a_ = Push(0, 0, 1.0f);
    Push(1, 0, 3.0f);
  }
  std::vector<std::shared_ptr<Answer<v1::WatchResponse>>> watch_answers_;
  std::vector<std::shared_ptr<PendingCall<v1::WatchResponse>>> watches_;
  std::shared_ptr<Answer<v1::PushPullResponse>> a_;  // rank 0's push of step 0
};

TEST_F(WatchTest, AWorkerWhoseConnectionClosedIsDroppedAfterTheGraceNotAtTheStepTimeout) {
  StartThreeRanksWaitingForRank2();
  const auto& a = a_;
  Close(2, watches_[2]);  // rank 2 died before pushing
  clock_.Advance(config_.disconnect_grace - absl::Milliseconds(1));
  EXPECT_EQ(engine_->CheckTimeouts(), 0) << "dropped before the grace passed";
  EXPECT_FALSE(a->done);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(engine_->CheckTimeouts(), 1);
  ASSERT_TRUE(a->done && a->status.ok()) << a->status;
  EXPECT_EQ(a->response.averages(0).contributors(), 2u);
  EXPECT_FALSE(watch_answers_[0]->done) << "a live rank's Watch stays open";
}

TEST_F(WatchTest, AConnectionResetThatWatchesAgainWithinTheGraceDropsNobody) {
  StartThreeRanksWaitingForRank2();
  const auto& a = a_;
  Close(2, watches_[2]);
  clock_.Advance(config_.disconnect_grace / 2);
  Watch(2);  // reconnected
  // Until just before the step timeout (which rank 2's silence since its Join would reach).
  clock_.Advance(config_.step_timeout - config_.disconnect_grace / 2 - absl::Milliseconds(1));
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  auto c = Push(2, 0, 5.0f);
  ASSERT_TRUE(a->done && a->status.ok()) << a->status;
  EXPECT_EQ(a->response.averages(0).contributors(), 3u);
}

TEST_F(WatchTest, ASilentWorkerWithItsWatchOpenCostsOneStepTimeout) {
  StartThreeRanksWaitingForRank2();
  const auto& a = a_;
  clock_.Advance(config_.step_timeout - absl::Milliseconds(1));
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(engine_->CheckTimeouts(), 1);
  ASSERT_TRUE(a->done && a->status.ok()) << a->status;
  EXPECT_EQ(a->response.averages(0).contributors(), 2u);
  // The watches end with the job: OK for a rank that leaves, an error for the others.
  v1::LeaveRequest leave;
  leave.set_job_id("engine");
  leave.set_worker_rank(0);
  leave.set_epoch(epochs_[0]);
  ASSERT_TRUE(engine_->Leave(leave).ok());
  ASSERT_TRUE(watch_answers_[0]->done);
  EXPECT_TRUE(watch_answers_[0]->status.ok()) << watch_answers_[0]->status;
  EXPECT_FALSE(watch_answers_[1]->done);
  engine_->Shutdown();
  ASSERT_TRUE(watch_answers_[1]->done);
  EXPECT_EQ(watch_answers_[1]->status.code(), absl::StatusCode::kUnavailable);
}

// A Watch with a stale epoch or for another job is refused at once.
TEST_F(WatchTest, AWatchFromANonMemberIsRefused) {
  Start(v1::CODEC_FP32, 2);
  epochs_[1] += 1000;
  Watch(1);
  ASSERT_TRUE(watch_answers_[0]->done);
  EXPECT_FALSE(watch_answers_[0]->status.ok());
  EXPECT_THAT(std::string(watch_answers_[0]->status.message()), HasSubstr("epoch"));
  Watch(7);  // a rank outside the job
  ASSERT_TRUE(watch_answers_[1]->done);
  EXPECT_EQ(watch_answers_[1]->status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(watch_answers_[1]->status.message()), HasSubstr("worker_rank: 7"));
  engine_->Unwatch("engine", 7, nullptr);  // a cancelled call of a bad rank changes nothing
}

// Every live worker late at once (a black hole between them and this shard, or a stalled shard)
// drops nobody: dropping them all would end the job. Once one of them is back, the others are
// dropped at the next expiry as usual. If all their connections closed, they did die.
TEST_F(WatchTest, EveryLiveWorkerLateAtOnceIsWaitedForNotDropped) {
  Start(v1::CODEC_TERNGRAD, 2);
  auto s0 = Share(0, 0, 1.0f);
  auto s1 = Share(1, 0, 1.0f);
  ASSERT_TRUE(s0->done && s0->status.ok()) << s0->status;
  // Both offered their scalers, then nothing reached this shard.
  clock_.Advance(config_.step_timeout);
  EXPECT_EQ(engine_->CheckTimeouts(), 0) << "both dropped: the job would have ended";
  clock_.Advance(config_.step_timeout);
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  auto a = Push(0, 0, s0->response.shared_scalers(0));  // rank 0 is back
  clock_.Advance(config_.step_timeout);
  EXPECT_EQ(engine_->CheckTimeouts(), 1);
  ASSERT_TRUE(a->done && a->status.ok()) << a->status;
  EXPECT_EQ(a->response.averages(0).contributors(), 1u);
}

TEST_F(WatchTest, EveryLiveWorkerWhoseConnectionClosedIsDropped) {
  Start(v1::CODEC_TERNGRAD, 2);
  auto w0 = Watch(0);
  auto w1 = Watch(1);
  Share(0, 0, 1.0f);  // a step under way, both missing from its pushes
  Share(1, 0, 1.0f);
  Close(0, w0);
  Close(1, w1);
  clock_.Advance(config_.disconnect_grace);
  EXPECT_EQ(engine_->CheckTimeouts(), 2);
}

}  // namespace
}  // namespace ternps::server
