// A durable shard (ternps-server --state_dir) driven through the engine: restarts, and disk faults
// injected into its state store (SetDiskFaultHookForTesting). The rule under test: no average is
// answered, first time or repeated, before it is on disk; a job whose files fail stops answering
// and is reloaded from what is durable once the disk works again.
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine.h"
#include "server/state_store.h"
#include "tests/server/engine_fixture.h"

namespace ternps::server {
namespace {

// A durable shard (state_dir) restarted in the middle of a job: it restores the job at the first
// step it had not answered, with epochs above the old ones; a worker repeating a step the shard
// answered before the restart gets the same scaler and the same average from the log (its payload
// is not summed again); recovery works from what was read back; and once every rank leaves, the
// job's files are gone.
TEST_F(EngineTest, ADurableShardRestartsWhereItWas) {
  char tmpl[] = "/tmp/ternps-engine-state-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  config_.state_dir = tmpl;
  snapshot_interval_ = 2;
  Start(v1::CODEC_TERNGRAD, 2);
  constexpr size_t kState = 2 * 4 * kElements;
  std::vector<v1::PushPullResponse> answered;
  auto step = [&](uint64_t t) {
    auto s0 = Share(0, t, 1.0f + t);
    auto s1 = Share(1, t, 2.0f);
    ASSERT_TRUE(s0->done && s0->status.ok()) << s0->status;
    const float shared = s0->response.shared_scalers(0);
    auto a = Push(0, t, shared);
    auto b = Push(1, t, shared);
    ASSERT_TRUE(a->done && a->status.ok()) << a->status;
    answered.push_back(a->response);
  };
  for (uint64_t t = 0; t < 3; ++t) {
    step(t);
    ASSERT_FALSE(HasFatalFailure());
  }
  v1::PutSnapshotRequest snapshot = Snapshot(1, epochs_[1], 2, kState, 'b');
  ASSERT_TRUE(engine_->PutSnapshot(snapshot).ok());
  auto pending = Share(0, 3, 1.0f);  // step 3 is under way when the shard goes down
  const std::vector<uint64_t> old_epochs = epochs_;
  engine_ = std::make_unique<Engine>(config_);
  EXPECT_TRUE(pending->done);
  EXPECT_THAT(engine_->restored().jobs, ::testing::ElementsAre("engine"));
  EXPECT_TRUE(engine_->restored().problems.empty());
  absl::StatusOr<v1::GetStatusResponse> status = engine_->GetStatus({});
  ASSERT_TRUE(status.ok());
  ASSERT_EQ(status->jobs_size(), 1);
  EXPECT_EQ(status->jobs(0).step(), 3u);
  // Calls of the old incarnation are refused as if their connection had been lost (UNAVAILABLE:
  // the worker joins again and repeats them); every rank joins again.
  auto stale = Share(0, 3, 1.0f);
  ASSERT_TRUE(stale->done);
  EXPECT_EQ(stale->status.code(), absl::StatusCode::kUnavailable) << stale->status;
  EXPECT_THAT(std::string(stale->status.message()), HasSubstr("from before this shard restarted"));
  for (uint32_t r = 0; r < 2; ++r) {
    v1::JoinRequest join = JoinRequest(r);
    join.set_rejoin(true);
    absl::StatusOr<v1::JoinResponse> back = engine_->Join(join);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->start_step(), 3u);
    EXPECT_GT(back->epoch(), old_epochs[r]);
    epochs_[r] = back->epoch();
  }
  // Rank 0 repeats step 2 (its answer was lost with the connection): answered from the log.
  auto again_share = Share(0, 2, 3.0f);
  ASSERT_TRUE(again_share->done && again_share->status.ok()) << again_share->status;
  auto again = Push(0, 2, again_share->response.shared_scalers(0));
  ASSERT_TRUE(again->done && again->status.ok()) << again->status;
  EXPECT_EQ(again->response.averages(0).SerializeAsString(),
            answered[2].averages(0).SerializeAsString());
  // Recovery from what was read back: the snapshot of step 2 and the average of step 2.
  ExpectRecovery(engine_->GetRecovery(Recovery(1, epochs_[1], 3)), 2, std::string(kState, 'b'),
                 {answered[2].averages(0)});
  step(3);  // the job goes on
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(answered[3].averages(0).contributors(), 2u);
  // Both ranks leave: the job is over and its directory deleted.
  ASSERT_TRUE(LeaveAll().ok());
  const std::string shard_dir = ShardStateDir(tmpl, 0);
  EXPECT_EQ(std::system(absl::StrCat("test -z \"$(ls -A ", shard_dir, ")\"").c_str()), 0)
      << "the ended job's files are still in " << shard_dir;
  std::system(absl::StrCat("rm -rf ", tmpl).c_str());
}

// A job's files are created and deleted outside the engine's lock: while a disk operation of one
// job hangs, the shard answers other calls (GetStatus here, which takes the engine lock), and a
// second Join of the same job waits for the creation instead of creating the files again.
TEST_F(EngineTest, AJobsFilesAreWrittenAndDeletedOutsideTheEngineLock) {
  char dir[] = "/tmp/ternps-engine-lock-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  config_.state_dir = dir;
  snapshot_interval_ = 2;
  Start(v1::CODEC_FP32, 2, /*joined=*/0);
  // Blocks the next matching operation until released (a disk that hangs).
  struct Hang {
    DiskOp op;
    absl::Notification entered, release;
    std::atomic<bool> armed{true};
  };
  std::shared_ptr<Hang> hang;
  auto hang_at = [&hang](DiskOp op) {
    hang = std::make_shared<Hang>();
    hang->op = op;
    SetDiskFaultHookForTesting([h = hang](DiskOp op, const std::string&) {
      if (op == h->op && h->armed.exchange(false)) {
        h->entered.Notify();
        h->release.WaitForNotification();
      }
      return 0;
    });
  };
  hang_at(DiskOp::kCreate);
  // Answered while the disk hangs, or never (the bound only ends a failed test).
  auto answered_meanwhile = [&](const char* what) {
    auto status_answered = std::make_shared<absl::Notification>();
    std::thread other([this, status_answered] {
      EXPECT_TRUE(engine_->GetStatus({}).ok());
      status_answered->Notify();
    });
    const bool ok = status_answered->WaitForNotificationWithTimeout(absl::Seconds(30));
    EXPECT_TRUE(ok) << "GetStatus waited for the disk " << what;
    hang->release.Notify();
    other.join();
  };
  absl::StatusOr<v1::JoinResponse> first, second;
  std::thread join0([&] { first = engine_->Join(JoinRequest(0)); });
  ASSERT_TRUE(hang->entered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  std::thread join1([&] { second = engine_->Join(JoinRequest(1)); });
  answered_meanwhile("while the job's files were created");
  join0.join();
  join1.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  epochs_ = {first->epoch(), second->epoch()};
  // Both leave: the job's directory is deleted, outside the lock too.
  hang_at(DiskOp::kRemove);
  std::thread leave([&] { EXPECT_TRUE(LeaveAll().ok()); });
  ASSERT_TRUE(hang->entered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  answered_meanwhile("while the ended job's files were deleted");
  leave.join();
  SetDiskFaultHookForTesting(nullptr);
  engine_.reset();
  std::system(absl::StrCat("rm -rf ", dir).c_str());
}

struct DiskFault {
  const char* name;
  DiskOp op;
  int error;
  const char* path_part;  // the first failure hits a file whose path contains this; then every
                          // operation of that kind fails until the disk is healed
  const char* message;    // in the status of the failed calls
  bool at_snapshot;       // the fault hits a PutSnapshot (its file, or the next segment)
};

void PrintTo(const DiskFault& fault, std::ostream* os) { *os << fault.name; }

class DiskFaultTest : public EngineTest, public ::testing::WithParamInterface<DiskFault> {
 protected:
  void SetUp() override {
    ASSERT_NE(mkdtemp(dir_), nullptr);
    config_.state_dir = dir_;
    snapshot_interval_ = 2;
  }
  void TearDown() override {
    SetDiskFaultHookForTesting(nullptr);
    engine_.reset();
    std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  // Both ranks share scalers and push step t; the answers of both pushes, or the first error.
  absl::StatusOr<std::vector<v1::PushPullResponse>> Step(uint64_t t) {
    auto s0 = Share(0, t, 1.0f + static_cast<float>(t));
    auto s1 = Share(1, t, 2.0f);
    if (!s0->done || !s1->done) return absl::InternalError("ShareScalers not answered");
    if (!s0->status.ok()) return s0->status;
    if (!s1->status.ok()) return s1->status;
    const float shared = s0->response.shared_scalers(0);
    auto a = Push(0, t, shared);
    auto b = Push(1, t, shared);
    if (!a->done || !b->done) return absl::InternalError("PushPull not answered");
    if (!a->status.ok()) return a->status;
    if (!b->status.ok()) return b->status;
    return std::vector<v1::PushPullResponse>{a->response, b->response};
  }

  // The averages of steps 0 .. steps - 1 of a run without faults.
  std::vector<std::string> Reference(int steps) {
    std::vector<std::string> averages;
    Start(v1::CODEC_TERNGRAD, 2);
    for (int t = 0; t < steps; ++t) {
      absl::StatusOr<std::vector<v1::PushPullResponse>> answers = Step(t);
      EXPECT_TRUE(answers.ok()) << answers.status();
      if (!answers.ok()) return averages;
      averages.push_back((*answers)[0].averages(0).SerializeAsString());
    }
    EXPECT_TRUE(LeaveAll().ok());
    engine_.reset();
    return averages;
  }

  // Every rank joins again (as a worker does after UNAVAILABLE).
  absl::Status Rejoin() {
    for (uint32_t r = 0; r < 2; ++r) {
      v1::JoinRequest join = JoinRequest(r);
      join.set_resume_epoch(epochs_[r]);
      absl::StatusOr<v1::JoinResponse> back = engine_->Join(join);
      if (!back.ok()) return back.status();
      epochs_[r] = back->epoch();
      start_step_ = back->start_step();
    }
    return absl::OkStatus();
  }

  char dir_[64] = "/tmp/ternps-disk-fault-XXXXXX";
  uint64_t start_step_ = 0;
};

// Steps 0 and 1 are served; then the disk fails (every operation of one kind, on any file of the
// shard, until it is healed) at step 2's record or at the snapshot of step 2. Nothing of step 2 is
// answered, the job refuses every call (UNAVAILABLE, naming the file and errno) and cannot be
// reloaded while the disk fails; once it works, a Join reloads the job at step 2 (what was not
// durable was cut off), steps 2 and 3 give the averages of a run without faults, and a shard
// restarted afterwards reads back every average that was ever answered.
TEST_P(DiskFaultTest, NothingNotDurableIsAnsweredAndTheJobReloadsWhenTheDiskWorks) {
  const DiskFault fault = GetParam();
  const std::vector<std::string> reference = Reference(4);
  ASSERT_EQ(reference.size(), 4u);
  Start(v1::CODEC_TERNGRAD, 2);
  std::vector<std::string> served;
  for (uint64_t t = 0; t < 2; ++t) {
    absl::StatusOr<std::vector<v1::PushPullResponse>> answers = Step(t);
    ASSERT_TRUE(answers.ok()) << answers.status();
    served.push_back((*answers)[0].averages(0).SerializeAsString());
  }
  std::atomic<bool> broken{true};
  std::atomic<int> injected{0};
  SetDiskFaultHookForTesting([&](DiskOp op, const std::string& path) {
    if (!broken || op != fault.op || !absl::StrContains(path, dir_)) return 0;
    if (injected == 0 && !absl::StrContains(path, fault.path_part)) return 0;
    ++injected;
    return fault.error;
  });
  const std::string errno_text = std::strerror(fault.error);
  auto expect_stopped = [&](const absl::Status& st, const char* what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << what << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(fault.message)) << what;
    EXPECT_THAT(std::string(st.message()), HasSubstr(errno_text)) << what;
  };
  if (fault.at_snapshot) {
    v1::PutSnapshotRequest snapshot = Snapshot(0, epochs_[0], 2, 2 * 4 * kElements, 's');
    absl::StatusOr<v1::PutSnapshotResponse> put = engine_->PutSnapshot(snapshot);
    expect_stopped(put.status(), "PutSnapshot");
  }
  absl::StatusOr<std::vector<v1::PushPullResponse>> failed = Step(2);
  ASSERT_FALSE(failed.ok()) << "step 2 was answered although its record is not on disk";
  expect_stopped(failed.status(), "step 2");
  EXPECT_GT(injected.load(), 0);
  // A repeat of step 2 (a worker asking again), and the next call of any kind: refused.
  auto again = Push(0, 2, 1.0f);
  ASSERT_TRUE(again->done);
  expect_stopped(again->status, "repeated push");
  expect_stopped(engine_->GetRecovery(Recovery(1, epochs_[1], 2)).status(), "GetRecovery");
  // The reaper neither drops nor ends a stopped job (that would delete its files).
  clock_.Advance(absl::Hours(1));
  engine_->CheckTimeouts();
  // While the disk fails the job cannot be reloaded.
  const absl::Status while_broken = Rejoin();
  expect_stopped(while_broken, "Join while the disk fails");
  EXPECT_THAT(std::string(while_broken.message()), HasSubstr("Reloading it failed"));
  broken = false;
  ASSERT_TRUE(Rejoin().ok());
  EXPECT_EQ(start_step_, 2u) << "the job was reloaded past what was durable";
  for (uint64_t t = 2; t < 4; ++t) {
    absl::StatusOr<std::vector<v1::PushPullResponse>> answers = Step(t);
    ASSERT_TRUE(answers.ok()) << "step " << t << ": " << answers.status();
    served.push_back((*answers)[0].averages(0).SerializeAsString());
  }
  EXPECT_EQ(served, reference);
  // Everything answered is on disk: a restarted shard reads all four averages back.
  engine_ = std::make_unique<Engine>(config_);
  ASSERT_THAT(engine_->restored().jobs, ::testing::ElementsAre("engine"));
  ASSERT_TRUE(Rejoin().ok());
  absl::StatusOr<v1::GetRecoveryResponse> recovered =
      engine_->GetRecovery(Recovery(1, epochs_[1], 4));
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  const v1::PartitionRecovery& p = recovered->partitions(0);
  ASSERT_EQ(p.snapshot_step() + p.averages_size(), 4u);
  for (int i = 0; i < p.averages_size(); ++i) {
    EXPECT_EQ(p.averages(i).SerializeAsString(), served[p.snapshot_step() + i]) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Faults, DiskFaultTest,
    ::testing::Values(
        DiskFault{"AppendFullDisk", DiskOp::kWrite, ENOSPC, ".log", "cannot write", false},
        DiskFault{"AppendIoError", DiskOp::kWrite, EIO, ".log", "cannot write", false},
        DiskFault{"SyncIoError", DiskOp::kSync, EIO, ".log", "cannot fdatasync", false},
        DiskFault{"SyncFullDisk", DiskOp::kSync, ENOSPC, ".log", "cannot fdatasync", false},
        DiskFault{"SnapshotRename", DiskOp::kRename, EIO, ".snap", "cannot rename", true},
        DiskFault{"SnapshotFullDisk", DiskOp::kWrite, ENOSPC, ".snap", "cannot write", true},
        DiskFault{"RotationCreate", DiskOp::kCreate, ENOSPC, ".log", "cannot create", true},
        DiskFault{"RotationSync", DiskOp::kSync, EIO, ".log", "cannot fdatasync", true}),
    [](const ::testing::TestParamInfo<DiskFault>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ternps::server
