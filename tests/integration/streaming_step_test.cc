// The streaming step against 2 real shards over loopback (2 workers): a group's averages are
// written while later tensors are not even marked (the exchange overlaps the rest of the
// backward pass), a step finished with a tensor never marked fails naming it and tells every
// group once (none is left waiting), bad marks are refused with the field named and change
// nothing, and a worker destroyed mid-step tells its groups.
#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"

namespace ternps {
namespace {

constexpr uint32_t kWorld = 2;

std::vector<worker::TensorInfo> Tensors() {
  // Three compressed tensors (several partitions and calls each) and a small FP32 one.
  return {{"layer3.weight", 65536},
          {"layer2.weight", 90000},
          {"layer1.weight", 60000},
          {"layer1.bias", 100}};
}

worker::WorkerOptions Options(const testing::TestCluster& cluster, const std::string& job,
                              uint32_t rank) {
  worker::WorkerOptions options;
  options.job_id = job;
  options.rank = rank;
  options.world_size = kWorld;
  options.shards = cluster.addresses();
  options.tensors = Tensors();
  options.codec.partition_elements = 32768;
  options.max_call_bytes = 16384;
  options.rpc_timeout = absl::Seconds(60);
  return options;
}

struct Buffers {
  std::vector<std::vector<float>> values;
  std::vector<absl::Span<float>> spans;
  explicit Buffers(uint32_t rank) {
    for (const worker::TensorInfo& t : Tensors()) {
      values.emplace_back(t.elements);
      for (size_t i = 0; i < t.elements; ++i) {
        values.back()[i] = static_cast<float>((i * 7 + rank * 13) % 101) / 100.0f - 0.5f;
      }
    }
    for (auto& v : values) spans.push_back(absl::MakeSpan(v));
  }
};

// Each worker marks tensor 0 and waits until its averages are written before it marks the rest.
// With the blocking Step's behaviour (nothing sent before every tensor is ready) this would wait
// for ever; streamed, tensor 0's calls go out and come back on their own.
TEST(StreamingStepTest, AGroupIsWrittenBeforeLaterTensorsAreMarked) {
  testing::TestCluster cluster(2);
  testing::RunWorkers(kWorld, [&](uint32_t rank) {
    // Declared before the worker: a failed assertion below destroys the worker (which tells its
    // groups) before what the callbacks write to.
    absl::Notification first[2];
    absl::Status first_status[2];
    std::atomic<int> rest{0};
    worker::WorkerOptions options = Options(cluster, "streaming-overlap", rank);
    // One partition per call: no call carries parts of two tensors (such a call waits for both).
    options.max_call_bytes = 8192;
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    Buffers b(rank);
    for (int step = 0; step < 2; ++step) {
      ASSERT_TRUE((*w)->StartStep().ok());
      ASSERT_TRUE((*w)->MarkReady({0}, {b.spans[0]},
                                  [&, step](const absl::Status& st) {
                                    first_status[step] = st;
                                    first[step].Notify();
                                  })
                      .ok());
      ASSERT_TRUE(first[step].WaitForNotificationWithTimeout(absl::Seconds(60)))
          << "tensor 0's averages were not written before the other tensors were marked";
      EXPECT_TRUE(first_status[step].ok()) << first_status[step];
      ASSERT_TRUE((*w)->MarkReady({3, 1, 2}, {b.spans[3], b.spans[1], b.spans[2]},
                                  [&](const absl::Status& st) {
                                    EXPECT_TRUE(st.ok()) << st;
                                    ++rest;
                                  })
                      .ok());
      ASSERT_TRUE((*w)->FinishStep().ok());
      EXPECT_EQ(rest.load(), step + 1);
      EXPECT_EQ((*w)->step(), static_cast<uint64_t>(step + 1));
      EXPECT_EQ((*w)->last_step().min_contributors, kWorld);
    }
    EXPECT_TRUE((*w)->Leave().ok());
  });
}

TEST(StreamingStepTest, ATensorNeverMarkedFailsTheStepAndEveryGroupIsTold) {
  testing::TestCluster cluster(2, absl::Seconds(3));
  testing::RunWorkers(kWorld, [&](uint32_t rank) {
    auto w = worker::Worker::Connect(Options(cluster, "streaming-unmarked", rank));
    ASSERT_TRUE(w.ok()) << w.status();
    Buffers b(rank);
    ASSERT_TRUE((*w)->StartStep().ok());
    std::atomic<int> told{0};
    auto count = [&](const absl::Status&) { ++told; };
    ASSERT_TRUE((*w)->MarkReady({1}, {b.spans[1]}, count).ok());
    ASSERT_TRUE((*w)->MarkReady({0, 3}, {b.spans[0], b.spans[3]}, count).ok());
    // Tensor 2 ('layer1.weight') is never marked.
    absl::Status st = (*w)->FinishStep();
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_NE(st.message().find("'layer1.weight'"), std::string::npos) << st;
    EXPECT_EQ(told.load(), 2);  // every group, written (both peers marked it) or failed, once
    EXPECT_EQ((*w)->step(), 0u);
    // A mark after the failure is refused with it.
    st = (*w)->MarkReady({2}, {b.spans[2]}, count);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  });
  // The same shards serve a new job afterwards, streamed, with every tensor in one mark.
  testing::RunWorkers(kWorld, [&](uint32_t rank) {
    worker::WorkerOptions options = Options(cluster, "streaming-unmarked-2", rank);
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    Buffers b(rank);
    ASSERT_TRUE((*w)->StartStep().ok());
    ASSERT_TRUE((*w)->MarkReady({0, 1, 2, 3}, b.spans, nullptr).ok());
    EXPECT_TRUE((*w)->FinishStep().ok());
  });
}

TEST(StreamingStepTest, BadMarksAreRefusedNamingTheField) {
  testing::TestCluster cluster(2);
  auto w = worker::Worker::Connect([&] {
    worker::WorkerOptions o = Options(cluster, "streaming-bad-marks", 0);
    o.world_size = 1;
    return o;
  }());
  ASSERT_TRUE(w.ok()) << w.status();
  Buffers b(0);
  absl::Status st = (*w)->MarkReady({0}, {b.spans[0]}, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("StartStep"), std::string::npos) << st;
  ASSERT_TRUE((*w)->StartStep().ok());
  st = (*w)->MarkReady({4}, {b.spans[0]}, nullptr);
  EXPECT_NE(st.message().find("tensors[0]"), std::string::npos) << st;
  st = (*w)->MarkReady({0, 1}, {b.spans[0]}, nullptr);
  EXPECT_NE(st.message().find("gradients: 1 buffers for 2 tensors"), std::string::npos) << st;
  st = (*w)->MarkReady({1}, {b.spans[0]}, nullptr);
  EXPECT_NE(st.message().find("gradients[0]: 65536 elements"), std::string::npos) << st;
  ASSERT_TRUE((*w)->MarkReady({0}, {b.spans[0]}, nullptr).ok());
  st = (*w)->MarkReady({0}, {b.spans[0]}, nullptr);
  EXPECT_NE(st.message().find("already marked"), std::string::npos) << st;
  // None of the refused marks counted: the rest completes the step.
  ASSERT_TRUE((*w)->MarkReady({1, 2, 3}, {b.spans[1], b.spans[2], b.spans[3]}, nullptr).ok());
  EXPECT_TRUE((*w)->FinishStep().ok());
  EXPECT_EQ((*w)->step(), 1u);
}

// A worker destroyed in the middle of a streaming step tells its groups instead of leaving them.
TEST(StreamingStepTest, DestroyingTheWorkerMidStepTellsEveryGroup) {
  testing::TestCluster cluster(2, absl::Seconds(2));
  std::atomic<int> told{0};
  {
    worker::WorkerOptions o = Options(cluster, "streaming-destroyed", 0);  // rank 1 never comes
    auto w = worker::Worker::Connect(o);
    ASSERT_TRUE(w.ok()) << w.status();
    Buffers b(0);
    ASSERT_TRUE((*w)->StartStep().ok());
    ASSERT_TRUE((*w)->MarkReady({0}, {b.spans[0]}, [&](const absl::Status&) { ++told; }).ok());
    w->reset();
  }
  EXPECT_EQ(told.load(), 1);
}

}  // namespace
}  // namespace ternps
