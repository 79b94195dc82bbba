// Worker::StepOnDevice against Worker::Step over real gRPC with an in-process shard: the same job
// (same seed, same gradients) run once with host gradients and once with device gradients gives
// bit-identical averages, and a job mixing a device worker with a host worker gives both of them
// those same bits. clip_sigmas = 0: the scaler is then max |g| on both sides (exact), where with
// clipping the device's sigma (another summation order) may move the threshold by an ulp.
// Skips without a usable device, like every gpu-labelled test; the GPU check
// (tests/gpu/device_check.sh) counts a skip as a failure.
#include <cuda_runtime_api.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/cuda/device_codec.h"
#include "gtest/gtest.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"

namespace ternps {
namespace {

using common::cuda::DeviceBuffer;
using common::cuda::Stream;

constexpr uint32_t kWorld = 2;
constexpr int kSteps = 3;

std::vector<worker::TensorInfo> Tensors() {
  // Several compressed partitions (65536 elements each, a ragged last one), FP32 small tensors
  // and a forced-FP32 one.
  return {{"conv.weight", 200003},
          {"conv.bias", 100},
          {"fc.weight", 70000, /*keep_fp32=*/true},
          {"fc.bias", 10}};
}

std::vector<std::vector<float>> Gradient(uint32_t rank, int step) {
  std::mt19937_64 rng(1000 * rank + step + 17);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::vector<std::vector<float>> g;
  for (const auto& t : Tensors()) {
    std::vector<float> v(t.elements);
    for (float& x : v) x = normal(rng);
    g.push_back(std::move(v));
  }
  return g;
}

enum class Side { kHost, kDevice };
struct Job {
  std::string name;
  worker::CodecKind codec;
  Side side[kWorld];
};

// results[rank][step][tensor]: what each worker's buffers held after each Step.
using Results = std::vector<std::vector<std::vector<std::vector<float>>>>;

Results RunJob(const Job& job) {
  testing::TestCluster cluster(2);
  Results results(kWorld);
  testing::RunWorkers(kWorld, [&](uint32_t rank) {
    worker::WorkerOptions options;
    options.job_id = job.name;
    options.rank = rank;
    options.world_size = kWorld;
    options.shards = cluster.addresses();
    options.tensors = Tensors();
    options.codec.codec = job.codec;
    options.codec.partition_elements = 65536;
    options.codec.seed = 20261207;
    options.codec.clip_sigmas = 0.0f;
    options.max_call_bytes = 40000;
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    absl::StatusOr<Stream> stream = Stream::Create();
    ASSERT_TRUE(stream.ok()) << stream.status();
    for (int step = 0; step < kSteps; ++step) {
      std::vector<std::vector<float>> g = Gradient(rank, step);
      if (job.side[rank] == Side::kHost) {
        std::vector<absl::Span<float>> spans;
        for (auto& v : g) spans.push_back(absl::MakeSpan(v));
        absl::Status st = (*w)->Step(spans);
        ASSERT_TRUE(st.ok()) << st;
      } else {
        std::vector<DeviceBuffer<float>> device;
        std::vector<absl::Span<float>> spans;
        for (const auto& v : g) {
          absl::StatusOr<DeviceBuffer<float>> b = DeviceBuffer<float>::Create(v.size());
          ASSERT_TRUE(b.ok()) << b.status();
          // Queued on the caller's stream, which StepOnDevice must wait for.
          ASSERT_EQ(cudaMemcpyAsync(b->data(), v.data(), v.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, stream->get()),
                    cudaSuccess);
          spans.push_back(b->span());
          device.push_back(*std::move(b));
        }
        absl::Status st = (*w)->StepOnDevice(spans, stream->get());
        ASSERT_TRUE(st.ok()) << st;
        for (size_t t = 0; t < g.size(); ++t) {
          ASSERT_EQ(cudaMemcpyAsync(g[t].data(), device[t].data(), g[t].size() * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream->get()),
                    cudaSuccess);
        }
        ASSERT_TRUE(stream->Synchronize().ok());
      }
      EXPECT_EQ((*w)->last_step().min_contributors, kWorld);
      results[rank].push_back(std::move(g));
    }
    EXPECT_TRUE((*w)->Leave().ok());
  });
  return results;
}

void ExpectIdentical(const Results& a, const Results& b, const std::string& what) {
  for (uint32_t r = 0; r < kWorld; ++r) {
    ASSERT_EQ(a[r].size(), static_cast<size_t>(kSteps)) << what;
    ASSERT_EQ(b[r].size(), static_cast<size_t>(kSteps)) << what;
    for (int step = 0; step < kSteps; ++step) {
      for (size_t t = 0; t < Tensors().size(); ++t) {
        const auto& x = a[r][step][t];
        const auto& y = b[r][step][t];
        ASSERT_EQ(x.size(), y.size());
        ASSERT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0)
            << what << ": rank " << r << " step " << step << " tensor " << Tensors()[t].name;
      }
    }
  }
}

class StepOnDeviceTest : public ::testing::TestWithParam<worker::CodecKind> {
 protected:
  void SetUp() override {
    if (!worker::Worker::DeviceAvailable()) {
      GTEST_SKIP() << "no usable CUDA device, or libternps_worker_cuda not loaded";
    }
  }
};

TEST_P(StepOnDeviceTest, DeviceGradientsGetTheHostBits) {
  const worker::CodecKind codec = GetParam();
  const std::string tag = codec == worker::CodecKind::kFp32 ? "fp32" : "terngrad";
  const Results host = RunJob({"host-" + tag, codec, {Side::kHost, Side::kHost}});
  const Results device = RunJob({"device-" + tag, codec, {Side::kDevice, Side::kDevice}});
  const Results mixed = RunJob({"mixed-" + tag, codec, {Side::kDevice, Side::kHost}});
  ExpectIdentical(host, device, "device job against host job");
  ExpectIdentical(host, mixed, "mixed job against host job");
  // And the average is not the input: the exchange really happened.
  const std::vector<std::vector<float>> input = Gradient(0, 0);
  EXPECT_NE(std::memcmp(input[0].data(), host[0][0][0].data(), input[0].size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Codecs, StepOnDeviceTest,
                         ::testing::Values(worker::CodecKind::kTernGrad, worker::CodecKind::kFp32),
                         [](const auto& info) {
                           return info.param == worker::CodecKind::kFp32 ? "Fp32" : "TernGrad";
                         });

}  // namespace
}  // namespace ternps
