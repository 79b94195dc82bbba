// The engine with a ManualClock and no reaper thread: step timeouts, drops and readmission are
// driven by advancing the clock and calling CheckTimeouts (no sleeping), and no rejected request
// leaves any trace in the shard's state, membership included.
#include "server/engine.h"

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/engine_fixture.h"

namespace ternps::server {
namespace {

// Many calls race the job's idle expiry and the shard's shutdown: every one is answered exactly
// once (accepted and parked, refused, or failed by the expiry, the shutdown or the job's removal),
// none is lost in a job that was removed while it parked.
TEST_F(EngineTest, EveryCallIsAnsweredExactlyOnceThroughExpiryAndShutdown) {
  config_.job_idle_timeout = absl::Seconds(30);
  Start(v1::CODEC_FP32, 2);
  constexpr int kThreads = 4;
  constexpr int kCalls = 300;
  std::vector<v1::PushPullResponse> responses(kThreads * kCalls);
  std::unique_ptr<std::atomic<int>[]> answered(new std::atomic<int>[kThreads * kCalls]);
  for (int k = 0; k < kThreads * kCalls; ++k) answered[k] = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const int k = t * kCalls + i;
        v1::PushPullRequest r;
        r.set_job_id("engine");
        r.set_worker_rank(t % 2);
        r.set_epoch(epochs_[t % 2]);
        r.set_step(static_cast<uint64_t>(i % 3));
        v1::PartitionPayload* p = r.add_partitions();
        p->set_partition_id(0);
        p->set_elements(kElements);
        p->set_encoding(v1::FP32);
        p->mutable_data()->assign(common::Fp32Bytes(kElements), '\0');
        engine_->PushPull(
            r, &responses[k], [&answered, k](absl::Status) { ++answered[k]; }, token_);
      }
    });
  }
  clock_.Advance(absl::Seconds(31));
  engine_->CheckTimeouts();  // expires the job while calls keep arriving
  engine_->Shutdown();
  for (std::thread& t : threads) t.join();
  engine_.reset();
  int missing = 0, repeated = 0;
  for (int k = 0; k < kThreads * kCalls; ++k) {
    missing += answered[k] == 0;
    repeated += answered[k] > 1;
  }
  EXPECT_EQ(missing, 0) << "calls never answered";
  EXPECT_EQ(repeated, 0) << "calls answered more than once";
}

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
  std::vector<std::shared_ptr<Answer<v1::PushPullResponse>>> step1;
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
  std::vector<std::shared_ptr<Answer<v1::ShareScalersResponse>>> shares;
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

TEST_F(EngineTest, RecoveryKeepsTheSnapshotAndTheAveragesSince) {
  snapshot_interval_ = 2;
  Start(v1::CODEC_FP32, 2);
  constexpr size_t kState = 2 * 4 * kElements;  // 2 slots
  std::vector<v1::PushPullResponse> answered;
  for (uint64_t step = 0; step < 3; ++step) {
    auto a = Push(0, step, 1.0f + step);
    auto b = Push(1, step, 3.0f);
    ASSERT_TRUE(a->done && a->status.ok()) << a->status;
    answered.push_back(a->response);
  }
  // Before any snapshot: the initial state (no bytes) and every average from step 0.
  absl::StatusOr<v1::GetRecoveryResponse> r = engine_->GetRecovery(Recovery(0, epochs_[0], 3));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->partitions_size(), 1);
  EXPECT_EQ(r->partitions(0).snapshot_step(), 0u);
  EXPECT_TRUE(r->partitions(0).state().empty());
  ASSERT_EQ(r->partitions(0).averages_size(), 3);
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(r->partitions(0).averages(t).SerializeAsString(),
              answered[t].averages(0).SerializeAsString())
        << "step " << t;
  }
  // Refused, naming the field: wrong size, a step not completed yet, a partition not owned,
  // listed twice, a caller that never joined this epoch.
  auto refused = [&](v1::PutSnapshotRequest req, absl::StatusCode code, const std::string& want) {
    absl::StatusOr<v1::PutSnapshotResponse> st = engine_->PutSnapshot(req);
    EXPECT_EQ(st.status().code(), code) << st.status();
    EXPECT_THAT(std::string(st.status().message()), HasSubstr(want));
  };
  refused(Snapshot(0, epochs_[0], 2, kState - 1, 'a'), absl::StatusCode::kInvalidArgument,
          absl::StrCat("partitions[0].data: ", kState - 1, " bytes, expected ", kState));
  refused(Snapshot(0, epochs_[0], 4, kState, 'a'), absl::StatusCode::kFailedPrecondition,
          "step: 4 is after the steps partitions[0]");
  v1::PutSnapshotRequest twice = Snapshot(0, epochs_[0], 2, kState, 'a');
  *twice.add_partitions() = twice.partitions(0);
  refused(twice, absl::StatusCode::kInvalidArgument, "partitions[1]: partition 0 is listed twice");
  v1::PutSnapshotRequest other = Snapshot(0, epochs_[0], 2, kState, 'a');
  other.mutable_partitions(0)->set_partition_id(7);
  refused(other, absl::StatusCode::kNotFound, "partitions[0]: partition 7 is not owned");
  refused(Snapshot(0, epochs_[0] + 5, 2, kState, 'a'), absl::StatusCode::kInvalidArgument,
          "epoch:");
  r = engine_->GetRecovery(Recovery(0, epochs_[0], 3));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->partitions(0).snapshot_step(), 0u) << "a refused snapshot changed the state";
  // A snapshot at step 2 replaces the initial state and forgets the averages before it.
  v1::PutSnapshotRequest good = Snapshot(1, epochs_[1], 2, kState, 'b');
  ASSERT_TRUE(engine_->PutSnapshot(good).ok());
  v1::PutSnapshotRequest older = Snapshot(0, epochs_[0], 1, kState, 'c');
  ASSERT_TRUE(engine_->PutSnapshot(older).ok());  // older than the kept one: ignored
  r = engine_->GetRecovery(Recovery(0, epochs_[0], 3));
  ExpectRecovery(r, 2, std::string(kState, 'b'), {answered[2].averages(0)});
  // Step 3 is not complete yet: UNAVAILABLE (retry), not an error of the request.
  auto half = Push(0, 3, 1.0f);
  r = engine_->GetRecovery(Recovery(0, epochs_[0], 4));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("has not completed step 3"));
  r = engine_->GetRecovery(Recovery(0, epochs_[0], 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("to_step: 1 is before the snapshot"));
}

// A worker killed after the step's scalers settled (its offer counted) but before it pushed, and
// restarted at once: its new process is awaited from the next step, so the step completes with the
// others as soon as the new process joins (found by tests/bench/chaos.sh: it waited for nobody
// until the calls timed out).
TEST_F(EngineTest, ARestartedWorkerReadmittedPastAStepReleasesIt) {
  Start(v1::CODEC_TERNGRAD, 3);
  std::vector<std::shared_ptr<Answer<v1::ShareScalersResponse>>> shares;
  for (uint32_t r = 0; r < 3; ++r) shares.push_back(Share(r, 0, 1.0f + r));
  ASSERT_TRUE(shares[0]->done && shares[0]->status.ok()) << shares[0]->status;
  const float shared = shares[0]->response.shared_scalers(0);
  auto a = Push(0, 0, shared);
  auto b = Push(1, 0, shared);
  EXPECT_FALSE(a->done);  // waits for rank 2, which died here
  absl::StatusOr<v1::JoinResponse> back = engine_->Join(JoinRequest(2), token_);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->start_step(), 1u);
  ASSERT_TRUE(a->done && a->status.ok()) << "step 0 still waits for the readmitted rank";
  EXPECT_EQ(a->response.averages(0).contributors(), 2u);
}

// GetRecovery in pages (from_step, max_bytes): the snapshot only on the first page, at least one
// average per page unless the snapshot is in it, the pages together exactly the whole answer; a
// newer snapshot shows in the next page's snapshot_step; a from_step after to_step is refused.
TEST_F(EngineTest, RecoveryComesInPagesOfAtMostMaxBytes) {
  snapshot_interval_ = 2;
  Start(v1::CODEC_FP32, 2);
  constexpr size_t kState = 2 * 4 * kElements;
  constexpr size_t kAverage = 4 * kElements;
  for (uint64_t step = 0; step < 6; ++step) {
    auto a = Push(0, step, 1.0f + step);
    auto b = Push(1, step, 3.0f);
    ASSERT_TRUE(a->done && a->status.ok()) << a->status;
  }
  v1::PutSnapshotRequest snapshot = Snapshot(1, epochs_[1], 2, kState, 's');
  ASSERT_TRUE(engine_->PutSnapshot(snapshot).ok());
  auto page = [&](uint64_t from, uint64_t max_bytes) {
    v1::GetRecoveryRequest request = Recovery(0, epochs_[0], 6);
    request.set_from_step(from);
    request.set_max_bytes(max_bytes);
    return engine_->GetRecovery(request);
  };
  absl::StatusOr<v1::GetRecoveryResponse> whole = page(0, 0);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->partitions(0).averages_size(), 4);  // steps 2..5
  // 1 byte: the snapshot alone, then one average per page.
  absl::StatusOr<v1::GetRecoveryResponse> first = page(0, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->partitions(0).state(), std::string(kState, 's'));
  EXPECT_EQ(first->partitions(0).first_step(), 2u);
  EXPECT_EQ(first->partitions(0).averages_size(), 0);
  std::vector<std::string> pages;
  for (uint64_t from = 2; from < 6;) {
    absl::StatusOr<v1::GetRecoveryResponse> next = page(from, 1);
    ASSERT_TRUE(next.ok()) << next.status();
    const v1::PartitionRecovery& r = next->partitions(0);
    EXPECT_TRUE(r.state().empty()) << "the snapshot again, from step " << from;
    EXPECT_EQ(r.snapshot_step(), 2u);
    EXPECT_EQ(r.first_step(), from);
    ASSERT_EQ(r.averages_size(), 1) << "from step " << from;
    pages.push_back(r.averages(0).SerializeAsString());
    ++from;
  }
  // Room for the snapshot and two averages: both in the first page.
  absl::StatusOr<v1::GetRecoveryResponse> two = page(0, kState + 2 * kAverage);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->partitions(0).averages_size(), 2);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(pages[i], whole->partitions(0).averages(i).SerializeAsString()) << "step " << 2 + i;
  }
  // A newer snapshot meanwhile: the next page says so (the worker starts again).
  v1::PutSnapshotRequest newer = Snapshot(1, epochs_[1], 4, kState, 't');
  ASSERT_TRUE(engine_->PutSnapshot(newer).ok());
  absl::StatusOr<v1::GetRecoveryResponse> moved = page(3, 1);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->partitions(0).snapshot_step(), 4u);
  EXPECT_EQ(moved->partitions(0).first_step(), 4u);
  absl::StatusOr<v1::GetRecoveryResponse> after = page(7, 1);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kInvalidArgument) << after.status();
  EXPECT_THAT(std::string(after.status().message()), HasSubstr("from_step: 7 is after to_step 6"));
}

// The recovery state counts against --max_recovery_bytes: a Join whose snapshot_interval cannot
// fit is refused naming the field and the largest interval that fits; that one is accepted.
TEST_F(EngineTest, ASnapshotIntervalWhoseLogCannotFitIsRefusedAtJoin) {
  // FP32, 64 elements, 2 slots: a snapshot of 512 bytes and averages of 256 bytes per step.
  config_.max_recovery_bytes = 512 + 12 * 256;  // snapshot_interval 10 fits (10 + 2 steps)
  snapshot_interval_ = 11;
  Start(v1::CODEC_FP32, 2, /*joined=*/0);
  absl::StatusOr<v1::JoinResponse> refused = engine_->Join(JoinRequest(0));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("snapshot_interval: 11 steps"));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("a snapshot_interval of at most 10 fits"));
  snapshot_interval_ = 10;
  EXPECT_TRUE(engine_->Join(JoinRequest(0)).ok());
}

// Workers killed between steps leave no step timeout running: the job expires after
// job_idle_timeout without calls. Its id is remembered: a plain Join (a late worker) is told the
// job ended, one with restart_ended_job starts a new job (here with another world size).
TEST_F(EngineTest, AnIdleJobExpiresAndItsIdStartsAgainOnlyWhenAsked) {
  config_.job_idle_timeout = absl::Seconds(180);
  Start(v1::CODEC_FP32, 2);
  auto a = Push(0, 0, 1.0f);
  auto b = Push(1, 0, 1.0f);
  ASSERT_TRUE(a->done && b->done);
  clock_.Advance(absl::Seconds(179));
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  EXPECT_TRUE(engine_->FindJob("engine").ok());
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  EXPECT_EQ(engine_->FindJob("engine").status().code(), absl::StatusCode::kNotFound);
  world_ = 3;
  const absl::StatusOr<v1::JoinResponse> late = engine_->Join(JoinRequest(0));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition) << late.status();
  EXPECT_THAT(std::string(late.status().message()),
              HasSubstr("job 'engine' ended on shard 0 0 ago: expired after 3m"));
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("restart_ended_job"));
  v1::JoinRequest again = JoinRequest(0);
  again.set_rejoin(true);
  EXPECT_EQ(engine_->Join(again).status().code(), absl::StatusCode::kNotFound);
  v1::JoinRequest restart = JoinRequest(0);
  restart.set_restart_ended_job(true);
  absl::StatusOr<v1::JoinResponse> fresh = engine_->Join(restart);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->start_step(), 0u);
}

// A worker restarted after its peers finished and left: told the job ended, not a job of its own.
TEST_F(EngineTest, ALateWorkerOfAnEndedJobIsToldItEnded) {
  Start(v1::CODEC_FP32, 2);
  auto a = Push(0, 0, 1.0f);
  auto b = Push(1, 0, 1.0f);
  ASSERT_TRUE(a->done && b->done);
  ASSERT_TRUE(LeaveAll().ok());
  const absl::StatusOr<v1::JoinResponse> late = engine_->Join(JoinRequest(1));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition) << late.status();
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("every worker left (at step 1)"));
  EXPECT_EQ(engine_->FindJob("engine").status().code(), absl::StatusCode::kNotFound);
  // After --ended_job_memory (30 min by default) the id is free again.
  clock_.Advance(absl::Minutes(31));
  EXPECT_TRUE(engine_->Join(JoinRequest(1)).ok());
}

// The first step waits for every rank's first Join, however long it takes, instead of dropping
// the rank at the step timeout; the job starts with all of them.
TEST_F(EngineTest, ASlowStarterIsWaitedForNotDropped) {
  config_.start_timeout = absl::Minutes(10);
  Start(v1::CODEC_FP32, 3, /*joined=*/2);
  auto a = Push(0, 0, 1.0f);
  auto b = Push(1, 0, 2.0f);
  clock_.Advance(absl::Minutes(5));  // five step timeouts
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  EXPECT_FALSE(a->done || b->done);
  absl::StatusOr<v1::JoinResponse> joined = engine_->Join(JoinRequest(2));
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->start_step(), 0u);
  epochs_[2] = joined->epoch();
  // The step's deadline runs from the start, not from the first push five minutes ago: the
  // slow starter is not dropped before it could push.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(engine_->CheckTimeouts(), 0);
  auto c = Push(2, 0, 3.0f);
  ASSERT_TRUE(a->done && b->done && c->done);
  ASSERT_TRUE(c->status.ok()) << c->status;
  EXPECT_EQ(c->response.averages(0).contributors(), 3u);
  // Once started, the step timeout drops as before.
  auto d = Push(0, 1, 1.0f);
  clock_.Advance(absl::Seconds(61));
  EXPECT_EQ(engine_->CheckTimeouts(), 2);
}

// A job some rank never joins ends at the start timeout: the waiting calls fail naming the
// missing ranks, and the late rank is told the same when it finally comes.
TEST_F(EngineTest, AJobThatNeverStartsEndsNamingTheMissingRanks) {
  config_.start_timeout = absl::Minutes(2);
  Start(v1::CODEC_FP32, 4, /*joined=*/2);
  auto a = Push(0, 0, 1.0f);
  clock_.Advance(absl::Seconds(119));
  engine_->CheckTimeouts();
  EXPECT_FALSE(a->done);
  clock_.Advance(absl::Seconds(2));
  engine_->CheckTimeouts();
  ASSERT_TRUE(a->done);
  EXPECT_EQ(a->status.code(), absl::StatusCode::kFailedPrecondition) << a->status;
  EXPECT_THAT(std::string(a->status.message()),
              HasSubstr("did not start: worker_rank 2, 3 of 4 never joined shard 0 within 2m"));
  EXPECT_EQ(engine_->FindJob("engine").status().code(), absl::StatusCode::kNotFound);
  const absl::StatusOr<v1::JoinResponse> late = engine_->Join(JoinRequest(3));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("never joined"));
}

// A call still waiting when its job expires is answered, ABORTED, naming the expiry.
TEST_F(EngineTest, AnExpiringJobAnswersItsWaitingCalls) {
  config_.job_idle_timeout = absl::Seconds(30);  // shorter than the step timeout, 60 s
  Start(v1::CODEC_FP32, 2);
  auto waiting = Push(0, 0, 1.0f);
  clock_.Advance(absl::Seconds(31));
  engine_->CheckTimeouts();
  ASSERT_TRUE(waiting->done);
  EXPECT_EQ(waiting->status.code(), absl::StatusCode::kAborted) << waiting->status;
  EXPECT_THAT(std::string(waiting->status.message()), HasSubstr("expired after 30s"));
  EXPECT_EQ(engine_->FindJob("engine").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, AJobWithoutSnapshotsKeepsNoRecoveryState) {
  Start(v1::CODEC_FP32, 1);
  auto a = Push(0, 0, 1.0f);
  ASSERT_TRUE(a->done && a->status.ok());
  absl::StatusOr<v1::GetRecoveryResponse> r = engine_->GetRecovery(Recovery(0, epochs_[0], 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("snapshot_interval"));
  v1::PutSnapshotRequest s = Snapshot(0, epochs_[0], 1, 2 * 4 * kElements, 'a');
  EXPECT_EQ(engine_->PutSnapshot(s).status().code(), absl::StatusCode::kFailedPrecondition);
}

// A worker that was in the job asks with rejoin = true: a shard that does not have the job says
// so (NOT_FOUND) instead of starting it afresh at step 0.
TEST_F(EngineTest, ARejoinOfAJobTheShardDoesNotHaveIsRefused) {
  Start(v1::CODEC_FP32, 2);
  v1::JoinRequest join = JoinRequest(0);
  join.set_job_id("other");
  join.set_rejoin(true);
  absl::StatusOr<v1::JoinResponse> st = engine_->Join(join);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kNotFound) << st.status();
  EXPECT_THAT(std::string(st.status().message()),
              HasSubstr("rejoin: job 'other' is not on shard 0"));
  EXPECT_THAT(std::string(st.status().message()), HasSubstr("without --state_dir"));
  EXPECT_EQ(engine_->FindJob("other").status().code(), absl::StatusCode::kNotFound);
}

constexpr absl::string_view kTokenA = "token-A-0123456789abcdef";
constexpr absl::string_view kTokenB = "token-B-0123456789abcdef";

// The first Join fixes the job's token. Every method then refuses a call without it
// (UNAUTHENTICATED) or with another one (PERMISSION_DENIED), before looking at anything else and
// without changing any state; the messages never contain a token.
TEST_F(EngineTest, AJobTokenGuardsEveryCallOfTheJob) {
  token_ = std::string(kTokenA);
  Start(v1::CODEC_FP32, 2);
  const std::string before = Fingerprint();
  struct Caller {
    absl::string_view token;
    absl::StatusCode code;
  };
  for (const Caller& c : {Caller{"", absl::StatusCode::kUnauthenticated},
                          Caller{kTokenB, absl::StatusCode::kPermissionDenied}}) {
    SCOPED_TRACE(absl::StrCat("token '", c.token, "'"));
    std::vector<absl::Status> refused;
    refused.push_back(engine_->Join(JoinRequest(1), c.token).status());
    v1::JoinRequest rejoin = JoinRequest(1);
    rejoin.set_rejoin(true);
    refused.push_back(engine_->Join(rejoin, c.token).status());
    token_ = std::string(c.token);
    auto share = Share(0, 0, 1.0f);
    auto push = Push(0, 0, 1.0f);
    token_ = std::string(kTokenA);
    ASSERT_TRUE(share->done && push->done);
    refused.push_back(share->status);
    refused.push_back(push->status);
    v1::LeaveRequest leave;
    leave.set_job_id("engine");
    leave.set_worker_rank(1);
    leave.set_epoch(epochs_[1]);
    refused.push_back(engine_->Leave(leave, c.token).status());
    v1::PutSnapshotRequest snapshot = Snapshot(0, epochs_[0], 0, 2 * 4 * kElements, 'x');
    refused.push_back(engine_->PutSnapshot(snapshot, c.token).status());
    refused.push_back(engine_->GetRecovery(Recovery(0, epochs_[0], 0), c.token).status());
    v1::GetStatusRequest status;
    status.set_job_id("engine");
    refused.push_back(engine_->GetStatus(status, c.token).status());
    for (size_t i = 0; i < refused.size(); ++i) {
      EXPECT_EQ(refused[i].code(), c.code) << "call " << i << ": " << refused[i];
      EXPECT_THAT(std::string(refused[i].message()), HasSubstr("authorization: "));
      EXPECT_THAT(std::string(refused[i].message()), Not(HasSubstr("token-")));
    }
    EXPECT_EQ(Fingerprint(), before);
  }
  // Listing jobs shows only those the caller's token opens.
  absl::StatusOr<v1::GetStatusResponse> listed = engine_->GetStatus({}, "");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->jobs_size(), 0);
  listed = engine_->GetStatus({}, kTokenA);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->jobs_size(), 1);
  // With the job's token everything works: a step, then both ranks leave.
  auto a = Push(0, 0, 1.0f);
  auto b = Push(1, 0, 3.0f);
  ASSERT_TRUE(a->done && a->status.ok()) << a->status;
  for (uint32_t rank = 0; rank < 2; ++rank) {
    v1::LeaveRequest leave;
    leave.set_job_id("engine");
    leave.set_worker_rank(rank);
    leave.set_epoch(epochs_[rank]);
    EXPECT_TRUE(engine_->Leave(leave, kTokenA).ok());
  }
}

// A worker of another job (its own token) cannot leave or push into this one; a job started
// without a token refuses calls that carry one; --require_job_token refuses to start a job
// without one.
TEST_F(EngineTest, OtherJobsTokensAndTokenlessJobsAreKeptApart) {
  token_ = std::string(kTokenA);
  Start(v1::CODEC_FP32, 2);
  v1::JoinRequest other = JoinRequest(0);
  other.set_job_id("other");
  ASSERT_TRUE(engine_->Join(other, kTokenB).ok());
  v1::LeaveRequest leave;
  leave.set_job_id("engine");
  leave.set_worker_rank(1);
  leave.set_epoch(epochs_[1]);
  EXPECT_EQ(engine_->Leave(leave, kTokenB).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*engine_->FindJob("engine"))->LiveWorkers(), 2);
  absl::StatusOr<v1::GetStatusResponse> listed = engine_->GetStatus({}, kTokenB);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).job_id(), "other");

  v1::JoinRequest open = JoinRequest(0);
  open.set_job_id("open");
  ASSERT_TRUE(engine_->Join(open, "").ok());
  absl::Status st = engine_->Join(open, kTokenA).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("started without a job token"));

  config_.require_job_token = true;
  engine_ = std::make_unique<Engine>(config_);
  st = engine_->Join(open, "").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("--require_job_token"));
  EXPECT_EQ(engine_->FindJob("open").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(engine_->Join(open, kTokenA).ok());
}

// A durable shard keeps the job's token across a restart: rejoining without it is refused.
TEST_F(EngineTest, ARestoredJobKeepsItsToken) {
  char tmpl[] = "/tmp/ternps-engine-token-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  config_.state_dir = tmpl;
  snapshot_interval_ = 2;
  token_ = std::string(kTokenA);
  Start(v1::CODEC_TERNGRAD, 2);
  engine_ = std::make_unique<Engine>(config_);
  ASSERT_THAT(engine_->restored().jobs, ::testing::ElementsAre("engine"));
  v1::JoinRequest rejoin = JoinRequest(0);
  rejoin.set_rejoin(true);
  EXPECT_EQ(engine_->Join(rejoin, "").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(engine_->Join(rejoin, kTokenB).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(engine_->Join(rejoin, kTokenA).ok());
  engine_.reset();
  std::system(absl::StrCat("rm -rf ", tmpl).c_str());
}

// A rank that dies between shards: it pushed step 0 to shard 0 but never to shard 1. Shard 1
// waits the step timeout and drops it; its peers then reach step 1 on shard 0, which has not
// heard from the rank for that long either and drops it at its next check instead of waiting a
// second full timeout.
TEST(EngineTwoShardsTest, ADeadRankCostsItsPeersOneTimeoutNotOnePerShard) {
  common::ManualClock clock;
  std::vector<std::unique_ptr<Engine>> shards;
  for (uint32_t s = 0; s < 2; ++s) {
    ShardConfig config;
    config.shard_index = s;
    config.shard_count = 2;
    config.step_timeout = absl::Seconds(60);
    config.clock = &clock;
    config.run_reaper = false;
    shards.push_back(std::make_unique<Engine>(config));
  }
  auto join = [](uint32_t rank, uint32_t shard) {
    v1::JoinRequest r;
    r.set_job_id("split");
    r.set_worker_rank(rank);
    r.set_world_size(3);
    for (const char* name : {"a", "b"}) {
      v1::TensorSpec* t = r.add_tensors();
      t->set_name(name);
      t->set_elements(kElements);
    }
    r.mutable_codec()->set_codec(v1::CODEC_FP32);
    r.set_shard_index(shard);
    r.set_shard_count(2);
    return r;
  };
  std::vector<std::vector<uint64_t>> epochs(2, std::vector<uint64_t>(3));
  std::vector<std::vector<uint32_t>> owned(2);
  for (uint32_t s = 0; s < 2; ++s) {
    for (uint32_t r = 0; r < 3; ++r) {
      absl::StatusOr<v1::JoinResponse> joined = shards[s]->Join(join(r, s));
      ASSERT_TRUE(joined.ok()) << joined.status();
      epochs[s][r] = joined->epoch();
      owned[s] = {joined->owned_partitions().begin(), joined->owned_partitions().end()};
    }
    ASSERT_EQ(owned[s].size(), 1u);
  }
  std::vector<std::shared_ptr<Answer<v1::PushPullResponse>>> answers;
  auto push = [&](uint32_t s, uint32_t rank, uint64_t step) {
    v1::PushPullRequest r;
    r.set_job_id("split");
    r.set_worker_rank(rank);
    r.set_epoch(epochs[s][rank]);
    r.set_step(step);
    v1::PartitionPayload* p = r.add_partitions();
    p->set_partition_id(owned[s][0]);
    p->set_elements(kElements);
    p->set_encoding(v1::FP32);
    p->set_data(std::string(4 * kElements, '\0'));
    answers.push_back(std::make_unique<Answer<v1::PushPullResponse>>());
    shards[s]->PushPull(r, &answers.back()->response, answers.back()->Callback());
    return answers.back().get();
  };
  for (uint32_t r = 0; r < 3; ++r) push(0, r, 0);  // step 0 complete on shard 0
  auto* w0 = push(1, 0, 0);
  push(1, 1, 0);  // rank 2 never reaches shard 1
  clock.Advance(absl::Seconds(61));
  EXPECT_EQ(shards[1]->CheckTimeouts(), 1);
  ASSERT_TRUE(w0->done && w0->status.ok()) << w0->status;
  // The survivors go on to step 1 on shard 0, 61 s after rank 2 was last heard of there.
  auto* s0 = push(0, 0, 1);
  push(0, 1, 1);
  clock.Advance(absl::Seconds(1));  // far from this step's own deadline (60 s)
  EXPECT_EQ(shards[0]->CheckTimeouts(), 1);
  ASSERT_TRUE(s0->done && s0->status.ok()) << s0->status;
  EXPECT_EQ(s0->response.averages(0).contributors(), 2u);
}

}  // namespace
}  // namespace ternps::server
