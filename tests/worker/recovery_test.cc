// Integration: exact recovery with real processes. Two ternps-server shards and three
// ternps-worker trainers (Fashion-MNIST, a small MLP) run one job; one worker fails, comes back,
// rebuilds its peers' model from the shards' snapshot and averages, and the job ends with every
// replica's model checksum identical.
//   - a worker killed by SIGKILL at a seeded random step and started again with the same flags;
//   - a worker stopped (SIGSTOP) until the shards drop it after their step timeout, then
//     continued (SIGCONT): it is told it was dropped, joins again and recovers;
//   - a rank started 3 s after its peers (past the step timeout): the job waits for it;
//   - a shard killed by SIGKILL at a seeded random step and started again with its --state_dir:
//     the workers reconnect and repeat the step, and the job ends as an uninterrupted run does.
// Nothing waits by sleeping for an event: the test waits for processes (waitpid), for files the
// binaries write once ready (port files, summaries), and polls the shards' GetStatus for the drop.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "ternps/v1/ternps.grpc.pb.h"
#include "tests/worker/child_process.h"

namespace ternps {
namespace {

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";
constexpr int kSteps = 120;  // per worker, one epoch
constexpr int kSnapshotInterval = 16;

using testing::ChildProcess;
using testing::ExitString;
using testing::ReadFile;

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access((std::string(kDataDir) + "/t10k-labels-idx1-ubyte.gz").c_str(), R_OK), 0)
        << "tests/run.sh installs dataset-fashion-mnist";
    char tmpl[] = "/tmp/ternps-recovery-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    shards_.clear();
    if (!HasFailure())
      std::system(absl::StrCat("rm -rf ", dir_).c_str());
    else
      std::fprintf(stderr, "logs kept in %s\n", dir_.c_str());
  }

  // Starts shard i on `port` (0: any; its address is then added to addresses_) and waits until it
  // serves. With `durable`, each shard keeps its state in its own directory under dir_.
  void StartShard(int i, const std::string& step_timeout, bool durable, const std::string& port) {
    const std::string port_file = absl::StrCat(dir_, "/port", i);
    std::remove(port_file.c_str());
    std::vector<std::string> args = {absl::StrCat(TERNPS_BIN_DIR, "/ternps-server"),
                                     "--listen=127.0.0.1:" + port,
                                     "--port_file=" + port_file,
                                     absl::StrCat("--shard_index=", i),
                                     "--shard_count=2",
                                     "--step_timeout=" + step_timeout};
    if (durable) args.push_back(absl::StrCat("--state_dir=", dir_, "/state", i));
    auto shard = std::make_unique<ChildProcess>(args, absl::StrCat(dir_, "/shard", i, ".log"));
    // The port file appears (renamed into place) once the shard serves.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (ReadFile(port_file).empty()) {
      ASSERT_LT(absl::Now(), deadline) << "shard " << i << " did not start";
      absl::SleepFor(absl::Milliseconds(5));
    }
    if (port == "0") {
      addresses_.push_back("127.0.0.1:" +
                           std::string(absl::StripAsciiWhitespace(ReadFile(port_file))));
      shards_.push_back(std::move(shard));
    } else {
      shards_[i] = std::move(shard);
    }
  }
  void StartShards(const std::string& step_timeout, bool durable = false) {
    for (int i = 0; i < 2; ++i) {
      StartShard(i, step_timeout, durable, "0");
      if (HasFatalFailure()) return;
    }
  }

  std::unique_ptr<ChildProcess> StartWorker(uint32_t rank, const std::vector<std::string>& extra,
                                            int steps = kSteps) {
    std::vector<std::string> args = {absl::StrCat(TERNPS_BIN_DIR, "/ternps-worker"),
                                     "--shards=" + absl::StrJoin(addresses_, ","),
                                     absl::StrCat("--rank=", rank),
                                     "--world_size=3",
                                     "--job_id=" + job_id_,
                                     "--hidden=64",
                                     "--epochs=1",
                                     absl::StrCat("--max_steps_per_epoch=", steps),
                                     absl::StrCat("--snapshot_interval=", kSnapshotInterval),
                                     "--threads=1",
                                     "--quiet",
                                     absl::StrCat("--summary_file=", dir_, "/summary", rank)};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(args, absl::StrCat(dir_, "/worker", rank, ".log"));
  }

  // The "model_checksum" of a worker's summary.
  std::string Checksum(uint32_t rank) const {
    const std::string summary = ReadFile(absl::StrCat(dir_, "/summary", rank));
    const size_t at = summary.find("\"model_checksum\": \"");
    if (at == std::string::npos) return "(no summary)";
    return summary.substr(at + 19, 16);
  }
  // The "test_accuracy" of a worker's summary (-1 without one).
  double Accuracy(uint32_t rank) const {
    const std::string summary = ReadFile(absl::StrCat(dir_, "/summary", rank));
    const size_t at = summary.find("\"test_accuracy\": ");
    return at == std::string::npos ? -1.0 : std::atof(summary.c_str() + at + 17);
  }

  // Job job_id_ as shard `i` reports it (no jobs while it is unknown there).
  v1::GetStatusResponse Status(int i) const {
    auto stub = v1::ParameterServer::NewStub(
        grpc::CreateChannel(addresses_[i], grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::GetStatusRequest request;
    request.set_job_id(job_id_);
    v1::GetStatusResponse response;
    if (!stub->GetStatus(&context, request, &response).ok()) response.Clear();
    return response;
  }
  std::vector<uint32_t> LiveWorkers(int i) const {
    const v1::GetStatusResponse status = Status(i);
    if (status.jobs_size() == 0) return {};
    return {status.jobs(0).live_workers().begin(), status.jobs(0).live_workers().end()};
  }
  uint64_t Epoch(int i) const {
    const v1::GetStatusResponse status = Status(i);
    return status.jobs_size() == 0 ? 0 : status.jobs(0).epoch();
  }
  uint64_t JobStep(int i) const {
    const v1::GetStatusResponse status = Status(i);
    return status.jobs_size() == 0 ? 0 : status.jobs(0).step();
  }

  // Waits for the three workers: each exits 0, `rank` logged `recovered` (its recovery line),
  // and all three end with the same model.
  void ExpectOneModel(const std::vector<ChildProcess*>& workers, uint32_t rank,
                      const std::string& recovered) {
    for (ChildProcess* p : workers) {
      const int status = p->Wait();
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ExitString(status);
    }
    const std::string log = ReadFile(absl::StrCat(dir_, "/worker", rank, ".log"));
    EXPECT_NE(log.find(recovered), std::string::npos) << log;
    for (uint32_t r = 0; r < 3; ++r) {
      EXPECT_EQ(Checksum(r), Checksum(rank)) << "rank " << r << " and rank " << rank << " differ";
    }
  }

  std::string dir_;
  std::string job_id_ = "recovery";
  std::vector<std::unique_ptr<ChildProcess>> shards_;
  std::vector<std::string> addresses_;
};

TEST_F(RecoveryTest, AWorkerKilledAndRestartedEndsWithItsPeersModel) {
  StartShards("60s");
  std::mt19937_64 rng(20261201);
  const int crash_step = 20 + static_cast<int>(rng() % 80);  // seeded: [20, 100)
  auto w0 = StartWorker(0, {});
  auto w1 = StartWorker(1, {});
  // Test-only, an environment variable (not a flag of the shipping binary): the child inherits it.
  ASSERT_EQ(setenv("TERNPS_TEST_CRASH_AT_STEP", absl::StrCat(crash_step).c_str(), 1), 0);
  auto w2 = StartWorker(2, {});
  ASSERT_EQ(unsetenv("TERNPS_TEST_CRASH_AT_STEP"), 0);
  const int crashed = w2->Wait();
  ASSERT_TRUE(WIFSIGNALED(crashed) && WTERMSIG(crashed) == SIGKILL) << ExitString(crashed);
  // The survivors go on once the shards drop rank 2 (within --disconnect_grace, 2 s). Hold them
  // until the restarted rank has joined: on a loaded machine its start-up (ASan) could otherwise
  // outlast the rest of the job, and a rank that comes back to an ended job is refused.
  // Joined means: all three live again after the epoch moved (a drop of the old rank 2 and the
  // new one's readmission each move it; the old one alone is live at the old epoch).
  ASSERT_EQ(kill(w0->pid(), SIGSTOP), 0);
  ASSERT_EQ(kill(w1->pid(), SIGSTOP), 0);
  const uint64_t epochs[2] = {Epoch(0), Epoch(1)};
  auto again = StartWorker(2, {});
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  const std::vector<uint32_t> all = {0, 1, 2};
  auto joined = [&](int i) {  // one status answer, so live set and epoch are of one moment
    const v1::GetStatusResponse status = Status(i);
    return status.jobs_size() == 1 && status.jobs(0).epoch() > epochs[i] &&
           std::vector<uint32_t>(status.jobs(0).live_workers().begin(),
                                 status.jobs(0).live_workers().end()) == all;
  };
  while (!joined(0) || !joined(1)) {
    ASSERT_LT(absl::Now(), deadline) << "the restarted rank 2 did not join";
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(kill(w0->pid(), SIGCONT), 0);
  ASSERT_EQ(kill(w1->pid(), SIGCONT), 0);
  for (ChildProcess* p : {w0.get(), w1.get(), again.get()}) {
    const int status = p->Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ExitString(status);
  }
  EXPECT_NE(ReadFile(dir_ + "/worker2.log").find("recovered the model at step"), std::string::npos);
  EXPECT_EQ(Checksum(0), Checksum(1));
  EXPECT_EQ(Checksum(2), Checksum(0))
      << "crashed at step " << crash_step << ": the restarted worker's model differs";
}

TEST_F(RecoveryTest, AWorkerDroppedAfterTheStepTimeoutRecoversWhenItContinues) {
  StartShards("2s");
  auto w0 = StartWorker(0, {});
  auto w1 = StartWorker(1, {});
  auto w2 = StartWorker(2, {});
  // Stop rank 1 once all three are stepping (step 10 on both shards), keep it stopped until both
  // shards have dropped it.
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (JobStep(0) < 10 || JobStep(1) < 10) {
    ASSERT_LT(absl::Now(), deadline) << "the job did not start";
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(kill(w1->pid(), SIGSTOP), 0);
  const absl::Time stopped = absl::Now();
  deadline = absl::Now() + absl::Seconds(60);
  const std::vector<uint32_t> survivors = {0, 2};
  while (LiveWorkers(0) != survivors || LiveWorkers(1) != survivors) {
    ASSERT_LT(absl::Now(), deadline) << "rank 1 was not dropped";
    absl::SleepFor(absl::Milliseconds(20));
  }
  const double drop_seconds = absl::ToDoubleSeconds(absl::Now() - stopped);
  ASSERT_EQ(kill(w1->pid(), SIGCONT), 0);
  ExpectOneModel({w0.get(), w1.get(), w2.get()}, 1, "readmitted: recovered the model");
  std::fprintf(stderr, "rank 1 dropped by both shards %.2f s after SIGSTOP (step timeout 2 s)\n",
               drop_seconds);
}

// A rank that starts well after its peers (longer than the step timeout) is waited for: the job
// takes its first step only once every rank has joined, so nobody is dropped, nobody trains
// without it, and no recovery is needed.
TEST_F(RecoveryTest, ASlowStarterIsWaitedForAndTheJobStartsWithIt) {
  StartShards("2s");
  auto w0 = StartWorker(0, {});
  auto w1 = StartWorker(1, {});
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (LiveWorkers(0).empty() || LiveWorkers(1).empty()) {
    ASSERT_LT(absl::Now(), deadline) << "the job was not created";
    absl::SleepFor(absl::Milliseconds(5));
  }
  // Rank 2 is slow to start: 3 s, past the 2 s step timeout (a fault's duration, not a wait for
  // an event). Its peers wait at step 0 and it stays in the live set.
  absl::SleepFor(absl::Seconds(3));
  const std::vector<uint32_t> all = {0, 1, 2};
  EXPECT_EQ(JobStep(0), 0u);
  EXPECT_EQ(JobStep(1), 0u);
  EXPECT_EQ(LiveWorkers(0), all);
  EXPECT_EQ(LiveWorkers(1), all);
  auto late = StartWorker(2, {});
  ExpectOneModel({w0.get(), w1.get(), late.get()}, 2, "");
  EXPECT_EQ(ReadFile(dir_ + "/worker2.log").find("recovered"), std::string::npos)
      << "the slow starter should not need recovery";
}

// A durable shard killed mid-run and restarted with the same --state_dir: the workers reconnect,
// repeat the step, and the job ends with every replica identical and as accurate as an
// uninterrupted run of the same job (the bits differ: FP32 partitions are summed in arrival
// order, which timing decides, in any two runs). Small partitions and calls put several calls on
// each of a shard's two connections behind a window of 2: the reconnection must bring back the
// second connection too, and every call the window held back when the connection was lost must
// be resent.
TEST_F(RecoveryTest, AShardKilledAndRestartedWithItsStateDirLosesNothing) {
  StartShards("60s", /*durable=*/true);
  ASSERT_FALSE(HasFatalFailure());
  constexpr int kRun = 300;
  const std::vector<std::string> calls = {"--partition_elements=4096", "--max_call_bytes=1024",
                                          "--channels_per_shard=2", "--calls_in_flight=2"};
  job_id_ = "uninterrupted";
  {
    auto w0 = StartWorker(0, calls, kRun);
    auto w1 = StartWorker(1, calls, kRun);
    auto w2 = StartWorker(2, calls, kRun);
    ExpectOneModel({w0.get(), w1.get(), w2.get()}, 0, "");
  }
  const double reference = Accuracy(0);
  const std::string reference_checksum = Checksum(0);
  job_id_ = "recovery";
  std::mt19937_64 rng(20261202);
  const uint64_t kill_step = 20 + rng() % 100;  // seeded: [20, 120)
  auto w0 = StartWorker(0, calls, kRun);
  auto w1 = StartWorker(1, calls, kRun);
  auto w2 = StartWorker(2, calls, kRun);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (JobStep(1) < kill_step) {
    ASSERT_LT(absl::Now(), deadline) << "the job did not reach step " << kill_step;
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(kill(shards_[1]->pid(), SIGKILL), 0);
  shards_[1]->Wait();
  const std::string port(absl::StripPrefix(addresses_[1], "127.0.0.1:"));
  StartShard(1, "60s", /*durable=*/true, port);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_NE(ReadFile(dir_ + "/shard1.log").find("restored 1 job(s)"), std::string::npos)
      << ReadFile(dir_ + "/shard1.log");
  ExpectOneModel({w0.get(), w1.get(), w2.get()}, 0, "lost a shard's connection; reconnected");
  // No contribution was lost, and every average is a function of the pushed values alone (exact
  // integer sums, float sums in rank order): the model is the uninterrupted run's, bit for bit.
  EXPECT_EQ(Checksum(0), reference_checksum)
      << "killed shard 1 at step " << kill_step << ": accuracy " << Accuracy(0)
      << ", uninterrupted " << reference;
  std::fprintf(stderr, "shard 1 killed at step %llu: accuracy %.4f, uninterrupted %.4f\n",
               static_cast<unsigned long long>(kill_step), Accuracy(0), reference);
}

}  // namespace
}  // namespace ternps
