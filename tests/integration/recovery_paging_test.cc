// Recovery larger than one gRPC message: GetRecovery pages (GetRecoveryRequest.from_step,
// max_bytes) and the worker library replays page by page. An fp32 job of one 4M-element partition
// (16 MB averages) on a shard with ternps-server's default message limit (65 MiB): after 17 steps
// with a snapshot at step 12, a replacement for rank 1 recovers the snapshot and 5 steps of
// averages (96 MB, more than one message holds), ends bit for bit at rank 0's model, and both go
// on with the same average.
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"

namespace ternps {
namespace {

constexpr uint32_t kElements = 4u << 20;
constexpr uint32_t kInterval = 6;
constexpr int kSteps = 17;

// Multiples of 2^-10 in [-1, 1]: averages of two and their sums over the run are exact.
std::vector<float> Gradient(uint32_t rank, int step) {
  std::mt19937_64 rng(1000003 * rank + step);
  std::uniform_int_distribution<int> grid(-1024, 1024);
  std::vector<float> g(kElements);
  for (float& x : g) x = static_cast<float>(grid(rng)) / 1024.0f;
  return g;
}

worker::WorkerOptions Options(const std::vector<std::string>& shards, uint32_t rank) {
  worker::WorkerOptions options;
  options.job_id = "recovery-paging";
  options.rank = rank;
  options.world_size = 2;
  options.shards = shards;
  options.tensors = {{"w", kElements}};
  options.codec.codec = worker::CodecKind::kFp32;
  options.codec.partition_elements = kElements;
  options.snapshot_interval = kInterval;
  return options;
}

// A model: parameters updated by w -= average (lr 1, exact on the grid).
struct Replica {
  std::vector<float> w = std::vector<float>(kElements, 0.0f);
  std::vector<float> g;
  void Apply() {
    for (size_t i = 0; i < w.size(); ++i) w[i] -= g[i];
  }
};

// Step `step` of `worker` with its replica: push, apply, offer the state.
void TrainStep(worker::Worker& worker, Replica& replica, uint32_t rank, int step) {
  replica.g = Gradient(rank, step);
  absl::Span<float> span(replica.g);
  ASSERT_TRUE(worker.Step({&span, 1}).ok()) << "rank " << rank << " step " << step;
  replica.Apply();
  absl::Span<float> state(replica.w);
  ASSERT_TRUE(worker.OfferState({&state, 1}).ok()) << "rank " << rank << " step " << step;
}

TEST(RecoveryPagingTest, ARecoveryLargerThanAMessageIsPagedAndExact) {
  // ternps-server's defaults: --max_partition_elements=2^24 sets a 65 MiB message limit.
  constexpr uint32_t kServerDefaultPartitionElements = 1u << 24;
  testing::TestCluster cluster(1, [](server::ShardServerOptions& options) {
    options.shard.max_partition_elements = kServerDefaultPartitionElements;
  });
  const uint64_t message_limit = uint64_t{kServerDefaultPartitionElements} * 4 + (1u << 20);
  // What the replacement needs: the snapshot of step 12 and the averages of steps 12..16.
  const uint64_t log_bytes = uint64_t{4} * kElements * (1 + kSteps - 12);
  ASSERT_GT(log_bytes, message_limit) << "the recovery would fit one message: paging untested";

  auto w0 = worker::Worker::Connect(Options(cluster.addresses(), 0));
  ASSERT_TRUE(w0.ok()) << w0.status();
  std::unique_ptr<worker::Worker> old1;
  Replica r0, r1;
  {
    std::thread t([&] {
      auto w1 = worker::Worker::Connect(Options(cluster.addresses(), 1));
      ASSERT_TRUE(w1.ok()) << w1.status();
      old1 = *std::move(w1);
      for (int step = 0; step < kSteps; ++step) TrainStep(*old1, r1, 1, step);
    });
    for (int step = 0; step < kSteps; ++step) TrainStep(**w0, r0, 0, step);
    t.join();
  }
  ASSERT_FALSE(HasFatalFailure());
  // Rank 1 is replaced (its old session abandoned, as after kill -9): the new one joins the
  // running job at step 17 and recovers from the initial state.
  auto w1 = worker::Worker::Connect(Options(cluster.addresses(), 1));
  ASSERT_TRUE(w1.ok()) << w1.status();
  ASSERT_EQ((*w1)->step(), static_cast<uint64_t>(kSteps));
  Replica fresh;
  fresh.g.assign(kElements, 0.0f);
  absl::Span<float> state(fresh.w);
  absl::Span<float> gradient(fresh.g);
  int replayed = 0;
  const absl::Status recovered = (*w1)->Recover({&state, 1}, {&gradient, 1}, [&](uint64_t) {
    fresh.Apply();
    ++replayed;
    return absl::OkStatus();
  });
  ASSERT_TRUE(recovered.ok()) << recovered;
  EXPECT_EQ(replayed, kSteps - 12) << "replayed from the snapshot of step 12";
  ASSERT_EQ(std::memcmp(fresh.w.data(), r0.w.data(), kElements * sizeof(float)), 0)
      << "the recovered model differs from rank 0's";
  // Both go on together.
  std::thread t([&] { TrainStep(**w0, r0, 0, kSteps); });
  TrainStep(**w1, fresh, 1, kSteps);
  t.join();
  EXPECT_EQ(std::memcmp(fresh.w.data(), r0.w.data(), kElements * sizeof(float)), 0);
  EXPECT_TRUE((*w0)->Leave().ok());
  EXPECT_TRUE((*w1)->Leave().ok());
}

}  // namespace
}  // namespace ternps
