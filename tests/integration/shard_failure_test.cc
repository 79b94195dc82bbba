// When one shard goes away during a step, the worker tries to reconnect to it at once (a shard
// restarted from its state directory comes back) while its other calls go on; when the shard
// stays unreachable for the connect timeout, the calls to the other shards are cancelled and
// Step returns that shard's error, instead of waiting for the other shards' answers until the
// call deadline.
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"

namespace ternps {
namespace {

using ::testing::HasSubstr;

TEST(ShardFailureTest, OneShardFailingCancelsTheCallsToTheOthers) {
  // Step timeout and call deadline an hour: without cancellation Step would wait that long.
  testing::TestCluster cluster(2, absl::Hours(1));
  std::vector<std::unique_ptr<worker::Worker>> workers;
  for (uint32_t rank = 0; rank < 2; ++rank) {
    worker::WorkerOptions options;
    options.job_id = "failure";
    options.rank = rank;
    options.world_size = 2;
    options.shards = cluster.addresses();
    options.tensors = {{"a", 8192}, {"b", 8192}};  // one partition per shard
    options.codec.codec = worker::CodecKind::kFp32;
    options.rpc_timeout = absl::Hours(1);
    options.connect_timeout = absl::Seconds(2);
    options.leave_timeout = absl::Seconds(1);
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    workers.push_back(*std::move(w));
  }
  // Rank 0 steps alone: both shards hold its push and wait for rank 1, which never steps.
  std::vector<float> a(8192, 1.0f), b(8192, 1.0f);
  std::vector<absl::Span<float>> grads = {absl::MakeSpan(a), absl::MakeSpan(b)};
  absl::Status status;
  absl::Notification returned;
  std::thread stepper([&] {
    status = workers[0]->Step(grads);
    returned.Notify();
  });
  // Shard 1 shuts down: whatever it still waits on fails (UNAVAILABLE), and so does any call
  // that reaches it later.
  cluster.shard(1).Shutdown(absl::ZeroDuration());
  // Bound with a 100x margin: the alternative is the hour-long deadline.
  const bool in_time = returned.WaitForNotificationWithTimeout(absl::Seconds(30));
  EXPECT_TRUE(in_time) << "Step still waits on shard 0 after shard 1 failed";
  if (!in_time) cluster.shard(0).Shutdown(absl::ZeroDuration());  // let the thread finish
  stepper.join();
  // Shard 1's own error (unreachable for the connect timeout), not the others' deadline.
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("reconnecting after a lost connection at step 0: shard 1"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("unreachable for"));
}

// A shard that is gone when a step starts: its first calls fail at once, and every call the
// window held back must be accounted for too, or Step waits for them forever (it did, when the
// lost calls released only as many queued calls as the window had room for and those were not
// sent either). 64 single-partition calls behind a window of 2, over 3 connections.
TEST(ShardFailureTest, AShardGoneAtTheStartFailsTheStepWithEveryQueuedCall) {
  testing::TestCluster cluster(1, absl::Hours(1));
  worker::WorkerOptions options;
  options.job_id = "gone";
  options.shards = cluster.addresses();
  options.tensors = {{"w", 64 * 1024}};
  options.codec.codec = worker::CodecKind::kFp32;
  options.codec.partition_elements = 1024;
  options.max_call_bytes = 4096;
  options.calls_in_flight_per_shard = 2;
  options.channels_per_shard = 3;
  options.rpc_timeout = absl::Hours(1);
  options.connect_timeout = absl::Seconds(1);
  options.leave_timeout = absl::Seconds(1);
  auto w = worker::Worker::Connect(options);
  ASSERT_TRUE(w.ok()) << w.status();
  cluster.shard(0).Shutdown(absl::ZeroDuration());
  std::vector<float> g(64 * 1024, 1.0f);
  std::vector<absl::Span<float>> grads = {absl::MakeSpan(g)};
  absl::Status status;
  absl::Notification returned;
  std::thread stepper([&] {
    status = (*w)->Step(grads);
    returned.Notify();
  });
  // Bound with a 30x margin over the connect timeout; the alternative is forever.
  ASSERT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(30)))
      << "Step still waits for calls that were never sent";
  stepper.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("reconnecting after a lost connection at step 0: shard 0"));
}

}  // namespace
}  // namespace ternps
